"""The gradient-noise meter: B_simple = tr(Sigma) / |G|^2 (McCandlish, Kaplan, Amodei et al.,
"An Empirical Model of Large-Batch Training", 2018, appendix A.1), on plain torch objects.

At one point of the weights, the squared norm of the mean gradient over a random batch of B
samples has expectation E|G_B|^2 = |G|^2 + tr(Sigma)/B (Sigma: the per-sample gradients'
covariance). Two batch sizes B_s < B_b give the paper's unbiased estimators:

    |G|^2     ~ (B_b |G_b|^2 - B_s |G_s|^2) / (B_b - B_s)
    tr(Sigma) ~ (|G_s|^2 - |G_b|^2) / (1/B_s - 1/B_b)

Each is averaged (a debiased EMA) separately before dividing, as the paper advises.

From any training loop:

    meter = NoiseMeter(model, loss_fn, beta=0.8)
    ...
    reading = meter.measure((x_small, y_small), (x_big, y_big))   # every k steps
    reading.b_simple                                                # the averaged estimate

Inside lrbs's loop, `periodic_meter` draws the batches and measures every k steps. Also here:
Smith & Le's SGD noise scale (`sgd_noise_scale`), the steps-to-target fit S = S_min + E_min/B
(`fit_tradeoff`), and the noise run's settings (`Config`, `measure_train_config`,
`sized_config`), one home for every run that measures B_simple.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.errors import ConfigError, require
from lrbs.core.loop import Budget, OptimSpec, TrainConfig
from lrbs.methods.params import trainable
from lrbs.methods.suggestions import EMA

Batch = tuple[torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MEASURE = "noise"  # the measuring run's name in a series
DRAW_SEED_OFFSET = 7919  # the measuring batches' generator: the run's seed + this
ROW_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "g2",
    "trace",
    "g2_avg",
    "trace_avg",
    "b_simple",
    "b_simple_raw",
    "measure_seconds",
]


def sgd_noise_scale(lr, n: int, batch, momentum: float = 0.0):
    """Smith & Le's SGD noise scale g = lr/(1 - m) * N/B (the B << N form). Numbers, numpy
    arrays or pandas columns alike."""
    return lr / (1 - momentum) * n / batch


def b_simple(g2: float, trace: float) -> float:
    """B_simple = tr(Sigma) / |G|^2; NaN where |G|^2 is not positive (or not a number)."""
    return trace / g2 if g2 > 0 else math.nan


def unbiased(g_small_sq: float, g_big_sq: float, b_small: int, b_big: int) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from squared gradient norms at two batch sizes."""
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    return g2, trace


def grad_sq_norm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss = nn.functional.cross_entropy
) -> float:
    """|grad of the mean loss over (x, y)|^2, leaving no gradients behind."""
    model.zero_grad(set_to_none=True)
    loss(model(x), y).backward()
    squares = [p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]
    total = float(torch.stack(squares).sum())  # one host read, not one per parameter
    model.zero_grad(set_to_none=True)
    return total


class NoiseAverage:
    """The EMAs of |G|^2 and tr(Sigma), each debiased (1 - beta^n) like Adam's moments."""

    def __init__(self, beta: float = 0.8) -> None:
        require(0 <= beta < 1, f"the averaging beta must be in [0, 1), got {beta!r}")
        self.g2, self.trace = EMA(beta), EMA(beta)

    @property
    def n(self) -> int:
        return self.g2.n

    def update(self, g2: float, trace: float) -> tuple[float, float]:
        """Add one measurement; the averages (|G|^2, tr(Sigma)) so far."""
        return self.g2(g2), self.trace(trace)


@dataclass(frozen=True)
class NoiseReading:
    """One measurement: this one's estimates (g2, trace) and the averages over all so far."""

    g2: float
    trace: float
    g2_avg: float
    trace_avg: float
    seconds: float  # this measurement's time

    @property
    def b_simple(self) -> float:
        """The averaged estimate, tr(Sigma)_avg / |G|^2_avg: the one to use."""
        return b_simple(self.g2_avg, self.trace_avg)

    @property
    def b_simple_raw(self) -> float:
        """This measurement's alone (noisy)."""
        return b_simple(self.g2, self.trace)


def _batch_size(name: str, batch: Any) -> int:
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise ConfigError(f"the {name} batch must be a pair (inputs, targets)")
    x, y = batch
    require(
        isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor),
        f"the {name} batch must hold tensors (inputs, targets)",
    )
    require(len(x) == len(y), f"the {name} batch has {len(x)} inputs but {len(y)} targets")
    return len(x)


class NoiseMeter:
    """B_simple from a loop that is not lrbs's: `measure(small, big)` takes the gradient norms
    of the mean loss over two random batches of different sizes at the weights now (each a
    pair (x, y); draw them independently, with replacement, from the training set) and
    updates the averages. It leaves no gradients behind and does not touch the optimizer."""

    def __init__(
        self, model: nn.Module, loss: Loss = nn.functional.cross_entropy, beta: float = 0.8
    ) -> None:
        trainable(model)
        self.model, self.loss = model, loss
        self.average = NoiseAverage(beta)

    def measure(self, small: Batch, big: Batch) -> NoiseReading:
        b_s, b_b = _batch_size("small", small), _batch_size("big", big)
        require(b_s < b_b, f"the small batch ({b_s}) must be smaller than the big batch ({b_b})")
        t = time.perf_counter()
        g_small = grad_sq_norm(self.model, *small, self.loss)
        g_big = grad_sq_norm(self.model, *big, self.loss)
        g2, trace = unbiased(g_small, g_big, b_s, b_b)
        g2_avg, trace_avg = self.average.update(g2, trace)
        seconds = time.perf_counter() - t
        return NoiseReading(g2=g2, trace=trace, g2_avg=g2_avg, trace_avg=trace_avg, seconds=seconds)


def random_batches(data: Any, seed: int) -> Callable[[int], Batch]:
    """draw(b): b training samples drawn with replacement, from `data` with `n_train`, `device`
    and `take(indices)` (lrbs's in-memory and streamed data alike), seeded from `seed`."""
    gen = torch.Generator(device=data.device).manual_seed(seed + DRAW_SEED_OFFSET)

    def draw(b: int) -> Batch:
        idx = torch.randint(0, data.n_train, (b,), generator=gen, device=data.device)
        return data.take(idx)

    return draw


class PeriodicNoiseMeter:
    """The meter in a loop that reports its steps (lrbs's `stop_rule`: `observe(ev)` with
    ev.kind, ev.step, ev.epoch, ev.loss): every `every` training steps it measures on fresh
    batches from `draw` (small first, then big) and hands one row (ROW_COLUMNS) to `emit`.
    It never ends the run (`observe` returns None)."""

    def __init__(
        self,
        meter: NoiseMeter,
        draw: Callable[[int], Batch],
        batch_small: int,
        batch_big: int,
        every: int,
        emit: Callable[[dict], None],
    ) -> None:
        self.meter, self.draw, self.emit = meter, draw, emit
        self.batch_small, self.batch_big, self.every = batch_small, batch_big, every
        self.last = 0  # step of the last measurement
        self.seconds = 0.0

    @property
    def model(self) -> nn.Module:
        return self.meter.model

    def observe(self, ev: Any) -> None:
        if ev.kind != "train" or ev.step - self.last < self.every:
            return
        self.last = ev.step
        t = time.perf_counter()
        r = self.meter.measure(self.draw(self.batch_small), self.draw(self.batch_big))
        self.seconds += time.perf_counter() - t
        row = {
            "step": ev.step,
            "epoch": ev.epoch,
            "loss": ev.loss,
            "g2": r.g2,
            "trace": r.trace,
            "g2_avg": r.g2_avg,
            "trace_avg": r.trace_avg,
            "b_simple": r.b_simple,
            "b_simple_raw": r.b_simple_raw,
            "measure_seconds": self.seconds,
        }
        self.emit(row)


def last_quarter(values: list) -> list[float]:
    """The finite values of the last quarter of a series (at least its last one): the
    estimates a B_simple is read from."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return finite[-max(1, len(finite) // 4) :] if finite else []


# ---------------------------------------------------------------------------- the check fit


@dataclass(frozen=True)
class TradeoffFit:
    s_min: float
    e_min: float

    @property
    def b_crit(self) -> float:
        return self.e_min / self.s_min


def fit_tradeoff(batches, steps) -> TradeoffFit:
    """Least squares of S = S_min + E_min / B (equivalent to (S/S_min - 1)(E/E_min - 1) = 1
    with E = S B)."""
    b = np.asarray(batches, float)
    s = np.asarray(steps, float)
    keep = np.isfinite(s) & (s > 0)
    require(keep.sum() >= 2, "the fit needs at least two batch sizes that reached the target")
    slope, intercept = np.polyfit(1 / b[keep], s[keep], 1)
    require(
        intercept > 0 and slope > 0,
        "the measured steps do not follow S = S_min + E_min/B (S_min or E_min came out "
        "non-positive): try a lower target loss or more batch sizes",
    )
    return TradeoffFit(float(intercept), float(slope))


# ---------------------------------------------------------------------------- the noise run


@dataclass(frozen=True, kw_only=True)
class Config:
    """A noise run: train at `batch_size` for `steps`, measuring every `every` steps; and, if
    asked, the check (steps to a target loss at each of `check`)."""

    batch_small: int = option(32, low=1, label="small batch", help="the small batch B_s")
    batch_big: int = option(512, low=1, label="big batch", help="the big batch B_b")
    every: int = option(
        40, low=1, label="measurement interval k", help="measure every k training steps"
    )
    beta: float = option(0.8, low=0, label="the averaging beta", help="EMA of |G|^2 and tr(Sigma)")
    batch_size: int = option(128, low=1, help="the training batch")
    optim: OptimSpec = option(factory=OptimSpec)
    steps: int = option(1000, low=1, help="training steps of the measuring run")
    seed: int = option(0, help="seed of the runs and of the measuring batches")
    check: tuple[int, ...] = option(
        (),
        low=1,
        label="check batch sizes",
        help="also fit B_crit from steps-to-target at these batch sizes",
    )
    target_loss: float | None = option(
        None, help="the check's target training loss (default: the loss half-way through)"
    )
    check_steps: int = option(3000, low=1, help="most steps each check run trains")

    def __post_init__(self) -> None:
        check(self)
        require(
            self.batch_small < self.batch_big,
            f"the small batch ({self.batch_small}) must be smaller than the big batch "
            f"({self.batch_big})",
        )
        require(self.beta < 1, "the averaging beta must be in [0, 1)")
        require(len(set(self.check)) == len(self.check), "a check batch size is listed twice")
        if self.target_loss is not None:
            require(self.target_loss > 0, "the target loss must be > 0")

    def check_data(self, n_train: int) -> None:
        """Every batch within the training set (before any training)."""
        named = [("big batch", self.batch_big), ("training batch", self.batch_size)]
        named += [("check batch", b) for b in self.check]
        for name, b in named:
            if b > n_train:
                raise ConfigError(f"the {name} ({b}) is larger than the training set ({n_train})")


def measure_train_config(cfg: Config, *, evaluate: bool = True) -> TrainConfig:
    """The measuring run's training settings. `evaluate=False`: no validation passes (a
    pipeline that only wants B_simple)."""
    evals: dict = {"min_eval_seconds": 0.5}
    if not evaluate:
        evals = {"eval_each_epoch": False, "eval_at_end": False}
    return TrainConfig(
        batch_size=cfg.batch_size,
        budget=Budget(steps=cfg.steps),
        optim=cfg.optim,
        seed=cfg.seed,
        log_every=min(cfg.every, 10),
        **evals,
    )


def periodic_meter(
    model: nn.Module, data: Any, cfg: Config, emit: Callable[[dict], None]
) -> PeriodicNoiseMeter:
    """The noise run's meter on `model`: batches drawn from `data` (see `random_batches`) with
    the run's seed, its loss `data.task.loss`, its sizes, interval and averaging."""
    return PeriodicNoiseMeter(
        NoiseMeter(model, data.task.loss, cfg.beta),
        random_batches(data, cfg.seed),
        batch_small=cfg.batch_small,
        batch_big=cfg.batch_big,
        every=cfg.every,
        emit=emit,
    )


def noise_sizes(n_train: int) -> tuple[int, int]:
    """A short noise run's (big, small) batches on a training set of `n_train`."""
    big = min(512, n_train)
    return big, min(32, max(1, big // 4))


def sized_config(n_train: int, batch_size: int, optim: OptimSpec, steps: int, seed: int) -> Config:
    """A short noise run of `steps` at `batch_size` (at most the training set): the batches
    of `noise_sizes`, about 15 measurements (one every 5 steps at least)."""
    big, small = noise_sizes(n_train)
    return Config(
        batch_small=small,
        batch_big=big,
        every=max(5, steps // 15),
        batch_size=min(batch_size, n_train),
        optim=optim,
        steps=steps,
        seed=seed,
    )
