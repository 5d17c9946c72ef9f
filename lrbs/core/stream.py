"""Data a user brings: tensors, a map-style `Dataset` or a `DataLoader`, held on the device when
they fit (the loop's fast path, `TensorData`) and streamed through a `DataLoader` when not
(`StreamData`: worker processes, pinned memory on CUDA).

Both paths visit the training set in the same order: one permutation per epoch drawn from the
run's seeded generator, consumed `batch` samples at a time, whatever the batch size of each
step. The streamed loader reads the permutation in chunks and the loop cuts its batches from
them, so a batch-size schedule works on both paths and, on the CPU, one seed gives the same
curve streamed or in memory.
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

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    def loader(
        self, dataset: Dataset, batch_sampler, seed: int = 0, persistent: bool = False
    ) -> DataLoader:
        collate = self.collate_fn or pair_collate
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

    def put(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        if self.device.type == "cpu":  # collated on the CPU already
            return x, y
        nb = self.device.type == "cuda"
        return x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """These training samples as one batch on the device."""
        if self.collate_fn is None and isinstance(self.train, TensorDataset):
            return self.put(Gathered(self.train).__getitems__(idx.tolist()))
        collate = self.collate_fn or pair_collate
        return self.put(collate([self.train[i] for i in idx.tolist()]))

    def chunks(
        self, which: str = "val", idx: torch.Tensor | None = None, chunk: int = EVAL_CHUNK
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation set (or these training samples), in order, a chunk at a time."""
        dataset = self.val if which == "val" else self.train
        order = list(range(len(dataset))) if idx is None else idx.tolist()
        batches = [order[i : i + chunk] for i in range(0, len(order), chunk)]
        for batch in self.loader(dataset, batches):
            yield self.put(batch)


def pair_collate(batch: list):
    """`default_collate` for the usual sample, an (input tensor, target tensor or int) pair,
    without its per-element dispatch: one stack per field, the same tensors. Anything else,
    and any batch in a worker process (where default_collate stacks into shared memory), goes
    to default_collate."""
    first = batch[0]
    if (
        isinstance(first, tuple | list)
        and len(first) == 2
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
        self.tensors = dataset.tensors

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

    def shuffle(self) -> None:
        perm = torch.randperm(self.n, generator=self.gen, device=self.gen.device)
        self.sampler.order = perm.tolist()
        self.it = iter(self.loader)
        self.xs, self.ys, self.held = [], [], 0

    def take(self, pos: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(k, self.n - pos)
        if not self.held:  # the usual step: a chunk is a batch, nothing to cut or join
            x, y = next(self.it)
            if len(y) == k:
                return self.data.put((x, y))
            self.xs, self.ys, self.held = [x], [y], len(y)
        while self.held < k:
            x, y = next(self.it)
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


def as_dataset(part, what: str) -> tuple[Dataset, Callable | None, int]:
    """(dataset, collate_fn, workers) of one half of a user's data: a map-style Dataset, a
    DataLoader (its dataset, collate function and workers) or an (x, y) pair of tensors."""
    if isinstance(part, DataLoader):
        dataset = part.dataset
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


def first_batch(dataset: Dataset, collate: Callable | None, what: str):
    """The first two samples collated: an (x, y) pair of tensors, or a clear error."""
    batch = (collate or default_collate)([dataset[i] for i in range(min(2, len(dataset)))])
    ok = (
        isinstance(batch, tuple | list)
        and len(batch) == 2
        and all(isinstance(t, torch.Tensor) for t in batch)
    )
    require(ok, f"{what}: a sample must be an (input, target) pair of tensors")
    return batch


def memory_budget(device: torch.device) -> int:
    """Bytes "auto" may hold on `device`."""
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    elif device.type == "cpu":
        free = available_memory()
    return int(min(MEMORY_CAP_BYTES, MEMORY_SHARE * free)) if free else MEMORY_CAP_BYTES


def materialise(dataset: Dataset, collate, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a map-style dataset, collated into two tensors (on the CPU)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[0], dataset.tensors[1]
    loader = DataLoader(
        dataset, batch_size=EVAL_CHUNK, num_workers=workers, collate_fn=collate or default_collate
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
) -> TensorData | StreamData:
    """The loop's data from a user's (train, val): on the device when `compute.data_path` is
    "memory", or "auto" and they fit (`memory_budget`), else streamed. `task_of(targets)`
    gives the task from a first batch's targets."""
    train_ds, collate, workers = as_dataset(train, "the training data")
    val_ds, val_collate, _ = as_dataset(val, "the validation data")
    collate = collate or val_collate
    workers = compute.loader_workers or workers
    x0, y0 = first_batch(train_ds, collate, "the training data")
    first_batch(val_ds, collate, "the validation data")
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
        x, y = materialise(train_ds, collate, workers)
        xv, yv = materialise(val_ds, collate, workers)
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
    )
