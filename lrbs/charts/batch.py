"""Charts of the batch-size experiments: the sweep's curves (repeats as bands) and the
scaling-rule check's validation curves per epoch."""

from __future__ import annotations

import altair as alt
import pandas as pd

from lrbs.charts import MAX_POINTS, repeats_chart, thin


def sweep_chart(
    events: pd.DataFrame, diverged: list[str], x: str, y: str, title: str
) -> alt.LayerChart:
    """The sweep's curves of `y`: one per run, or the seeds' mean and band per batch size."""
    return repeats_chart(events, x, y, title, diverged)


def scaling_chart(curves: pd.DataFrame, rule: str, title: str) -> alt.Chart:
    """Validation loss per epoch of one rule's runs B0*k, on the y scale of every rule's curves
    (so the two rules' charts compare at a glance)."""
    curves = thin(curves, MAX_POINTS, by=None)
    lo, hi = float(curves.val_loss.min()), float(curves.val_loss.max())
    pad = 0.05 * max(hi - lo, 1e-3)
    d = curves[curves.rule == rule].copy()
    d["run"] = "B₀×" + d.k.astype(str)
    return (
        alt.Chart(d)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch"),
            y=alt.Y(
                "val_loss:Q", title="validation loss", scale=alt.Scale(domain=[lo - pad, hi + pad])
            ),
            color=alt.Color("run:N", title=None, sort=None, scale=alt.Scale(scheme="viridis")),
            tooltip=["run:N", "lr:Q", "batch:Q", alt.Tooltip("val_loss:Q", format=".4f")],
        )
        .properties(title=title, height=300)
    )
