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
