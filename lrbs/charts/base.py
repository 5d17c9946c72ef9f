"""What every chart shares: axis formats, thinning, the run colours, and the curves of named
runs with their seed bands."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

COUNT_FORMAT = "~s"  # log axes of counts (batch sizes, updates): 64, 1k, 10k
LOG_FORMAT = "~e"  # every log axis of rates: 1e-7, 5e-3, 1e+0 (d3-format), never 0.000001
MAX_POINTS = 2000  # per chart layer: Altair refuses more than 5000 rows, and browsers slow down


X_AXES = {
    "elapsed": "wall-clock seconds",
    "step": "parameter updates",
    "epoch": "epochs",
    "samples": "samples seen",
}


def y_window(values: pd.Series, head: float | None = None) -> list[float]:
    """A y range that shows the interesting part: from a bit under the lowest value to a bit
    over the starting level, so one blow-up to 1e4 does not flatten the curve."""
    v = values[np.isfinite(values)]
    if v.empty:
        return [0.0, 1.0]
    lo = float(v.min())
    top = float(head if head is not None else v.iloc[: max(3, len(v) // 10)].max())
    hi = max(top, lo) + 0.15 * max(top - lo, 1e-3)
    return [lo - 0.05 * (hi - lo), hi]


def thin(d: pd.DataFrame, max_points: int, by: str | None) -> pd.DataFrame:
    """Every k-th row of each group (and its last), so a live chart stays cheap to redraw."""
    if len(d) <= max_points:
        return d
    k = int(np.ceil(len(d) / max_points))
    if by is None:
        return d.iloc[sorted({*range(0, len(d), k), len(d) - 1})]
    pos = d.groupby(by).cumcount()
    last = pos == d.groupby(by)[by].transform("size") - 1
    return d[(pos % k == 0) | last]


def log_window(values: pd.Series, decades: float = 4.0) -> list[float]:
    """A log axis that shows the top `decades` of positive values: a rate annealed to 1e-9
    would otherwise squash every other curve against the top."""
    v = values[values > 0]
    if v.empty:
        return [1e-3, 1.0]
    top = float(v.max())
    return [max(float(v.min()), top / 10**decades) / 1.2, top * 1.2]


def color_scale(domain: list[str] | None = None) -> alt.Scale:
    if domain is None:
        return alt.Scale(scheme="tableau10")
    return alt.Scale(domain=domain, scheme="tableau20" if len(domain) > 10 else "tableau10")


def runs_chart(
    events: pd.DataFrame,
    x: str = "elapsed",
    y: str = "loss",
    color: str = "run_id",
    title: str = "",
    diverged: list[str] | None = None,
    log_y: bool = False,
    domain: list[str] | None = None,
) -> alt.LayerChart:
    """Curves of several runs overlaid; runs that diverged end with a red cross. `domain`
    fixes the runs' colours (so several charts of the same runs agree)."""
    d = events.dropna(subset=[y]).copy()
    d = thin(d[np.isfinite(d[y])], 2500, color)
    sort = list(dict.fromkeys(events[color]))  # run order, not alphabetical
    y_dom, cap = runs_y_domain(d, y, color, diverged) if not log_y and not d.empty else (None, None)
    if cap is not None:
        title = alt.TitleParams(
            title,
            subtitle=f"y capped at {cap:.3g}: a diverging run's higher values run along the top",
        )
    y_scale = (
        alt.Scale(type="log", domain=log_window(d[y]), clamp=True)
        if log_y and not d.empty
        else alt.Scale(domain=y_dom if y_dom is not None else alt.Undefined, clamp=True)
    )
    enc = dict(
        x=alt.X(f"{x}:Q", title=X_AXES.get(x, x)),
        y=alt.Y(
            f"{y}:Q",
            title=y.replace("_", " "),
            scale=y_scale,
            axis=alt.Axis(format=LOG_FORMAT) if log_y else alt.Undefined,
        ),
        color=alt.Color(
            f"{color}:N",
            title=None,
            sort=sort,
            legend=alt.Legend(orient="top", columns=5 if len(sort) > 5 else alt.Undefined),
            scale=color_scale(domain),
        ),
    )
    lines = (
        alt.Chart(d)
        .mark_line(strokeWidth=2)
        .encode(
            **enc,
            tooltip=[
                f"{color}:N",
                alt.Tooltip(f"{x}:Q", format=".3g"),
                alt.Tooltip(f"{y}:Q", format=".4f"),
            ],
        )
    )
    layers = [lines]
    if diverged:
        ends = d[d[color].isin(diverged)].groupby(color).tail(1)
        if not ends.empty:
            layers.append(
                alt.Chart(ends)
                .mark_point(shape="cross", size=200, color="#c92a2a", strokeWidth=3)
                .encode(x=enc["x"], y=enc["y"], tooltip=[f"{color}:N"])
            )
    return alt.layer(*layers).properties(height=340, title=title)


SPIKE_ROOM = 0.5  # a diverged run may rise this share of the others' range above them


def runs_y_domain(
    d: pd.DataFrame, y: str, group: str, diverged: list[str] | None = None
) -> tuple[list[float], float | None]:
    """A y range holding every value of the runs that did not diverge (never clipped), and a
    cap over them for the runs that did, so one blow-up to 1e4 does not flatten the rest:
    (domain, the cap when some value lies above it, else None)."""
    v = d[y].astype(float)
    lo = float(v.min())
    bad = d[group].isin(diverged or [])
    if (~bad).any():
        top = float(v[~bad].max())
    else:  # every run diverged: show where they started and a little above
        top = float(d.groupby(group, sort=False)[y].first().max())
    hi = float(v.max())
    cap = None
    if hi > top:
        limit = top + SPIKE_ROOM * max(top - lo, 1e-3)
        if hi > limit:
            cap, hi = limit, limit
    pad = 0.05 * max(hi - lo, 1e-3)
    return [lo - pad, hi + pad], cap


def band_chart(
    events: pd.DataFrame, x: str, y: str, group: str, title: str = "", bins: int = 60
) -> alt.LayerChart:
    """Repeats of one setting as a mean line inside a min-max band: the runs' x values are
    binned (they differ from seed to seed under a time budget) and y is summarised per bin."""
    d = events.dropna(subset=[y]).copy()
    d = d[np.isfinite(d[y])]
    if d.empty:
        return alt.layer(alt.Chart(d).mark_line()).properties(height=340, title=title)
    edges = np.linspace(d[x].min(), d[x].max(), bins + 1)
    d["bin"] = np.clip(np.digitize(d[x], edges) - 1, 0, bins - 1)
    g = (
        d.groupby([group, "bin"])
        .agg(x=(x, "mean"), mean=(y, "mean"), lo=(y, "min"), hi=(y, "max"))
        .reset_index()
    )
    order = list(dict.fromkeys(events[group]))
    color = alt.Color(
        f"{group}:N",
        title=None,
        sort=order,
        legend=alt.Legend(orient="top"),
        scale=alt.Scale(scheme="tableau10"),
    )
    xs = alt.X("x:Q", title=X_AXES.get(x, x))
    band = (
        alt.Chart(g)
        .mark_area(opacity=0.22)
        .encode(
            x=xs,
            y=alt.Y("lo:Q", title=y.replace("_", " "), scale=alt.Scale(zero=False)),
            y2="hi:Q",
            color=color,
        )
    )
    line = (
        alt.Chart(g)
        .mark_line(strokeWidth=2)
        .encode(
            x=xs,
            y=alt.Y("mean:Q"),
            color=color,
            tooltip=[
                f"{group}:N",
                alt.Tooltip("x:Q", format=".3g"),
                alt.Tooltip("mean:Q", format=".4f"),
                alt.Tooltip("lo:Q", format=".4f"),
                alt.Tooltip("hi:Q", format=".4f"),
            ],
        )
    )
    return alt.layer(band, line).properties(height=340, title=title)


SEED_SUFFIX = r" seed \d+$"  # the run names of repeats: "lr=0.1 seed 3", "B=64 seed 1"


def repeats_chart(
    events: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    diverged: list[str] | None = None,
    domain: list[str] | None = None,
) -> alt.LayerChart:
    """The curves of `y`: one per run, or, when settings were repeated over seeds (run names
    ending in " seed N"), the seeds' mean inside their min-max band per setting."""
    if events.run_id.astype(str).str.contains(SEED_SUFFIX, regex=True).any():
        rows = events.assign(setting=events.run_id.str.replace(SEED_SUFFIX, "", regex=True))
        return band_chart(
            rows, x=x, y=y, group="setting", title=title + " (seeds: mean and min-max band)"
        )
    return runs_chart(events, x=x, y=y, title=title, diverged=diverged, domain=domain)
