"""The stability limit on a real network: the sharpness and the edge of stability.

Gradient descent on c/2 x^2 diverges above lr = 2/c. On a network the same law holds through the
top eigenvalue of the loss Hessian, the sharpness lambda_max. Cohen et al. (2021): under
full-batch GD the sharpness rises while training goes on (progressive sharpening) until it
reaches 2/lr, then hovers there (the edge of stability) while the loss keeps falling, though
not monotonically. With heavy-ball momentum beta the limit is (2 + 2 beta)/lr; for Adam the
preconditioned sharpness settles near (2 + 2 beta1)/((1 - beta1) lr), 38/lr at beta1 = 0.9
(Cohen et al. 2022). Lewkowycz et al. (2020): between 2/lambda_0 and a few times that, the loss
spikes early, the curvature drops (the catapult) and training goes on.

Each learning rate trains a fresh model (one seed: one initialisation) through the one loop;
every `every` steps the sharpness of the training loss on a fixed measurement batch is measured
by power iteration on Hessian-vector products (the meter and the limits of
`lrbs.methods.sharpness`) and streamed as a "sharpness" row. The loop trains with cross-entropy
only, so the sharpness is that of the cross-entropy loss (Cohen et al. also used MSE; the loop
takes no other loss).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.device import describe
from lrbs.core.errors import require
from lrbs.core.loop import EVENT_COLUMNS, Budget, Event, OptimSpec, TrainConfig
from lrbs.core.optim import SweptOptim, optim_at
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.stream import StreamData
from lrbs.methods.sharpness import (  # noqa: F401 - the meter's names, offered here as before
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPS,
    SharpnessMeter,
    hessian_sharpness,
    power_iteration,
    stability_limit,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "sharpness"
EDGE_BAND = 0.2  # "at the edge of stability": settled within +-20 % of the limit
NEAR_EDGE = 0.5  # "approaching the edge": settled at half the limit or more, below the band
DEFAULT_LRS = (0.1, 0.5, 0.9)  # on MNIST-1D's MLP (2/lambda_0 ~ 1): below, at and past the edge
SHARPENING = 0.5  # "progressive sharpening": the sharpness rose by more than 50 %
CATAPULT_DROP = 0.8  # after an early loss spike the sharpness fell below 80 % of lambda_0
MEASURE_DEFAULT = 2000  # the measurement batch: the whole subset up to this many samples
MAX_STREAMED_VAL = 8192  # validation samples read into memory from streamed data
DIVERGENCE_FACTOR = 100.0  # a catapult's spike is no divergence: only a 100x rise ends a run
ROW_COLUMNS = [
    "run",
    "step",
    "lr",
    "sharpness",
    "limit",
    "ratio",
    "loss",
    "seconds",
    "iterations",
    "preconditioned",
]
TABLE_COLUMNS = [
    "run",
    "lr",
    "limit",
    "sharpness_init",
    "sharpness_max",
    "sharpness_settled",
    "settled_ratio",
    "loss_init",
    "final_loss",
    "max_loss_spike",
    "status",
    "labels",
    "measure_seconds",
    "train_seconds",
]


class Meter:
    """One run's sharpness on its fixed measurement batch (x, y), as a row: a SharpnessMeter
    (lrbs.methods.sharpness) bound to that batch. Set `optimizer` to measure Adam's
    preconditioned sharpness."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        iterations: int,
        loss: Callable = nn.functional.cross_entropy,
    ) -> None:
        self.x, self.y = x, y
        self.meter = SharpnessMeter(model, loss, iterations)

    @property
    def v(self) -> torch.Tensor:
        """The eigenvector the next measurement starts from."""
        return self.meter.v

    @v.setter
    def v(self, value: torch.Tensor) -> None:
        self.meter.v = value

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.meter.optimizer

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer | None) -> None:
        self.meter.optimizer = value

    def measure(self) -> dict:
        """{"sharpness", "loss", "seconds", "iterations", "preconditioned"} at the weights now."""
        return asdict(self.meter.measure(self.x, self.y))


def edge_label(ratio: float) -> str | None:
    """Where a run settled against its stability limit, from the measured ratio alone."""
    if ratio > 1 + EDGE_BAND:
        return "past the edge of stability"
    if ratio >= 1 - EDGE_BAND:
        return "edge of stability"
    if ratio >= NEAR_EDGE:
        return "approaching the edge"
    return None


@dataclass(frozen=True, kw_only=True)
class Config:
    lrs: tuple[float, ...] = option(
        DEFAULT_LRS,
        flag=("--lr", "--lrs"),
        label="learning rate",
        help="learning rates, trained side by side from one initialisation",
    )
    optim: SweptOptim = option(factory=SweptOptim, help="the optimizer (its rate is each of lrs)")
    subset: int = option(2000, low=1, help="training samples used (full-batch GD on a subset)")
    batch_size: int | None = option(
        None, low=1, help="batch size; default: the whole subset (full-batch gradient descent)"
    )
    steps: int = option(300, low=1, high=100_000, help="training steps per learning rate")
    every: int = option(10, low=1, help="measure the sharpness every k steps")
    iterations: int = option(20, low=1, high=1000, help="power-iteration steps per measurement")
    measure_size: int | None = option(
        None,
        low=1,
        help=f"samples of the fixed measurement batch; default: the subset, up to "
        f"{MEASURE_DEFAULT}",
    )
    seed: int = option(0, help="seed of the initial weights (one for every rate)")

    def __post_init__(self) -> None:
        check(self)
        require(len(self.lrs) >= 1, "give at least one learning rate")
        require(len(set(self.lrs)) == len(self.lrs), "the learning rates repeat a value")
        for lr in self.lrs:
            optim_at(self.optim, lr)
        if self.batch_size is not None:
            require(
                self.batch_size <= self.subset,
                f"batch size {self.batch_size} is larger than the subset ({self.subset})",
            )

    @property
    def full_batch(self) -> bool:
        return self.batch_size is None or self.batch_size >= self.subset

    def optim_at(self, lr: float) -> OptimSpec:
        return optim_at(self.optim, lr)

    def limit(self, lr: float) -> float:
        return stability_limit(lr, self.optim)

    def train_config(self, lr: float, n: int) -> TrainConfig:
        return TrainConfig(
            batch_size=min(self.batch_size or n, n),
            budget=Budget(steps=self.steps),
            optim=self.optim_at(lr),
            seed=self.seed,
            log_every=min(self.every, 10),
            eval_each_epoch=False,  # full batch: every step ends an epoch
            divergence_factor=DIVERGENCE_FACTOR,
        )


def run_name(lr: float) -> str:
    return f"lr={lr:g}"


def subset_of(data: TensorData | StreamData, n: int) -> TensorData:
    """The first n training samples in memory (full-batch GD on them); streamed data are read
    into memory: those n and up to `MAX_STREAMED_VAL` validation samples."""
    if isinstance(data, TensorData):
        return replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
    x, y = data.take(torch.arange(n))
    xs, ys = [], []
    for xv, yv in data.chunks("val"):
        xs.append(xv)
        ys.append(yv)
        if sum(len(v) for v in ys) >= MAX_STREAMED_VAL:
            break
    return TensorData(
        x_train=x,
        y_train=y,
        x_val=torch.cat(xs)[:MAX_STREAMED_VAL],
        y_val=torch.cat(ys)[:MAX_STREAMED_VAL],
        n_classes=data.n_classes,
        input_shape=data.input_shape,
        name=data.name,
        task=data.task,
        compute=data.compute,
        workload=data.workload,
    )


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Train each rate from one initialisation, measuring the sharpness at the start and every
    `every` steps; every measurement is a "sharpness" row as it comes."""
    rows, sink = collect(sink)
    full = load_tensors(setup)
    n = min(config.subset, full.n_train)
    data = subset_of(full, n)
    m = min(config.measure_size or min(n, MEASURE_DEFAULT), n)
    x_m, y_m = data.x_train[:m], data.y_train[:m]
    sink.emit(
        "info",
        {
            "dataset": setup.data_name,
            "model": setup.model_name,
            "device": describe(data.device).name,
            "subset": n,
            "measure_size": m,
            "batch_size": min(config.batch_size or n, n),
        },
    )
    by_name = {run_name(lr): lr for lr in config.lrs}
    halt = stop or threading.Event()

    def prepare(name: str) -> Planned:
        lr = by_name[name]
        tc = config.train_config(lr, n)
        model = setup.fresh_model(data, config.seed)
        opt = data.task.build_optimizer(model.parameters(), tc.optim)
        meter = SharpnessMeter(model, data.task.loss, config.iterations, opt)
        limit = config.limit(lr)

        def record(step: int) -> None:
            got = asdict(meter.measure(x_m, y_m))
            row = {"run": name, "step": step, "lr": lr, "limit": limit} | got
            row["ratio"] = got["sharpness"] / limit
            sink.emit("sharpness", row)

        next_due = [config.every]

        def observe(ev: Event) -> str | None:
            if ev.kind == "train" and ev.step >= next_due[0] and not halt.is_set():
                record(ev.step)
                next_due[0] = (ev.step // config.every + 1) * config.every
            return None

        record(0)
        return Planned(model, tc, {"optimizer": opt, "stop_rule": observe}, {"lr": lr})

    run_series(list(by_name), prepare, data, sink, stop)
    stopped = stop is not None and stop.is_set()
    sink.progress(1.0, "stopped" if stopped else "done")
    return Result(config, rows.rows, "stopped" if stopped else "finished", "")


@dataclass(frozen=True)
class Result(experiment.Result):
    def info(self) -> dict:
        return (self.rows.get("info") or [{}])[0]

    def measurements(self) -> pd.DataFrame:
        return self.frame("sharpness", ROW_COLUMNS)

    def events(self) -> pd.DataFrame:
        return self.frame("events", EVENT_COLUMNS)

    def runs(self) -> pd.DataFrame:
        return self.frame("runs")

    def lambda0(self) -> float | None:
        """The sharpness at initialisation (one initialisation for every rate)."""
        m = self.measurements()
        first = m[(m.step == 0) & ~m.preconditioned.astype(bool)]
        return float(first.sharpness.iloc[0]) if len(first) else None

    def max_stable(self) -> dict:
        """The largest stable rate at initialisation, 2/lambda_0, and with momentum beta
        (2 + 2 beta)/lambda_0."""
        lam = self.lambda0()
        if lam is None or not math.isfinite(lam) or lam <= 0:
            return {"lambda0": lam, "max_stable_lr": None, "max_stable_lr_momentum": None}
        beta = self.config.optim.momentum
        return {
            "lambda0": lam,
            "max_stable_lr": 2 / lam,
            "max_stable_lr_momentum": (2 + 2 * beta) / lam,
        }

    def labels(self, part: pd.DataFrame, losses: pd.Series, status: str) -> list[str]:
        """What happened in one run: progressive sharpening, edge of stability, catapult,
        diverged."""
        out = []
        s = part.sharpness.to_numpy(dtype=float)
        s = s[np.isfinite(s)]
        if status == "diverged":
            out.append("diverged")
        if len(s) < 2:
            return out
        lam0 = s[0]
        if lam0 > 0 and s.max() > (1 + SHARPENING) * lam0:
            out.append("progressive sharpening")
        ratio = self.settled(part)
        if status != "diverged" and ratio is not None:
            edge = edge_label(ratio)
            if edge:
                out.append(edge)
        if len(losses) and lam0 > 0:
            loss0 = float(part.loss.iloc[0])
            early = losses[losses.index <= max(1, self.config.steps // 2)]
            if len(early) and float(early.max()) > loss0:
                spike_at = int(early.idxmax())
                after = part[part.step > spike_at].sharpness
                if len(after) and float(after.min()) < CATAPULT_DROP * lam0:
                    out.append("catapult")
        return out

    def settled(self, part: pd.DataFrame) -> float | None:
        """Median of sharpness / limit over the last quarter of the run's measurements."""
        if part.empty:
            return None
        last = part.step.max()
        tail = part[part.step >= 0.75 * last] if last > 0 else part
        r = tail.ratio.to_numpy(dtype=float)
        r = r[np.isfinite(r)]
        return float(np.median(r)) if len(r) else None

    def table(self) -> pd.DataFrame:
        """One row per rate: the sharpness at init, its peak, where it settled (and as a
        multiple of the limit), the worst loss spike, what happened, and the measuring cost."""
        m, ev, runs = self.measurements(), self.events(), self.runs()
        out = []
        for lr in self.config.lrs:
            name = run_name(lr)
            part = m[m.run == name].sort_values("step")
            if part.empty:
                continue
            train = ev[(ev.run_id == name) & (ev.kind == "train")] if len(ev) else ev
            losses = pd.Series(
                train.loss.to_numpy(dtype=float), index=train.step.to_numpy(dtype=int)
            )
            r = runs[runs.run == name] if len(runs) else runs
            status = str(r.status.iloc[0]) if len(r) else "stopped"
            seconds = float(r.seconds.iloc[0]) if len(r) else float("nan")
            in_loop = float(part[part.step > 0].seconds.sum())
            finite = losses[np.isfinite(losses)]
            loss0 = float(part.loss.iloc[0])
            ratio = None if status == "diverged" else self.settled(part)  # nothing settled
            out.append(
                {
                    "run": name,
                    "lr": lr,
                    "limit": self.config.limit(lr),
                    "sharpness_init": float(part.sharpness.iloc[0]),
                    "sharpness_max": float(part.sharpness.max()),
                    "sharpness_settled": None if ratio is None else ratio * self.config.limit(lr),
                    "settled_ratio": ratio,
                    "loss_init": loss0,
                    "final_loss": float(finite.iloc[-1]) if len(finite) else None,
                    "max_loss_spike": float(finite.max()) / loss0 if len(finite) else None,
                    "status": status,
                    "labels": ", ".join(self.labels(part, losses, status)),
                    "measure_seconds": float(part.seconds.sum()),
                    "train_seconds": seconds - in_loop,
                }
            )
        return pd.DataFrame(out, columns=TABLE_COLUMNS)

    def cost(self) -> dict:
        """Seconds spent measuring and training, and the measuring's share of the two."""
        t = self.table()
        measure = float(t.measure_seconds.sum()) if len(t) else 0.0
        training = float(t.train_seconds.sum()) if len(t) else 0.0
        total = measure + training
        return {
            "measure_seconds": measure,
            "train_seconds": training,
            "measure_share": measure / total if total > 0 else None,
        }

    def notes(self) -> list[str]:
        info, cfg = self.info(), self.config
        out = ["The loss is cross-entropy (the training loop takes no other loss)."]
        if info.get("subset") is not None and info["subset"] < cfg.subset:
            out.append(f"The training set has only {info['subset']} samples: all are used.")
        if not cfg.full_batch:
            out.append(
                f"Minibatch SGD (batch {cfg.batch_size}): the gradient noise adds to the "
                "picture; the sharpness tends to settle below 2/lr rather than at it, and the "
                "loss is a mean over minibatches rather than the full-batch loss."
            )
        if cfg.optim.name in ("adam", "adamw"):
            out.append(
                "Adam: after the first step the sharpness is the preconditioned one, "
                "lambda_max(P^-1 H), against (2 + 2 beta1)/((1 - beta1) lr) = 38/lr; "
                "lambda_0 at step 0 is the raw Hessian's."
            )
        return out

    def summary(self) -> dict:
        info = self.info()
        t = self.table()
        rates = [
            {k: row[k] for k in ("lr", "limit", "sharpness_init", "settled_ratio", "status")}
            | {"max_loss_spike": row["max_loss_spike"], "labels": row["labels"]}
            for row in t.to_dict("records")
        ]
        out = {
            "status": self.status,
            "message": self.message,
            "dataset": info.get("dataset"),
            "model": info.get("model"),
            "subset": info.get("subset"),
            "batch_size": info.get("batch_size"),
            "optimizer": self.config.optim.name,
        }
        out |= self.max_stable()
        out["rates"] = rates
        out |= self.cost()
        out["notes"] = self.notes()
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"per_rate": self.table(), "sharpness": self.measurements(), "events": self.events()}

    def report(self) -> str:
        s = self.summary()
        lines = []
        if s["max_stable_lr"] is not None:
            lines.append(
                f"lambda_max at init {s['lambda0']:.4g}: max stable rate 2/lambda_0 = "
                f"{s['max_stable_lr']:.4g}"
                + (
                    f", with momentum (2+2b)/lambda_0 = {s['max_stable_lr_momentum']:.4g}"
                    if self.config.optim.name == "momentum"
                    else ""
                )
            )
        t = self.table()
        if len(t):
            lines.append(t.drop(columns=["run"]).to_string(index=False))
        if s["measure_share"] is not None:
            lines.append(
                f"measuring: {s['measure_seconds']:.2f} s, "
                f"{100 * s['measure_share']:.0f} % of training + measuring"
            )
        lines += s["notes"]
        return "\n".join(lines) if lines else self.status
