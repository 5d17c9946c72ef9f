"""Learning-rate schedules as pure functions of progress: which schedule gives which rate at
each update, built from `torch.optim.lr_scheduler` (stepped once per update, so "2 epochs"
means 2 x steps-per-epoch updates) on any torch optimizer, and hypergradient descent (Baydin
et al. 2018), a rate that adapts itself, which torch has no form of. Reduce-on-plateau acts
on the validation loss at epoch ends: `build_scheduler` gives it none, the caller steps it.

Nothing here trains or knows a Setup or a sink: the schedules experiment
(lrbs.experiments.schedules) wires these into its runs.
"""

from __future__ import annotations

import math
import warnings
from typing import Protocol

import pandas as pd
import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from lrbs.core.errors import ConfigError, require
from lrbs.core.loop import OptimSpec

SCHEDULES = {
    "constant": "constant rate",
    "step": "step decay: x gamma every k epochs (StepLR)",
    "exponential": "exponential decay to lr x final factor (ExponentialLR)",
    "cosine": "cosine annealing to the floor (CosineAnnealingLR)",
    "cosine-restarts": "cosine with warm restarts, SGDR (CosineAnnealingWarmRestarts)",
    "warmup-cosine": "linear warm-up, then cosine (LinearLR, CosineAnnealingLR)",
    "clr": "cyclical, triangular between the bounds (CyclicLR)",
    "clr2": "cyclical, triangular2: the amplitude halves every cycle (CyclicLR)",
    "clr-exp": "cyclical, exp_range: the amplitude decays exponentially (CyclicLR)",
    "onecycle": "one cycle: up to the upper bound and far down (OneCycleLR)",
    "plateau": "divide by 1/gamma when the validation loss stalls (ReduceLROnPlateau)",
    "hd": "hypergradient descent: the rate learns itself (Baydin et al. 2018)",
}
REACTIVE = ("plateau", "hd")  # their rate depends on training, so they have no preview
PLAN_COLUMNS = ["schedule", "step", "lr", "epoch"]

# Baydin et al. used beta = 1e-3 with SGD and 1e-7 with Adam: the hypergradient is a dot
# product of a gradient with the previous step direction, and Adam's direction has every
# coordinate near +-1, so its products are far larger than SGD's gradient products.
HD_BETA = {"sgd": 1e-3, "momentum": 1e-3, "adam": 1e-7, "adamw": 1e-7}


class Settings(Protocol):
    """What the schedules are built from (the schedules experiment's Config is one): the run's
    length, batch and optimizer (its rate the one to hold or start from) and each schedule's
    shape, epochs counted in updates of `batch_size`."""

    schedules: tuple[str, ...]
    epochs: int
    batch_size: int
    optim: OptimSpec
    base_lr: float
    max_lr: float
    floor: float
    step_epochs: float
    gamma: float
    final_factor: float
    warmup_epochs: float
    restart_epochs: float
    restart_mult: int
    cycle_epochs: float
    exp_range_end: float
    onecycle_pct: float
    onecycle_div: float


def steps_per_epoch(n_train: int, batch: int) -> int:
    return math.ceil(n_train / batch)


# ------------------------------------------------------------------ the per-update schedules


def _updates(epochs: float, spe: int) -> int:
    """A number of epochs in updates (at least one)."""
    return max(1, round(epochs * spe))


def per_group(opt: torch.optim.Optimizer, rate: float) -> float | list[float]:
    """A bound for every parameter group: `rate` for the first, the others keeping their rate's
    ratio to the first's (a workload's head at a tenth of its body stays at a tenth)."""
    groups = opt.param_groups
    if len(groups) == 1:
        return rate
    first = groups[0]["lr"] or 1.0
    return [rate * g["lr"] / first for g in groups]


def build_scheduler(
    name: str, cfg: Settings, opt: torch.optim.Optimizer, spe: int
) -> sched.LRScheduler | None:
    """The torch scheduler of a per-update schedule (None for constant and the reactive ones).
    Built on `opt`, whose rate is cfg.optim.lr."""
    total = cfg.epochs * spe
    lr = cfg.optim.lr
    if name == "step":
        return sched.StepLR(opt, _updates(cfg.step_epochs, spe), cfg.gamma)
    if name == "exponential":
        return sched.ExponentialLR(opt, cfg.final_factor ** (1 / total))
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, total, eta_min=lr * cfg.floor)
    if name == "cosine-restarts":
        period = _updates(cfg.restart_epochs, spe)
        return sched.CosineAnnealingWarmRestarts(
            opt, period, cfg.restart_mult, eta_min=lr * cfg.floor
        )
    if name == "warmup-cosine":
        warm = _updates(cfg.warmup_epochs, spe) if cfg.warmup_epochs > 0 else 0
        cosine = sched.CosineAnnealingLR(opt, total - warm, eta_min=lr * cfg.floor)
        if warm == 0:
            return cosine
        up = sched.LinearLR(opt, start_factor=1 / warm, end_factor=1.0, total_iters=warm)
        return sched.SequentialLR(opt, [up, cosine], milestones=[warm])
    if name in ("clr", "clr2", "clr-exp"):
        step = cfg.cycle_epochs * spe  # a float: whole cycles end exactly where they should
        mode = {"clr": "triangular", "clr2": "triangular2", "clr-exp": "exp_range"}[name]
        return sched.CyclicLR(
            opt,
            per_group(opt, cfg.base_lr),
            per_group(opt, cfg.max_lr),
            step_size_up=step,
            mode=mode,
            gamma=cfg.exp_range_end ** (1 / total),
            cycle_momentum=False,
        )
    if name == "onecycle":
        # one-cycle also cycles momentum (Adam's beta1) against the rate, as Smith proposes;
        # plain SGD has none to cycle
        return sched.OneCycleLR(
            opt,
            per_group(opt, cfg.max_lr),
            total_steps=total,
            pct_start=cfg.onecycle_pct,
            div_factor=cfg.onecycle_div,
            cycle_momentum=cfg.optim.name != "sgd",
        )
    if name in ("constant", *REACTIVE):
        return None
    raise ConfigError(f"unknown schedule {name!r}")


def preview(cfg: Settings, n_train: int, max_points: int = 1500) -> pd.DataFrame:
    """The rate each per-update schedule will use at every update, without training: the same
    torch schedulers stepped on a dummy parameter. Long runs are thinned to `max_points` per
    schedule (first and last kept)."""
    spe = steps_per_epoch(n_train, cfg.batch_size)
    total = cfg.epochs * spe
    keep = set(range(0, total, max(1, total // max_points))) | {total - 1}
    frames = []
    for name in cfg.schedules:
        if name in REACTIVE:
            continue
        p = nn.Parameter(torch.zeros(1))
        opt = cfg.optim.build([p])
        s = build_scheduler(name, cfg, opt, spe)
        lrs = []
        with warnings.catch_warnings():
            # the schedulers warn when stepped without an optimizer step: nothing trains here
            # (and stepping the optimizer too took 60x longer)
            warnings.simplefilter("ignore", UserWarning)
            for i in range(total):
                if i in keep:
                    lrs.append((i, opt.param_groups[0]["lr"]))
                if s is not None:
                    s.step()
        df = pd.DataFrame(lrs, columns=["step", "lr"])
        df.insert(0, "schedule", name)
        df["epoch"] = (df.step + 1) / spe
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PLAN_COLUMNS)


# ------------------------------------------------------------------ hypergradient descent


class Hypergradient:
    """Hypergradient descent on any torch optimizer (SGD-HD, SGDN-HD, Adam-HD).

    Before each update the rate moves against df/d(rate): with u the previous update per unit
    of rate (u = -g for plain SGD, Adam's -m/(sqrt(v)+eps)), theta_t = theta_{t-1} + rate u,
    so df(theta_t)/d(rate) = g_t . u and  rate_t = rate_{t-1} - beta g_t . u_{t-1}; for SGD
    that is rate_{t-1} + beta g_t . g_{t-1}. u is read off the parameters' change, so the
    wrapped optimizer's own rule (momentum, Adam, weight decay) is honoured. The rate is kept
    above `floor` x its start, so it stays a rate."""

    def __init__(self, opt: torch.optim.Optimizer, beta: float, floor: float = 1e-6) -> None:
        require(beta >= 0, f"the hypergradient rate beta must be >= 0, got {beta}")
        self.opt, self.beta = opt, beta
        self.min_lr = opt.param_groups[0]["lr"] * floor
        self.params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        self.group_of = [
            i for i, g in enumerate(opt.param_groups) for p in g["params"] if p.requires_grad
        ]
        self.direction: list[torch.Tensor] | None = None
        self.before: list[torch.Tensor] = []
        self.handles = [
            opt.register_step_pre_hook(self._before_step),
            opt.register_step_post_hook(self._after_step),
        ]

    def hypergradient(self) -> float | None:
        """g_t . u_{t-1}, from the gradients now in .grad (None before the second update)."""
        if self.direction is None:
            return None
        pairs = zip(self.params, self.direction, strict=True)
        dots = [torch.sum(p.grad * u) for p, u in pairs if p.grad is not None]
        return float(torch.stack(dots).sum()) if dots else 0.0

    def _before_step(self, opt, args, kwargs) -> None:
        h = self.hypergradient()
        if h is not None:  # the first group's rule; the others keep their ratio to it
            first = opt.param_groups[0]["lr"]
            factor = max(self.min_lr, first - self.beta * h) / first
            for group in opt.param_groups:
                group["lr"] *= factor
        self.before = [p.detach().clone() for p in self.params]

    def _after_step(self, opt, args, kwargs) -> None:
        lrs = [g["lr"] for g in opt.param_groups]  # each parameter's step per unit of its rate
        self.direction = [
            (p.detach() - b) / lrs[i]
            for p, b, i in zip(self.params, self.before, self.group_of, strict=True)
        ]
        self.before = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
