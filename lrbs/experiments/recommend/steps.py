"""Recommend's steps: their names, titles and shares of the progress bar, and `Stage`, one
step's view of the pipeline's sink (its channels prefixed "<step>/")."""

from __future__ import annotations

from lrbs.runs.sink import Sink

STEPS = ("range", "sweep", "probe", "throughput", "noise", "confirm")
STEP_TITLES = {
    "range": "Range test",
    "sweep": "Confirmation sweep",
    "probe": "Largest batch that fits",
    "throughput": "Throughput per batch",
    "noise": "Gradient noise scale",
    "confirm": "Runs at the chosen batch",
}
# share of the pipeline's progress bar per step (roughly its share of the time)
WEIGHTS = {
    "range": 0.08,
    "sweep": 0.55,
    "probe": 0.02,
    "throughput": 0.08,
    "noise": 0.12,
    "confirm": 0.15,
}


class Stage(Sink):
    """One step's view of the pipeline's sink: its channels prefixed with the step's name,
    extra columns added to each row, its progress mapped into [lo, hi] of the pipeline's."""

    def __init__(self, sink: Sink, step: str, lo: float, hi: float, columns: dict | None = None):
        self.sink, self.step, self.lo, self.hi = sink, step, lo, hi
        self.columns = columns or {}

    def emit(self, channel: str, row: dict) -> None:
        self.sink.emit(f"{self.step}/{channel}", row | self.columns)

    def progress(self, fraction: float, text: str = "") -> None:
        f = max(0.0, min(1.0, fraction))
        self.sink.progress(self.lo + (self.hi - self.lo) * f, f"{self.step}: {text}")


def _spans() -> dict[str, tuple[float, float]]:
    out, at = {}, 0.0
    for name in STEPS:
        out[name] = (at, at + WEIGHTS[name])
        at += WEIGHTS[name]
    return out


SPANS = _spans()


def step_progress(rows: dict, fraction: float) -> tuple[float, str]:
    """The progress as the steps count it, so the bar and its text agree: k steps ended (their
    "steps" rows) and the share of the step under way (the pipeline's `fraction`, which each
    step's weight maps into its span, SPANS) give the bar (k + share) / len(STEPS)."""
    k, n = len(rows.get("steps", [])), len(STEPS)
    if k >= n:
        return 1.0, f"all {n} steps done"
    lo, hi = SPANS[STEPS[k]]
    share = min(1.0, max(0.0, (fraction - lo) / (hi - lo)))
    title = STEP_TITLES[STEPS[k]].lower()
    return (k + share) / n, f"{k} of {n} steps done; now step {k + 1}, {title} ({share:.0%})"
