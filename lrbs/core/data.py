"""Datasets: one registry, each loaded once to arrays, split, standardised, then put on a device.

Everything works offline. Generated or bundled sets (MNIST-1D, scikit-learn's digits, a synthetic
stand-in for covertype) are always there; real image sets are read from files the user already
has, and a set that is missing raises `DataUnavailable` with a one-line way to get it.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrbs.core import files
from lrbs.core.config import check, option
from lrbs.core.errors import ConfigError, DataUnavailable, LrbsError, require
from lrbs.core.files import find_idx, read_cifar_batch, read_cifar_names, read_idx
from lrbs.core.task import CLASSIFICATION, Compute, Task

log = logging.getLogger(__name__)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Covertype's class frequencies, so the stand-in is as unbalanced as the real thing.
COVTYPE_WEIGHTS = (0.365, 0.488, 0.062, 0.005, 0.016, 0.030, 0.034)


def default_root() -> Path:
    """Where torchvision-style dataset folders are looked for (`LRBS_DATA_ROOT`)."""
    return Path(os.environ.get("LRBS_DATA_ROOT", Path.home() / ".cache" / "lrbs" / "data"))


@dataclass(frozen=True)
class DataSpec:
    """Which data, how much of it, and how to split it. Hashable: it keys caches."""

    name: str = option("mnist1d", flag="--dataset", help="dataset (python -m lrbs datasets)")
    size: int | None = option(
        None, flag="--dataset-size", help="samples to generate, or training samples to keep"
    )
    val_fraction: float = option(
        0.2, help="validation share where the set has no official test split"
    )
    seed: int = option(0, low=0, high=2**31 - 1, help="seed of the split and of every run")
    root: str | None = option(None, flag="--data-root", help="torchvision root folder")
    download: bool = option(False, cli=False)  # let torchvision download (needs a network)
    csv_path: str | None = option(None, flag="--csv", help="CSV file, for --dataset csv")
    target: str | None = option(None, help="target column, for --dataset csv")

    def __post_init__(self) -> None:
        require(
            self.name in DATASETS, f"unknown dataset {self.name!r}; known: {', '.join(DATASETS)}"
        )
        if self.size is not None:
            require(
                isinstance(self.size, int) and self.size >= 20,
                f"dataset size must be a whole number of at least 20, got {self.size!r}",
            )
        require(0 < self.val_fraction < 1, "validation fraction must be between 0 and 1")
        check(self)
        if self.name == "csv":
            require(bool(self.csv_path), "the CSV dataset needs a file")
            require(bool(self.target), "the CSV dataset needs a target column")


@dataclass(frozen=True)
class Arrays:
    """A dataset ready to train on: standardised float32 features, int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    source: str
    notes: tuple[str, ...] = ()

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y_train, minlength=self.n_classes)


@dataclass(frozen=True)
class TensorData:
    """The same arrays as tensors on one device; minibatches are slices of these. `task` is
    what a run on them minimises (cross-entropy and accuracy for the built-in sets) and
    `compute` how it computes (precision, accumulation)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    name: str = ""
    task: Task = CLASSIFICATION
    compute: Compute = field(default_factory=Compute)
    workload: Any = None  # the lrbs.core.workload.Workload they came from, if any

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """These training samples as one batch."""
        idx = idx.to(self.device)
        return self.x_train[idx], self.y_train[idx]

    def chunks(self, which: str = "val", idx: torch.Tensor | None = None, chunk: int = 8192):
        """The validation set (or these training samples), in order, a chunk at a time."""
        if which == "val":
            x, y = self.x_val, self.y_val
        else:
            x, y = (self.x_train, self.y_train) if idx is None else self.take(idx)
        for i in range(0, len(y), chunk):
            yield x[i : i + chunk], y[i : i + chunk]

    @classmethod
    def from_arrays(
        cls, a: Arrays, device: torch.device | str = "cpu", compute: Compute | None = None
    ) -> TensorData:
        def put(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(device)

        return cls(
            put(a.x_train),
            put(a.y_train),
            put(a.x_val),
            put(a.y_val),
            a.n_classes,
            a.input_shape,
            a.name,
            compute=compute or Compute(),
        )


@dataclass(frozen=True)
class Raw:
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None = None  # the set's own test split, where it has one
    y_val: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    source: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    title: str
    kind: str  # "image", "sequence" or "tabular": decides standardisation and which models fit
    about: str
    how_to_get: str
    load: Callable[[DataSpec], Raw] = field(repr=False)
    present: Callable[[DataSpec], bool] = field(repr=False, default=lambda spec: True)
    default_size: int | None = None


# ---------------------------------------------------------------------------- files the user has


def _idx_folder(spec: DataSpec, torchvision_name: str) -> Path | None:
    """The first folder holding all four IDX files: the torchvision root, then Debian's."""
    root = Path(spec.root) if spec.root else default_root()
    folders = [root / torchvision_name / "raw", root]
    if torchvision_name == "FashionMNIST":
        folders.append(DEBIAN_FASHION)
    for folder in folders:
        stems = [s for pair in IDX_FILES.values() for s in pair]
        if all(find_idx(folder, s) for s in stems):
            return folder
    return None


def _load_idx_set(spec: DataSpec, torchvision_name: str, classes: tuple[str, ...]) -> Raw:
    folder = _idx_folder(spec, torchvision_name)
    if folder is None and spec.download:
        import torchvision.datasets as tvd

        root = Path(spec.root) if spec.root else default_root()
        try:
            for train in (True, False):
                getattr(tvd, torchvision_name)(str(root), train=train, download=True)
        except Exception as exc:  # network errors come in many types
            raise DataUnavailable(f"could not download {torchvision_name}: {exc}") from None
        folder = _idx_folder(spec, torchvision_name)
    if folder is None:
        raise DataUnavailable(f"{torchvision_name} files not found. {ENTRY_HOW[torchvision_name]}")
    parts = {}
    for split, (images, labels) in IDX_FILES.items():
        x = read_idx(find_idx(folder, images))
        y = read_idx(find_idx(folder, labels))
        if len(x) != len(y):
            raise DataUnavailable(f"{folder}: {len(x)} images but {len(y)} labels")
        parts[split] = (x[:, None].astype(np.float32) / 255.0, y.astype(np.int64))
    return Raw(*parts["train"], *parts["val"], class_names=classes, source=str(folder))


def _cifar_folder(spec: DataSpec) -> Path:
    return (Path(spec.root) if spec.root else default_root()) / "cifar-10-batches-py"


def _load_cifar10(spec: DataSpec) -> Raw:
    folder = _cifar_folder(spec)
    if not (folder / "data_batch_1").exists() and spec.download:
        import torchvision.datasets as tvd

        try:
            tvd.CIFAR10(str(folder.parent), train=True, download=True)
        except Exception as exc:
            raise DataUnavailable(f"could not download CIFAR-10: {exc}") from None
    files = sorted(folder.glob("data_batch_*"))
    if not files or not (folder / "test_batch").exists():
        raise DataUnavailable(f"CIFAR-10 not found in {folder}. {ENTRY_HOW['cifar10']}")

    xs, ys = zip(*(read_cifar_batch(p) for p in files), strict=True)
    x_val, y_val = read_cifar_batch(folder / "test_batch")
    names = read_cifar_names(folder)
    return Raw(
        x=np.concatenate(xs),
        y=np.concatenate(ys).astype(np.int64),
        x_val=x_val,
        y_val=y_val.astype(np.int64),
        class_names=names,
        source=str(folder),
    )


# ---------------------------------------------------------------------------- always-present sets


def generated_cache() -> Path:
    """Where generated datasets are kept between processes (`LRBS_CACHE`)."""
    return Path(os.environ.get("LRBS_CACHE", Path.home() / ".cache" / "lrbs" / "generated"))


def _mnist1d_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """MNIST-1D as the mnist1d package generates it, kept on disk once made: generating 5,000
    samples takes seconds (a minute on a busy machine), and every process (a page's worker,
    each CLI command) would otherwise pay it again."""
    from importlib.metadata import version

    from mnist1d.data import get_dataset_args, make_dataset

    path = generated_cache() / f"mnist1d-{version('mnist1d')}-{n}-{seed}.npz"
    try:
        with np.load(path) as kept:
            return {k: kept[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError):
        pass  # not made yet, or unreadable: generate it
    args = get_dataset_args()  # make_dataset generates locally; get_dataset() would download
    args.num_samples, args.seed = n, seed
    d = make_dataset(args)
    out = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)  # whole or not at all, for a process reading it meanwhile
    except OSError as exc:
        log.info("MNIST-1D not cached (%s)", exc)
    return out


def _load_mnist1d(spec: DataSpec) -> Raw:
    n = spec.size or 5000
    require(n <= 70000, "MNIST-1D size is at most 70000")
    d = _mnist1d_arrays(n, 42 + spec.seed)
    x, x_val = (np.asarray(d[k], dtype=np.float32)[:, None, :] for k in ("x", "x_test"))
    return Raw(
        x=x,
        y=np.asarray(d["y"], np.int64),
        x_val=x_val,
        y_val=np.asarray(d["y_test"], np.int64),
        class_names=tuple(str(i) for i in range(10)),
        source="generated by the mnist1d package",
    )


def _load_digits(spec: DataSpec) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float32).reshape(-1, 1, 8, 8) / 16.0
    return Raw(
        x,
        d.target.astype(np.int64),
        class_names=tuple(map(str, d.target_names)),
        source="scikit-learn (bundled)",
    )


def _load_covertype_synthetic(spec: DataSpec) -> Raw:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=spec.size or 20000,
        n_features=54,
        n_informative=24,
        n_redundant=10,
        n_classes=7,
        n_clusters_per_class=3,
        weights=list(COVTYPE_WEIGHTS),
        flip_y=0.03,
        class_sep=1.0,
        random_state=spec.seed,
    )
    return Raw(x.astype(np.float32), y.astype(np.int64), source="synthetic (make_classification)")


def _covtype_home() -> Path:
    from sklearn.datasets import get_data_home

    return Path(get_data_home()) / "covertype"


def _load_covertype(spec: DataSpec) -> Raw:
    from sklearn.datasets import fetch_covtype

    try:
        d = fetch_covtype(download_if_missing=spec.download)
    except OSError:
        raise DataUnavailable(
            f"covertype not in scikit-learn's cache. {ENTRY_HOW['covertype']}"
        ) from None
    x, y = d.data.astype(np.float32), d.target.astype(np.int64) - 1  # classes 1..7 -> 0..6
    return Raw(x, y, source=str(_covtype_home()))


def _load_csv(spec: DataSpec) -> Raw:
    x, y, names, notes = read_csv_dataset(spec.csv_path, spec.target)
    return Raw(x, y, class_names=names, source=Path(spec.csv_path).name, notes=notes)


MAX_CSV_MB = 50  # as the app's upload limit (.streamlit/config.toml, server.maxUploadSize)


def csv_columns(path: str) -> list[str]:
    """The header of a CSV, with the same checks as loading it."""
    return files.csv_columns(path, MAX_CSV_MB)


def read_csv_dataset(path: str, target: str) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """Numeric feature columns and a target column from a CSV, or a ConfigError saying why not."""
    return files.read_csv_dataset(path, target, MAX_CSV_MB)


# ---------------------------------------------------------------------------- registry

ENTRY_HOW = {
    "FashionMNIST": "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`; or put the four "
    "IDX files in <root>/FashionMNIST/raw/ (root: LRBS_DATA_ROOT), or allow a download.",
    "MNIST": "Put the four IDX files in <root>/MNIST/raw/ (root: LRBS_DATA_ROOT, as torchvision "
    "lays them out), or allow a download where you have a network.",
    "cifar10": "Unpack cifar-10-python.tar.gz into <root>/cifar-10-batches-py/ "
    "(root: LRBS_DATA_ROOT), or allow a download where you have a network.",
    "covertype": "Run `python -c 'from sklearn.datasets import fetch_covtype; fetch_covtype()'` "
    "once with a network (or set SCIKIT_LEARN_DATA to a folder holding it); "
    "meanwhile use 'covertype-synthetic'.",
}

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry(
            name="mnist1d",
            title="MNIST-1D",
            kind="sequence",
            about="10 digit-like 1-D signals of 40 points, generated locally; small and hard "
            "enough that the learning rate and the batch size matter.",
            how_to_get="Always available (generated by the mnist1d package).",
            load=_load_mnist1d,
            default_size=5000,
        ),
        DatasetEntry(
            name="fashion-mnist",
            title="Fashion-MNIST",
            kind="image",
            about="70,000 28x28 greyscale photos of clothes in 10 classes (real data).",
            how_to_get=ENTRY_HOW["FashionMNIST"],
            load=lambda s: _load_idx_set(s, "FashionMNIST", FASHION_CLASSES),
            present=lambda s: _idx_folder(s, "FashionMNIST") is not None,
        ),
        DatasetEntry(
            name="digits",
            title="Digits (8x8)",
            kind="image",
            about="scikit-learn's 1,797 handwritten digits at 8x8 pixels; tiny and quick.",
            how_to_get="Always available (bundled with scikit-learn).",
            load=_load_digits,
        ),
        DatasetEntry(
            name="covertype-synthetic",
            title="Covertype stand-in (synthetic)",
            kind="tabular",
            about="54 features, 7 unbalanced classes shaped like covertype, made by "
            "make_classification.",
            how_to_get="Always available (generated).",
            load=_load_covertype_synthetic,
            default_size=20000,
        ),
        DatasetEntry(
            name="mnist",
            title="MNIST",
            kind="image",
            about="70,000 28x28 handwritten digits.",
            how_to_get=ENTRY_HOW["MNIST"],
            load=lambda s: _load_idx_set(s, "MNIST", tuple(map(str, range(10)))),
            present=lambda s: _idx_folder(s, "MNIST") is not None,
        ),
        DatasetEntry(
            name="cifar10",
            title="CIFAR-10",
            kind="image",
            about="60,000 32x32 colour photos, 10 classes.",
            how_to_get=ENTRY_HOW["cifar10"],
            load=_load_cifar10,
            present=lambda s: (_cifar_folder(s) / "test_batch").exists(),
        ),
        DatasetEntry(
            name="covertype",
            title="Covertype (real)",
            kind="tabular",
            about="581,012 forest cells, 54 features, 7 cover types (seed 004's data).",
            how_to_get=ENTRY_HOW["covertype"],
            load=_load_covertype,
            present=lambda s: (_covtype_home() / "samples_py3").exists(),
        ),
        DatasetEntry(
            name="csv",
            title="Your CSV",
            kind="tabular",
            about="Numeric feature columns and a class column from a file you provide.",
            how_to_get="Upload a CSV (numeric features, one target column).",
            load=_load_csv,
            present=lambda s: bool(s.csv_path) and Path(s.csv_path).exists(),
        ),
    ]
}


def availability(spec_kwargs: dict | None = None) -> dict[str, bool]:
    """Which datasets can be loaded here without a download."""
    out = {}
    for name, entry in DATASETS.items():
        if name == "csv":
            continue
        out[name] = bool(entry.present(DataSpec(name=name, **(spec_kwargs or {}))))
    return out


def load(spec: DataSpec) -> Arrays:
    """Load, split and standardise. Raises DataUnavailable or ConfigError with a clear message."""
    entry = DATASETS[spec.name]
    raw = read_raw(entry, spec)
    rng = np.random.default_rng(spec.seed)
    x, y = raw.x, raw.y
    if raw.x_val is None:
        order = rng.permutation(len(y))
        n_val = max(1, int(round(len(y) * spec.val_fraction)))
        if len(y) - n_val < 2:
            raise ConfigError(f"the dataset has {len(y)} rows: too few to split")
        x, y, x_val, y_val = x[order[n_val:]], y[order[n_val:]], x[order[:n_val]], y[order[:n_val]]
    else:
        x_val, y_val = raw.x_val, raw.y_val
        if spec.size is not None and entry.default_size is None and spec.size < len(y):
            keep = np.sort(rng.permutation(len(y))[: spec.size])
            x, y = x[keep], y[keep]
    n_classes = int(max(y.max(), y_val.max())) + 1
    x, x_val = _standardise(x, x_val, entry.kind)
    names = raw.class_names or tuple(str(i) for i in range(n_classes))
    log.info("loaded %s: %d train, %d val, shape %s", spec.name, len(y), len(y_val), x.shape[1:])
    return Arrays(
        name=spec.name,
        x_train=x,
        y_train=y,
        x_val=x_val,
        y_val=y_val,
        n_classes=n_classes,
        input_shape=tuple(x.shape[1:]),
        class_names=names,
        source=raw.source,
        notes=raw.notes,
    )


def read_raw(entry: DatasetEntry, spec: DataSpec) -> Raw:
    """The loader's raw arrays, with a file the user has that cannot be read (corrupt,
    truncated, a folder, no permission) turned into one clear message."""
    try:
        raw = entry.load(spec)
    except LrbsError:
        raise
    except PermissionError as exc:
        raise DataUnavailable(
            f"{entry.title}: no permission to read {exc.filename or 'its files'}"
        ) from None
    except IsADirectoryError as exc:
        raise DataUnavailable(
            f"{entry.title}: {exc.filename} is a folder, not a data file"
        ) from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError) as exc:
        raise DataUnavailable(
            f"{entry.title}: a data file is corrupt or truncated ({type(exc).__name__}: {exc}); "
            f"{entry.how_to_get}"
        ) from None
    for name, part in (("training", raw.x), ("validation", raw.x_val)):
        if part is not None and not np.isfinite(part).all():
            raise ConfigError(
                f"{entry.title}: the {name} data holds infinite or NaN values; fix the file"
            )
    return raw


def _standardise(x: np.ndarray, x_val: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance from the training split: per channel for images, per feature
    otherwise. Constant features are left centred, not divided by zero."""
    axes = (0, *range(2, x.ndim)) if kind == "image" else (0,)
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return ((x - mean) / std).astype(np.float32), ((x_val - mean) / std).astype(np.float32)
