"""Charts of the batch-size experiments: the sweep's curves (repeats as bands) and the
scaling-rule check's validation curves per epoch."""

from __future__ import annotations

import altair as alt
import pandas as pd

from lrbs.charts.base import MAX_POINTS, repeats_chart, thin
from lrbs.core.spread import band


def sweep_chart(
    events: pd.DataFrame, diverged: list[str], x: str, y: str, title: str
) -> alt.LayerChart:
    """The sweep's curves of `y`: one per run, or the seeds' mean and band per batch size."""
    return repeats_chart(events, x, y, title, diverged)


def scaling_chart(curves: pd.DataFrame, rule: str, title: str) -> alt.Chart | alt.LayerChart:
    """Validation loss per epoch of one rule's runs B0*k, on the y scale of every rule's curves
    (so the two rules' charts compare at a glance); with several seeds, their mean inside a
    band of ± one standard deviation."""
    curves = thin(curves, MAX_POINTS, by=None)
    lo, hi = float(curves.val_loss.min()), float(curves.val_loss.max())
    pad = 0.05 * max(hi - lo, 1e-3)
    d = curves[curves.rule == rule].copy()
    seeds = d.seed.nunique() if "seed" in d else 1
    d = band(d, ["k", "batch", "lr", "epoch"], "val_loss").rename(columns={"mean": "val_loss"})
    d["run"] = "B₀×" + d.k.astype(str)
    y_scale = alt.Scale(domain=[lo - pad, hi + pad], clamp=True)
    color = alt.Color("run:N", title=None, sort=None, scale=alt.Scale(scheme="viridis"))
    line = (
        alt.Chart(d)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch"),
            y=alt.Y("val_loss:Q", title="validation loss", scale=y_scale),
            color=color,
            tooltip=["run:N", "lr:Q", "batch:Q", alt.Tooltip("val_loss:Q", format=".4f")],
        )
    )
    if seeds < 2:
        return line.properties(title=title, height=300)
    area = (
        alt.Chart(d)
        .mark_area(opacity=0.2)
        .encode(x="epoch:Q", y=alt.Y("lo:Q", scale=y_scale), y2="hi:Q", color=color)
    )
    title += f" (mean ± std over {seeds} seeds)"
    return alt.layer(area, line).properties(title=title, height=300)
