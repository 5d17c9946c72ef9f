"""Altair chart builders: DataFrame in, Chart out. No Streamlit here, so the CLI and tests can
build the same charts the pages show."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

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


def _y_window(values: pd.Series, head: float | None = None) -> list[float]:
    """A y range that shows the interesting part: from a bit under the lowest value to a bit
    over the starting level, so one blow-up to 1e4 does not flatten the curve."""
    v = values[np.isfinite(values)]
    if v.empty:
        return [0.0, 1.0]
    lo = float(v.min())
    top = float(head if head is not None else v.iloc[: max(3, len(v) // 10)].max())
    hi = max(top, lo) + 0.15 * max(top - lo, 1e-3)
    return [lo - 0.05 * (hi - lo), hi]


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
    y_dom = _y_window(pd.concat([d.smoothed, d.loss]), head=float(first.smoothed.iloc[:5].max()))
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


COUNT_FORMAT = "~s"  # log axes of counts (batch sizes, updates): 64, 1k, 10k
LOG_FORMAT = "~e"  # every log axis of rates: 1e-7, 5e-3, 1e+0 (d3-format), never 0.000001
MAX_POINTS = 2000  # per chart layer: Altair refuses more than 5000 rows, and browsers slow down


X_AXES = {
    "elapsed": "wall-clock seconds",
    "step": "parameter updates",
    "epoch": "epochs",
    "samples": "samples seen",
}


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


def _log_window(values: pd.Series, decades: float = 4.0) -> list[float]:
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
        alt.Scale(type="log", domain=_log_window(d[y]), clamp=True)
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
                scale=alt.Scale(type="log", domain=_log_window(d.lr), clamp=True),
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


# ------------------------------------------------------------------ auto-tuning

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
    y_dom = _y_window(d.value) if not d.empty else alt.Undefined
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
    y_dom = _y_window(d.val_loss) if not d.empty else alt.Undefined
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
