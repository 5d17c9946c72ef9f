"""Rates trained side by side: one run per rate of a grid, each from the same initial weights
and with the same budget, so that only the rate differs, each repeated over seeds if asked
(seed, seed+1, ...); in series, or all at once stacked with `torch.func` (lrbs.core.stacked).
The sweep experiment and recommend's confirmation sweep both train their rates here."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_number, require
from lrbs.core.loop import Budget, Event, TrainConfig
from lrbs.core.optim import SweptOptim, optim_at
from lrbs.core.setup import Setup
from lrbs.runs.series import Planned, run_row, run_series
from lrbs.runs.sink import Sink

log = logging.getLogger(__name__)

STACKED = ("auto", "yes", "no")
MAX_RATES = 12


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
    train_eval_size: int = option(
        TrainConfig.train_eval_size,
        low=1,
        cli=False,
        help="training samples re-scored at each evaluation",
    )

    def __post_init__(self) -> None:
        check(self)
        object.__setattr__(self, "lrs", check_grid(tuple(self.lrs)))
        require(len(self.lrs) <= MAX_RATES, f"at most {MAX_RATES} learning rates in one sweep")
        for lr in self.lrs:
            optim_at(self.optim, lr)
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
            optim=optim_at(self.optim, lr),
            seed=self.seed if seed is None else seed,
            log_every=10,
            eval_every=self.eval_every,
            eval_each_epoch=self.eval_every is None,
            min_eval_seconds=0.25,  # short epochs: evaluate a few times a second, not each one
            train_eval_size=self.train_eval_size,
        )


def run_label(lr: float, seed: int | None = None) -> str:
    return f"lr={lr:g}" + ("" if seed is None else f" seed {seed}")


def train_rates(
    setup: Setup,
    data: TensorData,
    config: Config,
    sink: Sink,
    stop: threading.Event | None = None,
) -> str:
    """Each rate trains the setup's fresh model (the same initial weights for every rate) for
    the same budget; every point to the "events" channel and a "runs" row (with its `lr` and
    `seed`) as each rate ends. A user stop ends it after the current run (stacked: at once).
    Returns a note ('' or why the rates were not stacked)."""
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
    return note


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
