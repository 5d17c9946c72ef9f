"""Faults the app survives: divergence mid-sweep, out-of-memory, and what was computed stays."""

import torch
from test_pages import open_page
from test_pages_lr import wait

import lrbs.experiments.lr_finder


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
    real = lrbs.experiments.lr_finder.range_test

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(lrbs.experiments.lr_finder, "range_test", out_of_memory)
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    assert any("out of memory" in e.value for e in at.error)
    monkeypatch.setattr(lrbs.experiments.lr_finder, "range_test", real)
    at.number_input(key="rt_iters").set_value(60).run()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    assert not at.error
    assert at.session_state["rt_rounds"][0][0].status in ("finished", "diverged")


def test_a_run_in_another_page_blocks_a_second_one_without_losing_it():
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="rt_iters").set_value(20000).run()
    at.button(key="rt_job_run").click().run()
    job = at.session_state["rt_job"]
    at.switch_page("pages/batch.py").run()
    at.button(key="bs_job_run").click().run()
    assert any("already going" in w.value for w in at.warning)
    assert "bs_job" not in at.session_state
    job.stop()
    assert job.join(60)
