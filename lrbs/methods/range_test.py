"""The learning-rate range test (Leslie Smith, "Cyclical Learning Rates", 2017).

The rate grows each step from `lr_min` to `lr_max` (exponentially by default, the last step
landing exactly on `lr_max`); the loss is smoothed with a debiased moving average and the test
stops when the smoothed loss passes `stop_factor` x its best. Suggestions are the rules of
`lrbs.methods.suggestions`. Model, optimizer and RNG state are restored afterwards: the next
run starts from the same weights.

Two drivers share the ramp, the smoothing, the stop rule and the restore:
- `torch_range_test`: plain torch objects (a model, an optimizer or a factory of one, a loss,
  batches), a loop of its own; for code that is not lrbs's.
- `range_test`: lrbs's data through lrbs's loop (streamed data, precision, accumulation, a
  workload's optimizer), as the experiments run it; `quick_range_test` is its one-call form.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.loop import Budget, Event, OptimSpec, TrainConfig, evaluate_data, train
from lrbs.core.stream import StreamData
from lrbs.methods.suggestions import EMA, SUGGESTIONS, Suggestion, SuggestionRule, suggest

MODES = ("exp", "linear")
FOLLOW = ("train", "val")
QUICK_LR_MIN = 1e-6  # the quick test's first rate: below it a few steps change nothing


@dataclass(frozen=True)
class RangeTestConfig:
    lr_min: float = 1e-7
    lr_max: float = 10.0
    iterations: int = 100
    mode: str = "exp"
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    beta: float = 0.98  # smoothing; 0 = none
    debias: bool = True  # False: torch-lr-finder's style (first value = first loss)
    stop_factor: float | None = 4.0  # None: run all iterations
    seed: int = 0
    weight_decay: float = 0.0
    follow: str = "train"  # "val": the validation loss after each step (torch-lr-finder)

    def __post_init__(self) -> None:
        require(self.follow in FOLLOW, f"follow must be 'train' or 'val', got {self.follow!r}")
        positive_number("minimum learning rate", self.lr_min)
        positive_number("maximum learning rate", self.lr_max)
        require(self.lr_max <= 1e6, f"maximum learning rate {self.lr_max:g} is absurd (limit 1e6)")
        require(
            self.lr_min < self.lr_max,
            f"the minimum learning rate ({self.lr_min:g}) must be below the maximum "
            f"({self.lr_max:g})",
        )
        positive_int("iterations", self.iterations)
        require(self.iterations >= 5, "a range test needs at least 5 iterations")
        require(self.iterations <= 100_000, "iterations is at most 100000")
        require(self.mode in MODES, f"ramp must be 'exp' or 'linear', got {self.mode!r}")
        require(0 <= self.beta < 1, f"smoothing beta must be in [0, 1), got {self.beta}")
        if self.stop_factor is not None:
            require(self.stop_factor > 1, "the stop factor must be above 1")
        self.optim()  # validates the optimizer

    def optim(self) -> OptimSpec:
        return OptimSpec(self.optimizer, self.lr_min, self.momentum, self.weight_decay)

    def lr_at(self, i: int) -> float:
        """The rate of iteration i: i/(n-1) of the way, so the last one is exactly lr_max."""
        t = i / (self.iterations - 1)
        if self.mode == "exp":
            return self.lr_min * (self.lr_max / self.lr_min) ** t
        return self.lr_min + (self.lr_max - self.lr_min) * t

    def lrs(self) -> np.ndarray:
        return np.array([self.lr_at(i) for i in range(self.iterations)])

    def zoom(self, lo: float, hi: float, points_per_decade: float | None = None) -> RangeTestConfig:
        """A finer test over [lo, hi]: by default twice the density of this one, at least 50
        iterations, always exponential."""
        cfg = replace(self, lr_min=lo, lr_max=hi)  # validates lo < hi
        if points_per_decade is None:
            points_per_decade = 2 * self.points_per_decade()
        decades = math.log10(hi / lo)
        return replace(cfg, mode="exp", iterations=max(50, math.ceil(points_per_decade * decades)))

    def points_per_decade(self) -> float:
        return self.iterations / max(math.log10(self.lr_max / self.lr_min), 1e-9)


# ---------------------------------------------------------------------------- the test


@dataclass(frozen=True)
class RangeTestResult:
    config: RangeTestConfig
    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    status: str  # "finished", "diverged" (stop rule or NaN) or "stopped" (by the user)
    message: str
    suggestions: tuple[Suggestion, ...]
    elapsed: float
    round: int = 0

    def frame(self) -> pd.DataFrame:
        """The CSV the page offers: one row per iteration."""
        return pd.DataFrame(
            {
                "round": self.round,
                "seed": self.config.seed,
                "iteration": np.arange(len(self.lrs)),
                "lr": self.lrs,
                "loss": self.losses,
                "smoothed": self.smoothed,
            }
        )

    def suggestion(self, name: str) -> Suggestion | None:
        return next((s for s in self.suggestions if s.name == name), None)

    @property
    def best(self) -> tuple[float, float]:
        """(lr, smoothed loss) at the lowest smoothed loss."""
        i = int(np.nanargmin(self.smoothed))
        return float(self.lrs[i]), float(self.smoothed[i])

    def headline(self) -> dict:
        lr, loss = self.best
        return {
            "status": self.status,
            "iterations": len(self.lrs),
            "elapsed": self.elapsed,
            "lr_at_min": lr,
            "min_smoothed_loss": loss,
            "suggestions": {s.name: s.lr for s in self.suggestions},
        }


@dataclass
class Snapshot:
    model: dict
    optimizer: dict | None
    rng: torch.Tensor
    training: bool = True
    extra: dict = field(default_factory=dict)


def save_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> Snapshot:
    """Weights and buffers (BatchNorm's running statistics), the optimizer's state and
    groups, torch's RNGs (CPU and CUDA) and the train/eval mode."""
    extra = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else {}
    return Snapshot(
        model=copy.deepcopy(model.state_dict()),
        optimizer=copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
        rng=torch.random.get_rng_state(),
        training=model.training,
        extra=extra,
    )


def restore_state(
    snap: Snapshot, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    model.load_state_dict(snap.model)
    if optimizer is not None and snap.optimizer is not None:
        optimizer.load_state_dict(snap.optimizer)
    torch.random.set_rng_state(snap.rng)
    if "cuda" in snap.extra:
        torch.cuda.set_rng_state_all(snap.extra["cuda"])
    model.train(snap.training)


def range_test(
    model: nn.Module,
    data: TensorData | StreamData,
    cfg: RangeTestConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    on_point: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    round: int = 0,
    rules: tuple[SuggestionRule, ...] = SUGGESTIONS,
) -> RangeTestResult:
    """Run the test on `model` (and `optimizer`, if given: its state is restored too; else the
    data's task builds one, a workload's own included). Every parameter group's rate follows
    the ramp times its ratio to the first group's, so a head at a tenth of the body's rate
    stays at a tenth. The loss followed is each step's training batch, or with
    `cfg.follow == "val"` the whole validation set after each step. `on_point` receives
    {"round", "seed", "iteration", "lr", "loss", "smoothed"} per step, lr the first group's."""
    if cfg.batch_size > data.n_train:
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training set ({data.n_train})"
        )
    snap = save_state(model, optimizer)
    track = Tracker(cfg.beta, cfg.debias, cfg.stop_factor)

    def on_event(ev: Event) -> None:
        x, i = ev.loss, len(track.losses)
        if cfg.follow == "val" and math.isfinite(x):
            x = evaluate_data(model, data)[0]
        s = track.add(x)
        if on_point is not None:
            on_point(
                {
                    "round": round,
                    "seed": cfg.seed,
                    "iteration": i,
                    "lr": ev.lr,
                    "loss": x,
                    "smoothed": s,
                }
            )

    def stop_rule(ev: Event) -> str | None:
        return "diverged" if track.passed() else None

    train_cfg = TrainConfig(
        batch_size=cfg.batch_size,
        budget=Budget(steps=cfg.iterations),
        optim=cfg.optim(),
        seed=cfg.seed,
        log_every=1,
        eval_each_epoch=False,
        eval_at_end=False,
        divergence_factor=None,
    )
    if optimizer is not None:  # the ramp's start, each group keeping its ratio to the first
        first = optimizer.param_groups[0]["lr"] or 1.0
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_min * group["lr"] / first
            group.pop("initial_lr", None)  # a previous scheduler's; LambdaLR sets its own

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: cfg.lr_at(i) / cfg.lr_min)

    t0 = time.perf_counter()
    try:
        result = train(
            model,
            data,
            train_cfg,
            run_id=f"round {round}",
            on_event=on_event,
            stop=stop,
            optimizer=optimizer,
            lr_scheduler=schedule,
            stop_rule=stop_rule,
        )
    finally:
        restore_state(snap, model, optimizer)
    lrs = np.array([e.lr for e in result.events if e.kind == "train"])
    message = result.message
    if result.status == "diverged" and not message:
        message = f"smoothed loss passed {cfg.stop_factor:g} x its best at lr {lrs[-1]:.3g}"
    sm = np.array(track.smoothed)
    return RangeTestResult(
        config=cfg,
        lrs=lrs,
        losses=np.array(track.losses),
        smoothed=sm,
        status=result.status,
        message=message,
        suggestions=tuple(suggest(lrs, sm, rules)),
        elapsed=time.perf_counter() - t0,
        round=round,
    )


# ---------------------------------------------------------------------------- plain torch


class Tracker:
    """One test's losses, their smoothed curve and its stop rule, fed one loss a step."""

    def __init__(self, beta: float, debias: bool, stop_factor: float | None) -> None:
        self.ema = EMA(beta, debias)
        self.stop_factor = stop_factor
        self.best = math.inf
        self.losses: list[float] = []
        self.smoothed: list[float] = []

    def add(self, loss: float) -> float:
        """Record a step's loss; returns the smoothed loss."""
        s = self.ema(loss)
        self.losses.append(loss)
        self.smoothed.append(s)
        return s

    def passed(self) -> bool:
        """Whether the last smoothed loss passed `stop_factor` x the best before it."""
        s = self.smoothed[-1]
        if self.stop_factor is not None and s > self.stop_factor * self.best:
            return True
        self.best = min(self.best, s)
        return False


def ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's rate over the first group's (1.0 where the first is 0)."""
    first = optimizer.param_groups[0]["lr"] or 1.0
    return [g["lr"] / first for g in optimizer.param_groups]


@dataclass(frozen=True)
class RangeHistory:
    """What `torch_range_test` saw: per step the first group's rate, the loss followed and its
    smoothed value; how it ended ("finished" or "diverged"), why, and the suggestions."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    status: str
    message: str
    suggestions: tuple[Suggestion, ...]

    def suggested(self) -> dict[str, float]:
        """The suggestions by name: {"steep": 0.03, ...}."""
        return {s.name: s.lr for s in self.suggestions}


def _cycle(batches: Iterable) -> Iterator:
    """The batches over and over (a list, a DataLoader); a one-pass iterator just once."""
    while True:
        again = iter(batches)
        yield from again
        if again is batches:
            return


def torch_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    iterations: int = 100,
    mode: str = "exp",
    beta: float = 0.98,
    debias: bool = True,
    stop_factor: float | None = 4.0,
    val_loss: Callable[[nn.Module], float] | None = None,
    rules: tuple[SuggestionRule, ...] = SUGGESTIONS,
    reduce: Callable[[float], float] | None = None,
) -> RangeHistory:
    """The range test in a loop of its own, on plain torch objects: `optimizer` is an optimizer
    (its state is restored afterwards) or a factory called with the model's parameters.
    Iteration i trains on the next of `batches` (x, y) (cycled when it can be iterated again)
    at rate `lr_at(i)`, every parameter group keeping its ratio to the first group's rate. The
    loss followed is the batch's, or `val_loss(model)` after each step. Weights, buffers, the
    optimizer's state, torch's RNGs and the train/eval mode are restored at the end.
    `reduce(loss)`: the loss the test follows from this process's (under DDP the mean over the
    ranks, so that every rank stops at the same step: lrbs/methods/distributed.py)."""
    cfg = RangeTestConfig(
        lr_min=lr_min,
        lr_max=lr_max,
        iterations=iterations,
        mode=mode,
        beta=beta,
        debias=debias,
        stop_factor=stop_factor,
    )
    given = isinstance(optimizer, torch.optim.Optimizer)
    opt = optimizer if given else optimizer(model.parameters())
    snap = save_state(model, opt if given else None)
    share = ratios(opt)
    track = Tracker(cfg.beta, cfg.debias, cfg.stop_factor)
    lrs: list[float] = []
    status, message = "finished", ""
    stream = _cycle(batches)
    model.train()
    try:
        for i in range(cfg.iterations):
            batch = next(stream, None)
            if batch is None:
                message = f"the batches ran out after {i} iterations"
                break
            x, y = batch
            lr = cfg.lr_at(i)
            for group, r in zip(opt.param_groups, share, strict=True):
                group["lr"] = lr * r
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if val_loss is not None and math.isfinite(value):
                value = float(val_loss(model))
                model.train()
            if reduce is not None:
                value = reduce(value)
            track.add(value)
            lrs.append(lr)
            if not math.isfinite(value):
                status, message = "diverged", f"loss became {value} at lr {lr:.3g}"
                break
            if track.passed():
                status = "diverged"
                message = f"smoothed loss passed {cfg.stop_factor:g} x its best at lr {lr:.3g}"
                break
    finally:
        restore_state(snap, model, opt if given else None)
    smoothed = np.array(track.smoothed)
    return RangeHistory(
        lrs=tuple(lrs),
        losses=tuple(track.losses),
        smoothed=tuple(track.smoothed),
        status=status,
        message=message,
        suggestions=tuple(suggest(np.array(lrs), smoothed, rules)),
    )


# ---------------------------------------------------------------------------- shared uses


def quick_range_test(
    model: nn.Module,
    data: TensorData | StreamData,
    *,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """The quick range test other experiments seed their rates from: 100 iterations from
    1e-6 to 10 with this optimizer and batch (capped at the training set); the suggestions by
    name ({} when none was found)."""
    cfg = RangeTestConfig(
        lr_min=QUICK_LR_MIN,
        batch_size=min(batch_size, data.n_train),
        optimizer=optimizer,
        momentum=momentum,
        seed=seed,
    )
    return {s.name: s.lr for s in range_test(model, data, cfg).suggestions}


def lr_range_around(
    centre: float, decades: float = 1.0, digits: int | None = None
) -> tuple[float, float]:
    """`decades` of learning rate centred (geometrically) on `centre`: (lo, hi), each rounded
    to `digits` significant digits when given."""
    positive_number("the centre learning rate", centre)
    half = 10 ** (decades / 2)
    lo, hi = centre / half, centre * half
    if digits is None:
        return lo, hi
    return float(f"{lo:.{digits}g}"), float(f"{hi:.{digits}g}")
