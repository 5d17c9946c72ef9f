"""The 1-D gradient-descent toy's charts: paths on the loss, loss per step, the stability line."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from lrbs.charts.base import LOG_FORMAT

STATUS_COLORS = {
    "converged": "#2b8a3e",
    "converging": "#1971c2",
    "oscillating": "#e67700",
    "diverged": "#c92a2a",
}


def gd_path_chart(
    curve: pd.DataFrame, path: pd.DataFrame, minima: tuple[float, ...], height: int = 300
) -> alt.LayerChart:
    """One GD path on its loss curve: numbered steps joined in order, the start (red x), the
    minimum (green x). Points outside the picture are pinned to its edge as triangles and
    labelled with where they really are, so a diverging path is seen leaving."""
    lo, hi = float(curve.x.min()), float(curve.x.max())
    in_view = path.loss[(path.x >= lo) & (path.x <= hi)]
    y_lo = min(float(curve.loss.min()), float(in_view.min()) if len(in_view) else np.inf)
    y_hi = float(curve.loss.max())
    y_hi = y_hi + 0.05 * (y_hi - y_lo)
    p = path.copy()
    p["px"] = p.x.clip(lo, hi)
    p["py"] = p.loss.clip(y_lo, y_hi)
    p["outside"] = (p.px != p.x) | (p.py != p.loss)
    # Number the first steps and the last; past that the labels would pile up on each other.
    # Of the points outside the picture, label the last with where it really is.
    p["label"] = ""
    shown = (p.step <= 6) | (p.step == p.step.max())
    p.loc[shown & ~p.outside, "label"] = p.step[shown & ~p.outside].astype(str)
    out_rows = p.index[p.outside]
    if len(out_rows):
        i = out_rows.max()
        p.loc[i, "label"] = f"step {p.step[i]}: x = {p.x[i]:.3g}"
    xs = alt.X("px:Q", title="x", scale=alt.Scale(domain=[lo, hi], nice=False))
    ys = alt.Y("py:Q", title="loss", scale=alt.Scale(domain=[y_lo, y_hi], nice=False))
    base = alt.Chart(p).encode(x=xs, y=ys)
    tip = [
        alt.Tooltip("step:Q"),
        alt.Tooltip("x:Q", format=".4g"),
        alt.Tooltip("loss:Q", format=".4g"),
    ]
    curve_line = (
        alt.Chart(curve.rename(columns={"x": "px", "loss": "py"}))
        .mark_line(color="#868e96", strokeWidth=2)
        .encode(x=xs, y=ys)
    )
    steps = base.mark_line(color="#1971c2", strokeWidth=1.2, opacity=0.8).encode(order="step:Q")
    dots = (
        base.transform_filter("!datum.outside")
        .mark_circle(size=45, color="#1971c2")
        .encode(tooltip=tip)
    )
    gone = (
        base.transform_filter("datum.outside")
        .mark_point(shape="triangle", size=110, color="#c92a2a", filled=True)
        .encode(tooltip=tip)
    )
    labels = (
        base.transform_filter("datum.label != ''")
        .mark_text(dy=-10, fontSize=11, color="#343a40")
        .encode(text="label:N")
    )
    marks = pd.DataFrame(
        [{"px": p.px.iloc[0], "py": p.py.iloc[0], "what": "start"}]
        + [
            {"px": m, "py": float(np.interp(m, curve.x, curve.loss)), "what": "minimum"}
            for m in minima
            if lo <= m <= hi
        ]
    )
    crosses = (
        alt.Chart(marks)
        .mark_point(shape="cross", size=220, filled=True, angle=45)
        .encode(
            x=xs,
            y=ys,
            color=alt.Color(
                "what:N",
                scale=alt.Scale(domain=["start", "minimum"], range=["#e03131", "#2f9e44"]),
                legend=None,
            ),
            tooltip=["what:N"],
        )
    )
    layers = alt.layer(curve_line, steps, dots, gone, labels, crosses)
    return layers.properties(height=height)


def gd_loss_chart(paths: pd.DataFrame, f_min: float) -> alt.Chart:
    """Distance to the lowest loss per step for every learning rate, on a log scale, so that
    geometric decay and growth both read as straight lines."""
    d = paths.copy()
    d["lr"] = d.lr.map(lambda v: f"lr = {v:g}")
    d["shown"] = (d.loss - f_min).clip(lower=1e-12)
    return (
        alt.Chart(d)
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y(
                "shown:Q",
                title="loss − min (log)",
                scale=alt.Scale(type="log"),
                axis=alt.Axis(format=LOG_FORMAT),
            ),
            color=alt.Color("lr:N", title=None),
            tooltip=["lr:N", "step:Q", alt.Tooltip("loss:Q", format=".4g"), "status:N"],
        )
        .properties(height=260, title="Loss per step")
    )


def stability_chart(lrs: list[float], statuses: list[str], limit: float, best: float | None):
    """The chosen learning rates on a line against the stability limit 2/c."""
    hi = max(max(lrs), limit) * 1.25
    zones = pd.DataFrame(
        [
            {"a": 0.0, "b": limit, "zone": "converges"},
            {"a": limit, "b": hi, "zone": "diverges"},
        ]
    )
    zone = (
        alt.Chart(zones)
        .mark_bar(opacity=0.3)
        .encode(
            y=alt.value(0),
            y2=alt.value(50),
            x=alt.X("a:Q", title="learning rate", scale=alt.Scale(domain=[0, hi], nice=False)),
            x2="b:Q",
            color=alt.Color(
                "zone:N",
                scale=alt.Scale(domain=["converges", "diverges"], range=["#8ce99a", "#ffa8a8"]),
                legend=alt.Legend(orient="bottom"),
            ),
        )
    )
    rules = [{"lr": limit, "what": f"limit 2/c = {limit:.3g}"}]
    if best is not None:
        rules.append({"lr": best, "what": f"fastest 1/c = {best:.3g}"})
    rule = (
        alt.Chart(pd.DataFrame(rules))
        .mark_rule(strokeDash=[4, 3], color="#495057")
        .encode(x="lr:Q", tooltip=["what:N"])
    )
    pts = pd.DataFrame({"lr": lrs, "status": statuses, "label": [f"{v:g}" for v in lrs]})
    dots = (
        alt.Chart(pts)
        .mark_circle(size=160, opacity=1)
        .encode(
            x="lr:Q",
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=list(STATUS_COLORS), range=list(STATUS_COLORS.values())),
                legend=None,
            ),
            tooltip=["label:N", "status:N"],
        )
    )
    text = alt.Chart(pts).mark_text(dy=-14).encode(x="lr:Q", text="label:N")
    return (
        alt.layer(zone, rule, dots, text).resolve_scale(color="independent").properties(height=90)
    )
