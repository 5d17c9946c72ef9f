"""Charts of the learning-rate x batch-size map: the map itself (mean loss per cell, diverged
cells crossed, the ridge with its band and the fitted eps_opt(B) on it), the ridge against the
rules' exponents, and steps-to-target against the batch with the three regimes and B_crit."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

RIDGE_COLOR = "#e8590c"
FIT_COLORS = {
    "eps_opt(B)": "#1971c2",
    "linear rule (alpha 1)": "#868e96",
    "sqrt rule (alpha 0.5)": "#adb5bd",
}
LEGEND_COLUMNS = 3  # legend entries per row: long names ("sqrt rule (alpha 0.5)") stay whole
LABEL_LIMIT = 400  # pixels: Vega-Lite cuts legend labels at 160 by default
REGIME_COLORS = ["#d3f9d8", "#fff3bf", "#ffe3e3"]


def _log_x(title: str = "batch size B") -> alt.X:
    return alt.X("batch:Q", title=title, scale=alt.Scale(type="log", base=2))


def map_chart(
    means: pd.DataFrame, ridge: pd.DataFrame, fits: pd.DataFrame, value: str = "loss"
) -> alt.LayerChart:
    """One rectangle per (batch, rate) coloured by its mean `value` over seeds (log scale),
    diverged cells as red crosses, the ridge (best rate per batch, interpolated) with its band
    as a bar, and the fitted eps_opt(B) and power law as lines."""
    d = means.copy()
    if d.empty:
        return alt.layer(alt.Chart(d).mark_rect()).properties(height=380)
    step = d.groupby("batch").lr.transform(
        lambda s: np.median(np.diff(np.log10(np.sort(s)))) if len(s) > 1 else 0.5
    )
    d["x0"], d["x1"] = d.batch / 2**0.45, d.batch * 2**0.45
    d["y0"], d["y1"] = d.lr / 10 ** (step / 2), d.lr * 10 ** (step / 2)
    ok = d[d["mean"].notna()]
    x = alt.X("x0:Q", title="batch size B", scale=alt.Scale(type="log", base=2))
    y = alt.Y("y0:Q", title="learning rate", scale=alt.Scale(type="log"))
    tip = [
        alt.Tooltip("batch:Q", format=","),
        alt.Tooltip("lr:Q", format=".3g"),
        alt.Tooltip("mean:Q", title=f"mean {value}", format=".4g"),
        alt.Tooltip("sd:Q", title="sd over seeds", format=".2g"),
        "seeds:Q",
        "diverged:Q",
    ]
    rects = (
        alt.Chart(ok)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=x,
            x2="x1:Q",
            y=y,
            y2="y1:Q",
            color=alt.Color(
                "mean:Q",
                title=value,
                scale=alt.Scale(type="log", scheme="viridis", reverse=True),
            ),
            tooltip=tip,
        )
    )
    bad = d[d.diverged > 0]
    crosses = (
        alt.Chart(bad)
        .mark_point(shape="cross", size=90, color="#c92a2a", strokeWidth=2, filled=True)
        .encode(x=alt.X("batch:Q"), y=alt.Y("lr:Q"), tooltip=tip)
    )
    layers = [rects, crosses]
    r = ridge[ridge.status == "ok"] if not ridge.empty else ridge
    if not r.empty:
        layers.append(
            alt.Chart(r)
            .mark_rule(color=RIDGE_COLOR, strokeWidth=3)
            .encode(x="batch:Q", y="band_lo:Q", y2="band_hi:Q")
        )
        layers.append(
            alt.Chart(r)
            .mark_line(color=RIDGE_COLOR, point=alt.OverlayMarkDef(color=RIDGE_COLOR, size=60))
            .encode(
                x="batch:Q",
                y="lr_opt:Q",
                tooltip=[
                    alt.Tooltip("batch:Q", format=","),
                    alt.Tooltip("lr_opt:Q", title="best rate", format=".3g"),
                    alt.Tooltip("band_lo:Q", title="within noise from", format=".3g"),
                    alt.Tooltip("band_hi:Q", title="to", format=".3g"),
                    "edge:N",
                ],
            )
        )
    eps = fits[fits.curve == "eps_opt(B)"] if not fits.empty else fits
    if not eps.empty:
        layers.append(
            alt.Chart(eps)
            .mark_line(color="white", strokeDash=[6, 3], strokeWidth=2)
            .encode(x="batch:Q", y="lr:Q")
        )
    return alt.layer(*layers).properties(
        height=400, title="Loss per cell; ridge (orange) with band; eps_opt(B) fit (dashed)"
    )


def ridge_chart(ridge: pd.DataFrame, fits: pd.DataFrame) -> alt.LayerChart:
    """The best rate per batch with its band, on log-log axes, against the fitted power law,
    eps_opt(B) and the two rules' lines (alpha 1 and 0.5 from the smallest batch's ridge)."""
    r = ridge[ridge.status == "ok"].copy() if not ridge.empty else ridge
    lines = fits.dropna(subset=["lr"]) if not fits.empty else fits
    x = _log_x()
    y = alt.Y("lr:Q", title="best learning rate", scale=alt.Scale(type="log"))
    layers = []
    if not lines.empty:
        domain = list(dict.fromkeys(lines.curve))
        colors = [FIT_COLORS.get(c, RIDGE_COLOR) for c in domain]
        layers.append(
            alt.Chart(lines)
            .mark_line(strokeWidth=2)
            .encode(
                x=x,
                y=y,
                color=alt.Color(
                    "curve:N",
                    title=None,
                    scale=alt.Scale(domain=domain, range=colors),
                    legend=alt.Legend(orient="top", labelLimit=LABEL_LIMIT, columns=LEGEND_COLUMNS),
                ),
                strokeDash=alt.StrokeDash("curve:N", legend=None),
            )
        )
    if not r.empty:
        r["lr"] = r.lr_opt
        r["where"] = np.where(r.edge == "", "inside its grid", "at the grid's edge")
        layers.append(
            alt.Chart(r)
            .mark_rule(color="#343a40", strokeWidth=1.5)
            .encode(x=x, y=alt.Y("band_lo:Q"), y2="band_hi:Q")
        )
        layers.append(
            alt.Chart(r)
            .mark_point(size=80, filled=True, color="#343a40")
            .encode(
                x=x,
                y=y,
                shape=alt.Shape(
                    "where:N",
                    title=None,
                    scale=alt.Scale(
                        domain=["inside its grid", "at the grid's edge"],
                        range=["circle", "triangle-up"],
                    ),
                    legend=alt.Legend(orient="top", labelLimit=LABEL_LIMIT, columns=LEGEND_COLUMNS),
                ),
                tooltip=[
                    alt.Tooltip("batch:Q", format=","),
                    alt.Tooltip("lr_opt:Q", format=".3g"),
                    alt.Tooltip("band_lo:Q", format=".3g"),
                    alt.Tooltip("band_hi:Q", format=".3g"),
                ],
            )
        )
    if not layers:
        layers = [alt.Chart(pd.DataFrame({"batch": [], "lr": []})).mark_point()]
    return alt.layer(*layers).properties(height=340, title="The ridge against the scaling rules")


def steps_chart(
    steps: pd.DataFrame, fits: pd.DataFrame, b_crit: float | None, b_simple: float | None
) -> alt.LayerChart:
    """Steps-to-target at each batch's fastest rate (+- sd over seeds) on log-log axes, the
    fitted S = S_min (1 + B_noise/B), the three regimes shaded around B_crit, and B_crit and
    B_simple as rules."""
    s = steps.dropna(subset=["steps"]).copy()
    x = _log_x()
    y = alt.Y("steps:Q", title="updates to the target", scale=alt.Scale(type="log"))
    layers = []
    if b_crit is not None and math.isfinite(b_crit) and not s.empty:
        lo = float(min(s.batch.min(), b_crit / 8)) / 1.5
        hi = float(max(s.batch.max(), b_crit * 8)) * 1.5
        zones = pd.DataFrame(
            {
                "a": [lo, b_crit / 4, 4 * b_crit],
                "b": [b_crit / 4, 4 * b_crit, hi],
                "regime": ["perfect scaling", "diminishing returns", "maximal data parallelism"],
            }
        )
        layers.append(
            alt.Chart(zones)
            .mark_rect(opacity=0.5)
            .encode(
                x=alt.X("a:Q", scale=alt.Scale(type="log", base=2, domain=[lo, hi])),
                x2="b:Q",
                color=alt.Color(
                    "regime:N",
                    title=None,
                    sort=list(zones.regime),
                    scale=alt.Scale(domain=list(zones.regime), range=REGIME_COLORS),
                    legend=alt.Legend(orient="top", labelLimit=LABEL_LIMIT, columns=LEGEND_COLUMNS),
                ),
            )
        )
    curve = fits.dropna(subset=["steps"]) if not fits.empty else fits
    if not curve.empty:
        layers.append(alt.Chart(curve).mark_line(color="#495057", strokeWidth=2).encode(x=x, y=y))
    if not s.empty:
        s["lo"] = (s.steps - s.steps_sd.fillna(0)).clip(lower=1)
        s["hi"] = s.steps + s.steps_sd.fillna(0)
        layers.append(alt.Chart(s).mark_rule(color="#1971c2").encode(x=x, y="lo:Q", y2="hi:Q"))
        layers.append(
            alt.Chart(s)
            .mark_circle(size=90, color="#1971c2")
            .encode(
                x=x,
                y=y,
                tooltip=[
                    alt.Tooltip("batch:Q", format=","),
                    alt.Tooltip("lr:Q", title="fastest rate", format=".3g"),
                    alt.Tooltip("steps:Q", format=",.0f"),
                    alt.Tooltip("steps_sd:Q", title="sd", format=",.0f"),
                ],
            )
        )
    marks = [
        {"batch": v, "what": f"{name} = {v:,.0f}"}
        for name, v in (("B_crit", b_crit), ("B_simple", b_simple))
        if v is not None and math.isfinite(v) and v > 0
    ]
    if marks:
        m = pd.DataFrame(marks)
        layers.append(
            alt.Chart(m)
            .mark_rule(strokeDash=[5, 3], strokeWidth=2)
            .encode(
                x="batch:Q",
                color=alt.value("#343a40"),
                tooltip=["what:N"],
            )
        )
        layers.append(
            alt.Chart(m)
            .mark_text(angle=270, align="left", dx=4, dy=-6, fontSize=11)
            .encode(x="batch:Q", y=alt.value(6), text="what:N")
        )
    if not layers:
        layers = [alt.Chart(pd.DataFrame({"batch": [], "steps": []})).mark_point()]
    return alt.layer(*layers).properties(
        height=340, title="Steps to the target against the batch (log-log)"
    )
