"""Every page in a real browser, first as a plain visit, then from a hostile link: each setting
the page writes into its own address is replaced by a value of the wrong kind (a word for a
number, a number for a choice, NaN, a negative, an unknown choice), the history file by a
system file, and a run id by one that does not exist. No page may show an exception, and the
page names the values it did not take."""

import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from browser_helpers import EXCEPTION, no_exception, settle, shot

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pages.common.nav import PAGES  # noqa: E402

PATHS = ["", *(Path(p.path).stem for p in PAGES)]
NOTE = "could be used"  # "Not all of this page's address could be used: ..."


def hostile(text: str) -> str:
    """A value of another kind than the one the page wrote."""
    try:
        value = json.loads(text)
    except ValueError:
        return "[[1]]"
    if isinstance(value, bool):
        return '"maybe"'
    if isinstance(value, int | float):
        return '"banana"' if isinstance(value, int) else "NaN"
    if isinstance(value, str):
        return "-5"
    return '"not a list"'


def opened(page, url: str) -> None:
    """Go to `url` and wait for the page's own title and then for the app to be idle."""
    page.goto(url)
    page.locator('[data-testid="stMain"] h1').first.wait_for()
    settle(page, quiet=1.5)


def own_params(page, url: str, path: str) -> dict[str, str]:
    opened(page, f"{url}/{path}")
    no_exception(page)
    return dict(parse_qsl(urlsplit(page.url).query, keep_blank_values=True))


@pytest.mark.parametrize("path", PATHS)
def test_a_page_from_a_hostile_link_names_what_it_did_not_take(page, app_url, path):
    params = own_params(page, app_url, path)
    bad = {k: hostile(v) for k, v in params.items() if not k.startswith("job.")}
    bad |= {"s_db_path": '"/etc/passwd"', "job.rt_job": "999999", "job.sw_job": "abc"}
    opened(page, f"{app_url}/{path}?{urlencode(bad)}")
    # what each page says arrives as its script runs (the sidebar loads its data first)
    if path != "gd1d":  # the history file is refused in one line on every page that uses it
        page.get_by_text("/etc/passwd").first.wait_for()
    if len(bad) > 3:  # the page wrote settings of its own: it says which were not taken
        page.get_by_text(NOTE).first.wait_for()
    settle(page, quiet=1.5)
    assert page.query_selector(EXCEPTION) is None, page.inner_text(EXCEPTION)
    assert "Traceback" not in page.inner_text("body")
    shot(page, f"hostile-{path or 'home'}")
