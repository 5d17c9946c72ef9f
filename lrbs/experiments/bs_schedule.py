"""Batch-size schedules against learning-rate decay: "Don't decay the learning rate, increase
the batch size" (Smith, Kindermans, Ying & Le 2017; seed 004).

Dividing the rate by f and multiplying the batch by f give the same SGD noise scale
g = lr/(1 - m) * N/B, so they should train alike; growing the batch needs far fewer updates.
Each regime is a small object the training loop consults: `batch_size_at` before each step,
`on_epoch_end` after each epoch (where milestones and plateaus act, through torch's MultiStepLR
and ReduceLROnPlateau).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_int, require
from lrbs.core.loop import Budget, Event, OptimSpec, Progress, RunResult, TrainConfig
from lrbs.experiments.noise_scale import sgd_noise_scale
from lrbs.experiments.sweeps import run_named

REGIMES = {
    "decay": "decay the LR by f at each milestone",
    "grow": "grow the batch by f at each milestone, LR fixed",
    "hybrid": "grow the batch at the first milestone(s), then decay the LR",
    "plateau": "grow the batch by f when validation loss stalls, up to N/10; then reduce the LR",
    "constant": "constant LR and batch (baseline)",
}


@dataclass(frozen=True)
class ScheduleConfig:
    regimes: tuple[str, ...] = ("decay", "grow", "hybrid", "plateau", "constant")
    epochs: int = 15
    milestones: tuple[int, ...] = (5, 10)
    factor: float = 5.0
    lr: float = 0.1
    batch: int = 128
    optimizer: str = "momentum"
    momentum: float = 0.9
    hybrid_grow: int = 1  # milestones at which "hybrid" grows the batch before it decays
    patience: int = 2  # epochs without improvement before "plateau" acts
    seed: int = 0

    def __post_init__(self) -> None:
        require(len(self.regimes) > 0, "choose at least one regime")
        for r in self.regimes:
            require(r in REGIMES, f"unknown regime {r!r}; known: {', '.join(REGIMES)}")
        require(len(set(self.regimes)) == len(self.regimes), "a regime is listed twice")
        positive_int("epochs", self.epochs)
        require(self.epochs <= 1000, "epochs is at most 1000")
        require(
            isinstance(self.factor, int | float) and math.isfinite(self.factor) and self.factor > 1,
            f"the factor must be above 1, got {self.factor}",
        )
        ms = list(self.milestones)
        require(all(isinstance(m, int) for m in ms), "milestones must be whole epochs")
        require(
            ms == sorted(ms) and len(set(ms)) == len(ms),
            f"milestones must be in increasing order without repeats, got {ms}",
        )
        for m in ms:
            require(0 < m < self.epochs, f"milestone {m} is outside the run (1..{self.epochs - 1})")
        positive_int("patience", self.patience)
        positive_int("batch size", self.batch)
        require(self.hybrid_grow >= 0, "hybrid_grow must be >= 0")
        OptimSpec(self.optimizer, self.lr, self.momentum)

    @property
    def effective_momentum(self) -> float:
        return self.momentum if self.optimizer == "momentum" else 0.0


def planned(cfg: ScheduleConfig, regime: str, epoch: int, n_train: int) -> tuple[float, int]:
    """(lr, batch) a milestone regime uses during `epoch` (0-based)."""
    passed = sum(1 for m in cfg.milestones if epoch >= m)
    if regime == "decay":
        return cfg.lr / cfg.factor**passed, cfg.batch
    if regime == "grow":
        return cfg.lr, min(n_train, round(cfg.batch * cfg.factor**passed))
    if regime == "hybrid":
        grow = min(passed, cfg.hybrid_grow)
        return (
            cfg.lr / cfg.factor ** (passed - grow),
            min(n_train, round(cfg.batch * cfg.factor**grow)),
        )
    if regime == "constant":
        return cfg.lr, cfg.batch
    raise ConfigError(f"{regime!r} has no fixed plan (it reacts to the validation loss)")


class MilestoneRegime:
    """decay / grow / hybrid / constant: the plan above, applied at each epoch's end. The LR
    part goes through torch's MultiStepLR, stepped once per epoch."""

    def __init__(self, cfg: ScheduleConfig, regime: str, n_train: int) -> None:
        self.cfg, self.regime, self.n = cfg, regime, n_train
        self.batch = planned(cfg, regime, 0, n_train)[1]
        self.sched = None

    def make_scheduler(self, opt: torch.optim.Optimizer):
        decay_at = [m for e, m in enumerate(self.cfg.milestones) if self._decays(e)]
        self.sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=decay_at, gamma=1 / self.cfg.factor
        )
        return None  # stepped per epoch here, not per update by the loop

    def _decays(self, i: int) -> bool:
        return self.regime == "decay" or (self.regime == "hybrid" and i >= self.cfg.hybrid_grow)

    def batch_size_at(self, p: Progress) -> int:
        return self.batch

    def on_epoch_end(self, p: Progress, ev: Event | None, opt) -> None:
        self.sched.step()
        self.batch = planned(self.cfg, self.regime, round(p.epoch), self.n)[1]


class PlateauRegime:
    """Seed 004's Keras recipe: when the validation loss has not improved for `patience`
    epochs, grow the batch by f, while the grown batch stays <= N/10; after that, reduce the
    LR on plateau (torch's ReduceLROnPlateau with the same factor and patience)."""

    def __init__(self, cfg: ScheduleConfig, n_train: int) -> None:
        self.cfg, self.n = cfg, n_train
        self.batch = cfg.batch
        self.best = math.inf
        self.waited = 0
        self.reducer = None
        self.switched_at: int | None = None

    def make_scheduler(self, opt: torch.optim.Optimizer):
        self.reducer = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=1 / self.cfg.factor, patience=self.cfg.patience - 1, threshold=0
        )
        return None

    def batch_size_at(self, p: Progress) -> int:
        return self.batch

    def on_epoch_end(self, p: Progress, ev: Event | None, opt) -> None:
        if ev is None or ev.val_loss is None:
            return
        loss = ev.val_loss
        if self.switched_at is not None:
            self.reducer.step(loss)
            return
        if loss < self.best:
            self.best, self.waited = loss, 0
            return
        self.waited += 1
        if self.waited < self.cfg.patience:
            return
        grown = round(self.batch * self.cfg.factor)
        if grown <= self.n / 10:
            self.batch, self.waited = grown, 0
        else:  # the batch may not grow further: from now on the LR falls on plateaus
            self.switched_at = round(p.epoch)
            self.reducer.best = self.best
            self.reducer.step(loss)


def make_regime(cfg: ScheduleConfig, regime: str, n_train: int):
    return (
        PlateauRegime(cfg, n_train)
        if regime == "plateau"
        else MilestoneRegime(cfg, regime, n_train)
    )


def run_regimes(
    make_model: Callable[[], nn.Module],
    data: TensorData,
    cfg: ScheduleConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_run_end: Callable[[str, RunResult], None] | None = None,
) -> dict[str, RunResult]:
    """Every regime from the same initial weights, for the same epochs and optimizer."""
    if cfg.batch > data.n_train:
        raise ConfigError(
            f"batch size {cfg.batch} is larger than the training set ({data.n_train})"
        )

    def prepare(name: str):
        regime = make_regime(cfg, name, data.n_train)
        model = make_model()
        opt = OptimSpec(cfg.optimizer, cfg.lr, cfg.momentum).build(model.parameters())
        regime.make_scheduler(opt)
        tc = TrainConfig(
            batch_size=cfg.batch,
            budget=Budget(epochs=cfg.epochs),
            optim=OptimSpec(cfg.optimizer, cfg.lr, cfg.momentum),
            seed=cfg.seed,
            eval_at_start=True,
        )
        hooks = {"batch_size_at": regime.batch_size_at, "on_epoch_end": regime.on_epoch_end}
        return model, tc, {"optimizer": opt, **hooks}

    return run_named(
        cfg.regimes, prepare, data, on_event=on_event, stop=stop, on_run_end=on_run_end
    )


def per_epoch(events: pd.DataFrame, n_train: int, momentum: float = 0.0) -> pd.DataFrame:
    """Per regime and epoch: the lr and batch used, the noise scale, and the validation loss
    at the epoch's end."""
    train_rows = events[events.kind == "train"].copy()
    train_rows["epoch_index"] = (train_rows.epoch - 1e-9).clip(lower=0).astype(int)
    used = (
        train_rows.groupby(["run_id", "epoch_index"])
        .agg(
            lr=("lr", "last"),
            batch_size=("batch_size", "max"),
            updates=("step", "max"),
        )
        .reset_index()
    )
    used["noise_scale"] = sgd_noise_scale(used.lr, n_train, used.batch_size, momentum)
    evals = events[(events.kind == "eval") & (events.epoch > 0)].copy()
    evals["epoch_index"] = evals.epoch.round().astype(int) - 1
    out = used.merge(
        evals[["run_id", "epoch_index", "val_loss", "val_acc", "elapsed"]],
        on=["run_id", "epoch_index"],
        how="left",
    )
    out["epoch"] = out.epoch_index + 1
    return out.drop(columns="epoch_index")


def summary(results: dict[str, RunResult], tolerance: float = 0.02) -> tuple[pd.DataFrame, str]:
    """The table relative to "decay the LR", and a one-line verdict on the paper's claim."""
    rows = [
        {
            "regime": k,
            "status": r.status,
            "val_loss": r.val_loss,
            "val_acc": r.val_acc,
            "updates": r.steps,
            "seconds": r.elapsed,
        }
        for k, r in results.items()
    ]
    df = pd.DataFrame(rows)
    if "decay" not in results or df.empty:
        return df, "Run 'decay the LR' to compare the other regimes with it."
    ref = results["decay"]
    df["val_loss_vs_decay"] = df.val_loss - ref.val_loss
    df["updates_vs_decay"] = df.updates / ref.steps
    df["seconds_vs_decay"] = df.seconds / ref.elapsed
    if "grow" not in results:
        return df, "Add 'grow the batch' to test the claim."
    grow = results["grow"]
    close = abs(grow.val_loss - ref.val_loss) <= tolerance * max(ref.val_loss, 1e-9)
    fewer = grow.steps < ref.steps
    verdict = (
        f"Growing the batch reached validation loss {grow.val_loss:.4f} against "
        f"{ref.val_loss:.4f} for decaying the LR ({grow.val_loss - ref.val_loss:+.4f}) with "
        f"{grow.steps:,} updates instead of {ref.steps:,} ({grow.steps / ref.steps:.0%}). "
    )
    if close and fewer:
        verdict += "This run reproduces the paper's claim."
    elif fewer:
        verdict += (
            f"It used fewer updates but its loss is not within {tolerance:.0%} of "
            "decay's: this run does not reproduce the claim."
        )
    else:
        verdict += "It did not save updates: this run does not reproduce the claim."
    return df, verdict
