"""Optimizers whose rate an experiment sets: `SweptOptim` (a sweep's grid, a range test's ramp)
and `optim_at`, the one way to build the `OptimSpec` of such an optimizer at one rate."""

from __future__ import annotations

from dataclasses import dataclass

from lrbs.core.config import option
from lrbs.core.loop import OptimSpec


@dataclass(frozen=True)
class SweptOptim(OptimSpec):
    """An optimizer whose learning rate the experiment sets (a sweep's grid, a range test's
    ramp): its own `lr` is unused, so the command line has no `--lr` for it."""

    lr: float = option(1.0, cli=False, help="unused: the experiment sets the rate")


def optim_at(optim: OptimSpec, lr: float) -> OptimSpec:
    """`optim` (its name, momentum and weight decay) at rate `lr`, as a plain `OptimSpec`;
    checks the rate (a ConfigError for one that is absurd)."""
    return OptimSpec(optim.name, lr, optim.momentum, optim.weight_decay)
