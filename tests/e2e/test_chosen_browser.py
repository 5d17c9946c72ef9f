""" "Use this learning rate" in a real browser: chosen on Find the LR, it is the default of
every page that takes a learning rate, and each says where it came from."""

import re

from browser_helpers import no_exception, settle, shot

# page link -> text that shows the page is drawn
PAGES = {
    "Batch size": "Batch-size sweep",
    "LR schedules": "Learning-rate schedules",
    "Batch-size scheduling": "Batch-size scheduling",
    "Noise scale & critical batch": "Gradient noise scale",
    "The edge of stability": "The edge of stability",
    "Auto-tune": "Auto-tune learning rate and batch size",
}


def test_use_this_reaches_every_page(page, app_url):
    page.goto(f"{app_url}/lr?s_dataset=%22digits%22")  # settings in the URL: small data
    page.get_by_text("Run range test").first.wait_for(timeout=180_000)  # a cold server
    settle(page)
    page.get_by_role("button", name="Run range test").first.click()
    page.get_by_text("Suggestions").first.wait_for(timeout=120_000)
    settle(page)
    page.get_by_role("button", name="Use this learning rate").click()
    done = page.get_by_text(re.compile(r"Learning rate \S+ will be the default")).first
    done.wait_for()
    lr = re.search(r"Learning rate (\S+) will", done.inner_text()).group(1)
    sidebar = page.locator('[data-testid="stSidebar"]')
    for link, ready in PAGES.items():
        page.get_by_role("link", name=link).first.click()
        page.get_by_text(ready).first.wait_for()
        settle(page)
        no_exception(page)
        note = sidebar.get_by_text(re.compile(r"From the range test \(.*\): lr "))
        note.first.wait_for()
        assert lr in note.first.inner_text(), (link, note.first.inner_text())
        shot(page, f"use_this_{link.replace(' ', '_').replace('&', 'and')}")
