"""Charts of the gradient noise scale page: B_simple and the loss as training goes, the
predicted best rate per batch size, and the check's steps-examples trade-off."""

from __future__ import annotations

import altair as alt
import pandas as pd

from lrbs.charts.base import COUNT_FORMAT, LOG_FORMAT, MAX_POINTS, thin

NOISE_COLOR = "#d9480f"
LOSS_COLOR = "#1971c2"


def b_simple_chart(rows: pd.DataFrame, height: int = 300) -> alt.LayerChart:
    """B_simple as measured: the averaged estimate as a line, each raw one as a faint dot."""
    rows = thin(rows, MAX_POINTS, by=None)
    base = alt.Chart(rows).encode(x=alt.X("step:Q", title="training step"))
    averaged = base.mark_line(color=NOISE_COLOR, strokeWidth=2.5).encode(
        y=alt.Y(
            "b_simple:Q",
            title="B_simple (averaged)",
            scale=alt.Scale(type="log"),
            axis=alt.Axis(format=COUNT_FORMAT),
        ),
        tooltip=["step:Q", alt.Tooltip("b_simple:Q", format=".4g")],
    )
    raw = base.mark_circle(color=NOISE_COLOR, opacity=0.3, size=25).encode(
        y=alt.Y("b_simple_raw:Q", scale=alt.Scale(type="log"))
    )
    return alt.layer(raw, averaged).properties(title="Simple noise scale", height=height)


def measured_loss_chart(rows: pd.DataFrame, height: int = 300) -> alt.Chart:
    """The training loss at each measurement."""
    rows = thin(rows, MAX_POINTS, by=None)
    return (
        alt.Chart(rows)
        .mark_line(color=LOSS_COLOR)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y("loss:Q", title="training loss"),
        )
        .properties(title="Training loss", height=height)
    )


def optimal_lr_chart(curve: pd.DataFrame, b_noise: float, height: int = 280) -> alt.LayerChart:
    """eps_opt(B) over the batch size (`curve`: batch, lr), B_noise as a dashed rule."""
    line = (
        alt.Chart(curve)
        .mark_line(strokeWidth=2.5)
        .encode(
            x=alt.X(
                "batch:Q",
                title="batch size B",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=COUNT_FORMAT),
            ),
            y=alt.Y(
                "lr:Q",
                title="predicted best learning rate ε_opt(B)",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=LOG_FORMAT),
            ),
            tooltip=[alt.Tooltip("batch:Q", format=","), alt.Tooltip("lr:Q", format=".3g")],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"batch": [b_noise]}))
        .mark_rule(strokeDash=[5, 3])
        .encode(x="batch:Q")
    )
    return alt.layer(line, rule).properties(height=height)


def tradeoff_chart(check: pd.DataFrame, fitted: pd.DataFrame, height: int = 320):
    """Updates S against examples E to the target, per checked batch (labelled), and the
    fitted curve (S/S_min - 1)(E/E_min - 1) = 1."""
    pts = check.dropna(subset=["steps"]).rename(columns={"steps": "S", "examples": "E"})
    curve = (
        alt.Chart(fitted)
        .mark_line(color="#868e96")
        .encode(
            x=alt.X(
                "S:Q",
                title="updates S",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=COUNT_FORMAT),
            ),
            y=alt.Y(
                "E:Q",
                title="examples E",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=COUNT_FORMAT),
            ),
        )
    )
    dots = (
        alt.Chart(pts)
        .mark_circle(size=120, color=NOISE_COLOR)
        .encode(x="S:Q", y="E:Q", tooltip=["batch:Q", "S:Q", "E:Q"])
    )
    labels = (
        alt.Chart(pts)
        .mark_text(dx=12, align="left")
        .encode(x="S:Q", y="E:Q", text=alt.Text("batch:Q", format=","))
    )
    return alt.layer(curve, dots, labels).properties(
        height=height, title="Steps vs examples to the target, and the fitted trade-off"
    )
