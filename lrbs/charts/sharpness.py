"""Charts of the edge-of-stability page: the sharpness against the step per rate with its
limit 2/lr as a dashed rule, and the training loss below it."""

from __future__ import annotations

import altair as alt
import pandas as pd

from lrbs.charts.base import LOG_FORMAT, MAX_POINTS, thin


def _color(runs: list[str]) -> alt.Color:
    return alt.Color("run:N", title="learning rate", sort=runs)


def sharpness_chart(rows: pd.DataFrame, height: int = 320) -> alt.LayerChart:
    """lambda_max per measurement, one line per rate, and each rate's limit (2/lr, or the
    momentum/Adam one) as a dashed horizontal rule of the same colour."""
    rows = thin(rows, MAX_POINTS, by=None)
    runs = list(dict.fromkeys(rows.run))
    base = alt.Chart(rows).encode(x=alt.X("step:Q", title="training step"), color=_color(runs))
    line = base.mark_line(point=True, strokeWidth=2).encode(
        y=alt.Y("sharpness:Q", title="sharpness λ_max"),
        tooltip=[
            "run:N",
            "step:Q",
            alt.Tooltip("sharpness:Q", format=".4g"),
            alt.Tooltip("limit:Q", format=".4g"),
            alt.Tooltip("ratio:Q", format=".2f", title="λ_max / limit"),
        ],
    )
    limits = rows.groupby("run", sort=False, as_index=False).limit.first()
    rule = (
        alt.Chart(limits)
        .mark_rule(strokeDash=[6, 4], strokeWidth=1.5)
        .encode(
            y="limit:Q",
            color=_color(runs),
            tooltip=["run:N", alt.Tooltip("limit:Q", format=".4g", title="limit 2/lr")],
        )
    )
    return alt.layer(line, rule).properties(
        title="Sharpness (solid) and its stability limit 2/lr (dashed)", height=height
    )


def loss_chart(events: pd.DataFrame, runs: list[str], height: int = 240) -> alt.Chart:
    """The training loss of each rate against the step (log scale: spikes and slow falls)."""
    events = thin(events, MAX_POINTS, by=None)
    train = events[(events.kind == "train") & events.loss.notna()].rename(columns={"run_id": "run"})
    return (
        alt.Chart(train)
        .mark_line(strokeWidth=1.5)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y(
                "loss:Q",
                title="training loss",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=LOG_FORMAT),
            ),
            color=_color(runs),
            tooltip=["run:N", "step:Q", alt.Tooltip("loss:Q", format=".4g")],
        )
        .properties(title="Training loss", height=height)
    )


def ratio_chart(rows: pd.DataFrame, band: float, height: int = 240) -> alt.LayerChart:
    """lambda_max / limit per rate: 1 is the edge of stability, the shaded band +-`band`."""
    rows = thin(rows, MAX_POINTS, by=None)
    runs = list(dict.fromkeys(rows.run))
    zone = (
        alt.Chart(pd.DataFrame({"lo": [1 - band], "hi": [1 + band]}))
        .mark_rect(opacity=0.12, color="#2b8a3e")
        .encode(y="lo:Q", y2="hi:Q")
    )
    line = (
        alt.Chart(rows)
        .mark_line(strokeWidth=2)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y("ratio:Q", title="λ_max / limit"),
            color=_color(runs),
            tooltip=["run:N", "step:Q", alt.Tooltip("ratio:Q", format=".2f")],
        )
    )
    return alt.layer(zone, line).properties(
        title="Sharpness as a multiple of the limit (1 = the edge of stability)", height=height
    )
