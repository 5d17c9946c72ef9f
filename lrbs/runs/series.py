"""One runner for every experiment that trains a series of runs (a sweep of rates or batch
sizes, schedules side by side, batch-size regimes, steps-to-target): each run from its own
prepared model and config, every point to the sink, one "runs" row as each run ends, and the
progress of the whole series as one fraction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.loop import Event, RunResult, TrainConfig, train
from lrbs.runs.sink import Sink


@dataclass(frozen=True)
class Planned:
    """One run of a series: its model (fresh weights), its config, train()'s other
    arguments (optimizer, scheduler, hooks), and columns for its "runs" row."""

    model: nn.Module
    config: TrainConfig
    extra: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)


def run_row(name: str, r: RunResult) -> dict:
    """The "runs" row of a finished run: how it ended and its headline figures."""
    return {
        "run": name,
        "status": r.status,
        "message": r.message,
        "train_loss": r.final_loss,
        "val_loss": r.val_loss,
        "val_acc": r.val_acc,
        "train_eval_loss": r.train_eval_loss,
        "epochs": r.epochs,
        "steps": r.steps,
        "samples": r.samples,
        "seconds": r.elapsed,
    }


def run_series(
    names: Sequence[str],
    prepare: Callable[[str], Planned],
    data: TensorData,
    sink: Sink,
    stop: threading.Event | None = None,
    *,
    on_run_end: Callable[[str, RunResult], Any] | None = None,
) -> dict[str, RunResult]:
    """Train one run per name, in order. A user stop ends the series after the current run
    (that run ends "stopped"; the ones not started are absent)."""
    results: dict[str, RunResult] = {}
    n = len(names)
    for i, name in enumerate(names):
        plan = prepare(name)

        def on_event(e: Event, i=i, name=name, budget=plan.config.budget) -> None:
            sink.emit("events", e.as_dict())
            sink.progress((i + budget.fraction(e)) / n, name)

        r = train(
            plan.model, data, plan.config, run_id=name, on_event=on_event, stop=stop, **plan.extra
        )
        results[name] = r
        sink.emit("runs", run_row(name, r) | plan.columns)
        sink.progress((i + 1) / n, name)
        if on_run_end is not None:
            on_run_end(name, r)
        if r.status == "stopped" or (stop is not None and stop.is_set()):
            break
    return results
