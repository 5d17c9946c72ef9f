"""The Recommend page through AppTest: the card fills in, the evidence is one click away, and
"use this" hands the rate and the batch to the other pages."""

import pytest
from support import one_torch_thread
from test_pages import charts, open_page
from test_pages_lr import wait

one_thread = pytest.fixture(autouse=True)(one_torch_thread)


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


class FakeJob:
    """A job the page attaches to, frozen at a chosen moment of a real pipeline's rows."""

    run_id = None

    def __init__(self, rows: dict, done: bool, progress: float, result=None) -> None:
        self.rows, self.done, self.progress, self.result = rows, done, progress, result

    def snapshot(self):
        from lrbs.runs.live import Snapshot

        return Snapshot(self.rows, self.progress, self.done, self.result)

    def queue_position(self):
        return None

    def stop(self) -> None:
        pass


def pipeline_until(step: str):
    """A tiny real pipeline on the page's data, stopped as `step` ends."""
    import threading

    from test_recommend import SETUP, TINY, StopAt

    from lrbs.experiments import recommend

    stop = threading.Event()
    cfg = recommend.Config(rates=3, seeds=2, sweep_steps=20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(recommend.EFFORT, "quick", TINY)
        return recommend.run(SETUP, cfg, StopAt(stop, "steps", step), stop)


def texts(at) -> str:
    parts = [*at.markdown, *at.caption, *at.warning, *at.info]
    return " ".join(p.value for p in parts)


def test_each_steps_evidence_shows_while_the_pipeline_runs():
    from lrbs.experiments import recommend

    r = pipeline_until("sweep")
    at = recommend_page()
    at.session_state["rec_job"] = FakeJob(dict(r.rows), False, recommend.SPANS["probe"][0])
    at.run()
    assert not at.exception, at.exception
    bar = at.get("progress")[0].proto
    assert bar.text == "Pipeline: 2 of 6 steps done; now step 3, largest batch that fits (0%)"
    assert bar.value == round(100 * 2 / 6)
    values = {m.label: m.value for m in at.metric}
    assert float(values["Learning rate"]) == pytest.approx(r.card()["lr"], rel=1e-2)
    assert len(charts(at)) >= 2  # the range test and the sweep, as soon as each has ended
    assert "at batch 64, as swept" in texts(at)
    assert "stopped" not in texts(at).lower()


def test_after_a_stop_the_page_says_stopped_and_keeps_what_finished():
    r = pipeline_until("range")
    assert r.status == "stopped"
    at = recommend_page()
    at.session_state["rec_job"] = FakeJob(dict(r.rows), True, 1.0, r)
    at.run()
    assert not at.exception, at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "Stopped after 1 of 6 steps: finished range test" in warning
    assert {m.value for m in at.metric} == {"stopped"}  # not "…": nothing more will come
    assert "The range test's suggestions" in texts(at)
    assert len(charts(at)) >= 1  # the range test that finished
