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
    assert "real-valued targets" in caption and "regression" in caption
    assert "its optimizer() (SGD)" in caption
    assert any("real-valued targets" in m.value for m in at.markdown)
    assert not at.sidebar.error


TOKENS = '''"""Next-token targets: whole numbers per position, and the file's own AdamW."""
import torch
from torch import nn


def model():
    return nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 16))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (64, 5), generator=g)
    return (x, x.roll(-1, 1)), (x[:16], x[:16].roll(-1, 1))


def loss():
    return lambda out, y: nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())


def optimizer(params, lr):
    return torch.optim.AdamW(params, lr=lr)
'''


def test_token_targets_and_the_files_own_optimizer_are_described_as_they_are(folder):
    """Integer tokens are not 'regression', and the Optimizer box does not claim SGD while
    the file's AdamW trains."""
    (folder / "tokens.py").write_text(TOKENS)
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("workload:tokens.py").run()
    assert not at.exception
    caption = " ".join(c.value for c in at.sidebar.caption)
    assert "whole-number targets of shape (5,)" in caption and "regression" not in caption
    assert "its optimizer() (AdamW)" in caption
    box = at.selectbox(key="rt_optimizer")
    assert box.disabled
    assert any("the workload's own AdamW" in c.value for c in at.sidebar.caption)
    at.selectbox(key="s_dataset").set_value("workload:classify.py").run()
    assert not at.selectbox(key="rt_optimizer").disabled  # the page chooses again


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
