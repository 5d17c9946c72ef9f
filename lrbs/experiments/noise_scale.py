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

Smith & Le's SGD noise scale g = lr/(1 - m) * N/B, a property of the optimizer's settings rather
than of the gradients, is `sgd_noise_scale` here: the one place lrbs computes it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, LrbsError, require
from lrbs.core.loop import Budget, Event, OptimSpec, RunResult, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.stream import StreamData
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "noise-scale"
MEASURE = "noise"  # the measuring run's name in the series
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
CHECK_COLUMNS = ["batch", "lr", "status", "steps", "examples"]


def sgd_noise_scale(lr, n: int, batch, momentum: float = 0.0):
    """Smith & Le's SGD noise scale g = lr/(1 - m) * N/B (the B << N form). Numbers, numpy
    arrays or pandas columns alike."""
    return lr / (1 - momentum) * n / batch


smith_le_noise = sgd_noise_scale  # the name this module has always offered


def b_simple(g2: float, trace: float) -> float:
    """B_simple = tr(Sigma) / |G|^2; NaN where |G|^2 is not positive (or not a number)."""
    return trace / g2 if g2 > 0 else math.nan


# ---------------------------------------------------------------------------- what a number means

CRITICAL_QUANTITIES = ("b_simple", "b_crit", "b_noise")
WHY_THEY_DIFFER = (
    "The pages' critical batches differ by design: B_simple grows as the loss falls (the mean "
    "gradient shrinks faster than its noise), so the Noise page's B_simple, measured at the end "
    "of a long run at your batch, exceeds the one the LR × batch map and Recommend measure "
    "after a short run; the map's B_crit is fitted from the updates each batch needed to reach "
    "a target loss, an average over that whole stretch of training, and its B_noise from the "
    "best rate per batch; McCandlish et al. find them to agree only up to a small factor."
)


def critical_batch_note(
    value: float,
    quantity: str,
    n_train: int | None,
    *,
    steps: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    loss: float | None = None,
    target: float | None = None,
    why: bool = True,
) -> str:
    """The one explanation of a critical-batch number every page shows beside it: what it is
    and at which point of training (`quantity` "b_simple", "b_crit" or "b_noise", with the
    context its page knows), why the pages' numbers differ (WHY_THEY_DIFFER), and what a value
    above the training set means. `why=False` leaves out WHY_THEY_DIFFER (said once a page)."""
    require(quantity in CRITICAL_QUANTITIES, f"unknown critical-batch quantity {quantity!r}")
    if value is None or not math.isfinite(value) or value <= 0:
        names = {"b_simple": "B_simple", "b_crit": "B_crit", "b_noise": "B_noise"}
        return f"No {names[quantity]} here." + (f" {WHY_THEY_DIFFER}" if why else "")
    if quantity == "b_simple":
        what = f"B_simple = tr(Σ)/|G|² = {value:,.0f} is the gradient noise scale measured "
        what += f"after {steps:,} training steps" if steps is not None else "late in its run"
        at = [f"batch {batch:,}" if batch is not None else "", f"lr {lr:.3g}" if lr else ""]
        if any(at):
            what += " at " + ", ".join(a for a in at if a)
        what += f" (training loss {loss:.3g} then)." if loss is not None else "."
    elif quantity == "b_crit":
        to = f"training loss {target:.3g}" if target is not None else "the target loss"
        what = (
            f"B_crit = E_min/S_min = {value:,.0f} is fitted from the updates S each batch size "
            f"needed to reach {to} (S = S_min (1 + B_crit/B)): below it a doubled batch nearly "
            "halves the updates, above it the extra samples are wasted."
        )
    else:
        what = (
            f"B_noise = {value:,.0f} is fitted to the best rate per batch, "
            "ε_opt(B) = ε_max / (1 + B_noise/B): the batch where the best rate stops growing."
        )
    text = f"{what} {WHY_THEY_DIFFER}" if why else what
    if n_train is not None and value > n_train:
        text += (
            f" It is above the training set (N = {n_train:,}): no batch can be that large, so "
            "even full-batch training is still in the noise-dominated regime, where a larger "
            "batch would still buy nearly proportionally fewer updates; the number itself is "
            "an extrapolation past any batch you can form and not reliable beyond saying "
            f"'at least N': use the largest batch that fits, capped at N = {n_train:,}."
        )
    return text


def capped_batch(value: float, n_train: int | None) -> float:
    """A critical batch as a batch size one can use: at most the training set."""
    if n_train is None or not math.isfinite(value):
        return value
    return min(value, float(n_train))


def optimal_lr(batch, b_noise: float, lr_max: float = 1.0) -> np.ndarray:
    """The paper's eps_opt(B) = eps_max / (1 + B_noise / B)."""
    return lr_max / (1 + b_noise / np.asarray(batch, float))


def anchored_lr(batch, b_noise: float, lr: float, base_batch: int) -> np.ndarray:
    """eps_opt(B) anchored so that the base batch gets `lr`: the rate the check gives each
    batch size."""
    return optimal_lr(batch, b_noise, lr * (1 + b_noise / base_batch))


@dataclass(frozen=True, kw_only=True)
class Config:
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


def grad_sq_norm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=nn.functional.cross_entropy
) -> float:
    """|grad of the mean loss over (x, y)|^2, leaving no gradients behind."""
    model.zero_grad(set_to_none=True)
    loss(model(x), y).backward()
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
    """Measures every `every` steps at the training events it is shown; keeps EMAs
    (debiased) of |G|^2 and tr(Sigma) and their ratio, and the time it spent. Each
    measurement goes to the sink's "rows" channel at once."""

    def __init__(
        self, model: nn.Module, data: TensorData | StreamData, cfg: Config, sink: Sink
    ) -> None:
        self.model, self.data, self.cfg, self.sink = model, data, cfg, sink
        self.gen = torch.Generator(device=data.device).manual_seed(cfg.seed + 7919)
        self.g2 = self.trace = 0.0
        self.n = 0
        self.last = 0  # step of the last measurement
        self.seconds = 0.0

    def _batch(self, b: int):
        idx = torch.randint(0, self.data.n_train, (b,), generator=self.gen, device=self.data.device)
        return self.data.take(idx)  # on either path: in memory or streamed

    def observe(self, ev: Event) -> None:
        """The training loop calls this at each train event (as its `stop_rule`: it never
        ends the run, so it returns None)."""
        if ev.kind != "train" or ev.step - self.last < self.cfg.every:
            return
        self.last = ev.step
        t = time.perf_counter()
        cfg = self.cfg
        loss = self.data.task.loss
        small = grad_sq_norm(self.model, *self._batch(cfg.batch_small), loss)
        big = grad_sq_norm(self.model, *self._batch(cfg.batch_big), loss)
        g2, trace = unbiased(small, big, cfg.batch_small, cfg.batch_big)
        self.n += 1
        self.g2 = cfg.beta * self.g2 + (1 - cfg.beta) * g2
        self.trace = cfg.beta * self.trace + (1 - cfg.beta) * trace
        debias = 1 - cfg.beta**self.n
        g2_avg, trace_avg = self.g2 / debias, self.trace / debias
        self.seconds += time.perf_counter() - t
        row = {
            "step": ev.step,
            "epoch": ev.epoch,
            "loss": ev.loss,
            "g2": g2,
            "trace": trace,
            "g2_avg": g2_avg,
            "trace_avg": trace_avg,
            "b_simple": b_simple(g2_avg, trace_avg),
            "b_simple_raw": b_simple(g2, trace),
            "measure_seconds": self.seconds,
        }
        self.sink.emit("rows", row)


def middle_loss(rows: list[dict]) -> float | None:
    """The training loss half-way through the measuring run: the check's default target."""
    losses = [r.get("loss") for r in rows]
    losses = [x for x in losses if x is not None and math.isfinite(x)]
    return float(losses[len(losses) // 2]) if losses else None


class _Halt(threading.Event):
    """The series' stop: set by the user's stop, or by us once the measuring run leaves
    nothing to check (it diverged, or measured nothing)."""

    def __init__(self, user: threading.Event | None) -> None:
        super().__init__()
        self.user = user

    def is_set(self) -> bool:
        return super().is_set() or (self.user is not None and self.user.is_set())


def run(
    setup: Setup, config: Config, sink: Sink | None = None, stop: threading.Event | None = None
) -> Result:
    """Train for `config.steps`, measuring B_simple every `config.every` steps; then, if asked,
    train each check batch size to the target loss at the rate eps_opt(B) predicts for it.
    One series: the measuring run first, then the check's runs."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    config.check_data(data.n_train)
    meter = NoiseMeter(setup.fresh_model(data), data, config, sink)
    halt = _Halt(stop)
    state: dict = {}

    def prepare(name: str) -> Planned:
        if name == MEASURE:
            tc = TrainConfig(
                batch_size=config.batch_size,
                budget=Budget(steps=config.steps),
                optim=config.optim,
                seed=config.seed,
                log_every=min(config.every, 10),
                min_eval_seconds=0.5,
            )
            columns = {
                "phase": "measure",
                "n_train": data.n_train,
                "dataset": setup.data_name,
                "model": setup.model_name,
            }
            return Planned(meter.model, tc, {"stop_rule": meter.observe}, columns)
        b = int(name.removeprefix("B="))
        lr = float(anchored_lr(b, state["b_noise"], config.optim.lr, config.batch_size))
        target = state["target"]
        ema: dict = {"v": None}

        def reached(ev: Event) -> str | None:
            ema["v"] = ev.loss if ema["v"] is None else 0.8 * ema["v"] + 0.2 * ev.loss
            return "reached" if ema["v"] <= target else None

        tc = TrainConfig(
            batch_size=b,
            budget=Budget(steps=config.check_steps),
            optim=replace(config.optim, lr=lr),
            seed=config.seed,
            log_every=2,
            eval_each_epoch=False,
            eval_at_end=False,
        )
        columns = {"phase": "check", "batch": b, "lr": lr, "target_loss": target}
        return Planned(setup.fresh_model(data), tc, {"stop_rule": reached}, columns)

    def on_run_end(name: str, r: RunResult) -> None:
        if name != MEASURE or not config.check:
            return
        measured = rows.get("rows")
        tail = last_quarter([m.get("b_simple") for m in measured])
        state["b_noise"] = tail[-1] if tail else math.nan
        state["target"] = config.target_loss or middle_loss(measured)
        if r.status != "finished" or not math.isfinite(state["b_noise"]) or not state["target"]:
            halt.set()  # nothing to anchor the check's rates on

    names = [MEASURE] + [f"B={b}" for b in config.check]
    run_series(names, prepare, data, sink, halt, on_run_end=on_run_end)
    result = Result(config, rows.rows)
    status = "stopped" if stop is not None and stop.is_set() else result.measuring_status
    return Result(config, rows.rows, status, result.explain(status))


def last_quarter(values: list) -> list[float]:
    """The finite values of the last quarter of a series (at least its last one)."""
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


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Result(experiment.Result):
    """Everything from the streamed rows: "rows" (one per measurement), "runs" (the measuring
    run, then one per check batch) and "events" (the training loop's points)."""

    def measurements(self) -> pd.DataFrame:
        return self.frame("rows", ROW_COLUMNS)

    def _runs(self, phase: str) -> list[dict]:
        return [r for r in self.rows.get("runs", []) if r.get("phase") == phase]

    @cached_property
    def measuring_run(self) -> dict:
        found = self._runs("measure")
        return found[0] if found else {}

    @property
    def measuring_status(self) -> str:
        return self.measuring_run.get("status") or "stopped"

    @property
    def diverged(self) -> bool:
        return self.measuring_status == "diverged"

    @cached_property
    def b_simple(self) -> float:
        """The last averaged estimate."""
        tail = last_quarter(self.measurements().b_simple.tolist())
        return tail[-1] if tail else math.nan

    @cached_property
    def spread(self) -> tuple[float, float]:
        """25th-75th percentile of B_simple over the last quarter of the measurements."""
        tail = pd.Series(last_quarter(self.measurements().b_simple.tolist()), dtype=float)
        if tail.empty:
            return (math.nan, math.nan)
        return (float(tail.quantile(0.25)), float(tail.quantile(0.75)))

    @property
    def n_train(self) -> int | None:
        n = self.measuring_run.get("n_train")
        return int(n) if n is not None and n == n else None

    @property
    def overhead(self) -> float:
        """Measuring time / (training + measuring) time (the meter ran inside the loop's
        clock)."""
        m = self.measurements()
        total = self.measuring_run.get("seconds") or 0.0
        if m.empty or not total or total != total:
            return 0.0
        return float(m.measure_seconds.iloc[-1]) / total

    def smith_le_g(self) -> float | None:
        if self.n_train is None:
            return None
        o = self.config.optim
        return sgd_noise_scale(o.lr, self.n_train, self.config.batch_size, o.effective_momentum)

    def critical_note(self) -> str:
        """What this B_simple is, why other pages' critical batches differ, and what a value
        above the training set means (critical_batch_note)."""
        m = self.measurements().dropna(subset=["b_simple"])
        cfg = self.config  # None where another experiment holds the measuring run's rows
        return critical_batch_note(
            self.b_simple,
            "b_simple",
            self.n_train,
            steps=int(m.step.iloc[-1]) if not m.empty else None,
            batch=cfg.batch_size if cfg is not None else None,
            lr=cfg.optim.lr if cfg is not None else None,
            loss=float(m.loss.iloc[-1]) if not m.empty else None,
        )

    def default_target(self) -> float | None:
        """The check's default target loss: the loss half-way through the measuring run."""
        return middle_loss(self.rows.get("rows", []))

    def explain(self, status: str) -> str:
        """Why there is no noise scale (or no check), in words; '' when all went well."""
        run = self.measuring_run
        if status == "diverged":
            why = run.get("message") or "the loss blew up"
            text = (
                f"The measuring run diverged ({why}): no noise scale at this learning "
                f"rate ({self.config.optim.lr:g}); lower it and measure again."
            )
            return text + (" The check was not run." if self.config.check else "")
        if status == "finished" and not math.isfinite(self.b_simple):
            return (
                "No measurement gave a noise scale: train for more steps than the measurement "
                f"interval ({self.config.every}), or measure more often."
            )
        return str(run.get("message") or "") if status not in ("finished", "stopped") else ""

    def headline(self) -> dict:
        run = self.measuring_run
        return {
            "b_simple": self.b_simple,
            "b_simple_q25": self.spread[0],
            "b_simple_q75": self.spread[1],
            "n_train": self.n_train,
            "overhead": self.overhead,
            "measurements": len(self.rows.get("rows", [])),
            "steps": run.get("steps", 0),
            "final_loss": run.get("train_loss"),
            "status": self.status,
        }

    # ------------------------------------------------------------------ the check

    def check_table(self) -> pd.DataFrame:
        """Per check batch: its rate, how its run ended, and the updates S and examples
        E = S B it took to reach the target (NaN where it did not)."""
        out = []
        for r in self._runs("check"):
            ok = r.get("status") == "reached"
            b = int(r["batch"])
            out.append(
                {
                    "batch": b,
                    "lr": r.get("lr"),
                    "status": r.get("status"),
                    "steps": r["steps"] if ok else math.nan,
                    "examples": r["steps"] * b if ok else math.nan,
                }
            )
        return pd.DataFrame(out, columns=CHECK_COLUMNS)

    def target_loss(self) -> float | None:
        found = self._runs("check")
        if found:
            return found[0].get("target_loss")
        return self.config.target_loss or self.default_target()

    def fit(self) -> TradeoffFit:
        """The fitted trade-off; a ConfigError saying why when the check's steps allow none."""
        table = self.check_table()
        return fit_tradeoff(table.batch, table.steps)

    def fitted_frame(self, fit: TradeoffFit, n: int = 100) -> pd.DataFrame:
        """The fitted S-E curve over the checked batches, for the chart."""
        table = self.check_table()
        bb = np.geomspace(table.batch.min() / 2, table.batch.max() * 2, n)
        s = fit.s_min + fit.e_min / bb
        return pd.DataFrame({"batch": bb, "S": s, "E": s * bb})

    def agreement(self, fit: TradeoffFit) -> str:
        ratio = fit.b_crit / self.b_simple
        if 0.5 <= ratio <= 2:
            return "agree within a factor of 2"
        return f"differ by a factor of {max(ratio, 1 / ratio):.1f}"

    def check_summary(self) -> dict | None:
        if not self.config.check:
            return None
        table = self.check_table()
        out: dict = {"target_loss": self.target_loss(), "runs": table.to_dict(orient="records")}
        if table.empty:
            return out | {
                "s_min": None,
                "e_min": None,
                "b_crit": None,
                "fit_error": "the check was not run",
            }
        try:
            fit = self.fit()
        except LrbsError as exc:
            return out | {"s_min": None, "e_min": None, "b_crit": None, "fit_error": str(exc)}
        return out | {"s_min": fit.s_min, "e_min": fit.e_min, "b_crit": fit.b_crit}

    def check_csv(self) -> pd.DataFrame:
        """The check's table with the fit as a last row (the page's check CSV)."""
        table = self.check_table()
        summary = self.check_summary() or {}
        fit_row = {k: summary.get(k) for k in ("s_min", "e_min", "b_crit")}
        fit_row["b_simple"] = self.b_simple
        return pd.concat([table, pd.DataFrame([fit_row])], ignore_index=True)

    # ------------------------------------------------------------------ views

    def lr_curve(self, n_max: int, points: int = 200) -> pd.DataFrame:
        """The predicted best rate eps_opt(B) for batches 1..n_max, anchored at the run's rate
        for its batch."""
        batches = np.unique(np.geomspace(1, max(n_max, 2), points).round())
        lr = anchored_lr(batches, self.b_simple, self.config.optim.lr, self.config.batch_size)
        return pd.DataFrame({"batch": batches, "lr": lr})

    def summary(self) -> dict:
        run = self.measuring_run
        out = {
            "dataset": run.get("dataset"),
            "model": run.get("model"),
            **self.headline(),
            "smith_le_g": self.smith_le_g(),
            "message": self.message,
        }
        check_ = self.check_summary()
        if check_ is not None:
            out["check"] = check_
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"rows": self.measurements()}
        if self.config.check:
            out["check"] = self.check_csv()
        return out

    def report(self) -> str:
        s0, s1 = self.spread
        lines = [
            f"B_simple = {self.b_simple:,.0f} (last quarter {s0:,.0f} to {s1:,.0f}; "
            f"n_train {self.n_train}); measuring cost {self.overhead:.1%} of training time"
        ]
        if self.message:
            lines.append(self.message)
        check_ = self.check_summary()
        if check_ is not None:
            if check_.get("b_crit") is not None:
                lines.append(f"fitted B_crit = {check_['b_crit']:,.0f}")
            elif "fit_error" in check_:
                lines.append(f"no fit: {check_['fit_error']}")
        return "\n".join(lines)
