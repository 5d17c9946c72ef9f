"""The auto-tune study's charts: objective per trial, the search space, the reported curves,
parameter importances."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from lrbs.charts.base import COUNT_FORMAT, LOG_FORMAT, y_window

TRIAL_STATES = {
    "complete": "#1c7ed6",
    "pruned": "#adb5bd",
    "running": "#f59f00",
    "fail": "#c92a2a",
}


def _finite_trials(trials: pd.DataFrame) -> pd.DataFrame:
    d = trials.dropna(subset=["value"]).copy()
    return d[np.isfinite(d.value.astype(float))]


def objective_chart(trials: pd.DataFrame) -> alt.LayerChart:
    """Validation loss of each trial in order, by state, with the best so far as a step line.
    A pruned trial shows the last loss it reported."""
    d = _finite_trials(trials)
    done = d[d.state == "complete"].sort_values("trial")
    done = done.assign(best=done.value.cummin())
    y_dom = y_window(d.value) if not d.empty else alt.Undefined
    y = alt.Y("value:Q", title="validation loss", scale=alt.Scale(domain=y_dom, clamp=True))
    points = (
        alt.Chart(d)
        .mark_point(size=70, filled=True)
        .encode(
            x=alt.X("trial:Q", title="trial"),
            y=y,
            color=alt.Color(
                "state:N",
                title=None,
                scale=alt.Scale(domain=list(TRIAL_STATES), range=list(TRIAL_STATES.values())),
                legend=alt.Legend(orient="top"),
            ),
            shape=alt.Shape(
                "state:N",
                legend=None,
                scale=alt.Scale(
                    domain=list(TRIAL_STATES), range=["circle", "cross", "diamond", "square"]
                ),
            ),
            tooltip=[
                "trial:Q",
                "state:N",
                alt.Tooltip("value:Q", format=".4f"),
                alt.Tooltip("lr:Q", format=".3g"),
                "batch_size:Q",
            ],
        )
    )
    best = (
        alt.Chart(done)
        .mark_line(interpolate="step-after", color="#2b8a3e", strokeWidth=2)
        .encode(x="trial:Q", y=alt.Y("best:Q", scale=alt.Scale(domain=y_dom, clamp=True)))
    )
    return alt.layer(best, points).properties(height=300, title="Trials (line: best so far)")


def search_space_chart(trials: pd.DataFrame) -> alt.LayerChart:
    """Where the trials went: learning rate x batch size, coloured by validation loss; pruned
    trials as grey crosses, diverged ones (infinite loss) as red crosses."""
    d = trials.dropna(subset=["lr", "batch_size"]).copy()
    v = pd.to_numeric(d.value, errors="coerce")
    d["outcome"] = np.where(
        d.state == "pruned", "pruned", np.where(np.isinf(v.fillna(0)), "diverged", "finished")
    )
    ok = d[(d.outcome == "finished") & v.notna() & (d.state == "complete")]
    x = alt.X(
        "lr:Q",
        title="learning rate",
        scale=alt.Scale(type="log"),
        axis=alt.Axis(format=LOG_FORMAT),
    )
    y = alt.Y(
        "batch_size:Q",
        title="batch size",
        scale=alt.Scale(type="log", base=2),
        axis=alt.Axis(format=COUNT_FORMAT),
    )
    tip = [
        "trial:Q",
        "state:N",
        alt.Tooltip("value:Q", format=".4f"),
        alt.Tooltip("lr:Q", format=".3g"),
        "batch_size:Q",
    ]
    finished = (
        alt.Chart(ok)
        .mark_circle(size=140, opacity=0.85)
        .encode(
            x=x,
            y=y,
            tooltip=tip,
            color=alt.Color(
                "value:Q", title="val loss", scale=alt.Scale(scheme="viridis", reverse=True)
            ),
        )
    )
    others = (
        alt.Chart(d[d.outcome != "finished"])
        .mark_point(shape="cross", size=120, filled=True)
        .encode(
            x=x,
            y=y,
            tooltip=tip,
            color=alt.Color(
                "outcome:N",
                title=None,
                legend=alt.Legend(orient="top"),
                scale=alt.Scale(domain=["pruned", "diverged"], range=["#868e96", "#c92a2a"]),
            ),
        )
    )
    return (
        alt.layer(finished, others)
        .resolve_scale(color="independent")
        .properties(height=300, title="Search space: lr × batch size")
    )


def trial_curves_chart(curves: pd.DataFrame, x_title: str) -> alt.Chart:
    """The validation loss each trial reported to the pruner; pruned ones end early."""
    d = curves[np.isfinite(pd.to_numeric(curves.val_loss, errors="coerce").astype(float))]
    y_dom = y_window(d.val_loss) if not d.empty else alt.Undefined
    return (
        alt.Chart(d)
        .mark_line(strokeWidth=1.5, opacity=0.8)
        .encode(
            x=alt.X("step:Q", title=x_title),
            y=alt.Y(
                "val_loss:Q", title="validation loss", scale=alt.Scale(domain=y_dom, clamp=True)
            ),
            detail="trial:N",
            color=alt.Color(
                "state:N",
                title=None,
                scale=alt.Scale(domain=list(TRIAL_STATES), range=list(TRIAL_STATES.values())),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=["trial:Q", "state:N", "step:Q", alt.Tooltip("val_loss:Q", format=".4f")],
        )
        .properties(height=300, title="What each trial reported to the pruner")
    )


IMPORTANCES_NOTE = "Parameter importances appear once 5 trials have finished."


def importance_chart(importances: dict[str, float] | None) -> alt.Chart | None:
    """One bar per parameter, a fixed band each (so the labels never overlap), or None when
    there is nothing to draw (no parameter with a finite importance above 0): the page says
    IMPORTANCES_NOTE instead of an empty frame."""
    d = pd.DataFrame(
        {"parameter": list(importances or {}), "importance": list((importances or {}).values())}
    )
    d["importance"] = pd.to_numeric(d.importance, errors="coerce")
    d = d[np.isfinite(d.importance) & (d.importance >= 0)]
    if d.empty or not (d.importance > 0).any():
        return None
    return (
        alt.Chart(d)
        .mark_bar()
        .encode(
            x=alt.X("importance:Q", title="importance (sums to 1)", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y(
                "parameter:N",
                sort="-x",
                title=None,
                axis=alt.Axis(labelLimit=240, labelOverlap=False),
            ),
            tooltip=["parameter:N", alt.Tooltip("importance:Q", format=".2f")],
        )
        .properties(height=alt.Step(36), title="Parameter importances")
    )
