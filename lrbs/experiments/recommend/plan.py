"""Recommend's budget plan: a budget is a time. Before the first step the pipeline times this
model's updates at the base batch (after the one-time costs of a process's first updates,
`time_updates`) and plans each step's seeds, rates and updates to it (`fit_effort`): lowered to
fit, never below the floor a meaningful answer needs, or raised to use it. The pipeline's
settings (`Config`) live here too: what the user fixes, and the effort they aim at."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from lrbs.core import machine
from lrbs.core import threads as cpu_threads
from lrbs.core.config import check, option
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, evaluate_data, train
from lrbs.core.optim import SweptOptim, optim_at
from lrbs.core.setup import Setup
from lrbs.methods.noise import noise_sizes
from lrbs.methods.range_test import RangeTestConfig
from lrbs.runs.sweep import MAX_RATES, STACKED

BUDGETS = ("quick", "thorough")
BUDGET_SECONDS = {"quick": 60.0, "thorough": 300.0}  # on 2 CPU cores, probe and all


@dataclass(frozen=True)
class Effort:
    """What a budget buys: seeds, rates and steps of each step."""

    range_seeds: int
    range_iterations: int
    rates: int
    sweep_seeds: int
    sweep_steps: int
    noise_steps: int
    throughput_seconds: float


EFFORT = {
    "quick": Effort(
        range_seeds=3,
        range_iterations=100,
        rates=7,
        sweep_seeds=2,
        sweep_steps=400,
        noise_steps=300,
        throughput_seconds=0.25,
    ),
    "thorough": Effort(
        range_seeds=5,
        range_iterations=200,
        rates=10,
        sweep_seeds=3,
        sweep_steps=1500,
        noise_steps=1000,
        throughput_seconds=0.5,
    ),
}
# Below these an answer means little, whatever the budget: two seeds (a spread), five rates
# (a band around a best that is not at the edge), 100 updates (past the first transient).
FLOOR = Effort(
    range_seeds=2,
    range_iterations=60,
    rates=5,
    sweep_seeds=2,
    sweep_steps=100,
    noise_steps=100,
    throughput_seconds=0.1,
)
# what a plan gives up first when the budget is short
SHRINK_ORDER = (
    "range_seeds",
    "sweep_steps",
    "noise_steps",
    "rates",
    "range_iterations",
    "sweep_seeds",
    "throughput_seconds",
)
THROUGHPUT_BATCHES = 8  # a typical count of candidate batches
LAW_POINTS = 6  # checkpoints of each sweep run when its rate is carried to a longer training
# rate of stochastic gradient descent on convex losses). On the models here the best constant
NOISE_MEASUREMENTS = 15  # the meter measures about every noise_steps / 15 updates
# The planned training when none is given: 10 epochs at the base batch, the order of a first real
# training of the models and sets lrbs is built for (an MLP on Fashion-MNIST is near its best
# after 10 to 20 epochs, MNIST-1D's natural length is about 20). A rate confirmed at the sweep's
# own few hundred updates is the best rate of a far shorter training: between the sweep's length
# and 4 to 13x longer the best rate fell as t^-0.5 to t^-0.66 (bench/RESULTS.md, 8a). Set yours;
# 0 (or None) asks for the rate of the sweep's own length.
TRAIN_EPOCHS = 10.0
# what a plan raises when its budget has room: a finer grid of rates (a band the grid can
# resolve) and more seeds (a truer noise between them), a step each in turn up to CEILING, then
# a longer sweep, never longer than the planned training (a rate is best for one length)
GROW_ORDER = ("rates", "sweep_seeds", "sweep_steps")
CEILING = {"rates": MAX_RATES, "sweep_seeds": 5}
FILL = 0.9  # the share of the budget a raised plan aims at (its estimate is off by ~10 %)
# Timing an update: the first updates of a process pay one-time costs (imports on the
# optimizer's first step, the allocator's warm-up, the first forward), so a few are run and
# timed apart (the warm-up), then blocks of about BLOCK_SECONDS are timed until their median
# settles (within STABLE_WITHIN when the last third of the blocks came in) or TIMING_SECONDS.
WARMUP_UPDATES = 5
BLOCK_SECONDS = 0.05
MIN_BLOCKS = 8
STABLE_WITHIN = 0.1
TIMING_SECONDS = 2.0
MAX_BLOCKS = 200
# The run that shows a carried rate trains: the card's rate at the card's batch for this many
# times a sweep run's samples (capped by the planned training). A rate carried to a longer
# training is smaller than the swept best, so it needs longer than the sweep to match the best's
# loss; twice the samples is where a rate carried by the square-root rule from a 4x longer
# horizon or less has caught up on these models (bench/horizon.py), and a rate too small to
# train has not.
HOLD_SAMPLES = 2.0
HOLD_EVALUATIONS = 6  # evaluations of that run, so its last third is seen to fall or not


def score_size(data) -> int:
    """The training samples the pipeline's runs re-score at each evaluation: no more than the
    validation set holds. The validation loss decides; the training loss is only drawn beside
    it, and re-scoring 4,096 samples of a slow model (the transformer on text) was three
    quarters of each evaluation."""
    return max(1, min(TrainConfig.train_eval_size, data.n_val))


@dataclass(frozen=True)
class Costs:
    """What the pieces of the pipeline cost on this model, measured before the first step."""

    step: float  # seconds of one update at the base batch
    evaluation: float = 0.0  # seconds of one evaluation: validation set and training subset
    epochs_per_step: float = 0.0  # base batch / training samples
    big_batches: float = 8.5  # the noise meter's two measuring batches, in base batches
    top_batches: float = 8.0  # the largest batch the pipeline considers, in base batches
    checkpoints: int = 0  # extra evaluations of each sweep run (when its rate is carried)
    noise_follows_sweep: bool = False  # the noise meter trains at least as long as a sweep run
    warmup: float = 0.0  # seconds of one-time costs paid before the updates were timed
    timed_updates: int = 0  # the updates `step` is the median of (in blocks)
    stable: bool = True  # the blocks' median settled before the time cap
    load: machine.Load | None = None  # the machine while the updates were timed


def estimated_seconds(e: Effort, c: Costs) -> dict[str, float]:
    """Each step's estimated seconds: the range test's iterations; the sweep's runs, each with
    an evaluation at its end and about one per epoch; the probe (a step at each batch it
    doubles through, up to the largest considered); the throughput's timed runs (at least a
    step at each candidate); the noise meter's updates plus its measurements; the confirming
    run (no longer than a sweep run: the chosen batch reaches the target no later than the
    base batch), and where the rate is carried (`c.checkpoints`), the run at the card's rate
    (HOLD_SAMPLES x a sweep run's samples). Linear in each setting of `e`, which `fit_effort`
    relies on."""
    evaluations = 1 + (c.checkpoints or e.sweep_steps * c.epochs_per_step)
    run = c.step * e.sweep_steps + c.evaluation * evaluations
    hold = (
        HOLD_SAMPLES * c.step * e.sweep_steps + c.evaluation * HOLD_EVALUATIONS
        if c.checkpoints
        else 0.0
    )
    doubling = c.step * 2 * c.top_batches
    return {
        "range": c.step * e.range_seeds * e.range_iterations,
        "sweep": e.sweep_seeds * e.rates * run,
        "probe": doubling,
        "throughput": THROUGHPUT_BATCHES * e.throughput_seconds + doubling,
        "noise": c.step * (noise_steps(e, c) + NOISE_MEASUREMENTS * c.big_batches),
        "confirm": run + hold,
    }


def noise_steps(e: Effort, c: Costs) -> int:
    """The noise meter's updates: its own, or a sweep run's where that is longer and the meter
    follows the sweep (a planned training: B_noise grows as the loss falls, McCandlish et al.
    2018, so measured over the first few hundred updates it is that of a loss far above the
    one the training reaches)."""
    return max(e.noise_steps, e.sweep_steps) if c.noise_follows_sweep else e.noise_steps


def _largest(lo: int, hi: int | None, fits) -> int:
    """The largest whole number in [lo, hi] (hi None: no bound) that `fits`, a test that holds up
    to some value and not beyond; `lo` when none above it fits."""
    if hi is None:
        hi = max(lo, 1)
        while fits(2 * hi) and hi < 10**9:
            hi *= 2
        hi *= 2
    good, bad = lo, hi + 1
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def fit_effort(
    e: Effort,
    costs: Costs,
    seconds: float,
    fixed: frozenset[str] = frozenset(),
    longest: int | None = None,
) -> Effort:
    """`e` fitted to `seconds`. One that does not fit is lowered: each setting in SHRINK_ORDER in
    turn (not those in `fixed`, which the user set) as far as needed, never below FLOOR (one
    whose floors do not fit stays at the floors). One that fits is raised towards FILL of the
    budget (GROW_ORDER, not those in `fixed`): the rates and the seeds up to CEILING, then the
    sweep's updates up to `longest` (the planned training; None: no bound)."""

    def total(x: Effort) -> float:
        return sum(estimated_seconds(x, costs).values())

    if total(e) <= seconds:
        # the grid and the seeds a step each in turn (a balanced sweep), then the sweep's length
        growing = [k for k in CEILING if k not in fixed]
        while growing:
            for name in list(growing):
                more = replace(e, **{name: getattr(e, name) + 1})
                if getattr(more, name) > CEILING[name] or total(more) > FILL * seconds:
                    growing.remove(name)
                else:
                    e = more
        if "sweep_steps" not in fixed and costs.step > 0:
            x = e

            def fits(v: int) -> bool:
                return total(replace(x, sweep_steps=v)) <= FILL * seconds

            e = replace(e, sweep_steps=_largest(e.sweep_steps, longest, fits))
        return e
    for name in SHRINK_ORDER:
        if total(e) <= seconds:
            break
        if name in fixed:
            continue
        floor, now = getattr(FLOOR, name), getattr(e, name)
        for _ in range(2):  # twice: the noise meter's max() bends the line once
            a = total(replace(e, **{name: 0}))
            b = (total(e) - a) / now if now > 0 else 0.0  # the mean slope from 0 to now
            want = (seconds - a) / b if b > 0 else now
            value = min(now, max(floor, want))
            value = value if isinstance(now, float) else int(max(floor, math.floor(value)))
            e = replace(e, **{name: value})
            now = value
    return e


@dataclass(frozen=True, kw_only=True)
class Config:
    budget: str = option(
        "quick",
        choices=BUDGETS,
        help="quick (about 1 min on 2 CPU cores) or thorough (about 5): the seeds, rates "
        "and steps of every step, fitted to this model's measured update time",
    )
    optim: SweptOptim = option(
        factory=SweptOptim, help="the optimizer (the pipeline picks its rate)"
    )
    batch_size: int = option(
        64, low=1, label="base batch", help="the batch of the range test and of the sweep"
    )
    rates: int | None = option(
        None, low=3, high=MAX_RATES, help="rates in the sweep (default: from --budget)"
    )
    seeds: int | None = option(
        None, low=1, high=10, help="seeds of the sweep (default: from --budget)"
    )
    sweep_steps: int | None = option(
        None, low=10, help="updates of each sweep run (default: from --budget)"
    )
    cap_mib: float | None = option(
        None, low=1e-6, label="memory cap", help="memory cap in MiB for the batch probe on a CPU"
    )
    max_batch: int | None = option(
        None, low=1, help="the largest batch to consider (default: half the training set)"
    )
    stacked: str = option("auto", choices=STACKED, help="stack the sweep's rates with torch.func")
    train_epochs: float | None = option(
        TRAIN_EPOCHS,
        low=0,
        label="planned training (epochs)",
        help="how long you will train, in epochs at the base batch: the rate is confirmed for "
        "that length, swept at it when the budget allows, else carried to it from the longest "
        "sweep that fits by the square-root rule, or the sweep's own steeper fall; 0: for the "
        "sweep's own updates",
    )

    def __post_init__(self) -> None:
        check(self)
        if not self.train_epochs:  # 0 and None both ask for the sweep's own length
            object.__setattr__(self, "train_epochs", None)
        OptimSpec(self.optim.name, 1e-3, self.optim.momentum, self.optim.weight_decay)

    @property
    def effort(self) -> Effort:
        """The budget's effort with the settings the user gave (before any time plan)."""
        e = EFFORT[self.budget]
        return replace(
            e,
            rates=self.rates or e.rates,
            sweep_seeds=self.seeds or e.sweep_seeds,
            sweep_steps=self.sweep_steps or e.sweep_steps,
        )

    @property
    def fixed(self) -> frozenset[str]:
        """The effort's settings the user chose, which no time plan lowers."""
        given = {"rates": self.rates, "sweep_seeds": self.seeds, "sweep_steps": self.sweep_steps}
        return frozenset(k for k, v in given.items() if v)

    def horizon(self, n_train: int) -> int | None:
        """The planned training in updates at the base batch (None: none planned)."""
        if self.train_epochs is None:
            return None
        return max(1, math.ceil(self.train_epochs * n_train / self.batch_size))

    def aimed(self, n_train: int | None = None) -> tuple[Effort, frozenset[str]]:
        """The effort before any time plan, and what the plan may not lower: with a planned
        training the sweep aims at its length (one shorter than the floor is swept at exactly
        its length)."""
        e, fixed = self.effort, self.fixed
        horizon = self.horizon(n_train) if n_train else None
        if horizon and not self.sweep_steps:
            e = replace(e, sweep_steps=horizon)
            if horizon <= FLOOR.sweep_steps:
                fixed = fixed | {"sweep_steps"}
        return e, fixed

    def planned(self, costs: Costs, n_train: int | None = None) -> Effort:
        """The aimed effort, fitted to the budget (the noise meter's updates as it will run
        them, `noise_steps`)."""
        aimed, fixed = self.aimed(n_train)
        longest = self.horizon(n_train) if n_train else None
        e = fit_effort(aimed, costs, BUDGET_SECONDS[self.budget], fixed, longest)
        return replace(e, noise_steps=noise_steps(e, costs))

    def top_batch(self, n_train: int) -> int:
        """The largest batch the pipeline considers."""
        return max(1, min(self.max_batch or n_train // 2, n_train))

    def range_test(self, effort: Effort | None = None) -> RangeTestConfig:
        """The range test the pipeline runs (each seed's: `seed` set per run): lr-find's
        defaults at the effort's iterations, the base batch and the optimizer."""
        e = effort or self.effort
        return RangeTestConfig(
            iterations=e.range_iterations,
            batch_size=self.batch_size,
            optimizer=self.optim.name,
            momentum=self.optim.momentum,
            weight_decay=self.optim.weight_decay,
        )

    def optim_at(self, lr: float) -> OptimSpec:
        return optim_at(self.optim, lr)


def time_updates(model: torch.nn.Module, data, tc: TrainConfig) -> Costs:
    """Seconds of one update of `tc` after the one-time costs (see WARMUP_UPDATES): the
    median over blocks of updates, with the warm-up's excess, the updates timed, whether the
    median settled, and the machine's load meanwhile (lrbs.core.machine). Only `step`,
    `warmup`, `timed_updates`, `stable` and `load` of the Costs are filled in."""
    meter = machine.Meter()
    with cpu_threads.recording() as used:
        t0 = time.perf_counter()
        warm_cfg = replace(tc, budget=Budget(steps=WARMUP_UPDATES), log_every=1)

        def warmed(ev) -> str | None:  # a slow model: two updates are warm-up enough
            return "warm" if ev.step >= 2 and ev.elapsed > TIMING_SECONDS / 2 else None

        warm = train(model, data, warm_cfg, stop_rule=warmed).events
        warm_wall = time.perf_counter() - t0
        t = [e.elapsed for e in warm if e.kind == "train"]
        guess = t[-1] - t[-2] if len(t) > 1 else t[-1]
        block = max(1, min(500, math.ceil(BLOCK_SECONDS / max(guess, 1e-7))))
        ends: list[tuple[int, float]] = [(0, 0.0)]

        def settled(ev) -> str | None:
            ends.append((ev.step, ev.elapsed))
            per = per_update(ends)
            n = len(per)
            if n >= MIN_BLOCKS:
                now, before = np.median(per), np.median(per[: n - n // 3])
                if abs(now - before) <= STABLE_WITHIN * now:
                    return "stable"
            return "capped" if ev.elapsed >= TIMING_SECONDS and n >= 2 else None

        timed_cfg = replace(tc, budget=Budget(steps=block * MAX_BLOCKS), log_every=block)
        status = train(model, data, timed_cfg, stop_rule=settled).status
    per = per_update(ends)
    step = float(np.median(per)) if len(per) else guess
    return Costs(
        step=step,
        warmup=max(0.0, warm_wall - len(t) * step),
        timed_updates=ends[-1][0],
        stable=status == "stable",
        load=meter.finish(threads=used[-1] if used else None, timed=True),
    )


def per_update(ends: list[tuple[int, float]]) -> np.ndarray:
    """Seconds per update of each block, from (updates, elapsed) at the end of each."""
    steps, secs = np.diff(np.array(ends, float), axis=0).T if len(ends) > 1 else ([], [])
    steps, secs = np.asarray(steps), np.asarray(secs)
    return secs[steps > 0] / steps[steps > 0]


def measure_costs(setup: Setup, config: Config, data) -> Costs:
    """What an update of this model at the base batch costs (`time_updates`, at a rate too
    small to move anything), what one evaluation costs, and the sizes that scale the other
    steps."""
    tc = TrainConfig(
        batch_size=config.batch_size,
        budget=Budget(steps=1),
        optim=config.optim_at(1e-6),
        seed=setup.seed,
        eval_each_epoch=False,
        eval_at_end=False,
        divergence_factor=None,
    )
    model = setup.fresh_model(data)
    timing = time_updates(model, data, tc)

    def evaluation() -> float:
        t0 = time.perf_counter()
        evaluate_data(model, data)
        evaluate_data(model, data, "train", torch.arange(min(score_size(data), data.n_train)))
        return time.perf_counter() - t0

    first = evaluation()  # a process's first evaluation pays one-time costs: time a second
    big, small = noise_sizes(data.n_train)
    planned = config.train_epochs is not None
    return replace(
        timing,
        evaluation=min(first, evaluation()) if first < 1.0 else first,
        epochs_per_step=config.batch_size / data.n_train,
        big_batches=(big + small) / config.batch_size,
        top_batches=config.top_batch(data.n_train) / config.batch_size,
        checkpoints=LAW_POINTS if planned else 0,
        noise_follows_sweep=planned,
    )


def plan_budget(setup: Setup, config: Config, data) -> dict:
    """The budget's plan for this model: the measured costs (and how they were measured),
    what each step gets, the estimate."""
    costs = measure_costs(setup, config, data)
    e = config.planned(costs, data.n_train)
    aimed = config.aimed(data.n_train)[0]
    estimate = sum(estimated_seconds(e, costs).values())
    limit = BUDGET_SECONDS[config.budget]
    load = costs.load
    return {
        "budget": config.budget,
        "budget_seconds": limit,
        "seconds_per_step": costs.step,
        "warmup_seconds": costs.warmup,
        "timed_updates": costs.timed_updates,
        "timing_stable": costs.stable,
        "evaluation_seconds": costs.evaluation,
        "estimated_seconds": estimate,
        "shrunk": any(getattr(e, k) < getattr(aimed, k) for k in SHRINK_ORDER),
        "grown": any(getattr(e, k) > getattr(aimed, k) for k in GROW_ORDER),
        "horizon_steps": config.horizon(data.n_train),
        "train_epochs": config.train_epochs,
        "over_budget": estimate > limit * 1.05,
        "load": load.as_dict() if load else None,
        "machine_busy": bool(load and load.busy),
        **asdict(e),
    }
