"""Charts of the Recommend pipeline: the confirmation sweep with its band and the range-test
rules, and the batch choice (estimated seconds to the target, measured throughput)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

BEST = "#2b8a3e"
BAND = "#b2f2bb"
RULE = "#862e9c"


DIVERGED = "#e03131"
WHAT = {"confirmed best": BEST, "swept rate": "#1971c2", "diverged": DIVERGED}


def sweep_chart(table: pd.DataFrame, audit: pd.DataFrame | None = None) -> alt.LayerChart:
    """Final validation loss against the rate (log): the mean over seeds with its min-max of
    mean +- std, the band within noise of the best shaded, the best in green, each range-test
    rule's rate as a labelled rule, and each rate that diverged (in any seed: its mean is
    infinite) as a red triangle at the chart's top edge, so the curve does not seem to fall on
    past the last rate that trained."""
    mean = table["mean"].astype(float)
    d = table[np.isfinite(mean)].copy()
    d["lo"] = d["mean"] - d["std"].fillna(0.0)
    d["hi"] = d["mean"] + d["std"].fillna(0.0)
    d["what"] = np.where(d.best, "confirmed best", "swept rate")
    top = float(d.hi.max()) if not d.empty else 1.0
    bad = table[~np.isfinite(mean)].assign(mean=top, what="diverged")
    bad["label"] = [
        f"diverged ({k:.0f} of {n:.0f} seeds)" for k, n in zip(bad.diverged, bad.seeds, strict=True)
    ]
    x = alt.X("lr:Q", title="learning rate (log)", scale=alt.Scale(type="log"))
    y = alt.Y("mean:Q", title="validation loss (mean over seeds)", scale=alt.Scale(zero=False))
    color = alt.Color(
        "what:N",
        title=None,
        scale=alt.Scale(domain=list(WHAT), range=list(WHAT.values())),
        legend=alt.Legend(orient="top"),
    )
    layers = []
    band = d[d.in_band]
    if not band.empty:
        span = pd.DataFrame({"lo": [band.lr.min()], "hi": [band.lr.max()]})
        layers.append(
            alt.Chart(span)
            .mark_rect(color=BAND, opacity=0.5)
            .encode(x=alt.X("lo:Q", scale=alt.Scale(type="log")), x2="hi:Q")
        )
    layers.append(alt.Chart(d).mark_errorbar().encode(x=x, y=alt.Y("lo:Q", title=""), y2="hi:Q"))
    layers.append(alt.Chart(d).mark_line(color="#868e96").encode(x=x, y=y))
    tip = ["lr:Q", alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("std:Q", format=".4f")]
    layers.append(alt.Chart(d).mark_circle(size=90).encode(x=x, y=y, color=color, tooltip=tip))
    if not bad.empty:
        layers.append(
            alt.Chart(bad)
            .mark_point(shape="triangle-up", size=140, filled=True)
            .encode(x=x, y=y, color=color, tooltip=["lr:Q", "label:N"])
        )
    if audit is not None and not audit.empty:
        rules = audit.assign(
            label=[f"{t} {v:.2g}" for t, v in zip(audit.title, audit.lr, strict=True)]
        )
        base = alt.Chart(rules).encode(x=alt.X("lr:Q", scale=alt.Scale(type="log")))
        layers.append(base.mark_rule(color=RULE, strokeDash=[4, 3]))
        layers.append(
            base.mark_text(angle=270, align="left", dx=4, dy=-4, color=RULE, fontSize=10).encode(
                text="label:N", y=alt.value(4)
            )
        )
    title = "Confirmation sweep: the band within noise of the best"
    if not bad.empty:
        title += " (red: diverged)"
    return alt.layer(*layers).properties(title=title, height=320)


def time_to_target_chart(table: pd.DataFrame) -> alt.LayerChart:
    """Estimated seconds to the target loss per batch (log-log), the fastest in green."""
    d = table.assign(what=np.where(table.best, "chosen", "candidate"))
    x = alt.X("batch:Q", title="batch size (log)", scale=alt.Scale(type="log", base=2))
    y = alt.Y(
        "seconds_to_target:Q", title="estimated seconds to the target", scale=alt.Scale(type="log")
    )
    tip = [
        "batch:Q",
        alt.Tooltip("steps_to_target:Q", format=".0f"),
        alt.Tooltip("seconds_per_step:Q", format=".4f"),
        alt.Tooltip("seconds_to_target:Q", format=".2f"),
    ]
    line = alt.Chart(d).mark_line(color="#868e96").encode(x=x, y=y)
    dots = (
        alt.Chart(d)
        .mark_circle(size=90)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "what:N",
                title=None,
                scale=alt.Scale(domain=["chosen", "candidate"], range=[BEST, "#1971c2"]),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=tip,
        )
    )
    return (line + dots).properties(title="Time to the target: S(B) x seconds per step", height=300)


def throughput_chart(table: pd.DataFrame) -> alt.Chart:
    """Measured samples per second against the batch size."""
    return (
        alt.Chart(table)
        .mark_line(point=True, color="#1971c2")
        .encode(
            x=alt.X("batch:Q", title="batch size (log)", scale=alt.Scale(type="log", base=2)),
            y=alt.Y("samples_per_s:Q", title="samples / s (measured)"),
            tooltip=["batch:Q", alt.Tooltip("samples_per_s:Q", format=".0f")],
        )
        .properties(title="Throughput", height=300)
    )


def horizon_chart(
    points: pd.DataFrame,
    exponent: float,
    confirmed: float,
    swept: int,
    planned: int,
    start: float | None = None,
) -> alt.LayerChart:
    """The best rate at each checkpoint of the sweep (log-log) and the rule lr ~ t^exponent
    through the confirmed rate, flat up to `start` (the sweep's end, or one epoch), carried to
    the planned training's length (the card's rate at the base batch, a diamond)."""
    start = float(start or swept)
    first = float(points.step.min()) if not points.empty else swept / 4
    steps = np.geomspace(min(first, swept), float(planned), 40)
    rule = confirmed * (np.maximum(steps, start) / start) ** exponent
    line = pd.DataFrame({"step": steps, "lr": rule})
    end = pd.DataFrame(
        {
            "step": [float(planned)],
            "lr": [confirmed * (planned / start) ** exponent],
            "what": ["the planned training"],
        }
    )
    x = alt.X("step:Q", title="updates at the base batch (log)", scale=alt.Scale(type="log"))
    y = alt.Y("lr:Q", title="best rate (log)", scale=alt.Scale(type="log"))
    tip = ["step:Q", alt.Tooltip("lr:Q", format=".3g")]
    return alt.layer(
        alt.Chart(line).mark_line(color="#868e96", strokeDash=[5, 3]).encode(x=x, y=y),
        alt.Chart(points).mark_circle(size=70, color="#1971c2").encode(x=x, y=y, tooltip=tip),
        alt.Chart(pd.DataFrame({"step": [float(swept)]}))
        .mark_rule(color="#adb5bd")
        .encode(x="step:Q"),
        alt.Chart(end)
        .mark_point(size=160, shape="diamond", filled=True, color=BEST)
        .encode(x=x, y=y, tooltip=["what:N", *tip]),
    ).properties(height=260, title="The best rate against the updates, carried to your training")
