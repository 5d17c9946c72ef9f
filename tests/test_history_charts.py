"""The run history's overlay chart: axes a range test can be read on."""

import numpy as np
import pandas as pd

from lrbs.charts import history as hc


def range_test_points() -> pd.DataFrame:
    lrs = np.geomspace(1e-6, 400, 60)
    return pd.DataFrame(
        {
            "history_id": 3,
            "history_kind": "lr-find",
            "history_name": "",
            "step": np.arange(60),
            "lr": lrs,
            "loss": 2 - np.tanh(np.log10(lrs) + 3),
        }
    )


def scale_of(chart) -> str:
    return chart.to_dict()["encoding"]["x"]["scale"]["type"]


def test_a_range_test_is_read_against_its_rate_on_a_log_axis():
    pts = range_test_points()
    numeric = hc.numeric_columns(pts)
    x, y = hc.default_axes(numeric, kinds=["lr-find"])
    assert (x, y) == ("lr", "loss")
    assert scale_of(hc.overlay_chart(pts, x, y)) == "log"  # 1e-6 .. 400: eight decades


def test_other_runs_keep_the_step_axis_and_a_linear_scale_for_a_narrow_range():
    pts = range_test_points()
    numeric = hc.numeric_columns(pts)
    assert hc.default_axes(numeric, kinds=["lr-sweep"])[0] == "step"
    assert hc.default_axes(numeric, kinds=["lr-find", "lr-sweep"])[0] == "step"
    assert scale_of(hc.overlay_chart(pts, "step", "loss")) == "linear"  # starts at 0


def test_a_log_axis_asked_for_on_values_that_reach_zero_falls_back_to_linear():
    pts = range_test_points()
    assert scale_of(hc.overlay_chart(pts, "step", "loss", log_x=True)) == "linear"
    assert scale_of(hc.overlay_chart(pts, "lr", "loss", log_x=False)) == "linear"
