"""Sweeps: many runs of the one training loop, each from the same initial weights and with the
same budget, so that only the swept setting differs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_number, require
from lrbs.core.loop import Budget, Event, OptimSpec, RunResult, TrainConfig, train


def check_grid(values: tuple[float, ...], name: str = "learning rate") -> tuple[float, ...]:
    """Positive, finite, no repeats; returned sorted."""
    require(len(values) > 0, f"the {name} grid is empty: give at least one value")
    for v in values:
        positive_number(name, v)
    dupes = sorted({v for v in values if values.count(v) > 1})
    require(not dupes, f"the {name} grid repeats {', '.join(f'{v:g}' for v in dupes)}")
    return tuple(sorted(float(v) for v in values))


@dataclass(frozen=True)
class LRSweepConfig:
    lrs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    budget: Budget = field(default_factory=lambda: Budget(seconds=5))
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0
    log_every: int = 10
    min_eval_seconds: float = 0.25  # short epochs: evaluate a few times a second, not each one

    def __post_init__(self) -> None:
        object.__setattr__(self, "lrs", check_grid(tuple(self.lrs)))
        require(len(self.lrs) <= 12, "at most 12 learning rates in one sweep")
        for lr in self.lrs:
            OptimSpec(self.optimizer, lr, self.momentum)
        TrainConfig(batch_size=self.batch_size, budget=self.budget, log_every=self.log_every)

    def train_config(self, lr: float) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size,
            budget=self.budget,
            optim=OptimSpec(self.optimizer, lr, self.momentum),
            seed=self.seed,
            log_every=self.log_every,
            min_eval_seconds=self.min_eval_seconds,
        )


def run_named(
    names: Sequence[str],
    prepare: Callable[[str], tuple[nn.Module, TrainConfig, dict]],
    data: TensorData,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_run_end: Callable[[str, RunResult], None] | None = None,
) -> dict[str, RunResult]:
    """One run of the training loop per name, in order: `prepare(name)` gives the model, its
    config and train()'s other arguments (optimizer, scheduler, hooks). A user stop ends the
    whole series after the current run."""
    results = {}
    for name in names:
        model, tc, extra = prepare(name)
        r = train(model, data, tc, run_id=name, on_event=on_event, stop=stop, **extra)
        results[name] = r
        if on_run_end is not None:
            on_run_end(name, r)
        if r.status == "stopped":
            break
    return results


def refine(best: float, points: int = 5) -> tuple[float, ...]:
    """The decade around `best`, on an exponential grid: best x 10^(-1/2 .. +1/2)."""
    positive_number("learning rate", best)
    return tuple(float(f"{best * 10**e:.3g}") for e in np.linspace(-0.5, 0.5, points))


def add_decade(lrs: tuple[float, ...], above: bool = True) -> tuple[float, ...]:
    grid = check_grid(tuple(lrs))
    new = grid[-1] * 10 if above else grid[0] / 10
    return check_grid((*grid, float(f"{new:.3g}")))


def run_label(lr: float) -> str:
    return f"lr={lr:g}"


def lr_sweep(
    make_model: Callable[[], nn.Module],
    data: TensorData,
    cfg: LRSweepConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_run_end: Callable[[float, RunResult], None] | None = None,
    vectorize: bool | None = None,
) -> list[RunResult]:
    """Each rate trains a fresh `make_model()` (the same initial weights every call) for the
    same budget. A user stop ends the sweep after the current run. `vectorize`: train all the
    rates at once, stacked (lrbs.core.stacked); None = where it pays (see `should_stack`)."""
    if cfg.batch_size > data.n_train:
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training set ({data.n_train})"
        )
    if vectorize is None:
        vectorize = should_stack(make_model, data, cfg)
    if vectorize:
        from lrbs.core.stacked import train_stacked

        results = train_stacked(
            make_model,
            data,
            cfg.train_config(cfg.lrs[0]),
            cfg.lrs,
            run_ids=[run_label(lr) for lr in cfg.lrs],
            on_event=on_event,
            stop=stop,
        )
        for lr, r in zip(cfg.lrs, results, strict=True):
            if on_run_end is not None:
                on_run_end(lr, r)
        return results
    results = []
    for lr in cfg.lrs:
        r = train(
            make_model(),
            data,
            cfg.train_config(lr),
            run_id=run_label(lr),
            on_event=on_event,
            stop=stop,
        )
        results.append(r)
        if on_run_end is not None:
            on_run_end(lr, r)
        if r.status == "stopped":
            break
    return results


def should_stack(make_model: Callable[[], nn.Module], data: TensorData, cfg: LRSweepConfig) -> bool:
    """Stack the rates on a GPU, when the budget is not in seconds (K stacked runs would share
    it), the model can be stacked, and there is more than one rate. On a CPU a small model's
    step is compute-bound: 8 stacked rates measured 1.4x faster than 8 runs in a row, 2 rates
    slower (bench/RESULTS.md), so the CPU keeps the sequential path unless asked."""
    from lrbs.core.stacked import stackable

    return (
        data.x_train.device.type == "cuda"
        and cfg.budget.seconds is None
        and len(cfg.lrs) > 1
        and stackable(make_model()) is None
    )


def sweep_table(results: list[RunResult], lrs: tuple[float, ...]) -> pd.DataFrame:
    """One row per rate, like seed 000's printout, with the best (lowest validation loss among
    runs that did not diverge) marked."""
    rows = []
    for lr, r in zip(lrs, results, strict=False):
        rows.append(
            {
                "lr": lr,
                "status": r.status,
                "train_loss": r.final_loss,
                "val_loss": r.val_loss,
                "val_acc": r.val_acc,
                "epochs": r.epochs,
                "steps": r.steps,
                "seconds": r.elapsed,
            }
        )
    return mark_best(pd.DataFrame(rows))


def mark_best(df: pd.DataFrame) -> pd.DataFrame:
    """Flag the run with the lowest validation loss among those that did not diverge."""
    df = df.copy()
    if df.empty:
        return df
    ok = df[(df.status != "diverged") & df.val_loss.notna()]
    df["best"] = False
    if not ok.empty:
        df.loc[ok.val_loss.astype(float).idxmin(), "best"] = True
    return df


def best_lr(table: pd.DataFrame) -> float | None:
    if table.empty or not table.best.any():
        return None
    return float(table.loc[table.best, "lr"].iloc[0])
