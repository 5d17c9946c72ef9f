"""Chart details a user reads: suggestion labels kept apart, one tick style on log axes."""

import json

import pandas as pd

from lrbs import charts
from lrbs.charts import apart


def test_close_suggestion_labels_are_joined_and_far_ones_kept():
    labels = pd.DataFrame(
        {"lr": [0.01, 0.0105, 1.0], "label": ["Steepest 0.01", "Valley 0.011", "Max 1"]}
    )
    # the axis spans 1e-7..10 (8 decades): 0.01 and 0.0105 are 0.02 decades apart (< 4 %)
    out = apart(labels, 1e-7, 10.0)
    assert out.label.tolist() == ["Steepest 0.01 · Valley 0.011", "Max 1"]
    # on a zoomed axis 0.005..0.02 (0.6 decades) the same two are 3.5 % apart: still joined;
    # 0.01 and 0.013 (19 %) are not
    far = pd.DataFrame({"lr": [0.01, 0.013], "label": ["a", "b"]})
    assert apart(far, 0.005, 0.02).label.tolist() == ["a", "b"]


def test_every_log_axis_of_rates_has_one_tick_format():
    events = pd.DataFrame(
        {"run_id": ["a", "a"], "step": [0, 1], "lr": [1e-7, 1e-6], "loss": [1.0, 0.5]}
    )
    spec = charts.runs_chart(events, x="step", y="lr", log_y=True).to_dict()
    assert spec["layer"][0]["encoding"]["y"]["axis"]["format"] == charts.LOG_FORMAT == "~e"
    plan = pd.DataFrame({"schedule": ["s"] * 2, "step": [0, 1], "lr": [0.1, 1e-4], "epoch": [0, 1]})
    assert '"format": "~e"' in json.dumps(charts.lr_plan_chart(plan).to_dict())


def _domain(spec):
    return spec["layer"][0]["encoding"]["y"]["scale"]["domain"]


def test_curves_y_axis_holds_every_value_of_runs_that_did_not_diverge():
    """The reported bug: validation curves clipped flat at the top edge. The first run starts
    at 1.0; the second (a large batch) starts at 2.3: the old window reached only 1.0."""
    events = pd.DataFrame(
        {
            "run_id": ["B=64"] * 3 + ["B=1438"] * 3,
            "step": [1, 2, 3] * 2,
            "val_loss": [1.0, 0.5, 0.4, 2.3, 2.0, 1.8],
        }
    )
    spec = charts.runs_chart(events, x="step", y="val_loss").to_dict()
    lo, hi = _domain(spec)
    assert lo <= 0.4 and hi >= 2.3
    assert spec["title"] == ""  # nothing capped, nothing said


def test_only_a_diverged_runs_spike_is_capped_and_the_cap_is_said():
    events = pd.DataFrame(
        {
            "run_id": ["ok"] * 3 + ["blew"] * 3,
            "step": [1, 2, 3] * 2,
            "val_loss": [1.2, 0.8, 0.6, 1.1, 40.0, 1e4],
        }
    )
    spec = charts.runs_chart(events, x="step", y="val_loss", diverged=["blew"]).to_dict()
    lo, hi = _domain(spec)
    assert hi >= 1.2 and hi < 40  # every value of "ok", not the blow-up
    cap = 1.2 + charts.SPIKE_ROOM * (1.2 - 0.6)
    assert f"y capped at {cap:.3g}" in spec["title"]["subtitle"]
    # without the spike's run marked diverged, nothing is clipped
    assert _domain(charts.runs_chart(events, x="step", y="val_loss").to_dict())[1] >= 1e4


def test_no_importances_chart_is_built_from_nothing_and_labels_get_their_own_band():
    assert charts.importance_chart(None) is None
    assert charts.importance_chart({}) is None
    assert charts.importance_chart({"lr": float("nan"), "batch_size": float("nan")}) is None
    assert charts.importance_chart({"lr": 0.0, "batch_size": 0.0}) is None
    spec = charts.importance_chart({"lr": 0.8, "batch_size": 0.2}).to_dict()
    assert spec["height"] == {"step": 36}  # a band per parameter: the labels cannot overlap
    assert spec["encoding"]["y"]["axis"]["labelOverlap"] is False


def test_map_legends_keep_their_labels_whole():
    from lrbs.charts import map as map_charts

    fits = pd.DataFrame(
        {
            "batch": [16, 64] * 3,
            "curve": ["eps_opt(B)"] * 2
            + ["linear rule (alpha 1)"] * 2
            + ["sqrt rule (alpha 0.5)"] * 2,
            "lr": [0.1, 0.3, 0.1, 0.4, 0.1, 0.2],
            "steps": [float("nan")] * 6,
        }
    )
    ridge = pd.DataFrame(
        {"batch": [16, 64], "status": ["ok", "ok"], "lr_opt": [0.1, 0.3], "band_lo": [0.08, 0.2]}
        | {"band_hi": [0.12, 0.4], "edge": ["", ""]}
    )
    text = json.dumps(map_charts.ridge_chart(ridge, fits).to_dict())
    assert text.count(f'"labelLimit": {map_charts.LABEL_LIMIT}') >= 2  # curves and shapes
    assert map_charts.LABEL_LIMIT >= 300
    steps = pd.DataFrame({"batch": [16, 64], "lr": [0.1, 0.3], "steps": [100.0, 40.0]})
    steps["steps_sd"] = 0.0
    text = json.dumps(map_charts.steps_chart(steps, fits, 50.0, 80.0).to_dict())
    assert f'"labelLimit": {map_charts.LABEL_LIMIT}' in text  # the regimes' legend


def test_schedule_charts_are_tall_enough_and_their_legends_whole():
    from lrbs.charts.schedules import per_epoch_chart

    per_epoch = pd.DataFrame(
        {"run_id": ["decay", "grow"], "start": [0, 0], "lr": [0.1, 0.1], "batch_size": [16, 16]}
    )
    spec = per_epoch_chart(per_epoch, "lr", "Learning rate").to_dict()
    assert spec["height"] >= 220
    assert spec["encoding"]["color"]["legend"]["labelLimit"] >= 300
