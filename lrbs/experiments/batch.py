"""Batch size: the sweep at equal budgets, learning-rate scaling rules, the largest batch that
fits in memory, and how many samples of each class a batch holds."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.device import is_out_of_memory, release_memory
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.loop import Budget, Event, OptimSpec, RunResult, TrainConfig, train
from lrbs.experiments.noise_scale import sgd_noise_scale

RULES = {
    "fixed": "same learning rate for every batch size",
    "linear": "lr x k when the batch grows k-fold (Goyal et al. 2017)",
    "sqrt": "lr x sqrt(k) when the batch grows k-fold",
}
FULL = "full"


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: str) -> float:
    k = batch / base_batch
    if rule == "fixed":
        return base_lr
    if rule == "linear":
        return base_lr * k
    if rule == "sqrt":
        return base_lr * math.sqrt(k)
    raise ConfigError(f"unknown scaling rule {rule!r}; choose {', '.join(RULES)}")


def noise_scale(lr: float, n: int, batch: int, momentum: float = 0.0) -> float:
    """Smith & Le's SGD noise scale g = lr/(1 - m) * N/B (the B << N form)."""
    return sgd_noise_scale(lr, n, batch, momentum)


def warmup(target_lr: float, start_lr: float, epochs: float, steps_per_epoch: int):
    """A LambdaLR factory: the rate goes linearly from start_lr to target_lr over `epochs`,
    counted in updates, then stays (Goyal et al.'s gradual warmup)."""
    total = max(1, round(epochs * steps_per_epoch))

    def factor(step: int) -> float:
        t = min(1.0, step / total)
        return (start_lr + (target_lr - start_lr) * t) / target_lr

    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)


def resolve_batches(values: tuple, n_train: int) -> tuple[int, ...]:
    """'full' -> the training set size; each a whole number in 1..N; no repeats."""
    require(len(values) > 0, "the batch-size list is empty: give at least one")
    out = []
    for v in values:
        if isinstance(v, str) and v.strip().lower() == FULL:
            out.append(n_train)
            continue
        try:
            b = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"batch size {v!r} is not a number (or 'full')") from None
        if b != int(b):
            raise ConfigError(f"batch size must be a whole number, got {v!r}")
        b = positive_int("batch size", int(b))
        if b > n_train:
            raise ConfigError(
                f"batch size {b} is larger than the training set ({n_train}); use 'full' "
                "for the whole set"
            )
        out.append(b)
    dupes = sorted({b for b in out if out.count(b) > 1})
    require(not dupes, f"the batch sizes repeat {', '.join(map(str, dupes))}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class BatchSweepConfig:
    batch_sizes: tuple = (64, 128, 256, FULL)
    budget: Budget = field(default_factory=lambda: Budget(seconds=5))
    lr: float = 0.1
    base_batch: int | None = None  # the batch `lr` belongs to; None: the smallest swept
    rule: str = "fixed"
    warmup_epochs: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0
    repeats: int = 1
    log_every: int = 10
    min_eval_seconds: float = 0.25

    def __post_init__(self) -> None:
        require(self.rule in RULES, f"unknown scaling rule {self.rule!r}")
        OptimSpec(self.optimizer, self.lr, self.momentum)
        require(self.warmup_epochs >= 0, "warmup epochs must be >= 0")
        positive_int("repeats", self.repeats)
        require(self.repeats <= 10, "at most 10 repeats")
        if self.base_batch is not None:
            positive_int("base batch", self.base_batch)
        require(len(self.batch_sizes) > 0, "the batch-size list is empty: give at least one")

    def plan(self, n_train: int) -> list[tuple[int, float]]:
        """(batch, learning rate) per swept batch size."""
        batches = resolve_batches(tuple(self.batch_sizes), n_train)
        base = self.base_batch or batches[0]
        plan = [(b, scaled_lr(self.lr, base, b, self.rule)) for b in batches]
        for _, lr in plan:
            OptimSpec(self.optimizer, lr, self.momentum)  # a scaled rate may be absurd
        return plan

    def train_config(self, batch: int, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(
            batch_size=batch,
            budget=self.budget,
            optim=OptimSpec(self.optimizer, lr, self.momentum),
            seed=seed,
            log_every=self.log_every,
            min_eval_seconds=self.min_eval_seconds,
        )

    @property
    def effective_momentum(self) -> float:
        return self.momentum if self.optimizer == "momentum" else 0.0


@dataclass(frozen=True)
class BatchRun:
    batch: int
    lr: float
    seed: int
    result: RunResult


def run_label(batch: int, n_train: int, seed: int | None = None) -> str:
    name = f"B={batch}" + (" (full)" if batch == n_train else "")
    return name if seed is None else f"{name} seed {seed}"


def batch_sweep(
    make_model: Callable[[int], nn.Module],
    data: TensorData,
    cfg: BatchSweepConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_run_end: Callable[[BatchRun], None] | None = None,
) -> list[BatchRun]:
    """Each batch size (x repeats) trains `make_model(seed)` for the same budget: one seed, one
    set of initial weights, whatever the batch."""
    runs = []
    n = data.n_train
    for batch, lr in cfg.plan(n):
        for r in range(cfg.repeats):
            seed = cfg.seed + r
            sched = None
            if cfg.warmup_epochs > 0 and lr > cfg.lr:
                # from the base batch's rate up to the scaled one (Goyal et al.)
                sched = warmup(lr, cfg.lr, cfg.warmup_epochs, math.ceil(n / batch))
            label = run_label(batch, n, seed if cfg.repeats > 1 else None)
            result = train(
                make_model(seed),
                data,
                cfg.train_config(batch, lr, seed),
                run_id=label,
                on_event=on_event,
                stop=stop,
                lr_scheduler=sched,
            )
            run = BatchRun(batch, lr, seed, result)
            runs.append(run)
            if on_run_end is not None:
                on_run_end(run)
            if result.status == "stopped":
                return runs
    return runs


def run_row(run: BatchRun, n_train: int, momentum: float = 0.0) -> dict:
    r = run.result
    return {
        "batch": run.batch,
        "seed": run.seed,
        "lr": run.lr,
        "noise_scale": noise_scale(run.lr, n_train, run.batch, momentum),
        "status": r.status,
        "train_loss": r.train_eval_loss,
        "val_loss": r.val_loss,
        "val_acc": r.val_acc,
        "gap": r.gap,
        "epochs": r.epochs,
        "updates": r.steps,
        "samples_per_s": r.samples_per_second,
        "seconds": r.elapsed,
        "peak_memory_mib": r.peak_memory / 2**20 if r.peak_memory else None,
    }


def sweep_table(rows: list[dict]) -> pd.DataFrame:
    """One row per batch size: means over repeats, and the spread (std) of the validation loss
    when there are several."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    numeric = [c for c in df.columns if c not in ("batch", "seed", "status")]
    agg = df.groupby("batch")[numeric].mean(numeric_only=True)
    agg["status"] = df.groupby("batch").status.agg(lambda s: "/".join(sorted(set(s))))
    agg["repeats"] = df.groupby("batch").size()
    if df.groupby("batch").size().max() > 1:
        agg["val_loss_std"] = df.groupby("batch").val_loss.std()
    return agg.reset_index()


# ---------------------------------------------------------------------------- scaling check


@dataclass(frozen=True)
class ScalingCheckConfig:
    base_batch: int = 8
    base_lr: float = 0.001
    k_max: int = 4
    epochs: float = 2.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int("base batch", self.base_batch)
        OptimSpec(self.optimizer, self.base_lr, self.momentum)
        positive_int("K", self.k_max)
        require(self.k_max >= 2, "K must be at least 2 to compare batch sizes")
        require(self.k_max <= 32, "K is at most 32")
        positive_number("epochs", self.epochs)

    def plan(self, n_train: int) -> list[tuple[str, int, int, float]]:
        """(rule, k, batch, lr): the linear rule and, for contrast, a fixed rate."""
        out = []
        for rule in ("linear", "fixed"):
            for k in range(1, self.k_max + 1):
                b = self.base_batch * k
                if b > n_train:
                    raise ConfigError(
                        f"batch {b} (= {self.base_batch} x {k}) is larger than "
                        f"the training set ({n_train})"
                    )
                out.append((rule, k, b, scaled_lr(self.base_lr, self.base_batch, b, rule)))
        return out


def scaling_check(
    make_model: Callable[[int], nn.Module],
    data: TensorData,
    cfg: ScalingCheckConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
) -> pd.DataFrame:
    """Seed 001's experiment: batch B0*k with lr0*k for k = 1..K, and the same batches at lr0.
    Returns the validation loss per epoch for every (rule, k)."""
    rows = []
    for rule, k, b, lr in cfg.plan(data.n_train):
        tc = TrainConfig(
            batch_size=b,
            budget=Budget(epochs=cfg.epochs),
            optim=OptimSpec(cfg.optimizer, lr, cfg.momentum),
            seed=cfg.seed,
            eval_at_start=True,
        )
        r = train(
            make_model(cfg.seed), data, tc, run_id=f"{rule} k={k}", on_event=on_event, stop=stop
        )
        for e in r.events:
            if e.kind == "eval":
                rows.append(
                    {
                        "rule": rule,
                        "k": k,
                        "batch": b,
                        "lr": lr,
                        "epoch": e.epoch,
                        "val_loss": e.val_loss,
                        "val_acc": e.val_acc,
                        "status": r.status,
                    }
                )
        if r.status == "stopped":
            break
    return pd.DataFrame(rows)


def agreement(curves: pd.DataFrame) -> pd.DataFrame:
    """How closely the curves of one rule lie on each other: per rule, the mean over epochs of
    the spread (max - min) of validation loss across k, absolute and relative to the mean."""
    out = []
    for rule, d in curves.groupby("rule", sort=False):
        # whole epochs after the start (at epoch 0 every run has the same weights)
        per_epoch = d[(d.epoch == d.epoch.round()) & (d.epoch > 0)].groupby("epoch").val_loss
        spread = per_epoch.max() - per_epoch.min()
        final = d[d.epoch == d.epoch.max()]
        out.append(
            {
                "rule": rule,
                "mean_spread": float(spread.mean()),
                "relative_spread": float((spread / per_epoch.mean()).mean()),
                "final_val_loss_min": float(final.val_loss.min()),
                "final_val_loss_max": float(final.val_loss.max()),
            }
        )
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------- memory


def step_memory_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optim_states: int = 1):
    """Memory one training step needs at this batch: the tensors autograd saves for the
    backward pass (measured), the batch itself, and parameters, gradients and `optim_states`
    optimizer buffers per parameter."""
    saved = 0

    def pack(t: torch.Tensor):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    batch = x.numel() * x.element_size() + y.numel() * y.element_size()
    return saved + batch + params * (2 + optim_states)


def make_fits(
    model: nn.Module, data: TensorData, cap_bytes: int | None = None, optim_states: int = 1
) -> Callable[[int], bool]:
    """fits(B): on a GPU, a real training step at batch B (out-of-memory caught, memory
    released); on the CPU, the measured step memory against `cap_bytes`."""
    device = data.x_train.device

    def fits(batch: int) -> bool:
        idx = torch.arange(batch, device=device) % data.n_train
        x, y = data.x_train[idx], data.y_train[idx]
        try:
            need = step_memory_bytes(model, x, y, optim_states)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
            release_memory(device)
            return False
        finally:
            model.zero_grad(set_to_none=True)
        return cap_bytes is None or need <= cap_bytes

    return fits


@dataclass(frozen=True)
class ProbeResult:
    largest: int  # the largest batch that fitted
    safe: int  # memory-limited: a power of two at or below 90 % of it; else `largest`
    hit_limit: bool  # stopped by memory (True) or by the upper bound (False)
    tried: tuple[tuple[int, bool], ...]


def largest_batch(fits: Callable[[int], bool], upper: int, start: int = 1) -> ProbeResult:
    """Double the batch until it no longer fits (or passes `upper`), then binary-search the
    boundary."""
    positive_int("upper bound", upper)
    tried = []

    def test(b: int) -> bool:
        ok = fits(b)
        tried.append((b, ok))
        return ok

    if not test(start):
        raise ConfigError(f"even a batch of {start} does not fit in memory")
    good, bad = start, None
    while bad is None:
        nxt = min(good * 2, upper)
        if nxt == good:
            break
        if test(nxt):
            good = nxt
        else:
            bad = nxt
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if test(mid):
            good = mid
        else:
            bad = mid
    safe = good
    if bad is not None:  # memory-limited: keep a margin for fragmentation and other tensors
        safe = 2 ** int(math.floor(math.log2(max(1, int(good * 0.9)))))
    return ProbeResult(good, safe, bad is not None, tuple(tried))


# ---------------------------------------------------------------------------- classes


def classes_per_batch(counts: np.ndarray, batch: int, names=None) -> pd.DataFrame:
    """Expected samples of each class in a batch drawn from these class counts."""
    counts = np.asarray(counts, dtype=float)
    share = counts / counts.sum()
    return pd.DataFrame(
        {
            "class": list(names) if names is not None else list(range(len(counts))),
            "share": share,
            "expected_per_batch": share * batch,
        }
    )


def smallest_class_warning(counts: np.ndarray, batch: int, threshold: float = 3.0) -> str | None:
    share = np.asarray(counts, float) / np.sum(counts)
    low = float(share.min() * batch)
    if low < threshold:
        return (
            f"At batch {batch} the rarest class gets {low:.2g} samples per batch on average "
            f"(fewer than ~{threshold:g}): its gradient is mostly noise; consider a larger "
            "batch or class-balanced sampling."
        )
    return None
