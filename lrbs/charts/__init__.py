"""Altair chart builders: DataFrame in, Chart out. No Streamlit here, so the CLI and tests can
build the same charts the pages show. One module per page or experiment; what they share is in
`base`. The names below stay importable from `lrbs.charts` itself."""

from lrbs.charts.autotune import (
    IMPORTANCES_NOTE,
    TRIAL_STATES,
    importance_chart,
    objective_chart,
    search_space_chart,
    trial_curves_chart,
)
from lrbs.charts.base import (
    COUNT_FORMAT,
    LOG_FORMAT,
    MAX_POINTS,
    SEED_SUFFIX,
    SPIKE_ROOM,
    X_AXES,
    band_chart,
    color_scale,
    repeats_chart,
    runs_chart,
    runs_y_domain,
    thin,
)
from lrbs.charts.gd1d import STATUS_COLORS, gd_loss_chart, gd_path_chart, stability_chart
from lrbs.charts.lr import apart, range_test_chart
from lrbs.charts.schedules import lr_plan_chart

__all__ = [
    "COUNT_FORMAT",
    "IMPORTANCES_NOTE",
    "LOG_FORMAT",
    "MAX_POINTS",
    "SEED_SUFFIX",
    "SPIKE_ROOM",
    "STATUS_COLORS",
    "TRIAL_STATES",
    "X_AXES",
    "apart",
    "band_chart",
    "color_scale",
    "gd_loss_chart",
    "gd_path_chart",
    "importance_chart",
    "lr_plan_chart",
    "objective_chart",
    "range_test_chart",
    "repeats_chart",
    "runs_chart",
    "runs_y_domain",
    "search_space_chart",
    "stability_chart",
    "thin",
    "trial_curves_chart",
]
