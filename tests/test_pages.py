"""The pages through Streamlit's AppTest: defaults, changed widgets, bad input."""

import pytest
from streamlit.testing.v1 import AppTest
from support import ROOT

APP = str(ROOT / "app.py")


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def charts(at):
    return at.get("vega_lite_chart")


def test_home_lists_concepts_datasets_and_the_shared_sidebar():
    at = open_page()
    assert "learning-rate & batch-size lab" in at.title[0].value
    table = at.dataframe[0].value
    assert {"MNIST-1D", "Digits (8x8)"} <= set(table.dataset)
    assert table.set_index("dataset").loc["MNIST-1D", "here"] == "yes"
    assert at.selectbox(key="s_dataset").value == "mnist1d"
    assert any("4,000 training" in m.value for m in at.markdown)
    assert len(charts(at)) == 1  # samples per class


def test_home_follows_a_dataset_change():
    at = open_page()
    at.selectbox(key="s_dataset").set_value("digits").run()
    assert not at.exception
    assert any("1,438 training" in m.value for m in at.markdown)


def test_shared_settings_survive_a_page_change():
    at = open_page()
    at.number_input(key="s_seed").set_value(7).run()
    at.switch_page("pages/gd1d.py").run()
    at.switch_page("pages/home.py").run()
    assert at.number_input(key="s_seed").value == 7


def test_csv_without_numeric_columns_is_an_error_in_the_sidebar(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text("a,b,y\nq,w,1\nr,t,2\n")
    at = open_page()
    at.session_state["csv_path"] = str(path)
    at.selectbox(key="s_dataset").set_value("csv").run()
    assert not at.exception
    at.selectbox(key="s_target").set_value("y").run()
    assert any("no numeric feature columns" in e.value for e in at.sidebar.error)


def test_bad_hidden_layers_text():
    at = open_page()
    at.text_input(key="s_hidden").set_value("256, lots").run()
    assert not at.exception
    assert any("whole numbers" in e.value for e in at.sidebar.error)


def test_gd_page_defaults():
    at = open_page("pages/gd1d.py")
    assert "lr < 2/c = 1" in at.info[0].value
    # stability line + one path per lr + loss per step
    assert len(charts(at)) == 1 + 3 + 1
    verdicts = " ".join(m.value for m in at.markdown)
    assert "converging" in verdicts and "diverged" in verdicts
    assert at.get("download_button")


@pytest.mark.parametrize("loss", ["two-minima", "steep-flat"])
def test_gd_page_other_losses(loss):
    at = open_page("pages/gd1d.py")
    at.selectbox(key="gd_loss").set_value(loss).run()
    assert not at.exception
    assert "locally" in at.info[0].value
    assert len(charts(at)) == 5


def test_gd_page_fewer_rates_and_momentum():
    at = open_page("pages/gd1d.py")
    at.number_input(key="gd_lr3").set_value(None).run()
    at.slider(key="gd_momentum").set_value(0.5).run()
    assert not at.exception
    assert len(charts(at)) == 1 + 2 + 1
    assert "(2 + 2β)/c = 1.5" in at.info[0].value


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("gd_lr1", -0.5, "learning rate must be greater than 0"),
        ("gd_lr2", 0.0, "learning rate must be greater than 0"),
        ("gd_lr2", 0.1, "repeat"),
    ],
)
def test_gd_page_bad_input_is_a_message(key, value, message):
    at = open_page("pages/gd1d.py")
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert message in at.error[0].value
