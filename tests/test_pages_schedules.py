"""The LR schedules page through AppTest: defaults train, bounds from a range test."""

import json

from test_pages import charts, open_page
from test_pages_lr import wait

from lrbs.cli import main


def test_schedules_page_previews_trains_and_tabulates():
    at = open_page("pages/schedules.py")
    assert not at.error
    assert len(charts(at)) == 1  # the planned rates, before any training
    assert any("Not drawn: plateau, hd" in c.value for c in at.caption)
    at.button(key="ls_job_run").click().run()
    wait(at, "ls_job")
    table = at.dataframe[-1].value
    assert list(table.schedule) == list(at.session_state["ls_schedules"])
    assert (table.status == "finished").all()
    assert table.set_index("schedule").loc["onecycle", "lr_max"] > 0.9
    assert any("Lowest final validation loss" in m.value for m in at.markdown)
    assert len(charts(at)) == 4  # plan, validation loss, training loss, lr used


def test_bounds_come_from_the_range_test_of_this_tab():
    at = open_page("pages/lr.py")
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    found = {s.name: s.lr for s in at.session_state["rt_rounds"][-1][0].suggestions}
    at.switch_page("pages/schedules.py").run()
    assert any("range test in this tab" in c.value for c in at.caption)
    at.button(key="ls_use_rt").click().run()
    assert not at.exception
    assert at.number_input(key="ls_max").value == found["max_usable"]
    assert at.number_input(key="ls_base").value <= found["max_usable"] / 4
    assert any("From the range test in this tab" in s.value for s in at.success)


def test_quick_range_test_fills_the_bounds():
    at = open_page("pages/schedules.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    before = at.number_input(key="ls_max").value
    at.button(key="ls_quick_rt").click().run()
    for _, job in at.session_state["ls_quick_rt_job"]["jobs"]:
        assert job.join(120), "the quick range test did not finish"
    at.run()
    assert not at.exception and not at.error
    assert any("From a quick range test" in s.value for s in at.success)
    lo, hi = at.number_input(key="ls_base").value, at.number_input(key="ls_max").value
    assert 0 < lo < hi and hi != before


def test_a_cli_run_is_offered_by_the_page(tmp_path, capsys):
    """`python -m lrbs schedules ... --db F`, then the page with the same settings on history
    file F offers that run and loads it: its table, verdict, curves and planned rates."""
    db = tmp_path / "runs.db"
    args = ["schedules", "--dataset", "digits", "--epochs", "2", "--schedules", "constant", "clr"]
    assert main([*args, "--db", str(db), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    at = open_page("pages/schedules.py")
    at.text_input(key="s_db_path").set_value(str(db))
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.multiselect(key="ls_schedules").set_value(["constant", "clr"])
    at.number_input(key="ls_epochs").set_value(2).run()
    assert not at.exception and not at.error
    offers = [i.value for i in at.info if "These settings already ran" in i.value]
    assert offers and f"run #{figures['run_id']}" in offers[0]
    at.button(key="ls_job_load").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert table.to_dict(orient="records") == figures["schedules"]
    assert any("Lowest final validation loss" in m.value for m in at.markdown)
    assert len(charts(at)) == 4  # plan, validation loss, training loss, lr used


def test_repeats_show_the_spread_and_bands():
    at = open_page("pages/schedules.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.multiselect(key="ls_schedules").set_value(["constant", "cosine"])
    at.number_input(key="ls_epochs").set_value(1)
    at.number_input(key="ls_repeats").set_value(2).run()
    at.button(key="ls_job_run").click().run()
    wait(at, "ls_job")
    table = at.dataframe[-1].value
    assert list(table.repeats) == [2, 2] and table.val_loss_std.notna().all()
    specs = [c.proto.spec for c in charts(at)]
    assert "band" in specs[1] and "seed 0" in specs[3]  # val loss; the lr chart's title
    verdict = next(m.value for m in at.markdown if "Lowest final" in m.value)
    assert "2 seeds" in verdict and "noise" in verdict
