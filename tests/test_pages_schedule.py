import pytest
from test_pages import charts, open_page
from test_pages_lr import wait


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
