"""The charts of the "Find the learning rate" page: the range test (live, and finished with its
suggestions, seed band and zoom brush) and the learning-rate sweep's curves."""

from __future__ import annotations

import altair as alt
import pandas as pd

from lrbs.charts import range_test_chart, repeats_chart

ZOOM = "zoom"  # the name of the brush's selection, as the page reads it back


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
