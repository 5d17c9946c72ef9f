import pytest
from test_pages import charts, open_page
from test_pages_lr import wait

from lrbs.experiments import noise_scale as ns


def map_page():
    at = open_page("pages/lr_batch_map.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    return at


def test_the_map_runs_and_shows_the_ridge_alpha_and_b_crit():
    at = map_page()
    for key, value in {
        "map_bmin": 32,
        "map_bmax": 128,
        "map_rates": 3,
        "map_steps": 20,
        "map_seeds": 1,
        "map_noise_steps": 40,
    }.items():
        at.number_input(key=key).set_value(value).run()
    assert any("9 cells" in c.value for c in at.caption)
    at.button(key="map_job_run").click().run()
    wait(at, "map_job")
    labels = [x.label for x in at.metric]
    assert "Fitted α (lr_opt ∝ B^α)" in labels and "B_simple (noise meter)" in labels
    # the map (once: the finished page does not draw the live one too), the ridge against
    # the rules, steps to target
    assert len(charts(at)) == 3
    notes = [c.value for c in at.caption if "B_simple = tr(Σ)/|G|²" in c.value]
    assert notes and "training steps at batch 32, lr 0.1" in notes[0]
    said = " ".join(c.value for c in at.caption)
    assert said.count(ns.WHY_THEY_DIFFER) == 1  # why the pages differ, said once
    assert at.dataframe[-1].value.batch.tolist() == [32, 64, 128]
    assert any("one seed" in w.value for w in at.warning)  # said, not hidden


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("map_rates", 1, "at least three"),
        ("map_bmin", 4096, "larger than the training set"),
        ("map_bmax", 8, "below the smallest"),
    ],
)
def test_map_bad_input(key, value, message):
    at = map_page()
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert at.button(key="map_job_run").disabled
