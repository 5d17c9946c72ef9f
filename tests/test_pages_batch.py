"""The batch-size page through AppTest: the sweep, the scaling-rule check, the memory probe."""

import json

import pytest
from test_pages import charts, open_page
from test_pages_lr import wait

from lrbs.cli import main


def batch_page(mode=None):
    at = open_page("pages/batch.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    if mode:
        at.radio(key="bs_mode").set_value(mode).run()
    return at


def test_sweep_defaults_plan_and_run():
    at = batch_page()
    plan = next(c.value for c in at.caption if c.value.startswith("Plan"))
    assert "B=1438" in plan and "g = " in plan  # 'full' = the whole training set
    at.radio(key="bs_budget_kind").set_value("updates").run()
    at.number_input(key="bs_budget").set_value(20.0).run()
    at.button(key="bs_job_run").click().run()
    wait(at, "bs_job")
    table = at.dataframe[-1].value
    assert list(table.batch) == [64, 128, 256, 1438]
    assert set(table.updates) == {20}
    assert {"gap", "noise_scale", "samples_per_s", "val_acc"} <= set(table.columns)
    assert len(charts(at)) == 2  # training and validation loss
    assert at.success


def test_repeats_are_drawn_as_bands():
    at = batch_page()
    at.text_input(key="bs_grid").set_value("32, 128")
    at.radio(key="bs_budget_kind").set_value("updates")
    at.number_input(key="bs_repeats").set_value(3)
    at.number_input(key="bs_budget").set_value(15.0).run()
    at.button(key="bs_job_run").click().run()
    wait(at, "bs_job")
    table = at.dataframe[-1].value
    assert list(table.batch) == [32, 128] and set(table.repeats) == {3}
    assert "val_loss_std" in table
    specs = [c.proto.spec for c in charts(at)]
    assert any("min-max band" in s for s in specs) and any('"area"' in s for s in specs)


def test_sweep_with_linear_scaling_and_a_changed_list():
    at = batch_page()
    at.text_input(key="bs_grid").set_value("32, 128").run()
    at.selectbox(key="bs_rule").set_value("linear").run()
    plan = next(c.value for c in at.caption if c.value.startswith("Plan"))
    assert "B=32: lr 0.1" in plan and "B=128: lr 0.4" in plan


@pytest.mark.parametrize(
    "grid, message",
    [
        ("0", "at least 1"),
        ("-4", "at least 1"),
        ("64, 64", "repeat"),
        ("99999", "larger than the training set"),
        ("", "empty"),
        ("64, lots", "not a number"),
    ],
)
def test_sweep_bad_batch_lists(grid, message):
    at = batch_page()
    at.text_input(key="bs_grid").set_value(grid).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert at.button(key="bs_job_run").disabled


def test_sweep_zero_budget():
    at = batch_page()
    at.number_input(key="bs_budget").set_value(0.0).run()
    assert any("budget must be greater than 0" in e.value for e in at.error)


def test_scaling_check_reports_agreement():
    at = batch_page("Scaling-rule check")
    at.number_input(key="sc_epochs").set_value(1.0)
    at.number_input(key="sc_k").set_value(2)
    at.number_input(key="sc_repeats").set_value(2).run()
    at.button(key="sc_job_run").click().run()
    wait(at, "sc_job")
    agree = at.dataframe[-1].value
    assert set(agree.rule) == {"linear", "fixed"} and agree.seed_noise.notna().all()
    verdict = next(m.value for m in at.markdown if "Under the linear rule" in m.value)
    assert "Over 2 seeds" in verdict
    assert len(charts(at)) == 2 and "2 seeds" in charts(at)[0].proto.spec


def test_probe_and_add_to_sweep():
    at = batch_page("Largest batch that fits")
    at.number_input(key="mp_cap").set_value(1).run()
    at.button(key="mp_job_run").click().run()
    wait(at, "mp_job")
    result = at.session_state["mp_job"].snapshot().result
    assert 1 <= result.largest <= 1438
    assert result.memory_limited and result.safe & (result.safe - 1) == 0  # a power of two
    assert "power of two" in at.success[0].value
    tried = at.dataframe[-1].value
    assert len(tried) == len(result.tried()) and set(tried.columns) == {"batch", "fits"}
    assert at.get("download_button")
    at.button(key="mp_add").click().run()
    assert str(result.safe) in at.session_state["bs_grid"]
    assert at.session_state["bs_mode"] == "Sweep at equal budgets"


def test_probe_not_limited_by_memory_does_not_call_the_set_size_a_power_of_two():
    at = batch_page("Largest batch that fits")
    at.number_input(key="mp_cap").set_value(100_000).run()
    at.button(key="mp_job_run").click().run()
    wait(at, "mp_job")
    result = at.session_state["mp_job"].snapshot().result
    assert (result.largest, result.safe, result.memory_limited) == (1438, 1438, False)
    text = at.success[0].value
    assert "1,438" in text and "not by memory" in text and "power of two" not in text


def test_use_this_from_other_pages_seeds_the_sweep():
    at = open_page()
    at.session_state["chosen_lr"] = 0.0123
    at.session_state["chosen_batch"] = 48
    at.switch_page("pages/batch.py").run()
    assert not at.exception
    assert at.number_input(key="bs_lr").value == pytest.approx(0.0123)
    assert "48" in at.text_input(key="bs_grid").value.split(", ")


def test_a_cli_sweep_is_offered_by_the_page(capsys, tmp_path):
    db = str(tmp_path / "cli.db")
    args = ["bs-sweep", "--dataset", "digits", "--batch-sizes", "32", "full", "--steps", "10"]
    assert main([*args, "--db", db, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["batch"] for r in figures["runs"]] == [32, 1438]
    at = open_page()
    at.session_state["s_db_path"] = db
    at.switch_page("pages/batch.py").run()
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.text_input(key="bs_grid").set_value("32, full")
    at.radio(key="bs_budget_kind").set_value("updates").run()
    at.number_input(key="bs_budget").set_value(10.0).run()
    offer = [i.value for i in at.info if "These settings already ran" in i.value]
    assert offer and f"run #{figures['run_id']}" in offer[0]
    at.button(key="bs_job_load").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert list(table.batch) == [32, 1438]
    assert table.val_loss.tolist() == pytest.approx([r["val_loss"] for r in figures["runs"]])
    assert len(charts(at)) == 2 and at.success
    assert not any("already ran" in i.value for i in at.info)  # it is the run on show


def test_a_chosen_rate_belongs_to_its_chosen_batch_and_is_rescaled():
    """The reported bug: "Use lr 3.14 and batch 128" made 3.14 the rate of batch 64."""
    at = batch_page()
    at.session_state["chosen_lr"], at.session_state["chosen_batch"] = 3.14, 128
    at.run()
    assert at.number_input(key="bs_base").value == 128
    at.text_input(key="bs_grid").set_value("64, 128, 256").run()
    at.selectbox(key="bs_rule").set_value("linear").run()
    plan = next(c.value for c in at.caption if c.value.startswith("Plan"))
    assert "B=64: lr 1.57" in plan and "B=128: lr 3.14" in plan and "B=256: lr 6.28" in plan
    assert "belongs to batch 128" in plan
    at.selectbox(key="bs_rule").set_value("sqrt").run()
    plan = next(c.value for c in at.caption if c.value.startswith("Plan"))
    assert "B=64: lr 2.22" in plan and "B=128: lr 3.14" in plan  # 3.14 / sqrt(2)
    at.selectbox(key="bs_rule").set_value("fixed").run()
    plan = next(c.value for c in at.caption if c.value.startswith("Plan"))
    assert "B=64: lr 3.14" in plan and "used as given by every batch (not rescaled)" in plan
