"""Charts of the run history and of the data: overlaid curves of stored runs, samples per
class."""

from __future__ import annotations

import altair as alt
import pandas as pd

PREFERRED_X = ("step", "lr", "epoch", "elapsed")
PREFERRED_Y = ("loss", "smoothed", "val_loss", "b_simple")


def numeric_columns(points: pd.DataFrame) -> list[str]:
    return [
        c
        for c in points.columns
        if c not in ("run", "seq") and pd.api.types.is_numeric_dtype(points[c])
    ]


def default_axes(numeric: list[str]) -> tuple[str, str]:
    """The x and y a curve of these columns is most likely read by."""
    x = next((c for c in PREFERRED_X if c in numeric), numeric[0])
    y = next((c for c in PREFERRED_Y if c in numeric and c != x), numeric[1])
    return x, y


def overlay_chart(points: pd.DataFrame, x: str, y: str, log_x: bool = False) -> alt.Chart:
    """One line per stored run (and per sub-run: a sweep's rates, a study's trials), coloured
    by run; sub-runs are drawn apart, never joined into one line."""
    d = points.dropna(subset=[x, y]).copy()
    d["label"] = "#" + d.run.astype(str) + " " + d.run_kind + " " + d.run_name.fillna("")
    detail = []
    for part in ("run_id", "trial", "seed", "round"):
        if part in d and d[part].notna().any():
            d[part] = d[part].astype(str)
            detail.append(f"{part}:N")
    sub = [c for c in ("run_id", "trial", "seed") if c in d]
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
