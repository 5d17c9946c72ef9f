"""The gradient noise scale and the critical batch size (McCandlish, Kaplan, Amodei et al.,
"An Empirical Model of Large-Batch Training", 2018), as an experiment.

One run trains at the chosen batch and measures B_simple = tr(Sigma) / |G|^2 every k steps with
the two-batch meter of `lrbs.methods.noise` (its estimators, averaging and settings live there).
Below B_crit ~ B_simple, doubling the batch nearly halves the steps; above it, extra batch is
wasted compute. The check trains each of a few batch sizes to a target loss at the rate
eps_opt(B) predicts and fits S = S_min + E_min / B (the paper's (S/S_min - 1)(E/E_min - 1) = 1
with E = S B): B_crit = E_min / S_min.

Smith & Le's SGD noise scale g = lr/(1 - m) * N/B, a property of the optimizer's settings rather
than of the gradients, is `lrbs.methods.noise.sgd_noise_scale`: the one place lrbs computes it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError
from lrbs.core.loop import Budget, Event, RunResult, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.methods.noise import (  # noqa: F401 - the meter's names, offered here as before
    MEASURE,
    ROW_COLUMNS,
    Config,
    PeriodicNoiseMeter,
    TradeoffFit,
    b_simple,
    fit_tradeoff,
    grad_sq_norm,
    last_quarter,
    measure_train_config,
    periodic_meter,
    sgd_noise_scale,
    unbiased,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.instruments import Part, measure_noise
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink
from lrbs.runs.views import (  # noqa: F401  (offered here as before)
    CRITICAL_QUANTITIES,
    WHY_THEY_DIFFER,
    NoiseRows,
    critical_batch_note,
)

KIND = "noise-scale"
CHECK_COLUMNS = ["batch", "lr", "status", "steps", "examples"]


smith_le_noise = sgd_noise_scale  # the name this module has always offered


# ---------------------------------------------------------------------------- what a number means


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


def middle_loss(rows: list[dict]) -> float | None:
    """The training loss half-way through the measuring run: the check's default target."""
    losses = [r.get("loss") for r in rows]
    losses = [x for x in losses if x is not None and math.isfinite(x)]
    return float(losses[len(losses) // 2]) if losses else None


def run(
    setup: Setup, config: Config, sink: Sink | None = None, stop: threading.Event | None = None
) -> Result:
    """Train for `config.steps`, measuring B_simple every `config.every` steps; then, if asked,
    train each check batch size to the target loss at the rate eps_opt(B) predicts for it.
    One series: the measuring run first (`lrbs.runs.instruments.measure_noise`), then the
    check's runs."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    share = 1 / (1 + len(config.check))
    measured = measure_noise(setup, data, config, sink, stop, share=share)
    if config.check and measured.status != "stopped" and not (stop is not None and stop.is_set()):
        tail = Part(sink, share, 1 - share)
        run_check(setup, data, config, rows.get("rows"), measured, tail, stop)
    result = Result(config, rows.rows)
    status = "stopped" if stop is not None and stop.is_set() else result.measuring_status
    return Result(config, rows.rows, status, result.explain(status))


def run_check(
    setup: Setup,
    data: TensorData,
    config: Config,
    measured: list[dict],
    measuring: RunResult,
    sink: Sink,
    stop: threading.Event | None,
) -> None:
    """Each check batch trained to the target loss at the rate eps_opt(B) predicts from the
    measuring run's B_simple; nothing where that run leaves nothing to anchor the rates on
    (it diverged, or measured nothing)."""
    tail = last_quarter([m.get("b_simple") for m in measured])
    b_noise = tail[-1] if tail else math.nan
    target = config.target_loss or middle_loss(measured)
    if measuring.status != "finished" or not math.isfinite(b_noise) or not target:
        return

    def prepare(name: str) -> Planned:
        b = int(name.removeprefix("B="))
        lr = float(anchored_lr(b, b_noise, config.optim.lr, config.batch_size))
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

    run_series([f"B={b}" for b in config.check], prepare, data, sink, stop)


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Result(NoiseRows, experiment.Result):
    """Everything from the streamed rows: "rows" (one per measurement), "runs" (the measuring
    run, then one per check batch) and "events" (the training loop's points). The measuring
    run's view (B_simple, its spread, the note beside it) is `lrbs.runs.views.NoiseRows`."""

    def smith_le_g(self) -> float | None:
        if self.n_train is None:
            return None
        o = self.config.optim
        return sgd_noise_scale(o.lr, self.n_train, self.config.batch_size, o.effective_momentum)

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
