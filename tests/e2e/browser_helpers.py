import os
import re
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LRBS_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("LRBS_SHOTS", Path(tempfile.gettempdir()) / "lrbs-e2e-screenshots"))

EXCEPTION = '[data-testid="stException"]'


def open_page(page, url: str, path: str, ready_text: str) -> None:
    page.goto(f"{url}/{path}")
    page.get_by_text(ready_text).first.wait_for()
    settle(page)


def settle(page, quiet: float = 1.0, timeout: float = 60) -> None:
    """Wait until the app has been idle (no 'running' indicator) for `quiet` seconds."""
    end = time.time() + timeout
    idle_since = None
    while time.time() < end:
        busy = page.query_selector('[data-testid="stStatusWidget"], [data-testid="stSpinner"]')
        if busy is not None:
            idle_since = None
        elif idle_since is None:
            idle_since = time.time()
        elif time.time() - idle_since >= quiet:
            return
        time.sleep(0.1)


def no_exception(page) -> None:
    assert page.query_selector(EXCEPTION) is None, page.inner_text(EXCEPTION)


def wait_chart(page, n: int = 1, timeout: float = 60) -> int:
    """Wait until at least `n` charts are on the page; return how many there are."""
    end = time.time() + timeout
    while time.time() < end:
        if charts(page) >= n:
            break
        time.sleep(0.1)
    return charts(page)


def charts(page) -> int:
    return len(page.query_selector_all('[data-testid="stVegaLiteChart"]'))


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def progress_count(page, pattern: str) -> int | None:
    """The number in a progress label such as 'Range test: 37 iterations so far'."""
    for el in page.query_selector_all('[data-testid="stProgress"]'):
        m = re.search(pattern, el.inner_text())
        if m:
            return int(m.group(1))
    return None


def sidebar_number(page, label: str, value: str) -> None:
    box = page.locator('[data-testid="stSidebar"]').get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page)
