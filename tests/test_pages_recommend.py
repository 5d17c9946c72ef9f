"""The Recommend page through AppTest: the card fills in, the evidence is one click away, and
"use this" hands the rate and the batch to the other pages."""

import pytest
import torch
from test_pages import charts, open_page
from test_pages_lr import wait


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def recommend_page():
    """The page on tiny data and model, its sweep made small with the budget's overrides
    (the job runs in a worker process, so only the settings can make it quick)."""
    at = open_page("pages/recommend.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.text_input(key="s_hidden").set_value("32").run()
    at.number_input(key="rec_rates").set_value(3).run()
    at.number_input(key="rec_seeds").set_value(2).run()
    at.number_input(key="rec_steps").set_value(20).run()
    return at


def test_recommend_is_the_first_concept_after_home():
    from pages.common.nav import PAGES

    assert PAGES[0].path == "pages/recommend.py"


def test_the_card_the_evidence_and_use_this():
    at = recommend_page()
    at.number_input(key="rec_epochs").set_value(5.0).run()  # 113 updates: carried from 20
    assert not at.metric or at.metric[0].value == "…"
    at.button(key="rec_job_run").click().run()
    wait(at, "rec_job")
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "the planned 113" in captions  # carried by the law, or kept where it is flat
    values = {m.label: m.value for m in at.metric}
    assert float(values["Learning rate"]) > 0 and int(values["Batch size"]) >= 1
    assert values["Confidence"] in ("high", "medium", "low")
    assert any("torch.optim.SGD" in c.value for c in at.code)
    assert len(charts(at)) >= 5  # range test, sweep, the law, time to target, throughput
    assert len(at.get("download_button")) >= 4
    at.button(key="rec_use").click().run()
    assert at.session_state["chosen_lr"] == pytest.approx(float(values["Learning rate"]), rel=1e-2)
    assert at.session_state["chosen_batch"] == int(values["Batch size"])


def test_a_bad_base_batch_is_one_message():
    at = recommend_page()
    at.number_input(key="rec_batch").set_value(100000).run()
    assert not at.exception
    assert any("larger than the training set" in e.value for e in at.error)
    assert at.button(key="rec_job_run").disabled
