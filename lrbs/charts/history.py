"""Charts of the run history and of the data: overlaid curves of stored runs, samples per
class."""

from __future__ import annotations

from collections.abc import Iterable

import altair as alt
import pandas as pd

PREFERRED_X = ("step", "lr", "epoch", "elapsed")
PREFERRED_Y = ("loss", "smoothed", "val_loss", "b_simple")


def numeric_columns(points: pd.DataFrame) -> list[str]:
    return [
        c
        for c in points.columns
        if c not in ("history_id", "seq") and pd.api.types.is_numeric_dtype(points[c])
    ]


X_BY_KIND = {"lr-find": "lr"}  # a range test is read against its rate, not its step


def default_axes(numeric: list[str], kinds: Iterable[str] = ()) -> tuple[str, str]:
    """The x and y a curve of these columns is most likely read by (for runs of `kinds`)."""
    own = {X_BY_KIND.get(k) for k in kinds}  # only when every run is read the same way
    first = [own.pop()] if len(own) == 1 and None not in own else []
    x = next((c for c in (*first, *PREFERRED_X) if c in numeric), numeric[0])
    y = next((c for c in PREFERRED_Y if c in numeric and c != x), numeric[1])
    return x, y


def wants_log(values: pd.Series) -> bool:
    """A positive axis spanning two decades or more (a rate, a batch size) reads on a log
    scale; on a linear one everything below its top decade is squeezed against zero."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v)) and float(v.min()) > 0 and float(v.max()) / float(v.min()) >= 100


def overlay_chart(points: pd.DataFrame, x: str, y: str, log_x: bool | None = None) -> alt.Chart:
    """One line per stored run (and per sub-run: a sweep's rates, a study's trials), coloured
    by run; sub-runs are drawn apart, never joined into one line. `points` as
    `RunStore.export` gives them; `log_x=None`: a log x axis where the data span two decades
    or more."""
    d = points.dropna(subset=[x, y]).copy()
    if log_x is None:
        log_x = wants_log(d[x])
    elif log_x and not (pd.to_numeric(d[x], errors="coerce") > 0).all():
        log_x = False  # a log axis cannot show zero or negative values
    d["label"] = (
        "#" + d.history_id.astype(str) + " " + d.history_kind + " " + d.history_name.fillna("")
    )
    detail = []
    for part in ("run", "run_id", "trial", "seed", "round"):  # sub-runs, as the points name them
        if part in d and d[part].notna().any():
            d[part] = d[part].astype(str)
            detail.append(f"{part}:N")
    sub = [c for c in ("run", "run_id", "trial", "seed") if c in d]
    return (
        alt.Chart(d)
        .mark_line()
        .encode(
            x=alt.X(f"{x}:Q", scale=alt.Scale(type="log" if log_x else "linear")),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(zero=False)),
            color=alt.Color("label:N", title=None, legend=alt.Legend(orient="top")),
            tooltip=["label:N", *[f"{c}:N" for c in sub], f"{x}:Q", f"{y}:Q"],
            order=alt.Order(f"{x}:Q"),
            detail=detail or alt.Undefined,
        )
        .properties(height=360)
    )


def class_counts_chart(names, counts) -> alt.Chart:
    frame = pd.DataFrame({"class": list(names), "samples": list(counts)})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(x=alt.X("class:N", sort=None), y="samples:Q", tooltip=["class", "samples"])
        .properties(height=180, title="Training samples per class")
    )
