"""Data a user brings: tensors, a map-style `Dataset` or a `DataLoader`, held on the device when
they fit (the loop's fast path, `TensorData`) and streamed through a `DataLoader` when not
(`StreamData`: worker processes, pinned memory on CUDA).

Both paths visit the training set in the same order: one permutation per epoch drawn from the
run's seeded generator, consumed `batch` samples at a time, whatever the batch size of each
step. The streamed loader reads the permutation in chunks and the loop cuts its batches from
them, so a batch-size schedule works on both paths and, on the CPU, one seed gives the same
curve streamed or in memory.

A sample (and so a collated batch) is read as peers read it (`SAMPLE_CONVENTION`):
(input, target, *rest) as a tuple or a list, the rest ignored (a warning says so once), or a
dict whose input and target are found under the first of `INPUT_KEYS` and of `TARGET_KEYS`.
Non-finite values are refused before they reach a model: once at load for data held in memory,
batch by batch as they are read for streamed data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    TensorDataset,
    get_worker_info,
)
from torch.utils.data.dataloader import default_collate

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, require
from lrbs.core.models import available_memory
from lrbs.core.task import CLASSIFICATION, Compute, Task

log = logging.getLogger(__name__)

MEMORY_CAP_BYTES = 2 * 2**30  # "auto" holds at most this much on the device ...
MEMORY_SHARE = 0.25  # ... and at most this share of the memory free there
EVAL_CHUNK = 1024


@dataclass(frozen=True)
class StreamData:
    """A training and a validation `Dataset` read through a `DataLoader` as the loop goes."""

    train: Dataset
    val: Dataset
    device: torch.device
    task: Task = CLASSIFICATION
    compute: Compute = field(default_factory=Compute)
    input_shape: tuple[int, ...] = ()
    n_classes: int = 0
    name: str = "workload"
    collate_fn: Callable | None = None
    workers: int = 0
    workload: Any = None  # the lrbs.core.workload.Workload they came from, if any
    pick: Pick = field(default_factory=lambda: PAIR)  # where a training batch's x and y are
    val_pick: Pick = field(default_factory=lambda: PAIR)
    train_what: str = "the training data"  # how messages name each split
    val_what: str = "the validation data"

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    def loader(
        self, dataset: Dataset, batch_sampler, seed: int = 0, persistent: bool = False
    ) -> DataLoader:
        collate = self.collate_of(dataset)
        if self.collate_fn is None and isinstance(dataset, TensorDataset):
            dataset, collate = Gathered(dataset), already_batched
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),  # the workers' seeds
            persistent_workers=persistent and self.workers > 0,
        )

    def collate_of(self, dataset: Dataset) -> Callable:
        """The collate function of `dataset`'s batches: the user's (or `pair_collate`), then
        the (input, target) pair picked from what it gives."""
        pick = self.pick if dataset is self.train else self.val_pick
        collate = self.collate_fn or pair_collate
        return collate if pick.plain else Paired(collate, pick)

    def check(self, batch, which: str, order: list[int], start: int, number: int):
        """`batch` (CPU tensors, samples `order[start:]`), or a ConfigError naming the first
        sample holding a NaN or an infinity (before any model sees it)."""
        what = self.train_what if which == "train" else self.val_what
        for part, t in zip(("input", "target"), batch, strict=True):
            bad = first_non_finite(t)
            if bad is not None:
                row, feature, kind = bad
                raise ConfigError(
                    non_finite_message(
                        what, order[start + row], feature, kind, part, f"batch {number}"
                    )
                )
        return batch

    def put(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        if self.device.type == "cpu":  # collated on the CPU already
            return x, y
        nb = self.device.type == "cuda"
        return x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """These training samples as one batch on the device."""
        order = idx.tolist()
        if self.collate_fn is None and isinstance(self.train, TensorDataset):
            batch = Gathered(self.train).__getitems__(order)
        else:
            batch = self.collate_of(self.train)([self.train[i] for i in order])
        return self.put(self.check(batch, "train", order, 0, 1))

    def chunks(
        self, which: str = "val", idx: torch.Tensor | None = None, chunk: int = EVAL_CHUNK
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation set (or these training samples), in order, a chunk at a time."""
        dataset = self.val if which == "val" else self.train
        order = list(range(len(dataset))) if idx is None else idx.tolist()
        batches = [order[i : i + chunk] for i in range(0, len(order), chunk)]
        for number, batch in enumerate(self.loader(dataset, batches)):
            yield self.put(self.check(batch, which, order, number * chunk, number + 1))


def pair_collate(batch: list):
    """`default_collate` for the usual sample, an (input tensor, target tensor or int, *rest)
    tuple or list, without its per-element dispatch: one stack per field, the same tensors, the
    rest never collated. Anything else, and any batch in a worker process (where
    default_collate stacks into shared memory), goes to default_collate."""
    first = batch[0]
    if (
        isinstance(first, tuple | list)
        and len(first) >= 2
        and isinstance(first[0], torch.Tensor)
        and get_worker_info() is None
    ):
        target = first[1]
        if isinstance(target, torch.Tensor):
            return torch.stack([s[0] for s in batch]), torch.stack([s[1] for s in batch])
        if type(target) is int:
            return torch.stack([s[0] for s in batch]), torch.tensor([s[1] for s in batch])
    return default_collate(batch)


class Gathered(Dataset):
    """A TensorDataset read a batch at a time: one index per tensor instead of a Python call
    and a stack per sample (the DataLoader uses `__getitems__` when a dataset has it). Host
    tensors too large for the device stream this way at the cost of one gather per batch."""

    def __init__(self, dataset: TensorDataset) -> None:
        self.tensors = dataset.tensors[:2]  # (input, target); the rest is never read

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def already_batched(batch):
    """The collate function of a `Gathered` dataset: its batch is collated already."""
    return batch


class Chunks(Sampler[list[int]]):
    """The epoch's permutation, `chunk` indices at a time (set `order` before each epoch)."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.order: list[int] = []

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.order), self.chunk):
            yield self.order[i : i + self.chunk]

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.chunk)


class MemoryOrder:
    """The fast path: a batch is a slice of one permutation of tensors already on the device."""

    def __init__(self, data: TensorData, gen: torch.Generator) -> None:
        self.x, self.y, self.gen, self.n = data.x_train, data.y_train, gen, data.n_train
        self.perm = torch.empty(0)

    def shuffle(self) -> None:
        self.perm = torch.randperm(self.n, generator=self.gen, device=self.x.device)

    def take(self, pos: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.perm[pos : pos + k]
        return self.x[idx], self.y[idx]

    def close(self) -> None:
        return None


class StreamOrder:
    """The same order, read through a DataLoader in chunks; batches are cut from them."""

    def __init__(self, data: StreamData, gen: torch.Generator, chunk: int, seed: int) -> None:
        self.data, self.gen, self.n = data, gen, data.n_train
        self.sampler = Chunks(chunk)
        self.loader = data.loader(data.train, self.sampler, seed, persistent=True)
        self.it: Iterator | None = None
        self.xs: list[torch.Tensor] = []
        self.ys: list[torch.Tensor] = []
        self.held = 0
        self.read = 0  # chunks read this epoch

    def shuffle(self) -> None:
        perm = torch.randperm(self.n, generator=self.gen, device=self.gen.device)
        self.sampler.order = perm.tolist()
        self.it = iter(self.loader)
        self.xs, self.ys, self.held, self.read = [], [], 0, 0

    def next_chunk(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(self.it)
        start, self.read = self.read * self.sampler.chunk, self.read + 1
        return self.data.check(batch, "train", self.sampler.order, start, self.read)

    def take(self, pos: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(k, self.n - pos)
        if not self.held:  # the usual step: a chunk is a batch, nothing to cut or join
            x, y = self.next_chunk()
            if len(y) == k:
                return self.data.put((x, y))
            self.xs, self.ys, self.held = [x], [y], len(y)
        while self.held < k:
            x, y = self.next_chunk()
            self.xs.append(x)
            self.ys.append(y)
            self.held += len(y)
        x = self.xs[0] if len(self.xs) == 1 else torch.cat(self.xs)
        y = self.ys[0] if len(self.ys) == 1 else torch.cat(self.ys)
        self.xs, self.ys = ([x[k:]], [y[k:]]) if len(y) > k else ([], [])
        self.held = len(y) - k
        return self.data.put((x[:k], y[:k]))

    def close(self) -> None:
        self.it = None
        del self.loader  # ends persistent workers


# ------------------------------------------------------------------- from the user's objects

INPUT_KEYS = ("input", "inputs", "x", "image", "images", "pixel_values", "input_ids", "features")
TARGET_KEYS = ("target", "targets", "y", "label", "labels")
SAMPLE_CONVENTION = (
    "a sample is (input, target, *rest) as a tuple or a list (the rest is ignored), or a dict "
    f"with its input under one of {', '.join(map(repr, INPUT_KEYS))} and its target under one "
    f"of {', '.join(map(repr, TARGET_KEYS))} (the first present is used)"
)
_NOTED: set[str] = set()  # what was said once already (ignored fields)


@dataclass(frozen=True)
class Pick:
    """Where a collated batch's input and target are: two positions of a tuple or list, or
    two keys of a dict; `rest` names what is ignored."""

    input: int | str = 0
    target: int | str = 1
    rest: tuple = ()

    @property
    def plain(self) -> bool:
        """A batch that is the (input, target) pair already."""
        return self.input == 0 and self.target == 1 and not self.rest

    def __call__(self, batch) -> tuple[Any, Any]:
        return batch[self.input], batch[self.target]


PAIR = Pick()


class Paired:
    """A collate function giving the (input, target) pair of what `collate` gives (a class,
    not a closure, so that worker processes can take it)."""

    def __init__(self, collate: Callable, pick: Pick) -> None:
        self.collate, self.pick = collate, pick

    def __call__(self, samples: list) -> tuple[Any, Any]:
        return self.pick(self.collate(samples))


def pick_of(batch, what: str) -> Pick:
    """Where the input and target of a collated batch are (`SAMPLE_CONVENTION`), or a
    ConfigError saying what `what` gave and how to adapt it."""
    if isinstance(batch, dict):
        inp = next((k for k in INPUT_KEYS if k in batch), None)
        tgt = next((k for k in TARGET_KEYS if k in batch), None)
        if inp is None or tgt is None:
            keys = ", ".join(map(repr, batch))
            lacking = "an input" if inp is None else "a target"
            raise ConfigError(
                f"{what}: a sample is a dict with keys {keys} and no key lrbs reads as "
                f"{lacking}; {SAMPLE_CONVENTION}: rename the keys or return (input, target)"
            )
        pick = Pick(inp, tgt, tuple(k for k in batch if k not in (inp, tgt)))
    elif isinstance(batch, tuple | list) and len(batch) >= 2:
        pick = Pick(0, 1, tuple(range(2, len(batch))))
    else:
        got = f"a {type(batch).__name__}" + (
            f" of {len(batch)}" if isinstance(batch, tuple | list) else ""
        )
        raise ConfigError(
            f"{what}: a sample must be (input, target), got {got}; {SAMPLE_CONVENTION}"
        )
    x, y = pick(batch)
    for name, t in (("input", x), ("target", y)):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(
                f"{what}: the {name} of a batch must be a tensor, got {type(t).__name__} "
                "(return tensors, numbers or numpy arrays from __getitem__)"
            )
    return pick


def note_ignored(pick: Pick, what: str) -> None:
    """Say once (per process) that a sample's fields beyond input and target are ignored."""
    if not pick.rest:
        return
    if isinstance(pick.input, str):
        note = (
            f"{what}: a sample is a dict; lrbs reads {pick.input!r} as the input and "
            f"{pick.target!r} as the target and ignores {', '.join(map(repr, pick.rest))}"
        )
    else:
        note = (
            f"{what}: a sample has {2 + len(pick.rest)} fields; lrbs reads the first as the "
            "input and the second as the target and ignores the rest"
        )
    if note not in _NOTED:
        _NOTED.add(note)
        log.warning(note)


def describe_part(part) -> str:
    """How a message names one half of a user's data: its type (and a DataLoader's dataset)."""
    if isinstance(part, DataLoader):
        return f"a DataLoader of {type(part.dataset).__name__}"
    if isinstance(part, tuple | list):
        return "an (x, y) pair"
    return f"a {type(part).__name__}"


def as_dataset(part, what: str) -> tuple[Dataset, Callable | None, int]:
    """(dataset, collate_fn, workers) of one half of a user's data: a map-style Dataset, a
    DataLoader (its dataset, collate function and workers) or an (x, y) pair of tensors."""
    if isinstance(part, DataLoader):
        dataset = part.dataset
        require(
            part.batch_size is not None or part.batch_sampler is not None,
            f"{what} is a DataLoader with batch_size=None (its items are batches already): "
            "lrbs draws its own batches, so give the Dataset of single samples or a "
            "DataLoader with a batch_size",
        )
        collate = None if part.collate_fn is default_collate else part.collate_fn
        check_map_style(dataset, what)
        return dataset, collate, part.num_workers
    if isinstance(part, Dataset):
        check_map_style(part, what)
        return part, None, 0
    if isinstance(part, tuple | list) and len(part) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v for v in part)
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            require(
                len(x) == len(y) and len(x) > 0,
                f"{what}: x has {len(x)} rows and y {len(y)}; they must match (and not be empty)",
            )
            return TensorDataset(x, y), None, 0
    raise ConfigError(
        f"{what} must be a torch Dataset, a DataLoader or an (x, y) pair of tensors, got "
        f"{type(part).__name__}"
    )


def check_map_style(dataset, what: str) -> None:
    require(
        not isinstance(dataset, IterableDataset),
        f"{what} is an IterableDataset: lrbs shuffles by index, so give a map-style Dataset "
        "(one with __len__ and __getitem__)",
    )
    require(hasattr(dataset, "__len__"), f"{what}: its Dataset has no length (__len__)")
    require(len(dataset) > 0, f"{what} is empty")


def first_pick(dataset: Dataset, collate: Callable | None, what: str):
    """(pick, x, y) of the first two samples collated: where a batch's input and target are,
    and that pair of tensors; or a clear error."""
    batch = (collate or default_collate)([dataset[i] for i in range(min(2, len(dataset)))])
    pick = pick_of(batch, what)
    return (pick, *pick(batch))


def first_batch(dataset: Dataset, collate: Callable | None, what: str):
    """The (input, target) pair of tensors of the first two samples collated."""
    return first_pick(dataset, collate, what)[1:]


def first_non_finite(t: torch.Tensor) -> tuple[int, tuple[int, ...], str] | None:
    """(row, index within the row, "NaN" or "inf") of the first non-finite value of `t`."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return None
    if torch.isfinite(t.sum()):  # a NaN or inf anywhere makes the sum one (isfinite: 25x slower)
        return None
    step = max(1, 2**22 // max(1, t[0].numel()))  # rows at a time: a bounded mask
    for start in range(0, len(t), step):
        bad = ~torch.isfinite(t[start : start + step])
        if bad.any():
            at = tuple(int(i) for i in bad.nonzero()[0])
            value = t[start : start + step][at]
            kind = "NaN" if torch.isnan(value).any() else "inf" if value.real > 0 else "-inf"
            return start + at[0], at[1:], kind
    return None


def non_finite_message(
    what: str, sample: int, feature: tuple, kind: str, part: str, where: str = ""
) -> str:
    place = f"feature {feature[0] if len(feature) == 1 else feature}" if feature else ""
    holds = f"holds {kind} at {place}" if part == "input" and place else f"has a {kind} {part}"
    met = f" (met in {where}, before the model saw it)" if where else ""
    return (
        f"{what}: sample {sample} {holds}{met}; a non-finite value makes every loss NaN and "
        "the run end 'diverged': clean it (e.g. torch.nan_to_num) or drop the sample"
    )


def check_finite(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    """A ConfigError naming the first sample of (x, y) holding a NaN or an infinity."""
    for part, t in (("input", x), ("target", y)):
        bad = first_non_finite(t)
        if bad is not None:
            raise ConfigError(non_finite_message(what, bad[0], bad[1], bad[2], part))


def memory_budget(device: torch.device) -> int:
    """Bytes "auto" may hold on `device`."""
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    elif device.type == "cpu":
        free = available_memory()
    return int(min(MEMORY_CAP_BYTES, MEMORY_SHARE * free)) if free else MEMORY_CAP_BYTES


def materialise(
    dataset: Dataset, collate, workers: int, pick: Pick = PAIR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a map-style dataset, collated into two tensors (on the CPU)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    collate = collate or default_collate
    loader = DataLoader(
        dataset,
        batch_size=EVAL_CHUNK,
        num_workers=workers,
        collate_fn=collate if pick.plain else Paired(collate, pick),
    )
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def build_data(
    train,
    val,
    *,
    device: torch.device,
    compute: Compute,
    task_of: Callable[[torch.Tensor], Task],
    name: str = "workload",
    workload: Any = None,
    source: str = "",
) -> TensorData | StreamData:
    """The loop's data from a user's (train, val): on the device when `compute.data_path` is
    "memory", or "auto" and they fit (`memory_budget`), else streamed. `task_of(targets)`
    gives the task from a first batch's targets. Messages name each split by what was given
    (its type), after `source` ("data() in wl.py: ") where there is one."""
    train_ds, collate, workers = as_dataset(train, f"{source}the training data")
    val_ds, val_collate, _ = as_dataset(val, f"{source}the validation data")
    train_what = f"{source}the training data ({describe_part(train)})"
    val_what = f"{source}the validation data ({describe_part(val)})"
    collate = collate or val_collate
    workers = compute.loader_workers or workers
    pick, x0, y0 = first_pick(train_ds, collate, train_what)
    val_pick = first_pick(val_ds, collate, val_what)[0]
    note_ignored(pick, train_what)
    if val_pick != pick:
        note_ignored(val_pick, val_what)
    task = task_of(y0)
    if isinstance(task.loss, torch.nn.Module):  # a loss with weights of its own
        task.loss.to(device)
    n = len(train_ds) + len(val_ds)
    per_sample = (x0.numel() * x0.element_size() + y0.numel() * y0.element_size()) / len(y0)
    need = n * per_sample
    if compute.data_path == "auto":
        path = "memory" if need <= memory_budget(device) else "stream"
        log.info("%s: %.0f MiB of data, %s path", name, need / 2**20, path)
    else:
        path = compute.data_path
    shape = tuple(x0.shape[1:])
    if path == "memory":
        x, y = materialise(train_ds, collate, workers, pick)
        xv, yv = materialise(val_ds, collate, workers, val_pick)
        check_finite(x, y, train_what)
        check_finite(xv, yv, val_what)
        integer = not (y.is_floating_point() or y.is_complex()) and y.dim() == 1
        n_classes = int(max(y.max(), yv.max())) + 1 if integer else 0
        return TensorData(
            x_train=x.to(device),
            y_train=y.to(device),
            x_val=xv.to(device),
            y_val=yv.to(device),
            n_classes=n_classes,
            input_shape=shape,
            name=name,
            task=task,
            compute=compute,
            workload=workload,
        )
    return StreamData(
        train=train_ds,
        val=val_ds,
        device=device,
        task=task,
        compute=compute,
        input_shape=shape,
        name=name,
        collate_fn=collate,
        workers=workers,
        workload=workload,
        pick=pick,
        val_pick=val_pick,
        train_what=train_what,
        val_what=val_what,
    )
