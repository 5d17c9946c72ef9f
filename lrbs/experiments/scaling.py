"""Batch-size helpers the batch experiments share (not an experiment itself): learning-rate
scaling rules and warm-up, Smith & Le's noise scale, batch lists with 'full', and how many
samples of each class a batch holds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from lrbs.core.errors import ConfigError, positive_int, require

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
    from lrbs.experiments.noise_scale import sgd_noise_scale

    return sgd_noise_scale(lr, n, batch, momentum)


def warmup(target_lr: float, start_lr: float, epochs: float, steps_per_epoch: int):
    """A LambdaLR factory: the rate goes linearly from start_lr to target_lr over `epochs`,
    counted in updates, then stays (Goyal et al.'s gradual warmup)."""
    total = max(1, round(epochs * steps_per_epoch))

    def factor(step: int) -> float:
        t = min(1.0, step / total)
        return (start_lr + (target_lr - start_lr) * t) / target_lr

    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)


def parse_batch(value: object) -> int | str:
    """One entry of a batch-size list: 'full' (any case), or a whole number >= 1 (64.0 is 64)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == FULL:
            return FULL
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"batch size {text!r} is not a number (or 'full')") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"batch size {value!r} is not a number (or 'full')")
    if not math.isfinite(value) or value != int(value):
        raise ConfigError(f"batch size must be a whole number, got {value!r}")
    return positive_int("batch size", int(value))


def parse_batches(values: tuple | list) -> tuple[int | str, ...]:
    """A batch-size list checked as far as it can be without the data: each entry 'full' or a
    whole number >= 1, none repeated."""
    require(len(values) > 0, "the batch-size list is empty: give at least one")
    out = tuple(parse_batch(v) for v in values)
    dupes = sorted({b for b in out if out.count(b) > 1}, key=str)
    require(not dupes, f"the batch sizes repeat {', '.join(map(str, dupes))}")
    return out


def batches_from_text(text: str) -> tuple[int | str, ...]:
    """'64, 128 full' -> (64, 128, 'full'), checked as `parse_batches` does."""
    return parse_batches([p for p in text.replace(",", " ").split() if p])


def resolve_batches(values: tuple, n_train: int) -> tuple[int, ...]:
    """'full' -> the training set size; each a whole number in 1..N; no repeats; sorted."""
    out = []
    for b in parse_batches(values):
        if b == FULL:
            out.append(n_train)
            continue
        if b > n_train:
            raise ConfigError(
                f"batch size {b} is larger than the training set ({n_train}); use 'full' "
                "for the whole set"
            )
        out.append(b)
    dupes = sorted({b for b in out if out.count(b) > 1})
    require(not dupes, f"the batch sizes repeat {', '.join(map(str, dupes))}")
    return tuple(sorted(out))


def run_label(batch: int, n_train: int, seed: int | None = None) -> str:
    name = f"B={batch}" + (" (full)" if batch == n_train else "")
    return name if seed is None else f"{name} seed {seed}"


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


def classes_table(counts: np.ndarray, batches: list[int], names=None) -> pd.DataFrame:
    """Expected samples of each class per batch, one column "B=b" per batch size."""
    if not batches:
        return pd.DataFrame()
    table = pd.concat([classes_per_batch(counts, b, names).assign(batch=b) for b in batches])
    wide = table.pivot(index="class", columns="batch", values="expected_per_batch")
    wide.columns = [f"B={c}" for c in wide.columns]
    return wide.reset_index()


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


def with_batch(text: str, batch: int | None) -> str:
    """A typed list of batch sizes ("64, 128, full") with `batch` added if it is not there."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if batch and str(batch) not in parts:
        parts.append(str(batch))
    return ", ".join(parts)
