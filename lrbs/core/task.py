"""What a run minimises and how it is scored (the loss, an optional metric and, for a user's
workload, how its optimizer is built), and how it computes (precision, accumulation, data path).

The loss returns the mean over a batch (a 0-dim tensor), as torch's losses do by default; the
metric returns the mean over a batch of a score (accuracy for classification), a tensor or a
float. Built-in data are classification with cross-entropy and accuracy; a workload brings its
own loss (MSE for a regression) and its metric, or none: then no accuracy is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.errors import require

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | float"]
OptimizerFactory = Callable[..., torch.optim.Optimizer]


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of rows whose highest output is the target class (stays on the device)."""
    return (output.argmax(1) == target).float().mean()


@dataclass(frozen=True)
class Task:
    loss: Loss = nn.functional.cross_entropy
    metric: Metric | None = accuracy
    name: str = "classification"
    # a user's optimizer(params, lr); None: the experiment's OptimSpec
    optimizer: OptimizerFactory | None = None

    @property
    def builtin(self) -> bool:
        """A loss and metric lrbs knows (they can be vmapped for stacked training)."""
        return self.loss in BUILTIN_LOSSES and self.metric in (accuracy, None)

    def build_optimizer(self, params, optim) -> torch.optim.Optimizer:
        """The user's optimizer at the spec's rate, or the spec's own (`optim`: an OptimSpec)."""
        if self.optimizer is None:
            return optim.build(params)
        return self.optimizer(params, optim.lr)


CLASSIFICATION = Task()
REGRESSION = Task(loss=nn.functional.mse_loss, metric=None, name="regression")
BUILTIN_LOSSES = (nn.functional.cross_entropy, nn.functional.mse_loss)


def default_task(targets: torch.Tensor, loss: Loss | None, metric: Metric | None) -> Task:
    """The task of a user's data: their loss (default cross-entropy) and metric (default
    accuracy, where it applies: classification with integer targets)."""
    integer = not (targets.is_floating_point() or targets.is_complex())
    if loss is None:
        loss = nn.functional.cross_entropy
    if metric is None and integer and targets.dim() == 1:
        metric = accuracy
    if loss is nn.functional.cross_entropy and integer:
        name = "classification"
    elif loss is nn.functional.mse_loss:
        name = "regression"
    else:
        name = getattr(loss, "__name__", type(loss).__name__)
    return Task(loss=loss, metric=metric, name=name)


PRECISIONS = ("fp32", "bf16", "fp16")
DATA_PATHS = ("auto", "memory", "stream")


@dataclass(frozen=True)
class Compute:
    """How a run computes: precision, gradient accumulation, and where its data come from."""

    precision: str = option("fp32", choices=PRECISIONS, help="fp32, or bf16/fp16 autocast")
    accumulate: int = option(
        1, low=1, high=4096, help="micro-batches per update (gradient accumulation)"
    )
    data_path: str = option(
        "auto", choices=DATA_PATHS, help="data on the device (memory), streamed, or by size"
    )
    loader_workers: int = option(0, low=0, high=64, help="worker processes of a streamed loader")

    def __post_init__(self) -> None:
        check(self)
        require(
            isinstance(self.accumulate, int) and not isinstance(self.accumulate, bool),
            f"accumulation steps must be a whole number, got {self.accumulate!r}",
        )

    @property
    def plain(self) -> bool:
        """fp32 without accumulation: the loop's fast path."""
        return self.precision == "fp32" and self.accumulate == 1

    def autocast(self, device: torch.device):
        """The autocast context of this precision on `device` (a no-op context for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 (its small range underflows gradients), else None."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(device.type)
