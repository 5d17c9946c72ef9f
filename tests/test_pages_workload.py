"""Workload files in the app: offered only from the LRBS_WORKLOADS folder, described in the
sidebar, trained by a page's job, and an error inside one shown with the user's own line."""

import shutil

import pytest
from support import ROOT
from test_pages import open_page
from test_pages_lr import wait

WORKLOADS = ROOT / "tests" / "workloads"
BROKEN = '''"""data() fails on line 9."""
from torch import nn

def model():
    return nn.Linear(2, 2)

def data():
    table = {"x": 1}
    return table["missing"]
'''


@pytest.fixture
def folder(tmp_path, monkeypatch):
    for name in ("classify.py", "regress.py"):
        shutil.copy(WORKLOADS / name, tmp_path / name)
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "_helpers.py").write_text("X = 1\n")  # private: not offered
    (tmp_path / "notes.txt").write_text("not code\n")
    monkeypatch.setenv("LRBS_WORKLOADS", str(tmp_path))
    return tmp_path


def test_the_sidebar_offers_the_folders_workloads_only(folder):
    at = open_page()
    options = at.selectbox(key="s_dataset").options
    titles = [o for o in options if o.startswith("Workload")]
    assert titles == ["Workload: broken.py", "Workload: classify.py", "Workload: regress.py"]
    at.selectbox(key="s_dataset").set_value("workload:regress.py").run()
    assert not at.exception
    caption = " ".join(c.value for c in at.sidebar.caption)
    assert "400 training and 100 validation samples" in caption
    assert "regression" in caption
    assert any("no class labels" in m.value for m in at.markdown)
    assert not at.sidebar.error


def test_without_the_folder_no_workload_is_offered(monkeypatch):
    monkeypatch.delenv("LRBS_WORKLOADS", raising=False)
    at = open_page()
    assert not any(o.startswith("Workload") for o in at.selectbox(key="s_dataset").options)


def test_an_error_in_the_users_file_shows_their_line_not_lrbs(folder):
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("workload:broken.py").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    assert "broken.py" in errors and "KeyError" in errors
    code = " ".join(c.value for c in at.sidebar.code)
    assert "line 9" in code and 'return table["missing"]' in code
    assert "lrbs/" not in code, "only the user's own frames are shown"


def test_a_page_runs_a_range_test_on_a_workload(folder):
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("workload:classify.py").run()
    assert not at.exception
    at.button(key="rt_job_run").click().run()
    job = wait(at, "rt_job")
    assert job.status == "finished", job.snapshot().error
    suggestions = at.dataframe[0].value
    assert "Steepest descent" in list(suggestions.suggestion)
