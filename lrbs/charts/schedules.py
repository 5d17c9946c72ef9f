"""Charts of the schedule experiments: the per-epoch lr, batch size and noise scale of the
batch-size regimes (with a legend, and each value drawn from the epoch where it starts)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from lrbs.charts.base import COUNT_FORMAT, LOG_FORMAT, color_scale, log_window


def step_frame(per_epoch: pd.DataFrame, y: str, group: str = "run_id") -> pd.DataFrame:
    """The per-epoch values as steps: each drawn from `start` (the epochs done when it began),
    plus one closing point at the end of the last epoch, so a value that changes after
    milestone m changes at x = m, where the training curves change too."""
    d = per_epoch.dropna(subset=[y])
    if d.empty:
        return pd.DataFrame(columns=[group, "x", y])
    d = d.assign(x=d["start"].astype(float))[[group, "x", y]]
    ends = d.groupby(group, sort=False).tail(1).assign(x=lambda e: e.x + 1)
    return pd.concat([d, ends], ignore_index=True)


def per_epoch_chart(
    per_epoch: pd.DataFrame,
    y: str,
    title: str,
    domain: list[str] | None = None,
    group: str = "run_id",
    height: int = 240,
) -> alt.Chart:
    """One per-epoch quantity of every regime as steps on a log axis, with a legend whose
    labels are never cut (the page draws each full width, one per row)."""
    d = step_frame(per_epoch, y, group)
    sort = domain or list(dict.fromkeys(d[group]))
    return (
        alt.Chart(d)
        .mark_line(interpolate="step-after", strokeWidth=2)
        .encode(
            x=alt.X("x:Q", title="epochs"),
            y=alt.Y(
                f"{y}:Q",
                title=None,
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=COUNT_FORMAT if y == "batch_size" else LOG_FORMAT),
            ),
            color=alt.Color(
                f"{group}:N",
                title=None,
                sort=sort,
                legend=alt.Legend(orient="right", labelLimit=400),
                scale=color_scale(domain),
            ),
            tooltip=[
                f"{group}:N",
                alt.Tooltip("x:Q", title="from epoch", format=".0f"),
                alt.Tooltip(f"{y}:Q", format=".4g"),
            ],
        )
        .properties(title=title, height=height)
    )


def lr_plan_chart(plan: pd.DataFrame, domain: list[str] | None = None) -> alt.Chart:
    """The rate each schedule will use, per epoch, before any training (log scale)."""
    d = plan[plan.lr > 0]
    sort = domain or list(dict.fromkeys(d.schedule))
    return (
        alt.Chart(d)
        .mark_line(strokeWidth=2)
        .encode(
            x=alt.X("epoch:Q", title="epochs"),
            y=alt.Y(
                "lr:Q",
                title="learning rate",
                scale=alt.Scale(type="log", domain=log_window(d.lr), clamp=True),
                axis=alt.Axis(format=LOG_FORMAT),
            ),
            color=alt.Color(
                "schedule:N",
                title=None,
                sort=sort,
                legend=alt.Legend(orient="top", columns=6 if len(sort) > 6 else alt.Undefined),
                scale=color_scale(domain),
            ),
            tooltip=[
                "schedule:N",
                alt.Tooltip("epoch:Q", format=".2f"),
                "step:Q",
                alt.Tooltip("lr:Q", format=".4g"),
            ],
        )
        .properties(height=380, title="Planned learning rate (before training)")
        .interactive(bind_y=False)
    )
