"""Files in the formats users already have: IDX (MNIST's), CIFAR-10's pickled batches, and a
CSV of numeric features with a class column. Each read error is one clear message."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from lrbs.core.errors import ConfigError, DataUnavailable


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataUnavailable(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataUnavailable(f"{path} is truncated: expected {np.prod(shape)} values")
    return body.reshape(shape)


def find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch (the format torchvision's CIFAR10 reads): images in [0, 1]."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x.astype(np.float32) / 255.0, np.asarray(d.get("labels", d.get("fine_labels")))


def read_cifar_names(folder: Path) -> tuple[str, ...] | None:
    """The class names of batches.meta, or None without one."""
    if not (folder / "batches.meta").exists():
        return None
    with open(folder / "batches.meta", "rb") as f:
        return tuple(pickle.load(f, encoding="latin1")["label_names"])


def read_csv(path: str, nrows: int | None = None, max_mb: float = 50):
    """The CSV as a DataFrame (its first `nrows` rows), or a ConfigError saying why not: missing,
    a folder, unreadable, empty, over `max_mb` MB, not text, not CSV."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"CSV file {path} does not exist")
    if p.is_dir():
        raise ConfigError(f"{path} is a folder, not a CSV file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"no permission to read the CSV file {path}")
    size = p.stat().st_size
    if size == 0:
        raise ConfigError("the CSV file is empty")
    if size > max_mb * 2**20:
        raise ConfigError(f"the CSV is {size / 2**20:.2g} MB, over the {max_mb:g} MB limit")
    try:
        return pd.read_csv(p, nrows=nrows)
    except UnicodeDecodeError:
        raise ConfigError("the file is not a text CSV (it could not be decoded as text)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"the file could not be read as CSV: {first}") from None


def csv_columns(path: str, max_mb: float = 50) -> list[str]:
    """The header of a CSV, with the same checks as loading it."""
    return [str(c) for c in read_csv(path, nrows=0, max_mb=max_mb).columns]


def read_csv_dataset(
    path: str, target: str, max_mb: float = 50
) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """Numeric feature columns and a target column from a CSV, or a ConfigError saying why not."""
    import pandas as pd

    df = read_csv(path, max_mb=max_mb)
    if df.empty:
        raise ConfigError("the CSV has a header but no rows")
    if target not in df.columns:
        shown = ", ".join(map(str, df.columns[:12]))
        raise ConfigError(f"target column {target!r} is not in the CSV; its columns are: {shown}")
    missing = df.isna().sum()
    missing = missing[missing > 0]
    if len(missing):
        cols = ", ".join(f"{c} ({n})" for c, n in missing.items())
        raise ConfigError(f"the CSV has missing values in: {cols}; fill or drop them first")
    features = df.drop(columns=[target])
    numeric = features.select_dtypes("number")
    if numeric.shape[1] == 0:
        raise ConfigError("the CSV has no numeric feature columns besides the target")
    infinite = [str(c) for c in numeric.columns if not np.isfinite(numeric[c]).all()]
    if infinite:
        raise ConfigError(f"the CSV has infinite values in: {', '.join(infinite)}; fix them first")
    notes = []
    dropped = [c for c in features.columns if c not in numeric.columns]
    if dropped:
        notes.append(f"ignored non-numeric columns: {', '.join(map(str, dropped))}")
    codes, classes = pd.factorize(df[target], sort=True)
    if len(classes) < 2:
        raise ConfigError(f"target column {target!r} has a single class; it needs at least two")
    if len(classes) > 1000:
        raise ConfigError(
            f"target column {target!r} has {len(classes)} distinct values; "
            "lrbs trains classifiers, so the target must be a class label"
        )
    return (
        numeric.to_numpy(np.float32),
        codes.astype(np.int64),
        tuple(map(str, classes)),
        tuple(notes),
    )
