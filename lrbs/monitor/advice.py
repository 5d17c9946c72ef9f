"""What the monitor advises, and the small readings it needs: the scaling rule and the
stability limit of the user's optimizer, and numbers read off the device in one transfer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lrbs.methods.sharpness import adam_limit, gd_limit, momentum_limit

MARGIN = 2.0  # advise once the averaged B_simple exceeds the batch in use this many times


@dataclass(frozen=True)
class Advice:
    """Grow the batch from `batch` to `target` (the rate from `lr` to `new_lr`, first group);
    `accumulation` micro-batches of at most `micro_batch` per step where `target` exceeds the
    memory's largest batch (1: it fits); `grow_to`: the sampler's new batch where the monitor
    acts, else None. Under DDP `batch` and `target` count every rank's samples, `micro_batch`
    and `grow_to` one rank's."""

    step: int
    b_simple: float
    batch: int
    target: int
    rule: str
    lr: float
    new_lr: float
    accumulation: int
    micro_batch: int
    grow_to: int | None

    def line(self) -> str:
        text = (
            f"step {self.step}: B_simple ~ {self.b_simple:.0f} > {MARGIN:g} x the batch "
            f"{self.batch}: grow the batch to {self.target} and the rate to {self.new_lr:.3g} "
            f"({self.rule} rule)"
        )
        if self.accumulation > 1:
            text += f", as {self.accumulation} accumulated micro-batches of {self.micro_batch}"
        if self.grow_to is not None:
            text += f"; the sampler grows to {self.grow_to} at the next epoch"
        return text


def describe_optimizer(opt: torch.optim.Optimizer) -> tuple[str, Callable[[float], float] | None]:
    """(the scaling rule, the stability limit as a function of the rate or None where lrbs
    knows none): SGD scales linearly, with a limit of 2/lr or (2 + 2 momentum)/lr; Adam and
    AdamW by the square root, their preconditioned limit; any other optimizer sqrt, no limit."""
    group = opt.param_groups[0]
    if isinstance(opt, torch.optim.SGD):
        m = float(group.get("momentum", 0.0) or 0.0)
        return "linear", (lambda lr: momentum_limit(lr, m)) if m > 0 else gd_limit
    if isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
        beta1 = float(group.get("betas", (0.9, 0.999))[0])
        return "sqrt", lambda lr: adam_limit(lr, beta1)
    return "sqrt", None


def read_numbers(values: list) -> list[float]:
    """Floats from a mix of numbers and 0-d tensors, the tensors read in one transfer."""
    out = [float(v) if not isinstance(v, torch.Tensor) else math.nan for v in values]
    at = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
    if not at:
        return out
    try:  # one stack (dtypes promoted: float64 where any is, else float32/16) and one read
        read = torch.stack([values[i].detach().reshape(()) for i in at]).tolist()
    except RuntimeError:  # tensors on different devices: one read each
        read = [float(values[i]) for i in at]
    for i, v in zip(at, read, strict=True):
        out[i] = v
    return out
