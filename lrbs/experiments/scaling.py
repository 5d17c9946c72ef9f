"""Batch-size helpers the batch pages share (not an experiment itself): Smith & Le's noise
scale, how many samples of each class a batch holds, a typed batch list. The scaling rules,
warm-up and batch lists live in `lrbs.methods.scaling` (offered here too, as before)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrbs.methods.noise import sgd_noise_scale
from lrbs.methods.scaling import (  # noqa: F401  (offered here as before)
    FULL,
    RULES,
    batches_from_text,
    parse_batch,
    parse_batches,
    resolve_batches,
    scaled_lr,
    warmup,
)


def noise_scale(lr: float, n: int, batch: int, momentum: float = 0.0) -> float:
    """Smith & Le's SGD noise scale g = lr/(1 - m) * N/B (the B << N form)."""
    return sgd_noise_scale(lr, n, batch, momentum)


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
