"""Charts of a monitored run (kind "monitor", lrbs/monitor): its "steps" channel as the run
history stores it (step, loss, lr, batch, b_simple, sharpness, limit, ...). DataFrame in,
Altair charts out: the loss, the rate and the batch against the step, B_simple against the
batch in use on a log axis, and the sharpness against its stability limit where measured."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from lrbs.charts.base import COUNT_FORMAT, LOG_FORMAT, MAX_POINTS, thin, y_window

HEIGHT = 220


def _finite(steps: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The rows where every one of `columns` is there and finite, thinned for drawing."""
    if steps.empty or not all(c in steps for c in columns):
        return steps.iloc[0:0]
    d = steps.copy()
    for c in columns:
        d[c] = pd.to_numeric(d[c], errors="coerce")
    d = d[np.isfinite(d[list(columns)]).all(axis=1)]
    return thin(d.sort_values("step"), MAX_POINTS, None)


def _long(d: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """Columns `names` of `d` as one value column with a `curve` label, one row per point."""
    parts = [
        pd.DataFrame({"step": d.step, "value": d[c], "curve": label})
        for c, label in names.items()
        if c in d
    ]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out.dropna(subset=["value"]) if not out.empty else out


def log_domain(values: pd.Series) -> list[float]:
    """A log axis from just under the smallest positive value to just over the largest (not
    Vega's rounding out to whole decades, which flattens a batch of 32 to 400)."""
    v = pd.to_numeric(values, errors="coerce")
    v = v[v > 0]
    if v.empty:
        return [1.0, 10.0]
    return [float(v.min()) / 1.3, float(v.max()) * 1.3]


def _lines(frame: pd.DataFrame, title: str, y_title: str, log_y: bool, domain: list) -> alt.Chart:
    if log_y:
        scale = alt.Scale(type="log", nice=False, domain=log_domain(frame["value"]))
    else:
        scale = alt.Scale(zero=False)
    return (
        alt.Chart(frame, title=title)
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("step:Q", title="parameter updates"),
            y=alt.Y(
                "value:Q",
                title=y_title,
                scale=scale,
                axis=alt.Axis(format=COUNT_FORMAT) if log_y else alt.Undefined,
            ),
            color=alt.Color(
                "curve:N",
                title=None,
                scale=alt.Scale(domain=domain),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=["curve:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(height=HEIGHT)
    )


def in_use(steps: pd.DataFrame, window: int = 10) -> pd.Series:
    """The batch in use: the largest over the last `window` steps, as the monitor reads it (an
    epoch's short last batch is not a change of batch)."""
    b = pd.to_numeric(steps["batch"], errors="coerce")
    return b.rolling(window, min_periods=1).max()


def loss_chart(steps: pd.DataFrame) -> alt.Chart | None:
    d = _finite(steps, "step", "loss")
    if d.empty:
        return None
    return (
        alt.Chart(d, title="Training loss (the loop's, per step)")
        .mark_line()
        .encode(
            x=alt.X("step:Q", title="parameter updates"),
            y=alt.Y("loss:Q", title="loss", scale=alt.Scale(domain=y_window(d.loss))),
            tooltip=["step:Q", alt.Tooltip("loss:Q", format=".4g")],
        )
        .properties(height=HEIGHT)
    )


def rate_chart(steps: pd.DataFrame) -> alt.Chart | None:
    """The first group's rate against the step (log where it spans two decades)."""
    d = _finite(steps, "step", "lr")
    if d.empty:
        return None
    positive = bool((d.lr > 0).all())
    log = positive and float(d.lr.max()) / float(d.lr.min()) >= 100
    return (
        alt.Chart(d, title="Learning rate (first group)")
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("step:Q", title="parameter updates"),
            y=alt.Y(
                "lr:Q",
                title="learning rate",
                scale=alt.Scale(type="log") if log else alt.Scale(zero=False),
                axis=alt.Axis(format=LOG_FORMAT) if log else alt.Undefined,
            ),
            tooltip=["step:Q", alt.Tooltip("lr:Q", format=".4g")],
        )
        .properties(height=HEIGHT)
    )


def noise_chart(steps: pd.DataFrame) -> alt.Chart | None:
    """B_simple (averaged) and the batch in use against the step, on a log axis: where the
    first runs above the second, a larger batch would use its samples as well."""
    d = _finite(_with_in_use(steps), "step", "in_use")
    if d.empty:
        return None
    names = {"in_use": "batch in use"}
    if "b_simple" in steps and pd.to_numeric(steps.b_simple, errors="coerce").gt(0).any():
        names["b_simple"] = "B_simple (averaged)"
    frame = _long(d, names)
    frame = frame[frame.value > 0]
    return _lines(frame, "Noise scale against the batch", "samples", True, list(names.values()))


def _with_in_use(steps: pd.DataFrame) -> pd.DataFrame:
    if steps.empty or "batch" not in steps or "step" not in steps:
        return steps
    d = steps.sort_values("step")
    return d.assign(in_use=in_use(d))


def batch_chart(steps: pd.DataFrame) -> alt.Chart | None:
    """The batch in use against the step (log y)."""
    d = _finite(_with_in_use(steps), "step", "in_use")
    if d.empty:
        return None
    frame = _long(d, {"in_use": "batch in use"})
    return _lines(frame, "Batch size (in use)", "samples", True, ["batch in use"])


def sharpness_chart(steps: pd.DataFrame) -> alt.Chart | None:
    """The measured sharpness against the optimizer's stability limit (2/lr, or momentum's
    or Adam's), where the run measured it; None where it did not."""
    d = _finite(steps, "step", "sharpness")
    if d.empty:
        return None
    names = {"sharpness": "sharpness", "limit": "stability limit"}
    frame = _long(d, names)
    domain = [n for c, n in names.items() if c in d and d[c].notna().any()]
    points = (
        alt.Chart(frame)
        .mark_point(filled=True, size=30)
        .encode(
            x="step:Q",
            y="value:Q",
            color=alt.Color("curve:N", scale=alt.Scale(domain=domain), legend=None),
        )
    )
    log = bool(len(frame)) and bool((frame.value > 0).all())  # they can be decades apart
    lines = _lines(frame, "Sharpness against its limit", "lambda_max", log, domain)
    return alt.layer(lines, points)


def monitor_charts(steps: pd.DataFrame) -> dict[str, alt.Chart]:
    """The charts a monitored run has data for, by name: loss, rate, batch, noise, sharpness."""
    charts = {
        "loss": loss_chart(steps),
        "rate": rate_chart(steps),
        "batch": batch_chart(steps),
        "noise": noise_chart(steps),
        "sharpness": sharpness_chart(steps),
    }
    return {k: v for k, v in charts.items() if v is not None}


ADVICE_COLUMNS = {
    "step": "step",
    "b_simple": "B_simple",
    "batch": "batch",
    "target": "grow to",
    "rule": "rule",
    "lr": "rate",
    "new_lr": "new rate",
    "accumulation": "accumulation",
    "micro_batch": "micro-batch",
    "grow_to": "sampler grew to",
}


def advice_table(advice: pd.DataFrame) -> pd.DataFrame:
    """The advice rows, in the monitor's order, with readable column names."""
    if advice is None or advice.empty:
        return pd.DataFrame(columns=list(ADVICE_COLUMNS.values()))
    cols = [c for c in ADVICE_COLUMNS if c in advice]
    return advice[cols].rename(columns=ADVICE_COLUMNS).reset_index(drop=True)
