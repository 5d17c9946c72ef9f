"""The learning-rate sweep: one run per rate of a grid, each from the same initial weights and
with the same budget, so that only the rate differs; the best (lowest validation loss among
the runs that did not diverge) is marked. On a budget in steps, epochs or samples the rates can
also train all at once, stacked with `torch.func` (lrbs.core.stacked).

Also the shared helpers of sweeps: grids (`check_grid`, `refine`, `add_decade`), and
`run_named`, the older series runner (being replaced by lrbs.runs.series.run_series)."""

from __future__ import annotations

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
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_row, run_series
from lrbs.runs.sink import Sink

KIND = "lr-sweep"
STACKED = ("auto", "yes", "no")
MAX_RATES = 12
TABLE_COLUMNS = [
    "lr",
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
    load it again: MNIST-1D takes seconds to generate."""
    with _ARRAYS_LOCK:
        _ARRAYS[spec] = arrays
        _ARRAYS.move_to_end(spec)
        while len(_ARRAYS) > KEEP_DATASETS:
            _ARRAYS.popitem(last=False)


def load_data(setup: Setup) -> TensorData:
    """The setup's data on its device, from the arrays kept (see `keep_arrays`) or loaded."""
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
    seed: int = option(0, help="seed of the initial weights and the batches")
    stacked: str = option(
        "auto",
        choices=STACKED,
        help="train the rates at once with torch.func (auto: on a GPU, for a budget in steps, "
        "epochs or samples and a model without dropout)",
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

    def train_config(self, lr: float) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size,
            budget=self.budget,
            optim=OptimSpec(self.optim.name, lr, self.optim.momentum, self.optim.weight_decay),
            seed=self.seed,
            log_every=10,
            min_eval_seconds=0.25,  # short epochs: evaluate a few times a second, not each one
        )


def run_label(lr: float) -> str:
    return f"lr={lr:g}"


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
    by_name = {run_label(lr): lr for lr in config.lrs}
    stacked = {"yes": True, "no": False}.get(config.stacked)
    if stacked is None:
        stacked = should_stack(setup, data, config)
    if stacked:
        _run_stacked(setup, data, config, sink, stop)
    else:

        def prepare(name: str) -> Planned:
            lr = by_name[name]
            return Planned(
                model=setup.fresh_model(data, config.seed),
                config=config.train_config(lr),
                columns={"lr": lr},
            )

        run_series(list(by_name), prepare, data, sink, stop)
    stopped = stop is not None and stop.is_set()
    return Result(config, rows.rows, "stopped" if stopped else "finished")


def _run_stacked(
    setup: Setup, data: TensorData, config: Config, sink: Sink, stop: threading.Event | None
) -> None:
    """Every rate at once: the same rows as the sequential path (events, then a "runs" row
    per rate); the progress is the budget spent, which every rate shares."""
    from lrbs.core.stacked import train_stacked

    def on_event(e: Event) -> None:
        sink.emit("events", e.as_dict())
        sink.progress(config.budget.fraction(e), "stacked")

    results = train_stacked(
        lambda: setup.fresh_model(data, config.seed),
        data,
        config.train_config(config.lrs[0]),
        config.lrs,
        run_ids=[run_label(lr) for lr in config.lrs],
        on_event=on_event,
        stop=stop,
    )
    for lr, r in zip(config.lrs, results, strict=True):
        sink.emit("runs", run_row(run_label(lr), r) | {"lr": lr})
    sink.progress(1.0, "stacked")


def should_stack(setup: Setup, data: TensorData, config: Config) -> bool:
    """Stack the rates on a GPU, when the budget is not in seconds (K stacked runs would share
    it), the model can be stacked, and there is more than one rate. On a CPU a small model's
    step is compute-bound: 8 stacked rates measured 1.4x faster than 8 runs in a row, 2 rates
    slower (bench/RESULTS.md), so the CPU keeps the sequential path unless asked."""
    from lrbs.core.stacked import stackable

    return (
        data.x_train.device.type == "cuda"
        and config.budget.seconds is None
        and len(config.lrs) > 1
        and stackable(setup.fresh_model(data, config.seed)) is None
    )


@dataclass(frozen=True)
class Result(experiment.Result):
    def table(self) -> pd.DataFrame:
        """One row per rate that ran, in rate order, with the best marked."""
        runs = self.frame("runs")
        if runs.empty:
            return pd.DataFrame(columns=[*TABLE_COLUMNS, "best"])
        table = runs.reindex(columns=TABLE_COLUMNS).sort_values("lr", ignore_index=True)
        if table.steps.notna().all():  # whole numbers, also when read back from the history
            table["steps"] = table.steps.astype(int)
        return mark_best(table)

    def best_lr(self) -> float | None:
        return best_lr(self.table())

    def curves(self) -> pd.DataFrame:
        return self.frame("events", EVENT_COLUMNS)

    def summary(self) -> dict:
        return {
            "status": self.status,
            "message": self.message,
            "budget": self.config.budget.describe(),
            "best_lr": self.best_lr(),
            "runs": self.table().to_dict(orient="records"),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.curves(), "table": self.table()}

    def report(self) -> str:
        table = self.table()
        return table.to_string(index=False) if not table.empty else self.status


def mark_best(df: pd.DataFrame) -> pd.DataFrame:
    """Flag the run with the lowest validation loss among those that did not diverge."""
    df = df.copy()
    if df.empty:
        return df
    ok = df[(df.status != "diverged") & df.val_loss.notna()]
    df["best"] = False
    if not ok.empty:
        df.loc[ok.val_loss.astype(float).idxmin(), "best"] = True
    return df


def best_lr(table: pd.DataFrame) -> float | None:
    if table.empty or not table.best.any():
        return None
    return float(table.loc[table.best, "lr"].iloc[0])


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
