"""The charts of the "Find the learning rate" page: the range test (live, and finished with its
suggestions, seed band and zoom brush) and the learning-rate sweep's curves."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from lrbs.charts.base import LOG_FORMAT, MAX_POINTS, repeats_chart, thin, y_window

ZOOM = "zoom"  # the name of the brush's selection, as the page reads it back


def range_test_chart(
    points: pd.DataFrame,
    suggestions: pd.DataFrame | None = None,
    brush: alt.Parameter | None = None,
    band: pd.DataFrame | None = None,
) -> alt.LayerChart:
    """Loss against learning rate on a log axis: faint raw points, the smoothed line per
    round (and seed), suggestions as labelled rules, an optional min-max band across seeds."""
    d = points.copy()
    d["curve"] = "round " + d["round"].astype(str)
    if d["seed"].nunique() > 1:
        d["curve"] = d["curve"] + ", seed " + d["seed"].astype(str)
    first = d[d["round"] == d["round"].min()]
    y_dom = y_window(pd.concat([d.smoothed, d.loss]), head=float(first.smoothed.iloc[:5].max()))
    d = thin(d, MAX_POINTS, by="curve")  # a long test draws every k-th point (the CSV has all)
    if band is not None and len(band) > MAX_POINTS:
        band = band.iloc[:: int(np.ceil(len(band) / MAX_POINTS))]
    x_dom = [float(d.lr.min()), float(d.lr.max())]
    x = alt.X(
        "lr:Q",
        title="learning rate (log)",
        scale=alt.Scale(type="log", domain=x_dom, nice=False),
        axis=alt.Axis(format=LOG_FORMAT),
    )
    y = alt.Y("loss:Q", title="training loss", scale=alt.Scale(domain=y_dom, clamp=True))
    color = alt.Color(
        "curve:N", title=None, legend=alt.Legend(orient="top"), scale=alt.Scale(scheme="tableau10")
    )
    raw = alt.Chart(d).mark_circle(size=14, opacity=0.25).encode(x=x, y=y, color=color)
    line = (
        alt.Chart(d)
        .mark_line(strokeWidth=2.5)
        .encode(
            x=x,
            y=alt.Y("smoothed:Q", scale=alt.Scale(domain=y_dom, clamp=True)),
            color=color,
            detail="seed:N",
            tooltip=[
                alt.Tooltip("lr:Q", format=".3g"),
                alt.Tooltip("smoothed:Q", format=".4f"),
                alt.Tooltip("loss:Q", format=".4f"),
                "curve:N",
            ],
        )
    )
    if brush is not None:
        line = line.add_params(brush)
    layers = [raw, line]
    if band is not None and not band.empty:
        layers.insert(
            0,
            alt.Chart(band)
            .mark_area(opacity=0.2, color="#868e96")
            .encode(
                x="lr:Q", y=alt.Y("lo:Q", scale=alt.Scale(domain=y_dom, clamp=True)), y2="hi:Q"
            ),
        )
    if suggestions is not None and not suggestions.empty:
        s = suggestions.copy()
        rules = (
            alt.Chart(s)
            .mark_rule(strokeDash=[5, 3], strokeWidth=1.5)
            .encode(
                x="lr:Q",
                color=alt.value("#495057"),
                tooltip=["title:N", alt.Tooltip("lr:Q", format=".3g"), "meaning:N"],
            )
        )
        text = (
            alt.Chart(apart(s, float(d.lr.min()), float(d.lr.max())))
            .mark_text(angle=270, align="left", dx=4, dy=-6, fontSize=11)
            .encode(x="lr:Q", y=alt.value(4), text="label:N")
        )
        layers += [rules, text]
    return alt.layer(*layers).properties(height=380)


def apart(labels: pd.DataFrame, lo: float, hi: float, gap: float = 0.04) -> pd.DataFrame:
    """Suggestion labels that would overlap (closer than `gap` of the log axis's width) joined
    into one label at the first one's rate ("Steepest 0.01 · Valley 0.012")."""
    s = labels.dropna(subset=["lr"]).sort_values("lr")
    s = s[s.lr > 0]
    if s.empty or hi <= lo or lo <= 0:
        return s[["lr", "label"]]
    width = np.log10(hi) - np.log10(lo)
    out: list[dict] = []
    for lr, label in zip(s.lr, s.label, strict=True):
        if out and (np.log10(lr) - np.log10(out[-1]["lr"])) < gap * width:
            out[-1]["label"] += " · " + label
        else:
            out.append({"lr": float(lr), "label": str(label)})
    return pd.DataFrame(out, columns=["lr", "label"])


def range_test_live(points: pd.DataFrame) -> alt.LayerChart:
    """The curves streamed so far (every round and seed of the run)."""
    return range_test_chart(points)


def range_test_zoom(
    points: pd.DataFrame, suggestions: pd.DataFrame, band: pd.DataFrame | None = None
) -> alt.LayerChart:
    """The finished test's last round on its own rate axis (a zoomed round is not squeezed
    into the first round's 1e-7..10), its suggestions as labelled rules kept apart, its seed
    band, and a brush along the rate axis whose range a zoom-in round can take (the selection
    comes back as {"zoom": {"lr": [lo, hi]}})."""
    brush = alt.selection_interval(encodings=["x"], name=ZOOM)
    last = points[points["round"] == points["round"].max()] if not points.empty else points
    return range_test_chart(last, suggestions, brush=brush, band=band)


def earlier_rounds(points: pd.DataFrame) -> list[tuple[int, alt.LayerChart]]:
    """Each round before the last, on its own rate axis (small), for the page to show beside
    the last one."""
    if points.empty:
        return []
    rounds = sorted(points["round"].unique())[:-1]
    return [
        (int(r), range_test_chart(points[points["round"] == r]).properties(height=220))
        for r in rounds
    ]


def sweep_curves(
    events: pd.DataFrame, runs: list[dict], x: str = "elapsed", y: str = "loss"
) -> alt.LayerChart | alt.Chart | None:
    """The training loss (y="loss") or the validation loss (y="val_loss", what the best is
    picked by) of every rate against `x`, diverged rates marked, repeats as a band; None
    before the first point."""
    kind, title = ("train", "Training loss") if y == "loss" else ("eval", "Validation loss")
    rows = events[(events.kind == kind) & events[y].notna()]
    if rows.empty:
        return None
    diverged = [r["run"] for r in runs if r.get("status") == "diverged"]
    return repeats_chart(rows, x, y, title, diverged)
