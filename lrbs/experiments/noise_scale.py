"""The gradient noise scale and the critical batch size (McCandlish, Kaplan, Amodei et al.,
"An Empirical Model of Large-Batch Training", 2018).

B_simple = tr(Sigma) / |G|^2, measured during training from the gradient norms at a small batch
B_s and a big batch B_b taken at the same parameters, with the paper's unbiased estimators:

    |G|^2     ~ (B_b |G_b|^2 - B_s |G_s|^2) / (B_b - B_s)
    tr(Sigma) ~ (|G_s|^2 - |G_b|^2) / (1/B_s - 1/B_b)

Both are averaged (EMA) separately before dividing, as the paper advises. Below B_crit ~ B_simple,
doubling the batch nearly halves the steps; above it, extra batch is wasted compute. The check
fits S = S_min + E_min / B (the paper's (S/S_min - 1)(E/E_min - 1) = 1 with E = S B) to the
steps measured at several batch sizes: B_crit = E_min / S_min.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_int, require
from lrbs.core.loop import Budget, Event, OptimSpec, RunResult, TrainConfig, train


@dataclass(frozen=True)
class NoiseScaleConfig:
    batch_small: int = 32
    batch_big: int = 512
    every: int = 40  # measure every k training steps: about 10 % extra compute by default
    beta: float = 0.8  # EMA of |G|^2 and tr(Sigma)
    batch: int = 128  # the training batch
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    steps: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int("small batch", self.batch_small)
        positive_int("big batch", self.batch_big)
        require(
            self.batch_small < self.batch_big,
            f"the small batch ({self.batch_small}) must be smaller than the big batch "
            f"({self.batch_big})",
        )
        positive_int("measurement interval k", self.every)
        positive_int("steps", self.steps)
        positive_int("batch size", self.batch)
        require(0 <= self.beta < 1, "the averaging beta must be in [0, 1)")
        OptimSpec(self.optimizer, self.lr, self.momentum)

    def check_data(self, n_train: int) -> None:
        for name, b in (("big batch", self.batch_big), ("training batch", self.batch)):
            if b > n_train:
                raise ConfigError(f"the {name} ({b}) is larger than the training set ({n_train})")


def grad_sq_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """|grad of the mean loss over (x, y)|^2, leaving no gradients behind."""
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    squares = [p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]
    total = float(torch.stack(squares).sum())  # one host read, not one per parameter
    model.zero_grad(set_to_none=True)
    return total


def unbiased(g_small_sq: float, g_big_sq: float, b_small: int, b_big: int):
    """(|G|^2, tr(Sigma)) from squared gradient norms at two batch sizes."""
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    return g2, trace


class NoiseMeter:
    """Measures every `every` steps through the loop's events; keeps EMAs (debiased) of |G|^2
    and tr(Sigma) and their ratio, and the time it spent."""

    def __init__(self, model: nn.Module, data: TensorData, cfg: NoiseScaleConfig, on_row=None):
        self.model, self.data, self.cfg, self.on_row = model, data, cfg, on_row
        self.gen = torch.Generator(device=data.x_train.device).manual_seed(cfg.seed + 7919)
        self.g2 = self.trace = 0.0
        self.n = 0
        self.last = 0  # step of the last measurement
        self.seconds = 0.0
        self.rows: list[dict] = []

    def _batch(self, b: int):
        idx = torch.randint(
            0, self.data.n_train, (b,), generator=self.gen, device=self.data.x_train.device
        )
        return self.data.x_train[idx], self.data.y_train[idx]

    def __call__(self, ev: Event) -> None:
        if ev.kind != "train" or ev.step - self.last < self.cfg.every:
            return
        self.last = ev.step
        t = time.perf_counter()
        cfg = self.cfg
        small = grad_sq_norm(self.model, *self._batch(cfg.batch_small))
        big = grad_sq_norm(self.model, *self._batch(cfg.batch_big))
        g2, trace = unbiased(small, big, cfg.batch_small, cfg.batch_big)
        self.n += 1
        self.g2 = cfg.beta * self.g2 + (1 - cfg.beta) * g2
        self.trace = cfg.beta * self.trace + (1 - cfg.beta) * trace
        debias = 1 - cfg.beta**self.n
        g2_avg, trace_avg = self.g2 / debias, self.trace / debias
        b_simple = trace_avg / g2_avg if g2_avg > 0 else math.nan
        self.seconds += time.perf_counter() - t
        row = {
            "step": ev.step,
            "epoch": ev.epoch,
            "loss": ev.loss,
            "g2": g2,
            "trace": trace,
            "g2_avg": g2_avg,
            "trace_avg": trace_avg,
            "b_simple": b_simple,
            "b_simple_raw": trace / g2 if g2 > 0 else math.nan,
        }
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)


@dataclass(frozen=True)
class NoiseScaleResult:
    rows: pd.DataFrame
    run: RunResult
    b_simple: float  # the last averaged estimate
    spread: tuple[float, float]  # 25th-75th percentile over the last quarter of training
    overhead: float  # measuring time / (training + measuring) time

    def headline(self) -> dict:
        return {
            "b_simple": self.b_simple,
            "b_simple_q25": self.spread[0],
            "b_simple_q75": self.spread[1],
            "overhead": self.overhead,
            "measurements": len(self.rows),
            "steps": self.run.steps,
            "final_loss": self.run.final_loss,
            "status": self.run.status,
        }


def measure(
    model: nn.Module,
    data: TensorData,
    cfg: NoiseScaleConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    on_row: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
) -> NoiseScaleResult:
    """Train for `cfg.steps` and measure B_simple every `cfg.every` steps."""
    cfg.check_data(data.n_train)
    meter = NoiseMeter(model, data, cfg, on_row)

    def events(ev: Event) -> None:
        meter(ev)
        if on_event is not None:
            on_event(ev)

    tc = TrainConfig(
        batch_size=cfg.batch,
        budget=Budget(steps=cfg.steps),
        optim=OptimSpec(cfg.optimizer, cfg.lr, cfg.momentum),
        seed=cfg.seed,
        log_every=min(cfg.every, 10),
        min_eval_seconds=0.5,
    )
    run = train(model, data, tc, run_id="noise", on_event=events, stop=stop)
    rows = pd.DataFrame(meter.rows)
    if rows.empty:
        return NoiseScaleResult(rows, run, math.nan, (math.nan, math.nan), 0.0)
    tail = rows.b_simple.iloc[-max(1, len(rows) // 4) :]
    spread = (float(tail.quantile(0.25)), float(tail.quantile(0.75)))
    total = run.elapsed  # the meter ran inside the loop's clock
    return NoiseScaleResult(
        rows,
        run,
        float(rows.b_simple.iloc[-1]),
        spread,
        meter.seconds / total if total > 0 else 0.0,
    )


def smith_le_noise(lr: float, n: int, batch: int, momentum: float = 0.0) -> float:
    """Smith & Le's g = lr/(1 - m) * N/B, for comparison."""
    return lr / (1 - momentum) * n / batch


def optimal_lr(batch: np.ndarray, b_noise: float, lr_max: float = 1.0) -> np.ndarray:
    """The paper's eps_opt(B) = eps_max / (1 + B_noise / B)."""
    return lr_max / (1 + b_noise / np.asarray(batch, float))


# ---------------------------------------------------------------------------- the check


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


@dataclass(frozen=True)
class CheckConfig:
    batches: tuple[int, ...] = (16, 64, 256, 1024)
    target_loss: float | None = None  # None: the loss half-way through the measuring run
    max_steps: int = 3000
    base_batch: int = 128
    lr: float = 0.1
    b_noise: float = 100.0  # sets each batch's lr by eps_opt(B), anchored at lr for base_batch
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0

    def lr_for(self, batch: int) -> float:
        eps_max = self.lr * (1 + self.b_noise / self.base_batch)
        return float(optimal_lr(np.array([batch]), self.b_noise, eps_max)[0])


def steps_to_target(
    make_model: Callable[[], nn.Module],
    data: TensorData,
    cfg: CheckConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
) -> pd.DataFrame:
    """Per batch size: the updates S and examples E = S B until the training loss (an EMA of
    the logged means) first reaches the target."""
    require(cfg.target_loss is not None and cfg.target_loss > 0, "the target loss must be > 0")
    rows = []
    for b in cfg.batches:
        if b > data.n_train:
            raise ConfigError(f"batch {b} is larger than the training set ({data.n_train})")
        ema = {"v": None}

        def reached(ev: Event, ema: dict = ema) -> str | None:
            ema["v"] = ev.loss if ema["v"] is None else 0.8 * ema["v"] + 0.2 * ev.loss
            return "reached" if ema["v"] <= cfg.target_loss else None

        tc = TrainConfig(
            batch_size=b,
            budget=Budget(steps=cfg.max_steps),
            optim=OptimSpec(cfg.optimizer, cfg.lr_for(b), cfg.momentum),
            seed=cfg.seed,
            log_every=2,
            eval_each_epoch=False,
            eval_at_end=False,
        )
        r = train(
            make_model(), data, tc, run_id=f"B={b}", on_event=on_event, stop=stop, stop_rule=reached
        )
        ok = r.status == "reached"
        rows.append(
            {
                "batch": b,
                "lr": cfg.lr_for(b),
                "status": r.status,
                "steps": r.steps if ok else math.nan,
                "examples": r.steps * b if ok else math.nan,
            }
        )
        if r.status == "stopped":
            break
    return pd.DataFrame(rows)
