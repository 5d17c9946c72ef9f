import json

import pytest
from test_pages import charts, open_page
from test_pages_lr import wait

from lrbs.cli import main


def test_schedule_page_defaults_and_run():
    at = open_page("pages/bs_schedule.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="bq_epochs").set_value(6)
    at.text_input(key="bq_milestones").set_value("2, 4").run()
    assert not at.error
    at.button(key="bq_job_run").click().run()
    wait(at, "bq_job")
    table = at.dataframe[-1].value
    assert list(table.regime) == ["decay", "grow", "hybrid", "plateau", "constant"]
    grow = table.set_index("regime").loc["grow"]
    assert grow.updates < table.set_index("regime").loc["decay"].updates
    assert any("Verdict" in m.value for m in at.markdown)
    assert len(charts(at)) == 5  # val, train, lr, batch, noise scale
    # digits: N/10 = 143 < 128 x 5: the plateau regime cannot grow, and the page says so
    assert any("cannot grow the batch" in w.value for w in at.warning)
    assert any("cannot grow the batch" in c.value for c in at.caption)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("bq_factor", 1.0, "factor must be above 1"),
        ("bq_milestones", "10, 5", "increasing order"),
        ("bq_milestones", "5, 99", "outside the run"),
        ("bq_patience", 0, "patience must be at least 1"),
        ("bq_epochs", 0, "epochs must be at least 1"),
    ],
)
def test_schedule_bad_input(key, value, message):
    at = open_page("pages/bs_schedule.py")
    widget = at.text_input(key=key) if key == "bq_milestones" else at.number_input(key=key)
    widget.set_value(value).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)


def test_a_cli_run_is_offered_by_the_page(tmp_path, capsys):
    """`python -m lrbs bs-schedule ... --db F`, then the page on history file F with the same
    settings offers that run instead of training again, and loads it."""
    db = tmp_path / "runs.db"
    args = ["bs-schedule", "--dataset", "digits", "--epochs", "3", "--milestones", "1", "2"]
    assert main([*args, "--regimes", "decay", "grow", "--db", str(db), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    at = open_page("pages/bs_schedule.py")
    at.text_input(key="s_db_path").set_value(str(db))
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.multiselect(key="bq_regimes").set_value(["decay", "grow"])
    at.number_input(key="bq_epochs").set_value(3)
    at.text_input(key="bq_milestones").set_value("1, 2").run()
    assert not at.exception and not at.error
    offers = [i.value for i in at.info if "These settings already ran" in i.value]
    assert offers and f"run #{figures['run_id']}" in offers[0]
    at.button(key="bq_job_load").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table.regime) == ["decay", "grow"]
    assert table.updates.tolist() == [r["updates"] for r in figures["regimes"]]
    assert any(figures["verdict"] in m.value for m in at.markdown)
    assert len(charts(at)) == 5  # drawn from the stored points


def test_repeats_judge_the_claim_against_the_noise():
    at = open_page("pages/bs_schedule.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.multiselect(key="bq_regimes").set_value(["decay", "grow"])
    at.number_input(key="bq_epochs").set_value(2)
    at.text_input(key="bq_milestones").set_value("1")
    at.number_input(key="bq_repeats").set_value(2).run()
    at.button(key="bq_job_run").click().run()
    wait(at, "bq_job")
    table = at.dataframe[-1].value
    assert list(table.repeats) == [2, 2] and "val_loss_std" in table
    verdict = next(m.value for m in at.markdown if "Verdict" in m.value)
    assert "±" in verdict and "2 seeds" in verdict
    assert any("Times are not compared" in c.value for c in at.caption)
    assert "band" in charts(at)[0].proto.spec
