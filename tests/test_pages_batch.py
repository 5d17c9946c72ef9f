"""The batch-size page through AppTest: the sweep, the scaling-rule check, the memory probe."""

import pytest
from test_pages import charts, open_page
from test_pages_lr import wait


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
    at.number_input(key="sc_k").set_value(2).run()
    at.button(key="sc_job_run").click().run()
    wait(at, "sc_job")
    agree = at.dataframe[-1].value
    assert set(agree.rule) == {"linear", "fixed"}
    assert any("Under the linear rule" in m.value for m in at.markdown)
    assert len(charts(at)) == 2


def test_probe_and_add_to_sweep():
    at = batch_page("Largest batch that fits")
    at.number_input(key="mp_cap").set_value(1).run()
    at.button(key="mp_job_run").click().run()
    wait(at, "mp_job")
    result = at.session_state["mp_job"].snapshot().result
    assert 1 <= result.largest <= 1438
    at.button(key="mp_add").click().run()
    assert str(result.safe) in at.session_state["bs_grid"]
    assert at.session_state["bs_mode"] == "Sweep at equal budgets"
