"""The learning-rate page through AppTest: the range test, a zoom-in round driven by typed
bounds, the sweep, and bad input."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from test_pages import charts, open_page

from lrbs.cli import main
from lrbs.runs.store import RunStore


def wait(at, key):
    job = at.session_state[key]
    assert job.join(120), "the run did not finish"
    at.run()
    assert not at.exception, at.exception
    return job


def lr_page():
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    return at


def test_range_test_runs_suggests_and_zooms():
    at = lr_page()
    assert at.button(key="rt_job_run")
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    suggestions = at.dataframe[0].value
    assert list(suggestions.suggestion) == [
        "Steepest descent",
        "Minimum ÷ 10",
        "Valley",
        "Maximum usable",
    ]
    assert (suggestions["learning rate"] > 0).all()
    assert len(charts(at)) == 1
    rounds = at.session_state["rt_rounds"]
    assert len(rounds) == 1 and rounds[0][0].status in ("diverged", "finished")

    at.number_input(key="rt_zoom_lo").set_value(0.01)
    at.number_input(key="rt_zoom_hi").set_value(1.0)
    at.button(key="rt_zoom").click().run()
    wait(at, "rt_job")
    rounds = at.session_state["rt_rounds"]
    assert len(rounds) == 2
    second = rounds[1][0]
    assert second.config.lr_min == 0.01 and second.config.lr_max == 1.0
    assert second.lrs[0] == pytest.approx(0.01)
    assert any("Round 2 (zoom 1)" in c.value for c in at.caption)
    # the zoomed round on its own rate axis, the first one beside it on its own
    main, first = (json.loads(c.proto.spec) for c in charts(at)[:2])
    x_main, x_first = (spec["layer"][0]["encoding"]["x"] for spec in (main, first))
    assert x_main["scale"]["domain"][0] == pytest.approx(0.01, rel=0.01)
    assert x_main["scale"]["domain"][1] == pytest.approx(1.0, rel=0.01)
    assert x_first["scale"]["domain"][0] == pytest.approx(1e-7, rel=0.01)
    assert x_main["axis"]["format"] == "~e"
    assert any("Round 1 (the whole range)" in c.value for c in at.caption)


def test_use_this_carries_the_rate_to_the_sweep():
    at = lr_page()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    at.selectbox(key="rt_pick").set_value("Valley")
    at.button(key="rt_use").click().run()
    lr = at.session_state["chosen_lr"]
    assert lr > 0
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    assert any(f"{lr:.3g}" in c.value for c in at.caption)
    at.button(key="sw_add_chosen").click().run()
    assert f"{lr:g}" in at.text_input(key="sw_grid").value


def test_same_settings_are_not_trained_twice():
    at = lr_page()
    at.button(key="rt_job_run").click().run()
    first = wait(at, "rt_job")
    at.button(key="rt_job_run").click().run()
    assert at.session_state["rt_job"] is first  # no new job: the cached result is shown
    assert len(at.session_state["rt_rounds"]) == 1


def test_spread_over_seeds_shows_a_table():
    at = lr_page()
    at.number_input(key="rt_seeds").set_value(3).run()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    assert len(at.session_state["rt_rounds"][0]) == 3
    spread = at.dataframe[1].value
    assert set(spread.seeds) == {3}


def test_sweep_runs_and_refines():
    at = lr_page()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at.radio(key="sw_budget_kind").set_value("steps").run()
    at.number_input(key="sw_budget").set_value(40.0).run()
    at.button(key="sw_job_run").click().run()
    wait(at, "sw_job")
    table = at.dataframe[0].value
    assert list(table.lr) == [0.001, 0.01, 0.1, 1.0]
    assert set(table.steps) == {40}
    assert table.best.sum() == 1
    best = float(table.loc[table.best, "lr"].iloc[0])
    at.button(key="sw_refine").click().run()
    grid = [float(v) for v in at.text_input(key="sw_grid").value.split(",")]
    assert min(grid) < best < max(grid) and len(grid) == 5
    at.button(key="sw_decade").click().run()
    assert len(at.text_input(key="sw_grid").value.split(",")) == 6
    assert isinstance(table, pd.DataFrame)


def test_sweep_repeats_show_the_spread_both_losses_and_a_verdict_on_the_noise():
    at = lr_page()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at.text_input(key="sw_grid").set_value("0.01, 0.1")
    at.radio(key="sw_budget_kind").set_value("steps").run()
    at.number_input(key="sw_budget").set_value(20.0)
    at.number_input(key="sw_repeats").set_value(2).run()
    at.button(key="sw_job_run").click().run()
    wait(at, "sw_job")
    table = at.dataframe[0].value
    assert list(table.repeats) == [2, 2] and table.val_loss_std.notna().all()
    specs = [c.proto.spec for c in charts(at)]
    assert len(specs) == 2 and "Validation loss" in specs[0] and "band" in specs[0]
    verdict = next(m.value for m in at.markdown if m.value.startswith("Best: lr"))
    assert "±" in verdict and "noise" in verdict


def test_stacked_sweep_gives_the_sequential_table():
    at = lr_page()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    assert at.checkbox(key="sw_stacked").disabled  # a time budget: not offered
    at.radio(key="sw_budget_kind").set_value("epochs").run()
    at.number_input(key="sw_budget").set_value(1.0).run()
    tables = {}
    for stacked in (False, True):
        at.checkbox(key="sw_stacked").set_value(stacked).run()
        at.button(key="sw_job_run").click().run()
        wait(at, "sw_job")
        tables[stacked] = at.dataframe[0].value
    a, b = tables[False], tables[True]
    assert list(a.lr) == list(b.lr) == [0.001, 0.01, 0.1, 1.0]
    assert np.allclose(a.val_loss, b.val_loss, rtol=1e-4)
    assert list(a.status) == list(b.status)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("rt_min", 10.0, "must be below"),
        ("rt_max", 0.0, "maximum learning rate must be greater than 0"),
        ("rt_iters", 0, "iterations must be at least 1"),
        ("rt_batch", 5000, "larger than the training set"),
    ],
)
def test_range_test_bad_input(key, value, message):
    at = lr_page()
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert at.button(key="rt_job_run").disabled


@pytest.mark.parametrize(
    "grid, message",
    [
        ("", "grid is empty"),
        ("0.1, 0.1", "repeats"),
        ("0.1, fast", "not a number"),
        ("-1", "greater than 0"),
    ],
)
def test_sweep_bad_grid(grid, message):
    at = lr_page()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at.text_input(key="sw_grid").set_value(grid).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)


def test_zoom_with_bad_bounds_is_a_message():
    at = lr_page()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    at.number_input(key="rt_zoom_lo").set_value(1.0)
    at.number_input(key="rt_zoom_hi").set_value(0.1)
    at.button(key="rt_zoom").click().run()
    assert not at.exception
    assert any("must be below" in e.value for e in at.error)


def test_a_cli_range_test_is_offered_and_a_page_run_is_listed(tmp_path, capsys):
    """One run history for the CLI and the page: a `python -m lrbs lr-find` run is offered on
    the page, and the page's run is listed by `history list --kind lr-find`."""
    db = str(tmp_path / "h.db")
    assert main(["lr-find", "--dataset", "digits", "--db", db, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    at = open_page("pages/lr.py")
    at.session_state["s_db_path"] = db
    at.selectbox(key="s_dataset").set_value("digits").run()
    offers = [i.value for i in at.info if "These settings already ran" in i.value]
    assert len(offers) == 1 and f"run #{cli['run_id']}" in offers[0]
    at.button(key="rt_job_load").click().run()
    assert not at.exception
    loaded = at.dataframe[0].value.set_index("suggestion")["learning rate"]
    titles = {s.name: s.title for s in at.session_state["rt_rounds"][-1][0].suggestions}
    for name, lr in cli["suggestions"].items():
        assert loaded[titles[name]] == pytest.approx(lr, rel=1e-12)

    at.number_input(key="rt_iters").set_value(60).run()
    at.button(key="rt_job_run").click().run()
    job = wait(at, "rt_job")
    assert main(["history", "list", "--kind", "lr-find", "--db", db, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["id"] for r in runs] == [job.run_id, cli["run_id"]]
    assert {r["kind"] for r in runs} == {"lr-find"} and runs[0]["status"] != "running"
    with RunStore(db) as store:
        info = store.run(job.run_id)
    assert info["config"]["config"]["iterations"] == 60
    shown = at.session_state["rt_shown"].suggestions()
    assert info["results"]["suggestions"] == pytest.approx(shown)


def test_the_range_test_streams_while_it_trains():
    at = lr_page()
    at.number_input(key="rt_iters").set_value(20000).run()
    at.number_input(key="rt_stop").set_value(0.0).run()  # never stops early by itself
    at.button(key="rt_job_run").click().run()
    job = at.session_state["rt_job"]
    try:
        deadline = time.time() + 60
        while len(job.snapshot().rows.get("points", [])) < 50 and time.time() < deadline:
            time.sleep(0.1)
        at.run()
        assert not job.done
        progress = at.get("progress")
        assert progress, "no progress bar while the test trains"
        n = int(progress[0].proto.text.split(": ")[1].split()[0])
        assert n >= 50 and progress[0].value < 100 and 0 < job.snapshot().progress < 1
        assert len(charts(at)) == 1  # the curve so far
    finally:
        job.stop()
        assert job.join(60)
    at.run()
    assert at.session_state["rt_rounds"][0][0].status == "stopped"
