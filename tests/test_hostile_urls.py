"""Every page opened from a hostile link: numbers that do not parse, wrong types, negative,
huge, NaN and infinite numbers, unknown choices, empty strings, run ids that are missing or of
another page, and a history file that is a system file, a folder or a path under a file.

The keys come from the pages themselves (what each seeds into its URL, and the job keys its
source names), so a new setting is covered without editing this file. A page must show no
exception, and every URL value it did not take must be named in its one warning."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from support import ROOT

from lrbs.runs.store import RunStore, default_path
from pages.common.nav import PAGES
from pages.common.state import SETTINGS

APP = str(ROOT / "app.py")
ALL_PAGES = ["pages/home.py", *(p.path for p in PAGES)]
FOLDER = tempfile.mkdtemp(prefix="lrbs-hostile-")
# six hostile values per kind of setting; variant i gives every key its kind's i-th value
HOSTILE = {
    int: ['"banana"', "-5", "1.5", "Infinity", "1e20", ""],
    float: ["abc", "-1", "NaN", "-Infinity", "1e308", "true"],
    str: ["5", '"zzz-not-a-choice"', '""', "null", "[1]", '{"a":1}'],
    bool: ["3", '"yes"', "null", "0", "[]", '"true"'],
    list: ['"x"', '["zzz"]', "[999]", "5", "null", "[[1]]"],
}
DB_PATHS = ["/etc/passwd", FOLDER, "/etc/hostname/x.db", "/dev/null", "/etc/passwd", FOLDER]
VARIANTS = range(6)


def kind_of(value) -> type:
    for t in (bool, int, float, str):
        if isinstance(value, t):
            return t
    return list


def open_page(page: str, params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for key, text in (params or {}).items():
        at.query_params[key] = text
    at.switch_page(page)
    return at.run()


_KEYS: dict[str, dict] = {}


def page_keys(page: str) -> dict:
    """The settings `page` keeps in its URL, with their values, as a plain visit leaves them."""
    if page not in _KEYS:
        at = open_page(page)
        assert not at.exception, at.exception
        state = at.session_state
        keys = set(state[SETTINGS]) if SETTINGS in state else set()
        keys |= {k for k in state.to_dict() if k.startswith("s_")}
        _KEYS[page] = {k: state[k] for k in sorted(keys) if k != "s_db_path"}
    return _KEYS[page]


def job_keys(page: str) -> list[str]:
    """The job keys the page's source gives `experiment`, `finished` or `attach`."""
    text = (ROOT / page).read_text()
    return sorted(set(re.findall(r'(?:experiment|finished|attach)\(\s*"(\w+)"', text)))


@pytest.fixture(scope="module")
def foreign_run() -> int:
    """A run of a kind no page attaches a job to."""
    with RunStore(default_path()) as store:
        run_id = store.start_run("gd1d", {"x": 1})
        store.finish(run_id, "finished")
    return run_id


def warnings_of(at: AppTest) -> str:
    return "\n".join(w.value for w in at.warning)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("page", ALL_PAGES)
def test_a_hostile_link_is_said_never_a_traceback(page, variant, foreign_run):
    keys = page_keys(page)
    # the shared sidebar's settings are tried on Home (a bad dataset there would stop a
    # training page before its own settings are drawn); the history file on every page
    if page != "pages/home.py":
        keys = {k: v for k, v in keys.items() if not k.startswith("s_")}
    params = {k: HOSTILE[kind_of(v)][variant] for k, v in keys.items()}
    params["s_db_path"] = json.dumps(DB_PATHS[variant])
    jobs = ["999999", str(foreign_run), "abc", "-1", "", "12345678901234567890"]
    params |= {f"job.{k}": jobs[variant] for k in job_keys(page)}
    at = open_page(page, params)
    assert not at.exception, (params, at.exception)
    said = warnings_of(at)
    assert len(at.warning) <= 1 or "Not all of this page's address" not in said.split("\n", 1)[1]
    state = at.session_state
    for key, text in params.items():
        if key.startswith("job.") or key == "s_db_path" or key not in state:
            continue  # a key the page has not drawn yet keeps waiting in the URL
        try:
            given = json.loads(text)
        except ValueError:
            given = text
        if state[key] != given:
            assert f"`{key}=" in said, (key, text, state[key], said)
    for key in job_keys(page):
        if key not in state["_url_jobs"]:  # the page looked at it: it must say why not
            assert f"`job.{key}=" in said, (key, said)
    if "s_db_path" in state:
        errors = "\n".join(e.value for e in at.error)
        assert DB_PATHS[variant] in errors and "run history" in errors, errors


def test_a_missing_and_a_foreign_run_id_name_the_run(foreign_run):
    at = open_page("pages/lr.py", {"job.rt_job": "999999"})
    assert not at.exception
    assert "run 999999 is not in this history" in warnings_of(at)
    at = open_page("pages/lr.py", {"job.rt_job": str(foreign_run)})
    assert not at.exception
    assert f"run {foreign_run} is a gd1d run, not a lr-find run" in warnings_of(at)
    assert at.title[0].value == "Find the learning rate"  # the page itself still works
    assert at.button(key="rt_job_run").disabled is False


def test_run_is_off_and_says_why_while_the_history_file_cannot_be_used():
    for path in ("/etc/passwd", FOLDER, "/etc/hostname/x.db"):
        at = open_page("pages/lr.py", {"s_db_path": json.dumps(path), "s_dataset": '"digits"'})
        assert not at.exception
        assert at.button(key="rt_job_run").disabled
        assert any(path in e.value for e in at.error)
        assert any("Run is off" in c.value for c in at.caption)
        assert not Path("/etc/hostname").is_dir()
    at = open_page("pages/history.py", {"s_db_path": json.dumps("/etc/passwd")})
    assert not at.exception
    assert [e.value for e in at.error] == [
        "/etc/passwd is not an lrbs run history (not a SQLite file); it was left untouched: "
        "choose another file (sidebar or LRBS_DB)"
    ]


def test_each_bad_value_is_said_once_with_what_is_used_instead():
    at = open_page(
        "pages/lr.py", {"rt_batch": "banana", "rt_min": '"abc"', "rt_iters": "-5", "rt_seeds": "3"}
    )
    assert not at.exception
    assert len(at.warning) == 1
    said = at.warning[0].value
    assert "`rt_batch='banana'`: not a number; the default 64 is used" in said
    assert "`rt_min='abc'`: not a number; the default 1e-07 is used" in said
    assert "`rt_iters=-5`: out of range; 0 is used" in said
    assert "rt_seeds" not in said and at.session_state["rt_seeds"] == 3  # a good one is taken
    at.run()  # the app reruns on its own after a link opens: the note stays, said once
    assert len(at.warning) == 1 and at.warning[0].value == said
    at.number_input(key="rt_batch").set_value(32).run()  # a setting changed: the note is done
    assert not at.warning
