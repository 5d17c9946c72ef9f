"""Every page in a real browser from a hostile link: each setting the page keeps in its address
(read from the page itself, as tests/test_hostile_urls.py does through AppTest) gets a value of
the wrong kind, the history file is a system file and the page's run ids do not exist. No page
may show an exception, and what the page did not take is named on it, where a person sees it,
after the app has settled."""

import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from browser_helpers import EXCEPTION, settle, shot

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_hostile_urls import ALL_PAGES, HOSTILE, job_keys, kind_of, page_keys  # noqa: E402

NOTE = "could be used"  # "Not all of this page's address could be used: ..."


def hostile_link(page_file: str) -> tuple[str, bool]:
    """The link, and whether it holds any setting or run id of the page's own."""
    keys = page_keys(page_file)
    if page_file != "pages/home.py":  # the shared sidebar's settings are tried on Home
        keys = {k: v for k, v in keys.items() if not k.startswith("s_")}
    params = {k: HOSTILE[kind_of(v)][0] for k, v in keys.items()}
    params["s_db_path"] = '"/etc/passwd"'
    params |= {f"job.{k}": "999999" for k in job_keys(page_file)}
    return urlencode(params), len(params) > 1


@pytest.mark.parametrize("page_file", ALL_PAGES)
def test_a_page_from_a_hostile_link_says_what_it_did_not_take(page, app_url, page_file):
    path = "" if page_file == "pages/home.py" else Path(page_file).stem
    link, own = hostile_link(page_file)
    page.goto(f"{app_url}/{path}?{link}")
    page.locator('[data-testid="stMain"] h1').first.wait_for()
    if path not in ("", "gd1d"):  # a page that records runs refuses the file, in one line
        page.get_by_text("/etc/passwd").first.wait_for()
    if own:
        page.get_by_text(NOTE).first.wait_for()
    settle(page, quiet=2.0)  # the app reruns on its own after a link opens: the note stays
    assert page.get_by_text(NOTE).count() == int(own), "the note went before anyone read it"
    assert page.query_selector(EXCEPTION) is None, page.inner_text(EXCEPTION)
    assert "Traceback" not in page.inner_text("body")
    shot(page, f"hostile-{path or 'home'}")
