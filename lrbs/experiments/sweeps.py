"""The learning-rate sweep: one run per rate of a grid, each from the same initial weights and
with the same budget, so that only the rate differs, each repeated over seeds if asked (seed,
seed+1, ...); the best (lowest mean validation loss among the rates whose every run finished
its budget) is marked, and the verdict says whether the runner-up is within noise of it. On a
budget in steps, epochs or samples the rates can also train all at once, stacked with
`torch.func` (lrbs.core.stacked).

Also the shared helpers of sweeps: grids (`check_grid`, `refine`, `add_decade`), and
`run_named`, the older series runner (being replaced by lrbs.runs.series.run_series)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import Arrays, DataSpec, TensorData, load
from lrbs.core.errors import ConfigError, positive_number, require
from lrbs.core.loop import EVENT_COLUMNS, Budget, Event, OptimSpec, RunResult, TrainConfig, train
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.spread import difference, spread
from lrbs.core.stream import StreamData
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_row, run_series
from lrbs.runs.sink import Sink

log = logging.getLogger(__name__)

KIND = "lr-sweep"
STACKED = ("auto", "yes", "no")
MAX_RATES = 12
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


@dataclass(frozen=True)
class SweptOptim(OptimSpec):
    """An optimizer whose learning rate the experiment sets (a sweep's grid, a range test's
    ramp): its own `lr` is unused, so the command line has no `--lr` for it."""

    lr: float = option(1.0, cli=False, help="unused: the experiment sets the rate")


_ARRAYS: OrderedDict[DataSpec, Arrays] = OrderedDict()  # the last datasets used, newest last
_ARRAYS_LOCK = threading.Lock()
KEEP_DATASETS = 2


def keep_arrays(spec: DataSpec, arrays: Arrays) -> None:
    """Hand over data already loaded (a page's cached arrays), so that a run on it does not
    load it again: MNIST-1D takes seconds to generate. (A workload's facts are not arrays.)"""
    if not isinstance(arrays, Arrays):
        return
    with _ARRAYS_LOCK:
        _ARRAYS[spec] = arrays
        _ARRAYS.move_to_end(spec)
        while len(_ARRAYS) > KEEP_DATASETS:
            _ARRAYS.popitem(last=False)


def load_data(setup: Setup) -> TensorData | StreamData:
    """The setup's data on its device, from the arrays kept (see `keep_arrays`) or loaded; a
    workload's, as it gives them."""
    if setup.workload is not None:
        return load_tensors(setup)
    with _ARRAYS_LOCK:
        arrays = _ARRAYS.get(setup.data)
    if arrays is None:
        arrays = load(setup.data)
        keep_arrays(setup.data, arrays)
    return load_tensors(setup, arrays)


def check_grid(values: tuple[float, ...], name: str = "learning rate") -> tuple[float, ...]:
    """Positive, finite, no repeats; returned sorted."""
    require(len(values) > 0, f"the {name} grid is empty: give at least one value")
    for v in values:
        positive_number(name, v)
    dupes = sorted({v for v in values if values.count(v) > 1})
    require(not dupes, f"the {name} grid repeats {', '.join(f'{v:g}' for v in dupes)}")
    return tuple(sorted(float(v) for v in values))


@dataclass(frozen=True, kw_only=True)
class Config:
    lrs: tuple[float, ...] = option(
        (0.001, 0.01, 0.1, 1.0),
        flag=("--lr", "--lrs"),
        label="learning rate",
        help="the learning-rate grid (sorted; at most 12)",
    )
    budget: Budget = option(factory=lambda: Budget(seconds=5), help="the budget of every rate")
    batch_size: int = option(128, help="batch size")
    optim: SweptOptim = option(factory=SweptOptim, help="the optimizer (its rate is swept)")
    seed: int = option(0, help="seed of the initial weights and the batches (of the first repeat)")
    repeats: int = option(1, low=1, high=10, help="seeds per rate: seed, seed+1, ...")
    stacked: str = option(
        "auto",
        choices=STACKED,
        help="train the rates at once with torch.func (auto: on a GPU, for a budget in steps, "
        "epochs or samples and a model without dropout)",
    )
    eval_every: int | None = option(
        None,
        low=1,
        help="evaluate every N updates, at the same steps in every run, instead of at epoch "
        "ends (default: epoch ends, a few a second at most)",
    )

    def __post_init__(self) -> None:
        check(self)
        object.__setattr__(self, "lrs", check_grid(tuple(self.lrs)))
        require(len(self.lrs) <= MAX_RATES, f"at most {MAX_RATES} learning rates in one sweep")
        for lr in self.lrs:
            OptimSpec(self.optim.name, lr, self.optim.momentum, self.optim.weight_decay)
        TrainConfig(batch_size=self.batch_size, budget=self.budget)
        if self.stacked == "yes":
            from lrbs.core.stacked import STACKED_BUDGET

            require(self.budget.seconds is None, STACKED_BUDGET)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.repeats))

    def runs(self) -> dict[str, tuple[float, int]]:
        """Every run by name: (lr, seed), rate by rate, repeats inside."""
        return {
            run_label(lr, seed if self.repeats > 1 else None): (lr, seed)
            for lr in self.lrs
            for seed in self.seeds
        }

    def train_config(self, lr: float, seed: int | None = None) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size,
            budget=self.budget,
            optim=OptimSpec(self.optim.name, lr, self.optim.momentum, self.optim.weight_decay),
            seed=self.seed if seed is None else seed,
            log_every=10,
            eval_every=self.eval_every,
            eval_each_epoch=self.eval_every is None,
            min_eval_seconds=0.25,  # short epochs: evaluate a few times a second, not each one
        )


def run_label(lr: float, seed: int | None = None) -> str:
    return f"lr={lr:g}" + ("" if seed is None else f" seed {seed}")


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Each rate trains the setup's fresh model (the same initial weights for every rate) for
    the same budget; every point to the "events" channel and a "runs" row (with its `lr`) as
    each rate ends. A user stop ends the sweep after the current run (stacked: at once)."""
    rows, sink = collect(sink)
    data = load_data(setup)
    if config.batch_size > data.n_train:
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the training set ({data.n_train})"
        )
    by_name = config.runs()
    from lrbs.core.stacked import unstackable_data

    stacked = {"yes": True, "no": False}.get(config.stacked)
    if stacked is None:
        stacked = should_stack(setup, data, config)
    note = ""
    why = unstackable_data(data)
    if stacked and why is not None:
        stacked, note = False, f"ran one rate at a time, not stacked: {why}"
        log.info(note)
    if stacked:
        for i, seed in enumerate(config.seeds):
            if stop is not None and stop.is_set():
                break
            _run_stacked(setup, data, config, sink, stop, seed, i)
    else:

        def prepare(name: str) -> Planned:
            lr, seed = by_name[name]
            return Planned(
                model=setup.fresh_model(data, seed),
                config=config.train_config(lr, seed),
                columns={"lr": lr, "seed": seed},
            )

        run_series(list(by_name), prepare, data, sink, stop)
    stopped = stop is not None and stop.is_set()
    return Result(config, rows.rows, "stopped" if stopped else "finished", note)


def _run_stacked(
    setup: Setup,
    data: TensorData,
    config: Config,
    sink: Sink,
    stop: threading.Event | None,
    seed: int,
    repeat: int = 0,
) -> None:
    """Every rate at once (one seed): the same rows as the sequential path (events, then a
    "runs" row per rate); the progress is the budget spent, which every rate shares."""
    from lrbs.core.stacked import train_stacked

    n = config.repeats

    def on_event(e: Event) -> None:
        sink.emit("events", e.as_dict())
        sink.progress((repeat + config.budget.fraction(e)) / n, "stacked")

    names = [run_label(lr, seed if n > 1 else None) for lr in config.lrs]
    results = train_stacked(
        lambda: setup.fresh_model(data, seed),
        data,
        config.train_config(config.lrs[0], seed),
        config.lrs,
        run_ids=names,
        on_event=on_event,
        stop=stop,
    )
    for name, lr, r in zip(names, config.lrs, results, strict=True):
        sink.emit("runs", run_row(name, r) | {"lr": lr, "seed": seed})
    sink.progress((repeat + 1) / n, "stacked")


def should_stack(setup: Setup, data: TensorData, config: Config) -> bool:
    """Stack the rates on a GPU, when the budget is not in seconds (K stacked runs would share
    it), the model can be stacked, and there is more than one rate. On a CPU a small model's
    step is compute-bound: 8 stacked rates measured 1.4x faster than 8 runs in a row, 2 rates
    slower (bench/RESULTS.md), so the CPU keeps the sequential path unless asked."""
    from lrbs.core.stacked import stackable, unstackable_data

    return (
        data.device.type == "cuda"
        and unstackable_data(data) is None
        and config.budget.seconds is None
        and len(config.lrs) > 1
        and stackable(setup.fresh_model(data, config.seed)) is None
    )


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


def run_named(
    names: Sequence[str],
    prepare: Callable[[str], tuple[nn.Module, TrainConfig, dict]],
    data: TensorData,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_run_end: Callable[[str, RunResult], None] | None = None,
) -> dict[str, RunResult]:
    """One run of the training loop per name, in order: `prepare(name)` gives the model, its
    config and train()'s other arguments (optimizer, scheduler, hooks). A user stop ends the
    whole series after the current run. (Being replaced by lrbs.runs.series.run_series.)"""
    results = {}
    for name in names:
        model, tc, extra = prepare(name)
        r = train(model, data, tc, run_id=name, on_event=on_event, stop=stop, **extra)
        results[name] = r
        if on_run_end is not None:
            on_run_end(name, r)
        if r.status == "stopped":
            break
    return results
