"""The learning-rate sweep: one run per rate of a grid, each from the same initial weights and
with the same budget, so that only the rate differs, each repeated over seeds if asked (seed,
seed+1, ...); the best (lowest mean validation loss among the rates whose every run finished
its budget) is marked, and the verdict says whether the runner-up is within noise of it. On a
budget in steps, epochs or samples the rates can also train all at once, stacked with
`torch.func` (lrbs.core.stacked).

Also the grids of rates (`check_grid`, `refine`, `around`, `add_decade`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrbs.core.errors import positive_number
from lrbs.core.kept import KEEP_DATASETS, keep_arrays, load_data  # noqa: F401  (offered here)
from lrbs.core.loop import EVENT_COLUMNS
from lrbs.core.optim import SweptOptim  # noqa: F401  (offered here as before)
from lrbs.core.setup import Setup
from lrbs.core.spread import difference, spread
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink
from lrbs.runs.sweep import (  # noqa: F401  (the runner and its settings, offered here as before)
    MAX_RATES,
    STACKED,
    Config,
    check_grid,
    run_label,
    should_stack,
    train_rates,
)

KIND = "lr-sweep"
TABLE_COLUMNS = [
    "lr",
    "repeats",
    "status",
    "message",
    "train_loss",
    "val_loss",
    "val_acc",
    "epochs",
    "steps",
    "seconds",
]


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Each rate trains the setup's fresh model (the same initial weights for every rate) for
    the same budget (`lrbs.runs.sweep.train_rates`); every point to the "events" channel and a
    "runs" row (with its `lr`) as each rate ends. A user stop ends the sweep after the current
    run (stacked: at once)."""
    rows, sink = collect(sink)
    note = train_rates(setup, load_data(setup), config, sink, stop)
    stopped = stop is not None and stop.is_set()
    return Result(config, rows.rows, "stopped" if stopped else "finished", note)


@dataclass(frozen=True)
class Result(experiment.Result):
    def run_table(self) -> pd.DataFrame:
        """One row per run (rate and seed), in rate order."""
        runs = self.frame("runs")
        if runs.empty:
            return pd.DataFrame(columns=[*TABLE_COLUMNS, "seed"])
        if "seed" not in runs:  # a record from before repeats
            runs["seed"] = self.config.seed
        return runs.sort_values(["lr", "seed"], ignore_index=True)

    def table(self) -> pd.DataFrame:
        """One row per rate that ran, in rate order: means over its seeds (with the spread of
        the validation loss when repeated), the best marked."""
        runs = self.run_table()
        if runs.empty:
            return pd.DataFrame(columns=[*TABLE_COLUMNS, "best"])
        table = per_rate(runs)
        if table.steps.notna().all():  # whole numbers, also when read back from the history
            table["steps"] = table.steps.round().astype(int)
        return mark_best(table)

    def best_lr(self) -> float | None:
        return best_lr(self.table())

    def verdict(self) -> str | None:
        """The best rate, and whether the runner-up is within noise of it."""
        return verdict(self.run_table(), self.table())

    def curves(self) -> pd.DataFrame:
        return self.frame("events", EVENT_COLUMNS)

    def summary(self) -> dict:
        return {
            "status": self.status,
            "message": self.message,
            "budget": self.config.budget.describe(),
            "best_lr": self.best_lr(),
            "verdict": self.verdict(),
            "runs": self.table().to_dict(orient="records"),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.curves(), "table": self.table()}

    def report(self) -> str:
        table = self.table()
        return table.to_string(index=False) if not table.empty else self.status


def per_rate(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' rows (one per rate and seed) as one row per rate: the mean of every figure,
    every status met ("finished/stopped"), the first message, and with several seeds the
    standard deviation of the validation loss."""
    numbers = ["train_loss", "val_loss", "val_acc", "epochs", "steps", "seconds"]
    runs = runs.reindex(columns=["lr", "seed", "status", "message", *numbers])
    runs[numbers] = runs[numbers].apply(pd.to_numeric, errors="coerce")
    runs["message"] = runs.message.fillna("")
    by = runs.groupby("lr", sort=True)
    out = by[numbers].mean()
    out["status"] = by.status.agg(lambda s: "/".join(dict.fromkeys(s)))
    out["message"] = by.message.agg(lambda s: next((m for m in s if m), ""))
    out["repeats"] = by.size()
    if out.repeats.max() > 1:
        out["val_loss_std"] = by.val_loss.std()
    out = out.reset_index()
    extra = ["val_loss_std"] if "val_loss_std" in out else []
    return out[[*TABLE_COLUMNS, *extra]]


def mark_best(df: pd.DataFrame) -> pd.DataFrame:
    """Flag the rate with the lowest validation loss among those whose every run finished its
    budget: a diverged, stopped or unfinished run is never the best."""
    df = df.copy()
    if df.empty:
        return df
    ok = df[(df.status == "finished") & df.val_loss.notna()]
    df["best"] = False
    if not ok.empty:
        df.loc[ok.val_loss.astype(float).idxmin(), "best"] = True
    return df


def best_lr(table: pd.DataFrame) -> float | None:
    if table.empty or not table.best.any():
        return None
    return float(table.loc[table.best, "lr"].iloc[0])


def verdict(runs: pd.DataFrame, table: pd.DataFrame) -> str | None:
    """'Best: lr 0.1 (val loss 0.41 ± 0.01 over 3 seeds); the runner-up lr 0.3 differs by
    +0.003 ± 0.02: within noise.' One seed: the verdict says repeats are needed to judge."""
    best = best_lr(table)
    if best is None:
        return None
    ok = table[(table.status == "finished") & table.val_loss.notna()].sort_values("val_loss")
    losses = {lr: g.val_loss.tolist() for lr, g in runs.groupby("lr")}
    text = f"Best: lr {best:g}, validation loss {spread(losses[best]).text()}"
    if len(ok) < 2:
        return text + "."
    second = float(ok.lr.iloc[1])
    diff = difference(losses[second], losses[best])
    return text + f"; the runner-up, lr {second:g}, differs by {diff.text()}."


def refine(best: float, points: int = 5) -> tuple[float, ...]:
    """The decade around `best`, on an exponential grid: best x 10^(-1/2 .. +1/2)."""
    positive_number("learning rate", best)
    return tuple(float(f"{best * 10**e:.3g}") for e in np.linspace(-0.5, 0.5, points))


def around(centre: float, decades: float = 1.0, points: int = 5) -> tuple[float, ...]:
    """An exponential grid of `points` rates, `decades` either side of `centre`."""
    positive_number("learning rate", centre)
    exps = np.linspace(-decades, decades, points)
    return check_grid(tuple(float(f"{centre * 10**e:.3g}") for e in exps))


def add_decade(lrs: tuple[float, ...], above: bool = True) -> tuple[float, ...]:
    grid = check_grid(tuple(lrs))
    new = grid[-1] * 10 if above else grid[0] / 10
    return check_grid((*grid, float(f"{new:.3g}")))
