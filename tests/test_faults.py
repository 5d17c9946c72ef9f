"""Faults the app survives: divergence mid-sweep, out-of-memory, and what was computed stays."""

import os

import torch
from streamlit.testing.v1 import AppTest
from test_pages import APP, open_page
from test_pages_lr import wait

import lrbs.runs.instruments
from lrbs.core.data import DataSpec
from lrbs.core.setup import Setup
from lrbs.experiments import lr_finder
from lrbs.runs.jobs import run_job
from lrbs.runs.store import RunStore, record_config


def test_divergence_mid_sweep_is_shown_and_later_runs_are_unaffected():
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at.text_input(key="sw_grid").set_value("0.05, 1e4")
    at.radio(key="sw_budget_kind").set_value("steps").run()
    at.number_input(key="sw_budget").set_value(60.0).run()
    at.button(key="sw_job_run").click().run()
    wait(at, "sw_job")
    table = at.dataframe[0].value.set_index("lr")
    assert table.loc[1e4, "status"] == "diverged"
    assert table.loc[0.05, "status"] == "finished" and table.loc[0.05, "best"]
    # and the next run on the page works as before
    at.text_input(key="sw_grid").set_value("0.05").run()
    at.button(key="sw_job_run").click().run()
    wait(at, "sw_job")
    assert list(at.dataframe[0].value.status) == ["finished"]


def test_out_of_memory_is_a_message_and_the_page_stays_usable(monkeypatch):
    """A job that runs out of memory (in its worker) ends as one clear message; the page that
    attaches to it shows that message, and its next run works."""

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(lrbs.runs.instruments, "range_test", out_of_memory)
    db = os.environ["LRBS_DB"]
    setup = Setup(data=DataSpec(name="digits"))
    with RunStore(db) as store:
        run_id = store.start_run("lr-find", record_config(setup, lr_finder.Config()), queued=True)
    assert run_job(db, run_id) == "error"  # this process plays the worker
    monkeypatch.undo()
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["job.rt_job"] = str(run_id)  # a reload of the page that started it
    at.run()
    at.switch_page("pages/lr.py").run()
    assert any("out of memory" in e.value for e in at.error)
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="rt_iters").set_value(60).run()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    assert not at.error
    assert at.session_state["rt_rounds"][0][0].status in ("finished", "diverged")


def test_runs_on_two_pages_go_on_together_and_a_page_change_keeps_each():
    """Jobs run in worker processes: a run on one page does not block another page's, a page
    change keeps both, and coming back shows the first one still (or finished)."""
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="rt_iters").set_value(20000).run()
    at.button(key="rt_job_run").click().run()
    first = at.session_state["rt_job"]
    at.switch_page("pages/batch.py").run()
    at.button(key="bs_job_run").click().run()
    second = at.session_state["bs_job"]
    assert second.run_id != first.run_id
    assert not any("already going" in w.value for w in at.warning)
    at.switch_page("pages/lr.py").run()
    assert at.session_state["rt_job"] is first
    first.stop()  # the same Stop any tab holding the run id has
    assert first.join(60) and first.status == "stopped"
    assert second.join(120) and second.status in ("finished", "stopped")
