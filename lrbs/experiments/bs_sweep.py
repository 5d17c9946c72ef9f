"""Batch-size sweep at equal budgets: every batch size trains from the same initial weights for
the same budget, its learning rate fixed or scaled (linear, sqrt) with an optional warm-up."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.loop import Budget, OptimSpec, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments.scaling import (
    FULL,
    RULES,
    noise_scale,
    parse_batches,
    resolve_batches,
    run_label,
    scaled_lr,
    warmup,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "bs-sweep"
RUN_COLUMNS = [
    "run",
    "batch",
    "seed",
    "lr",
    "noise_scale",
    "status",
    "train_loss",
    "val_loss",
    "val_acc",
    "gap",
    "epochs",
    "updates",
    "samples_per_s",
    "seconds",
    "peak_memory_mib",
]

RUNS_CHANNEL_COLUMNS = [
    *("run", "batch", "seed", "lr", "status", "val_loss", "val_acc", "train_eval_loss"),
    *("epochs", "steps", "samples", "seconds"),
]


@dataclass(frozen=True, kw_only=True)
class Config:
    batch_sizes: tuple[int | str, ...] = option(
        (64, 128, 256, FULL), help="batch sizes: whole numbers or 'full' (the training set)"
    )
    budget: Budget = option(factory=lambda: Budget(seconds=10.0))
    optim: OptimSpec = option(factory=OptimSpec)
    scaling: str = option(
        "fixed", choices=tuple(RULES), label="scaling rule", help="lr scaling: fixed, linear, sqrt"
    )
    base_batch: int | None = option(
        None, low=1, help="the batch --lr belongs to (default: the smallest swept)"
    )
    warmup_epochs: float = option(
        0.0, low=0.0, help="linear warm-up from --lr to a larger scaled rate, in epochs"
    )
    seed: int = option(0, help="seed of the first repeat (repeats use seed+1, seed+2, ...)")
    repeats: int = option(1, low=1, high=10, help="seeds per batch size")
    log_every: int = option(10, cli=False)
    min_eval_seconds: float = option(0.25, cli=False)

    def __post_init__(self) -> None:
        check(self)
        # 64.0 -> 64, 'FULL' -> 'full': one spelling, so equal lists are equal configs
        object.__setattr__(self, "batch_sizes", parse_batches(self.batch_sizes))

    def plan(self, n_train: int) -> list[tuple[int, float]]:
        """(batch, learning rate) per swept batch size."""
        batches = resolve_batches(self.batch_sizes, n_train)
        base = self.base_batch or batches[0]
        plan = [(b, scaled_lr(self.optim.lr, base, b, self.scaling)) for b in batches]
        for _, lr in plan:
            replace(self.optim, lr=lr)  # a scaled rate may be absurd: checked here
        return plan

    def runs(self, n_train: int) -> dict[str, tuple[int, float, int]]:
        """Every run of the sweep by name: (batch, lr, seed), batch by batch, repeats inside."""
        out = {}
        for batch, lr in self.plan(n_train):
            for r in range(self.repeats):
                seed = self.seed + r
                name = run_label(batch, n_train, seed if self.repeats > 1 else None)
                out[name] = (batch, lr, seed)
        return out

    def train_config(self, batch: int, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(
            batch_size=batch,
            budget=self.budget,
            optim=replace(self.optim, lr=lr),
            seed=seed,
            log_every=self.log_every,
            min_eval_seconds=self.min_eval_seconds,
        )

    def describe_plan(self, n_train: int) -> str:
        """One line per batch: its rate and noise scale (the page's caption)."""
        m = self.optim.effective_momentum
        parts = [
            f"B={b}: lr {lr:.3g}, g = {noise_scale(lr, n_train, b, m):.3g}"
            for b, lr in self.plan(n_train)
        ]
        return "Plan: " + "; ".join(parts) + f". Noise scale g = lr·N/B with N = {n_train:,}."


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Each batch size (x repeats) trains a fresh model of the run's seed for the same budget;
    every point on "events", one "runs" row as each run ends."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    n = data.n_train
    planned = config.runs(n)
    sink.emit("info", {"dataset": setup.data_name, "model": setup.model_name, "n_train": n})

    def prepare(name: str) -> Planned:
        batch, lr, seed = planned[name]
        extra = {}
        if config.warmup_epochs > 0 and lr > config.optim.lr:
            # from the base batch's rate up to the scaled one (Goyal et al.)
            steps = math.ceil(n / batch)
            extra["lr_scheduler"] = warmup(lr, config.optim.lr, config.warmup_epochs, steps)
        return Planned(
            model=setup.fresh_model(data, seed),
            config=config.train_config(batch, lr, seed),
            extra=extra,
            columns={"batch": batch, "lr": lr, "seed": seed},
        )

    def on_run_end(name: str, r) -> None:
        if r.peak_memory:
            sink.emit("memory", {"run": name, "peak_memory_mib": r.peak_memory / 2**20})

    run_series(list(planned), prepare, data, sink, stop, on_run_end=on_run_end)
    stopped = stop is not None and stop.is_set()
    return Result(config, rows.rows, "stopped" if stopped else "finished")


@dataclass(frozen=True)
class Result(experiment.Result):
    def info(self) -> dict:
        return (self.rows.get("info") or [{}])[0]

    def n_train(self) -> int | None:
        n = self.info().get("n_train")
        return int(n) if n is not None else None

    def events(self) -> pd.DataFrame:
        from lrbs.core.loop import EVENT_COLUMNS

        return self.frame("events", EVENT_COLUMNS)

    def run_rows(self) -> pd.DataFrame:
        """One row per finished run: its batch, seed, rate, noise scale and figures (the
        training loss re-scored in eval mode, so gap = val_loss - train_loss)."""
        runs = self.frame("runs", RUNS_CHANNEL_COLUMNS)
        if runs.empty:
            return pd.DataFrame(columns=RUN_COLUMNS)
        m = self.config.optim.effective_momentum
        n = self.n_train() or 0
        memory = self.frame("memory", ["run", "peak_memory_mib"])
        out = runs.assign(
            batch=runs.batch.astype(int),
            seed=runs.seed.astype(int),
            noise_scale=noise_scale(runs.lr, n, runs.batch, m),
            train_loss=runs.train_eval_loss,
            gap=runs.val_loss - runs.train_eval_loss,
            updates=runs.steps,
            samples_per_s=runs.samples / runs.seconds.where(runs.seconds > 0),
        ).merge(memory, on="run", how="left")
        out = out[RUN_COLUMNS]
        numbers = [c for c in RUN_COLUMNS if c not in ("run", "batch", "seed", "status")]
        return out.astype({c: float for c in numbers})

    def table(self) -> pd.DataFrame:
        return sweep_table(self.run_rows().drop(columns="run"))

    def best(self) -> dict | None:
        """The batch with the lowest validation loss among runs that did not fail."""
        table = self.table()
        if table.empty:
            return None
        ok = table[table.status.str.contains("finished|stopped") & table.val_loss.notna()]
        if ok.empty:
            return None
        return ok.loc[ok.val_loss.idxmin()].to_dict()

    def verdict(self) -> str | None:
        best = self.best()
        if best is None:
            return None
        return (
            f"Lowest validation loss in this budget: batch {int(best['batch'])} "
            f"(val loss {best['val_loss']:.4f}, {best['updates']:.0f} updates)."
        )

    def summary(self) -> dict:
        info = self.info()
        return {
            "status": self.status,
            "dataset": info.get("dataset"),
            "model": info.get("model"),
            "budget": self.config.budget.describe(),
            "scaling": self.config.scaling,
            "n_train": self.n_train(),
            "runs": self.table().to_dict(orient="records"),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.events(), "table": self.table()}

    def report(self) -> str:
        table = self.table()
        return table.to_string(index=False) if not table.empty else self.status


def sweep_table(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """One row per batch size: means over repeats, and the spread (std) of the validation loss
    when there are several."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    numeric = [c for c in df.columns if c not in ("batch", "seed", "status", "run")]
    agg = df.groupby("batch")[numeric].mean(numeric_only=True)
    agg["status"] = df.groupby("batch").status.agg(lambda s: "/".join(sorted(set(s))))
    agg["repeats"] = df.groupby("batch").size()
    if df.groupby("batch").size().max() > 1:
        agg["val_loss_std"] = df.groupby("batch").val_loss.std()
    return agg.reset_index()
