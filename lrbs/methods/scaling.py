"""Learning-rate scaling rules for a batch that grows k-fold (fixed, linear, square root), the
gradual warm-up to a scaled rate, and batch-size lists ('full' = the training set)."""

from __future__ import annotations

import math

import torch

from lrbs.core.errors import ConfigError, positive_int, require

RULES = {
    "fixed": "same learning rate for every batch size",
    "linear": "lr x k when the batch grows k-fold (Goyal et al. 2017)",
    "sqrt": "lr x sqrt(k) when the batch grows k-fold",
}
FULL = "full"


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: str) -> float:
    """The rate at `batch` under `rule`, given `base_lr` at `base_batch`."""
    k = batch / base_batch
    if rule == "fixed":
        return base_lr
    if rule == "linear":
        return base_lr * k
    if rule == "sqrt":
        return base_lr * math.sqrt(k)
    raise ConfigError(f"unknown scaling rule {rule!r}; choose {', '.join(RULES)}")


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
