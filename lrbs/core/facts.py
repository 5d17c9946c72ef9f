"""What a page shows about the data before anything trains: sizes, input shape, classes.

A built-in set's facts come from its arrays; a workload's from its data() without reading
every sample (lengths and one collated pair of samples), so a large streamed set is listed
as fast as a small one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lrbs.core.data import Arrays
from lrbs.core.stream import as_dataset, first_batch
from lrbs.core.workload import Workload, WorkloadError, describe


@dataclass(frozen=True)
class DataFacts:
    """The parts of `Arrays` a page reads, for data that is not held as arrays."""

    name: str
    n_train: int
    n_val: int
    input_shape: tuple[int, ...]
    n_classes: int  # 0: not a classification (regression, or a target that is not one label)
    target_shape: tuple[int, ...]
    source: str
    class_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def class_counts(self) -> np.ndarray:
        """Unknown without reading every label: empty (pages then skip per-class figures)."""
        return np.zeros(0, dtype=np.int64)

    @property
    def task(self) -> str:
        return "classification" if self.n_classes else "regression or other"


def facts_of_arrays(a: Arrays) -> DataFacts:
    return DataFacts(
        name=a.name,
        n_train=a.n_train,
        n_val=len(a.y_val),
        input_shape=a.input_shape,
        n_classes=a.n_classes,
        target_shape=(),
        source=a.source,
        class_names=a.class_names,
        notes=a.notes,
    )


def facts_of_workload(workload: Workload) -> DataFacts:
    """Lengths and the shape of one sample of the workload's (train, val)."""
    with workload.user_code("data()"):
        parts = workload.data()
    if not (isinstance(parts, tuple | list) and len(parts) == 2):
        raise WorkloadError(
            f"data() in {workload.where()} must return (train, val), got {describe(parts)}"
        )
    with workload.user_code("data()"):
        train, collate, _ = as_dataset(parts[0], "the training data")
        val, val_collate, _ = as_dataset(parts[1], "the validation data")
        x, y = first_batch(train, collate or val_collate, "the training data")
    integer = not (y.is_floating_point() or y.is_complex()) and y.dim() == 1
    n_classes = 0
    if integer:  # the classes a model's output has: its width on the first sample
        with workload.user_code("model()"), torch.random.fork_rng(devices=[]):
            model = workload.build_model(0)
        with torch.no_grad(), workload.user_code("model()"):
            out = model.eval()(x)
        n_classes = int(out.shape[-1]) if out.dim() == 2 else 0
    return DataFacts(
        name=str(workload),
        n_train=len(train),
        n_val=len(val),
        input_shape=tuple(x.shape[1:]),
        n_classes=n_classes,
        target_shape=tuple(y.shape[1:]),
        source=f"workload {workload.name}",
    )
