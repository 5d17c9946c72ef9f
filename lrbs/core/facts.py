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
    integer_targets: bool = False  # whole-number targets (classes, or e.g. tokens per position)
    optimizer: str = ""  # the class of a workload's own optimizer(); "" when the page chooses

    def target_text(self) -> str:
        """What the targets are, in a few words (a page's caption)."""
        if self.n_classes:
            return f"{self.n_classes} classes"
        shape = f" of shape {self.target_shape}" if self.target_shape else ""
        if self.integer_targets:
            return f"whole-number targets{shape} (e.g. tokens or classes per position)"
        return f"real-valued targets{shape} (regression)"

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
    whole = not (y.is_floating_point() or y.is_complex())
    integer = whole and y.dim() == 1
    n_classes, model = 0, None
    if integer or workload.optimizer is not None:
        with workload.user_code("model()"), torch.random.fork_rng(devices=[]):
            model = workload.build_model(0)
    if integer:  # the classes a model's output has: its width on the first sample
        with torch.no_grad(), workload.user_code("model()"):
            out = model.eval()(x)
        n_classes = int(out.shape[-1]) if out.dim() == 2 else 0
    optimizer = ""
    if workload.optimizer is not None:  # what the file's optimizer() builds, by its class
        optimizer = type(workload.build_optimizer(model.parameters(), 1e-3)).__name__
    return DataFacts(
        name=str(workload),
        n_train=len(train),
        n_val=len(val),
        input_shape=tuple(x.shape[1:]),
        n_classes=n_classes,
        target_shape=tuple(y.shape[1:]),
        source=f"workload {workload.name}",
        integer_targets=whole,
        optimizer=optimizer,
    )
