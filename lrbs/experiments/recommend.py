"""Recommend: one learning rate and one batch size, with the evidence and its confidence.

The pipeline composes the experiments lrbs already has, each step streaming on its own
channels ("<step>/<channel>") so that the Result, the page and the run history all rebuild
every step from the same rows:

1. range      the range test over several seeds (lr_finder): each rule's suggestion, its spread;
2. sweep      a confirmation sweep at equal budget (sweeps, stacked where it pays) over rates
              spanning the suggestions and a decade around them, repeated over seeds: the
              confirmed best rate and the band of rates within noise of it; the rules audited;
3. probe      the largest batch that fits (bs_probe), with its safety margin;
4. throughput seconds per step at each candidate batch (the series runner);
5. noise      B_simple at the confirmed rate (noise_scale's meter);
6. confirm    the batch that minimises the estimated time to the target loss, the rate rescaled
              to it (linear for SGD up to B_crit, square root for Adam) and capped by the
              stability the range test and the sweep measured (cap_rate), one short run there.

A budget is a time: before the first step the pipeline times this model's updates at the base
batch (after the one-time costs of a process's first updates, `time_updates`) and plans each
step's seeds, rates and updates to it (`fit_effort`): lowered to fit, never below the floor a
meaningful answer needs, or raised to use it; the plan is a row of its own, on the card.

Steps to the target follow McCandlish et al. (2018): S(B) = S_min (1 + B_noise / B), with
S_min from the steps the best sweep run took at the base batch; time = S(B) x seconds per step.
A stop keeps every finished step; the card says which are missing.

The best rate depends on how long one trains (bench/RESULTS.md, section 8): for the planned
training (`train_epochs`, TRAIN_EPOCHS unless given; 0 asks for the sweep's own length) the
sweep trains each rate for that length when the budget allows it; when it does not, the sweep
trains as long as it can, scores every run at LAW_POINTS common checkpoints and carries the
confirmed rate to the planned length by the square-root rule (HORIZON_EXPONENT), or by the fall
the checkpoints measured where it is steeper (horizon_exponent).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from lrbs.core import machine
from lrbs.core import threads as cpu_threads
from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.device import describe
from lrbs.core.errors import require
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, evaluate_data, train
from lrbs.core.setup import Setup
from lrbs.experiments import bs_probe, lr_finder, noise_scale, scaling, sweeps
from lrbs.experiments.sweeps import SweptOptim, load_data
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "recommend"
STEPS = ("range", "sweep", "probe", "throughput", "noise", "confirm")
STEP_TITLES = {
    "range": "Range test",
    "sweep": "Confirmation sweep",
    "probe": "Largest batch that fits",
    "throughput": "Throughput per batch",
    "noise": "Gradient noise scale",
    "confirm": "Short run at the chosen batch",
}
# share of the pipeline's progress bar per step (roughly its share of the time)
WEIGHTS = {
    "range": 0.08,
    "sweep": 0.55,
    "probe": 0.02,
    "throughput": 0.08,
    "noise": 0.12,
    "confirm": 0.15,
}
BUDGETS = ("quick", "thorough")
BUDGET_SECONDS = {"quick": 60.0, "thorough": 300.0}  # on 2 CPU cores, probe and all
SCALING_RULE = {"sgd": "linear", "momentum": "linear", "adam": "sqrt", "adamw": "sqrt"}


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
# lr* ~ t^(-1/2): the constant step that is best for a horizon of t noisy steps (the minimax
# rate of stochastic gradient descent on convex losses). On the models here the best constant
# rate measured t^-0.60 to t^-0.66 between the sweep's length and 4-13x longer (README).
HORIZON_EXPONENT = -0.5
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
CEILING = {"rates": sweeps.MAX_RATES, "sweep_seeds": 5}
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
    base batch). Linear in each setting of `e`, which `fit_effort` relies on."""
    evaluations = 1 + (c.checkpoints or e.sweep_steps * c.epochs_per_step)
    run = c.step * e.sweep_steps + c.evaluation * evaluations
    doubling = c.step * 2 * c.top_batches
    return {
        "range": c.step * e.range_seeds * e.range_iterations,
        "sweep": e.sweep_seeds * e.rates * run,
        "probe": doubling,
        "throughput": THROUGHPUT_BATCHES * e.throughput_seconds + doubling,
        "noise": c.step * (noise_steps(e, c) + NOISE_MEASUREMENTS * c.big_batches),
        "confirm": run,
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
        None, low=3, high=sweeps.MAX_RATES, help="rates in the sweep (default: from --budget)"
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
    stacked: str = option(
        "auto", choices=sweeps.STACKED, help="stack the sweep's rates with torch.func"
    )
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

    def range_config(self, effort: Effort | None = None) -> lr_finder.Config:
        e = effort or self.effort
        return lr_finder.Config(
            iterations=e.range_iterations,
            batch_size=self.batch_size,
            optim=self.optim,
            seeds=e.range_seeds,
        )

    def optim_at(self, lr: float) -> OptimSpec:
        return OptimSpec(self.optim.name, lr, self.optim.momentum, self.optim.weight_decay)


# ---------------------------------------------------------------------------- pure rules


def sweep_grid(suggested: list[float], n: int) -> tuple[float, ...]:
    """`n` rates, evenly spaced in log, from half a decade below the lowest suggestion to half
    a decade above the highest (at least a decade in all); 3 significant digits."""
    vals = [v for v in suggested if v and math.isfinite(v) and v > 0]
    if not vals:
        vals = [1e-3, 1e-1]
    lo, hi = min(vals) / math.sqrt(10), min(max(vals) * math.sqrt(10), 1e6)
    grid = sorted({float(f"{v:.3g}") for v in np.geomspace(lo, hi, n)})
    return tuple(grid)


def loss_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per rate, over the seeds: mean and standard deviation of the final validation loss
    (a diverged run counts as infinite), how many seeds ran and how many diverged."""
    cols = ["lr", "mean", "std", "seeds", "diverged"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    d = runs.copy()
    loss = pd.to_numeric(d.val_loss, errors="coerce").astype(float)
    bad = (d.status == "diverged") | ~np.isfinite(loss)
    d["loss"] = loss.where(~bad, np.inf)
    d["bad"] = bad
    g = d.groupby("lr", sort=True)
    out = pd.DataFrame(
        {
            "mean": g.loss.mean(),
            "std": g.loss.std(ddof=1).fillna(0.0),
            "seeds": g.loss.size(),
            "diverged": g.bad.sum().astype(int),
        }
    ).reset_index()
    out.loc[~np.isfinite(out["mean"]), "std"] = np.nan
    return out[cols]


@dataclass(frozen=True)
class Confirmed:
    """The sweep's verdict: the best rate, its loss, the noise between seeds, and the band of
    neighbouring rates whose mean loss is within that noise of the best."""

    lr: float
    loss: float
    noise: float
    band_lo: float
    band_hi: float
    at_edge: bool  # the best is the lowest or highest rate swept

    @property
    def band_width(self) -> float:
        return self.band_hi / self.band_lo


def confirm(table: pd.DataFrame) -> Confirmed | None:
    """The best rate of a `loss_table` (lowest mean) and its band: the unbroken run of rates
    around it whose mean exceeds the best by less than the noise, sqrt(std_best^2 +
    std_rate^2) (zero with a single seed: then the band is the best rate alone)."""
    if table.empty or not np.isfinite(table["mean"]).any():
        return None
    t = table.sort_values("lr", ignore_index=True)
    means, stds = t["mean"].to_numpy(float), t["std"].fillna(0.0).to_numpy(float)
    i = int(np.nanargmin(np.where(np.isfinite(means), means, np.inf)))

    def within(j: int) -> bool:
        return bool(np.isfinite(means[j])) and means[j] - means[i] <= math.hypot(stds[i], stds[j])

    lo = i
    while lo > 0 and within(lo - 1):
        lo -= 1
    hi = i
    while hi < len(t) - 1 and within(hi + 1):
        hi += 1
    return Confirmed(
        lr=float(t.lr[i]),
        loss=float(means[i]),
        noise=float(stds[i]),
        band_lo=float(t.lr[lo]),
        band_hi=float(t.lr[hi]),
        at_edge=len(t) > 1 and i in (0, len(t) - 1),
    )


def loss_at(table: pd.DataFrame, lr: float) -> float:
    """The sweep's mean loss at `lr`, interpolated in log(lr) between the rates swept; NaN
    outside them or next to a diverged rate."""
    t = table.sort_values("lr")
    x, y = np.log(t.lr.to_numpy(float)), t["mean"].to_numpy(float)
    if len(x) == 0 or not (x[0] - 1e-9 <= math.log(lr) <= x[-1] + 1e-9):
        return math.nan
    j = int(np.clip(np.searchsorted(x, math.log(lr)), 1, max(1, len(x) - 1)))
    if len(x) == 1:
        return float(y[0])
    a, b = y[j - 1], y[j]
    if not (np.isfinite(a) and np.isfinite(b)):
        return math.nan
    return float(np.interp(math.log(lr), x[j - 1 : j + 1], [a, b]))


def refined_best(lrs, losses) -> float:
    """The rate of lowest loss, refined between the grid's rates: the vertex of the parabola
    through the lowest point and its two neighbours in log(lr), kept between those neighbours
    (the grid's best itself at an edge, or where the three do not curve upwards)."""
    lrs = np.asarray(lrs, float)
    x, y = np.log(lrs), np.asarray(losses, float)
    y = np.where(np.isfinite(y), y, np.inf)
    i = int(np.argmin(y))
    if not np.isfinite(y[i]) or i in (0, len(x) - 1) or not np.isfinite(y[[i - 1, i + 1]]).all():
        return float(lrs[i])
    a, b, _ = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    if a <= 0:
        return float(lrs[i])
    return float(np.exp(np.clip(-b / (2 * a), x[i - 1], x[i + 1])))


def horizon_exponent(measured: float | None) -> float:
    """The exponent a rate is carried by: the square-root rule's, or the one measured over the
    sweep's own checkpoints where the best rate fell faster than that (down to -1, rate x
    updates constant: the regime where a longer training overfits unless its rate falls in
    proportion, and which a longer training only goes deeper into). A shallower measured fall
    is no evidence that the rate holds: early on, stability caps the best rate."""
    if measured is None or not math.isfinite(measured):
        return HORIZON_EXPONENT
    return float(max(-1.0, min(HORIZON_EXPONENT, measured)))


def carry_factor(swept: int, planned: int, exponent: float = HORIZON_EXPONENT) -> float:
    """What a rate confirmed over `swept` updates is multiplied by for a training of `planned`:
    (planned / swept)^exponent."""
    return float((planned / swept) ** exponent)


def checkpoint_bests(curves: pd.DataFrame, swept: int) -> pd.DataFrame:
    """The evidence for the horizon rule from every run's checkpoints (columns lr, step,
    val_loss, one row per seed and checkpoint): at each checkpoint from a quarter of the sweep
    on (past the first transient), the refined best rate of the mean loss over seeds (a rate
    that diverged, or has no score there, counts as infinite)."""
    points = []
    if not curves.empty:
        d = curves[curves.step >= swept / 4].copy()
        d["val_loss"] = pd.to_numeric(d.val_loss, errors="coerce").astype(float)
        lrs = np.sort(curves.lr.unique())
        for step, part in d.groupby("step"):
            mean = part.groupby("lr").val_loss.mean().reindex(lrs)
            mean = mean.where(np.isfinite(mean), np.inf)
            if np.isfinite(mean).any():
                points.append({"step": int(step), "lr": refined_best(lrs, mean.to_numpy())})
    return pd.DataFrame(points, columns=["step", "lr"])


def measured_exponent(points: pd.DataFrame) -> float | None:
    """The slope of log(best rate) on log(updates) over the checkpoints (None with fewer than
    three): how the best rate moved inside the sweep, shown beside the rule."""
    if len(points) < 3 or points.step.nunique() < 3:
        return None
    return float(np.polyfit(np.log(points.step), np.log(points.lr), 1)[0])


AUDIT_COLUMNS = [
    "rule",
    "title",
    "lr",
    "seed_spread",
    "factor",
    "times_off",
    "in_band",
    "loss",
    "loss_cost",
    "closest",
]


def audit(spread: pd.DataFrame, names: dict[str, str], table: pd.DataFrame, best: Confirmed):
    """Each range-test rule against the confirmed best: its median rate, how far it moves over
    seeds (max/min), its factor off the best (rate / best), how many times off that is either
    way, whether it lies in the band, and the loss the sweep gives at it (interpolated) and
    what that costs over the best. The rule nearest the best (fewest times off) is marked."""
    rows = []
    for _, s in spread.iterrows():
        lr = float(s.median_lr)
        loss = loss_at(table, lr)
        factor = lr / best.lr
        rows.append(
            {
                "rule": names.get(s.suggestion, s.suggestion),
                "title": s.suggestion,
                "lr": lr,
                "seed_spread": float(s.max_over_min),
                "factor": factor,
                "times_off": max(factor, 1 / factor),
                "in_band": bool(best.band_lo * (1 - 1e-9) <= lr <= best.band_hi * (1 + 1e-9)),
                "loss": loss,
                "loss_cost": loss - best.loss if math.isfinite(loss) else math.nan,
            }
        )
    out = pd.DataFrame(rows, columns=AUDIT_COLUMNS[:-1])
    out["closest"] = False
    if not out.empty:
        out.loc[out.times_off.idxmin(), "closest"] = True
    return out


def candidate_batches(base: int, largest: int, n_train: int, max_batch: int | None = None):
    """Powers of two from 16 (or the base batch, if smaller) up to the largest safe batch,
    `max_batch` and half the training set, with the base batch itself."""
    top = min(largest, max_batch or n_train // 2, n_train)
    top = max(top, 1)
    out = {min(base, top)}
    b = 16 if base >= 16 else 1
    while b <= top:
        out.add(b)
        b *= 2
    return tuple(sorted(x for x in out if 1 <= x <= n_train))


def batch_choice(
    batches,
    seconds_per_step,
    b_noise: float,
    base_batch: int,
    base_steps: float,
    shortfall=None,
) -> pd.DataFrame:
    """Per batch B: the steps to the target, S(B) = S_min (1 + B_noise / B) with S_min chosen so
    that the base batch takes `base_steps`, the seconds that costs at the measured seconds
    per step, and the fastest marked `best`. S(B) assumes the rate rescaled to B; where the
    stability cap holds it below the rule's by a factor (`shortfall`: rule / capped, per
    batch), the steps grow by that factor (steps ~ 1 / lr while the rule holds)."""
    b = np.asarray(batches, float)
    sps = np.asarray(seconds_per_step, float)
    noise = max(float(b_noise), 0.0) if math.isfinite(b_noise) else 0.0
    s_min = base_steps / (1 + noise / base_batch)
    steps = s_min * (1 + noise / b)
    if shortfall is not None:
        steps = steps * np.asarray(shortfall, float)
    seconds = steps * sps
    out = pd.DataFrame(
        {
            "batch": b.astype(int),
            "seconds_per_step": sps,
            "samples_per_s": b / sps,
            "steps_to_target": steps,
            "seconds_to_target": seconds,
        }
    )
    out["best"] = False
    ok = np.isfinite(seconds)
    if ok.any():
        out.loc[int(np.argmin(np.where(ok, seconds, np.inf))), "best"] = True
    return out


def optimizer_family(setup: Setup, data, default: str) -> str:
    """The optimizer the runs really use, as a scaling rule knows it: a workload's own
    optimizer() (AdamW, say) decides the rule, not the --optimizer default."""
    if data.task.optimizer is None:
        return default
    opt = data.task.build_optimizer(setup.fresh_model(data).parameters(), OptimSpec(default))
    if isinstance(opt, torch.optim.AdamW):
        return "adamw"
    if isinstance(opt, torch.optim.Adam) or "betas" in opt.defaults:
        return "adam"
    return "momentum" if opt.defaults.get("momentum") else "sgd"


def rescale(lr: float, base_batch: int, batch: int, optimizer: str, b_crit: float) -> float:
    """The rate for `batch`, from `lr` at `base_batch`: linear for SGD (with or without
    momentum) and square root for Adam/AdamW (Malladi et al. 2022), growing only up to the
    critical batch (beyond it a larger batch brings no larger rate)."""
    target = batch
    if batch > base_batch and math.isfinite(b_crit) and b_crit > 0:
        target = min(batch, max(base_batch, b_crit))
    return scaling.scaled_lr(lr, base_batch, target, SCALING_RULE[optimizer])


@dataclass(frozen=True)
class Stability:
    """What the pipeline measured about stability, all of it at the base batch: the range
    test's maximum usable rate (median over seeds), the smallest swept rate that diverged in
    any seed, and the largest swept rate below it that trained in every seed. (The pipeline
    measures no sharpness; were it to, 2/lambda would join the caps.)"""

    max_usable: float | None = None
    diverged: float | None = None
    stable: float | None = None


def stability_of(table: pd.DataFrame, max_usable: float | None) -> Stability:
    """The sweep's stability edge from a `loss_table`, beside the range test's limit."""
    ok = max_usable if max_usable and math.isfinite(max_usable) and max_usable > 0 else None
    if table.empty:
        return Stability(ok)
    bad = table[table.diverged > 0]
    if bad.empty:
        return Stability(ok)
    first = float(bad.lr.min())
    below = table[(table.lr < first) & (table.diverged == 0) & np.isfinite(table["mean"])]
    return Stability(ok, first, float(below.lr.max()) if not below.empty else None)


CAP_NAMES = {
    "sweep": "the largest swept rate that trained in every seed",
    "range_test": "the range test's maximum usable rate",
    "swept": "the rate the sweep confirmed",
}


@dataclass(frozen=True, kw_only=True)
class Capped:
    """A rate carried by a rule, and what the stability measured let of it."""

    rule_lr: float  # the rules' rate (batch rescale x horizon carry)
    lr: float  # min(rule_lr, cap)
    cap: float
    caps: dict  # each cap's value at this batch
    capped_by: str | None  # the cap that decided, when it did (a CAP_NAMES key)


def cap_rate(rule_lr: float, swept_lr: float, scale: float, s: Stability) -> Capped:
    """The stability cap on a rate carried from the base batch (where `swept_lr` was confirmed)
    to a batch the batch rule scales by `scale` (1 at the base batch), and to a training length.

    The scaling rules hold only below the stability limit (Goyal et al. 2017 see the linear rule
    break at large rates); the limit is set by the loss's curvature (2/lambda for gradient
    descent), which a larger batch approaches but never passes, and the pipeline measured it at
    the base batch only. So the carried rate may not exceed:
    - "sweep": the largest swept rate that trained in every seed below the smallest that
      diverged, unscaled: no rate above it was seen to train at any batch (none where no swept
      rate diverged);
    - "range_test": the range test's maximum usable rate scaled by the same batch rule (the rule
      moves the range test's limit as it moves the rate: a rescale keeps the rate's distance
      from it; it binds where the sweep confirmed a rate beyond the range test's limit);
    - but the cap never falls below "swept": the confirmed rate (scaled down to a smaller batch),
      which the sweep trained in every seed.
    A rate carried to a longer training only falls (horizon_exponent < 0): the caps bind on a
    rescale to a larger batch."""
    caps = {}
    if s.stable is not None:
        caps["sweep"] = s.stable
    if s.max_usable is not None:
        caps["range_test"] = s.max_usable * scale
    floor = swept_lr * min(1.0, scale)
    low = min(caps.values(), default=math.inf)
    cap = max(low, floor)
    caps["swept"] = floor
    if rule_lr <= cap * (1 + 1e-9):
        return Capped(rule_lr=rule_lr, lr=rule_lr, cap=cap, caps=caps, capped_by=None)
    by = "swept" if floor > low else min((k for k in caps if k != "swept"), key=caps.get)
    return Capped(rule_lr=rule_lr, lr=cap, cap=cap, caps=caps, capped_by=by)


def snippet(card: dict) -> str:
    """PyTorch code using the card's optimizer, rate, batch and schedule."""
    name, lr, batch = card["optimizer"], card["lr"], card["batch"]
    steps, peak = card["expected_steps"], card["schedule"]["peak_lr"]
    if name in ("sgd", "momentum"):
        m = f", momentum={card['momentum']:g}" if name == "momentum" else ""
        opt = f"torch.optim.SGD(model.parameters(), lr={lr:.3g}{m})"
        sched = (
            f"torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr={peak:.3g}, "
            f"total_steps={steps})"
        )
    else:
        cls = "Adam" if name == "adam" else "AdamW"
        warm = card["schedule"]["warmup_steps"]
        opt = f"torch.optim.{cls}(model.parameters(), lr={peak:.3g})"
        sched = (
            "torch.optim.lr_scheduler.SequentialLR(optimizer, [\n"
            f"    torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, total_iters={warm}),\n"
            "    torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, "
            f"T_max={max(1, steps - warm)}),\n], milestones=[{warm}])"
        )
    return (
        "import torch\n\n"
        f"loader = torch.utils.data.DataLoader(train_set, batch_size={batch}, shuffle=True)\n"
        f"optimizer = {opt}\n"
        f"scheduler = {sched}\n"
        f"# {steps} updates: call scheduler.step() after every optimizer.step()\n"
    )


# ---------------------------------------------------------------------------- the pipeline


class Stage(Sink):
    """One step's view of the pipeline's sink: its channels prefixed with the step's name,
    extra columns added to each row, its progress mapped into [lo, hi] of the pipeline's."""

    def __init__(self, sink: Sink, step: str, lo: float, hi: float, columns: dict | None = None):
        self.sink, self.step, self.lo, self.hi = sink, step, lo, hi
        self.columns = columns or {}

    def emit(self, channel: str, row: dict) -> None:
        self.sink.emit(f"{self.step}/{channel}", row | self.columns)

    def progress(self, fraction: float, text: str = "") -> None:
        f = max(0.0, min(1.0, fraction))
        self.sink.progress(self.lo + (self.hi - self.lo) * f, f"{self.step}: {text}")


def _spans() -> dict[str, tuple[float, float]]:
    out, at = {}, 0.0
    for name in STEPS:
        out[name] = (at, at + WEIGHTS[name])
        at += WEIGHTS[name]
    return out


SPANS = _spans()


def step_progress(rows: dict, fraction: float) -> tuple[float, str]:
    """The progress as the steps count it, so the bar and its text agree: k steps ended (their
    "steps" rows) and the share of the step under way (the pipeline's `fraction`, which each
    step's weight maps into its span, SPANS) give the bar (k + share) / len(STEPS)."""
    k, n = len(rows.get("steps", [])), len(STEPS)
    if k >= n:
        return 1.0, f"all {n} steps done"
    lo, hi = SPANS[STEPS[k]]
    share = min(1.0, max(0.0, (fraction - lo) / (hi - lo)))
    title = STEP_TITLES[STEPS[k]].lower()
    return (k + share) / n, f"{k} of {n} steps done; now step {k + 1}, {title} ({share:.0%})"


class _Pipeline:
    def __init__(self, setup, config, data, sink, rows, stop) -> None:
        self.setup, self.config, self.data = setup, config, data
        self.sink, self.rows, self.stop = sink, rows, stop

    def stage(self, step: str, columns: dict | None = None, part=(0.0, 1.0)) -> Stage:
        lo, hi = SPANS[step]
        a, b = lo + (hi - lo) * part[0], lo + (hi - lo) * part[1]
        return Stage(self.sink, step, a, b, columns=columns)

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def now(self) -> Result:
        return Result(self.config, self.rows.rows)

    @property
    def effort(self) -> Effort:
        return self.now().effort

    def range(self) -> str:
        cfg = self.config.range_config(self.effort)
        return lr_finder.run(self.setup, cfg, self.stage("range"), self.stop).status

    def sweep(self) -> str:
        now = self.now()
        e = now.effort
        grid = sweep_grid(list(now.suggestions().values()), e.rates)
        every = max(1, e.sweep_steps // LAW_POINTS) if now.carried else None
        for k in range(e.sweep_seeds):
            seed = self.setup.seed + k
            cfg = sweeps.Config(
                lrs=grid,
                budget=Budget(steps=e.sweep_steps),
                batch_size=self.config.batch_size,
                optim=self.config.optim,
                seed=seed,
                stacked=self.config.stacked,
                eval_every=every,
            )
            part = (k / e.sweep_seeds, (k + 1) / e.sweep_seeds)
            sweeps.run(self.setup, cfg, self.stage("sweep", {"seed": seed}, part), self.stop)
            if self.stopped:
                return "stopped"
        if self.now().confirmed is None:
            return "failed: every rate diverged"
        return "finished"

    def probe(self) -> str:
        stage, data = self.stage("probe"), self.data
        top = self.config.top_batch(data.n_train)
        stage.emit("info", {"n_train": data.n_train, "device": data.device.type, "upper": top})
        fits = bs_probe.make_fits(
            self.setup.fresh_model(data),
            data,
            bs_probe.Config(cap_mib=self.config.cap_mib).cap_bytes,
            bs_probe.OPTIMIZER_STATES[self.config.optim.name],
        )
        total = bs_probe.expected_tries(top)
        tried = []

        def logged(b: int) -> bool:
            ok = bool(fits(b))
            tried.append(b)
            stage.emit("tried", {"batch": b, "fits": ok})
            stage.progress(min(0.99, len(tried) / total), f"B={b}")
            return ok

        r = bs_probe.largest_batch(logged, top, stop=self.stop)
        return "stopped" if r.stopped else "finished"

    def throughput(self) -> str:
        now, e = self.now(), self.effort
        base, data = self.config.batch_size, self.data
        batches = candidate_batches(base, now.probe.safe, data.n_train, self.config.max_batch)
        lr = now.confirmed.lr

        def prepare(name: str) -> Planned:
            b = int(name.removeprefix("B="))
            tc = TrainConfig(
                batch_size=b,
                budget=Budget(steps=200, seconds=e.throughput_seconds),
                optim=self.config.optim_at(lr * min(1.0, base / b)),
                seed=self.setup.seed,
                log_every=5,
                eval_each_epoch=False,
                eval_at_end=False,
                divergence_factor=None,
            )
            return Planned(self.setup.fresh_model(data), tc, columns={"batch": b})

        run_series([f"B={b}" for b in batches], prepare, data, self.stage("throughput"), self.stop)
        return "stopped" if self.stopped else "finished"

    def noise(self) -> str:
        now, e, data = self.now(), self.effort, self.data
        cfg = noise_config(self.config, self.setup, data.n_train, now.confirmed.lr, e)
        stage = self.stage("noise")
        meter = noise_scale.NoiseMeter(self.setup.fresh_model(data), data, cfg, stage)

        def prepare(name: str) -> Planned:
            tc = TrainConfig(
                batch_size=cfg.batch_size,
                budget=Budget(steps=cfg.steps),
                optim=cfg.optim,
                seed=cfg.seed,
                log_every=min(cfg.every, 10),
                eval_each_epoch=False,
                eval_at_end=False,
            )
            return Planned(meter.model, tc, {"stop_rule": meter.observe}, {"phase": "measure"})

        run_series([noise_scale.MEASURE], prepare, data, stage, self.stop)
        if self.stopped:
            return "stopped"
        if not math.isfinite(self.now().b_simple):
            return "failed: no noise scale was measured"
        return "finished"

    def confirm(self) -> str:
        plan = self.now().plan(swept=True)
        base = self.config.batch_size
        steps = int(min(math.ceil(plan["expected_steps"]), 10 * self.effort.sweep_steps))

        def prepare(name: str) -> Planned:
            tc = TrainConfig(
                batch_size=plan["batch"],
                budget=Budget(steps=max(1, steps)),
                optim=self.config.optim_at(plan["lr"]),
                seed=self.setup.seed,
                log_every=10,
                min_eval_seconds=0.25,
            )
            columns = {
                "batch": plan["batch"],
                "lr": plan["lr"],
                "base_batch": base,
                "expected_steps": plan["expected_steps"],
                "target_loss": plan["target_loss"],
            }
            return Planned(self.setup.fresh_model(self.data), tc, columns=columns)

        run_series(["confirm"], prepare, self.data, self.stage("confirm"), self.stop)
        return "stopped" if self.stopped else "finished"


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
        evaluate_data(model, data, "train", torch.arange(min(tc.train_eval_size, data.n_train)))
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


def noise_sizes(n_train: int) -> tuple[int, int]:
    """The noise meter's big and small batch."""
    big = min(512, n_train)
    return big, min(32, max(1, big // 4))


def noise_config(
    config: Config, setup: Setup, n_train: int, lr: float, e: Effort
) -> noise_scale.Config:
    big, small = noise_sizes(n_train)
    return noise_scale.Config(
        batch_small=small,
        batch_big=big,
        every=max(5, e.noise_steps // 15),
        batch_size=min(config.batch_size, n_train),
        optim=config.optim_at(lr),
        steps=e.noise_steps,
        seed=setup.seed,
    )


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Every step in turn; a "steps" row as each ends (its status and seconds). A stop ends
    the pipeline after the step under way; a step that cannot go on (every rate diverged)
    ends it too, keeping what came before."""
    rows, sink = collect(sink)
    data: TensorData = load_data(setup)
    require(
        config.batch_size <= data.n_train,
        f"the base batch ({config.batch_size}) is larger than the training set ({data.n_train})",
    )
    sink.emit(
        "info",
        {
            "dataset": setup.data_name,
            "model": setup.model_name,
            "device": describe(data.device).name,
            "n_train": data.n_train,
            "optimizer": optimizer_family(setup, data, config.optim.name),
        },
    )
    sink.progress(0.0, "timing this model's updates")
    sink.emit("plan", plan_budget(setup, config, data))
    pipeline = _Pipeline(setup, config, data=data, sink=sink, rows=rows, stop=stop)
    status = "finished"
    for step in STEPS:
        t0 = time.perf_counter()
        outcome = getattr(pipeline, step)()
        sink.emit("steps", {"step": step, "status": outcome, "seconds": time.perf_counter() - t0})
        sink.progress(SPANS[step][1], f"{step}: {outcome}")
        if outcome == "stopped" or pipeline.stopped:
            status = "stopped"
            break
        if outcome != "finished":
            break
    result = Result(config, rows.rows, status)
    return Result(config, rows.rows, status, result.explain())


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Result(experiment.Result):
    """Every step rebuilt from its channels; the card from the finished steps."""

    def sub(self, step: str) -> dict[str, list[dict]]:
        prefix = step + "/"
        return {k[len(prefix) :]: v for k, v in self.rows.items() if k.startswith(prefix)}

    @cached_property
    def step_status(self) -> dict[str, str]:
        return {r["step"]: r["status"] for r in self.rows.get("steps", [])}

    @cached_property
    def step_seconds(self) -> dict[str, float]:
        return {r["step"]: float(r["seconds"] or 0.0) for r in self.rows.get("steps", [])}

    def done(self, step: str) -> bool:
        return self.step_status.get(step) == "finished"

    @property
    def missing(self) -> list[str]:
        return [s for s in STEPS if not self.done(s)]

    @property
    def info(self) -> dict:
        return (self.rows.get("info") or [{}])[0]

    @property
    def budget_plan(self) -> dict:
        """The budget's plan (a row written before the first step; {} for older runs)."""
        return (self.rows.get("plan") or [{}])[0]

    def plan_text(self) -> str:
        """The budget's plan in a sentence: the measured update, what each step got."""
        p, e = self.budget_plan, self.effort
        if not p:
            return ""
        timed = ""
        if p.get("timed_updates"):
            timed = (
                f" (the median of {p['timed_updates']:,} timed after "
                f"{p.get('warmup_seconds') or 0.0:.2g} s of one-time warm-up)"
            )
        head = (
            f"{p['budget']} budget ({p['budget_seconds']:.0f} s): one update at batch "
            f"{self.config.batch_size} took {p['seconds_per_step'] * 1e3:.3g} ms{timed}, so "
            f"range test {e.range_seeds} seeds x {e.range_iterations} steps, sweep {e.rates} "
            f"rates x {e.sweep_seeds} seeds x {e.sweep_steps} updates, noise meter "
            f"{e.noise_steps} updates; estimated {p['estimated_seconds']:.0f} s"
        )
        if p.get("over_budget"):
            head += " (over the budget: these are the floors below which the answer means little)"
        elif p.get("shrunk"):
            head += " (shrunk to fit)"
        elif p.get("grown"):
            head += " (raised to use the budget)"
        load = p.get("load") or {}
        if p.get("machine_busy"):
            head += (
                f"; the machine was busy while it timed (other processes used "
                f"{load.get('other_cpu', 0.0):.1f} of its {load.get('cores')} cores): "
                "the timing, and so the plan, may be off"
            )
        return head

    @property
    def effort(self) -> Effort:
        """What the pipeline ran: its plan's effort, or the budget's for a run without one."""
        p = self.budget_plan
        if not p:
            return self.config.effort
        return Effort(**{k: p[k] for k in Effort.__dataclass_fields__})

    @property
    def horizon_steps(self) -> int:
        """The planned training in updates at the base batch: the sweep's own for none."""
        return int(self.budget_plan.get("horizon_steps") or self.effort.sweep_steps)

    @property
    def carried(self) -> bool:
        """Whether the rate is carried from a shorter sweep to the planned training."""
        return self.horizon_steps > self.effort.sweep_steps

    @property
    def optimizer(self) -> str:
        """The optimizer the runs used (a workload's own, where it brings one)."""
        return self.info.get("optimizer") or self.config.optim.name

    # ------------------------------------------------------------------ 1. the rate

    @cached_property
    def range_result(self) -> lr_finder.Result:
        return lr_finder.Result(self.config.range_config(self.effort), self.sub("range"))

    def suggestions(self) -> dict[str, float]:
        return self.range_result.suggestions() if self.range_result.rounds else {}

    def range_spread(self) -> pd.DataFrame:
        return self.range_result.spread() if self.range_result.rounds else pd.DataFrame()

    def sweep_runs(self) -> pd.DataFrame:
        cols = ["seed", "lr", "status", "train_loss", "val_loss", "val_acc", "steps", "seconds"]
        return self.frame("sweep/runs").reindex(columns=cols)

    def sweep_table(self) -> pd.DataFrame:
        """Per rate: mean and spread of the final validation loss over seeds, the band."""
        table = loss_table(self.sweep_runs())
        best = confirm(table)
        table["best"] = table.lr == (best.lr if best else None)
        table["in_band"] = (
            table.lr.between(best.band_lo, best.band_hi) if best else [False] * len(table)
        )
        return table

    @cached_property
    def confirmed(self) -> Confirmed | None:
        return confirm(loss_table(self.sweep_runs()))

    def sweep_curves(self) -> pd.DataFrame:
        """Every sweep run's evaluations: seed, lr, step, val_loss."""
        cols = ["seed", "lr", "step", "val_loss"]
        runs, events = self.frame("sweep/runs"), self.frame("sweep/events")
        if runs.empty or events.empty or "seed" not in events:
            return pd.DataFrame(columns=cols)
        ev = events[events.kind == "eval"].rename(columns={"run_id": "run", "lr": "run_lr"})
        return ev.merge(runs[["seed", "run", "lr"]], on=["seed", "run"])[cols]

    def checkpoints(self) -> pd.DataFrame:
        """The best rate at each checkpoint of the sweep (when the rate is carried)."""
        if not self.carried:
            return pd.DataFrame(columns=["step", "lr"])
        return checkpoint_bests(self.sweep_curves(), self.effort.sweep_steps)

    @cached_property
    def measured_exponent(self) -> float | None:
        """How the best rate moved over the sweep's checkpoints (when it is carried)."""
        return measured_exponent(self.checkpoints()) if self.carried else None

    @property
    def exponent(self) -> float:
        """The exponent the rate is carried by (horizon_exponent)."""
        return horizon_exponent(self.measured_exponent)

    @property
    def carry_factor(self) -> float:
        """What the confirmed rate is multiplied by for the planned training (1: swept at it)."""
        if not self.carried:
            return 1.0
        return carry_factor(self.effort.sweep_steps, self.horizon_steps, self.exponent)

    def overfitting(self) -> tuple[float, float] | None:
        """(lowest, last) mean validation loss of the confirmed rate over the sweep's
        checkpoints, when the last lies above the lowest by more than the noise between seeds
        (or 2 %): the model overfits inside the sweep, and a longer training overfits more."""
        best = self.confirmed
        curves = self.sweep_curves() if self.carried and best is not None else None
        if curves is None or curves.empty:
            return None
        mine = curves[curves.lr == best.lr].copy()
        mine["val_loss"] = pd.to_numeric(mine.val_loss, errors="coerce")
        mean = mine.groupby("step").val_loss.mean().sort_index()
        if len(mean) < 3 or not np.isfinite(mean).all():
            return None
        low, last = float(mean.min()), float(mean.iloc[-1])
        return (low, last) if last > low + max(best.noise, 0.02 * low) else None

    def rule_name(self) -> str:
        if self.exponent == HORIZON_EXPONENT:
            return "the square-root rule"
        return "the fall the sweep measured, steeper than the square-root rule"

    def seed_bests(self) -> dict[int, float]:
        """Each seed's own best rate (lowest final validation loss among its runs)."""
        out = {}
        for seed, part in self.sweep_runs().groupby("seed"):
            table = loss_table(part)
            found = confirm(table)
            if found is not None:
                out[int(seed)] = found.lr
        return out

    def audit(self) -> pd.DataFrame:
        best = self.confirmed
        spread = self.range_spread()
        if best is None or spread.empty:
            return pd.DataFrame(columns=AUDIT_COLUMNS)
        names = {r.title: r.name for r in lr_finder.SUGGESTIONS}
        return audit(spread, names, loss_table(self.sweep_runs()), best)

    # ------------------------------------------------------------------ 2. the batch

    @cached_property
    def probe(self) -> bs_probe.Result:
        return bs_probe.Result(bs_probe.Config(cap_mib=self.config.cap_mib), self.sub("probe"))

    def throughput(self) -> pd.DataFrame:
        """Per candidate batch: seconds per step, the median over its logging intervals (robust
        to the first steps' warm-up and to other work on the machine), and samples/s."""
        cols = ["batch", "steps", "seconds", "seconds_per_step", "samples_per_s"]
        runs = self.frame("throughput/runs")
        events = self.frame("throughput/events")
        if runs.empty or events.empty:
            return pd.DataFrame(columns=cols)
        out = []
        for _, r in runs.iterrows():
            ev = events[(events.run_id == r.run) & (events.kind == "train")]
            steps = np.diff(np.concatenate([[0], ev.step.to_numpy(float)]))
            secs = np.diff(np.concatenate([[0], ev.elapsed.to_numpy(float)]))
            per = secs[steps > 0] / steps[steps > 0]
            if len(per) == 0:
                continue
            sps = float(np.median(per[1:] if len(per) > 2 else per))
            b = int(r.batch)
            out.append(
                {
                    "batch": b,
                    "steps": int(r.steps),
                    "seconds": float(r.seconds),
                    "seconds_per_step": sps,
                    "samples_per_s": b / sps,
                }
            )
        return pd.DataFrame(out, columns=cols).sort_values("batch", ignore_index=True)

    @cached_property
    def noise_result(self) -> noise_scale.Result:
        return noise_scale.Result(None, self.sub("noise"))

    @property
    def b_simple(self) -> float:
        return self.noise_result.b_simple if self.rows.get("noise/rows") else math.nan

    def batch_table(self, swept: bool = False) -> pd.DataFrame:
        """Per candidate batch: measured throughput, estimated steps and seconds to the loss
        the base batch reaches in the planned training (`swept`: in the sweep's)."""
        t, best = self.throughput(), self.confirmed
        if t.empty or best is None:
            return pd.DataFrame()
        caps = [self.rate_at(int(b), carry=not swept) for b in t.batch]
        return batch_choice(
            t.batch,
            t.seconds_per_step,
            self.b_simple,
            self.config.batch_size,
            self.effort.sweep_steps if swept else self.horizon_steps,
            shortfall=[c.rule_lr / c.lr for c in caps],
        )

    @cached_property
    def stability(self) -> Stability:
        """What the range test and the sweep measured about stability (at the base batch)."""
        return stability_of(loss_table(self.sweep_runs()), self.suggestions().get("max_usable"))

    def rate_at(self, batch: int, carry: bool = True) -> Capped:
        """The confirmed rate carried to `batch` by the optimizer's rule (up to B_crit) and, with
        `carry`, to the planned training by the horizon rule; capped by the stability measured
        (cap_rate)."""
        best = self.confirmed
        scale = rescale(1.0, self.config.batch_size, batch, self.optimizer, self.b_simple)
        factor = self.carry_factor if carry else 1.0
        return cap_rate(best.lr * factor * scale, best.lr, scale, self.stability)

    def plan(self, swept: bool = False) -> dict:
        """The chosen batch, its rescaled (and capped) rate and the expected steps to the
        target. With `swept`, at the sweep's own length (the rate as confirmed, the loss the
        best sweep run reached): what the confirming run trains; else for the planned
        training."""
        table, best = self.batch_table(swept), self.confirmed
        row = table[table.best].iloc[0]
        batch = int(row.batch)
        return {
            "batch": batch,
            "lr": self.rate_at(batch, carry=not swept).lr,
            "expected_steps": float(row.steps_to_target),
            "target_loss": best.loss,
        }

    def final(self) -> dict:
        """The card's batch and rate: the chosen batch where the short run there reached the
        target, else the base batch; the rules that carried the rate there, the cap, and
        whether that very rate was trained at that batch."""
        base, best = self.config.batch_size, self.confirmed
        batch, steps = base, self.horizon_steps
        if self.done("confirm") and self.reached():
            plan = self.plan()
            batch, steps = plan["batch"], int(math.ceil(plan["expected_steps"]))
        capped = self.rate_at(batch)
        run = self.confirm_run()
        trained = not self.carried and (
            batch == base
            or (run.get("batch") == batch and math.isclose(run.get("lr", 0.0), capped.lr))
        )
        rules = ([SCALING_RULE[self.optimizer]] if batch != base else []) + (
            ["horizon"] if self.carried else []
        )
        k = capped.rule_lr / best.lr  # the rules' factor, before the cap
        band = [min(v * k, max(capped.cap, v)) for v in (best.band_lo, best.band_hi)]
        return {
            "batch": batch,
            "lr": capped.lr,
            "expected_steps": steps,
            "rate_rule": "+".join(rules) or "none",
            "rule_lr": capped.rule_lr,
            "cap": capped.cap,
            "capped_by": capped.capped_by,
            "caps": capped.caps,
            "band_at_batch": band,
            "band_rescaled": k != 1.0,
            "trained_at_batch": trained,
        }

    def rate_text(self) -> str:
        """How the card's rate came from the sweep: the rules, the cap, what decided."""
        f, best, base = self.final(), self.confirmed, self.config.batch_size
        out = f"confirmed {best.lr:.3g} at batch {base} by the sweep"
        if self.carried:
            out += f"; x{self.carry_factor:.3g} to the planned {self.horizon_steps:,} updates"
        if f["batch"] != base:
            rule = SCALING_RULE[self.optimizer]
            out += f"; rescaled to batch {f['batch']} by the {rule} rule"
        if f["rate_rule"] != "none":
            out += f": {f['rule_lr']:.3g}"
        if f["capped_by"]:
            out += f", capped at {f['cap']:.3g} by {CAP_NAMES[f['capped_by']]}"
            s = self.stability
            if f["capped_by"] == "sweep" and s.diverged is not None:
                out += f" at batch {base} ({s.diverged:.3g} diverged)"
            elif f["capped_by"] == "range_test" and s.max_usable is not None:
                out += f" ({s.max_usable:.3g} at batch {base}, scaled by the same rule)"
        elif f["rate_rule"] != "none":
            out += f", under the stability cap {f['cap']:.3g}"
        return out

    def band_text(self) -> str:
        """Both bands, each named by its batch: as swept, and where the card's batch differs
        or the rate was carried, as rescaled (and capped) there."""
        f, best, base = self.final(), self.confirmed, self.config.batch_size
        out = f"at batch {base}, as swept: {best.band_lo:.3g} to {best.band_hi:.3g}"
        if f["band_rescaled"]:
            lo, hi = f["band_at_batch"]
            how = "rescaled" if f["batch"] != base else "carried"
            cap = f", capped at {f['cap']:.3g}" if f["capped_by"] else ""
            out += f"; at batch {f['batch']}, {how}{cap}: {lo:.3g} to {hi:.3g}"
        return out

    def confirm_run(self) -> dict:
        runs = self.rows.get("confirm/runs") or []
        return runs[0] if runs else {}

    def reached(self) -> bool | None:
        """Whether the short run at the chosen batch reached the target loss (within the
        sweep's noise, or 2 %)."""
        run = self.confirm_run()
        if not run:
            return None
        loss, target = run.get("val_loss"), run.get("target_loss")
        if loss is None or target is None or run.get("status") == "diverged":
            return False
        noise = self.confirmed.noise if self.confirmed else 0.0
        return bool(loss <= target + max(noise, 0.02 * target))

    # ------------------------------------------------------------------ 3. the card

    def confidence(self) -> tuple[str, list[str]]:
        """high / medium / low from the evidence, and why: each issue lowers it a level (one:
        medium, two or more: low); a best at the sweep's edge is low, and a band of a single
        swept rate (the grid too coarse to show a flat optimum) medium at most."""
        best = self.confirmed
        if best is None:
            return "low", ["no rate was confirmed"]
        f, base = self.final(), self.config.batch_size
        issues, notes, ceiling = [], [], 2
        if best.at_edge:
            issues.append("the best rate is at the edge of the sweep: the optimum may lie beyond")
            ceiling = 0
        seeds = self.seed_bests()
        if len(seeds) < 2:
            issues.append("one seed: the spread between seeds was not measured")
        else:
            off = [s for s, lr in seeds.items() if not best.band_lo <= lr <= best.band_hi]
            if off:
                issues.append(
                    f"seeds disagree: {len(off)} of {len(seeds)} put the best outside the band "
                    f"at batch {base}"
                )
            else:
                notes.append(
                    f"all {len(seeds)} seeds put their best inside the band at batch {base}"
                )
        where = "at the sweep's length, " if self.carried else ""
        if best.band_lo == best.band_hi:
            grid = np.sort(self.sweep_runs().lr.dropna().unique())
            step = f" (x{grid[1] / grid[0]:.3g} between rates)" if len(grid) > 1 else ""
            issues.append(
                f"{where}the band at batch {base} is one swept rate ({best.lr:.3g}): the grid"
                f"{step} is too coarse to show how flat the optimum is"
            )
            ceiling = min(ceiling, 1)
        else:
            notes.append(
                f"{where}at batch {base}, as swept, the band spans {best.band_width:.3g}x "
                f"({best.band_lo:.3g} to {best.band_hi:.3g})"
            )
        if self.carried:
            issues.append(
                f"the rate was swept at {self.effort.sweep_steps:,} updates and carried to the "
                f"planned {self.horizon_steps:,} by {self.rule_name()} "
                f"(x{self.carry_factor:.3g}), not swept at that length"
            )
            over = self.overfitting()
            if over is not None:
                issues.append(
                    f"the model overfits inside the sweep (the best rate's validation loss rose "
                    f"from {over[0]:.4g} to {over[1]:.4g}): a longer training overfits more "
                    "whatever its rate; keep the best checkpoint, or train shorter"
                )
        if f["batch"] != base:
            trained = "one short run of one seed there reached the target"
            issues.append(
                f"the rate was rescaled from batch {base} to batch {f['batch']} by the "
                f"{SCALING_RULE[self.optimizer]} rule: "
                + (
                    trained + ", the only check at that batch"
                    if f["trained_at_batch"]
                    else "that rate was not trained at that batch"
                )
            )
        if f["capped_by"]:
            issues.append(
                f"the rules' rate ({f['rule_lr']:.3g}) exceeds the stability measured: capped at "
                f"{f['cap']:.3g} by {CAP_NAMES[f['capped_by']]}"
            )
        reached = self.reached()
        if reached is False:
            issues.append("the short run at the chosen batch missed the target: batch kept at base")
        elif reached and f["batch"] == base:
            notes.append("the short run at the chosen batch reached the target")
        if "confirm" in self.missing:
            issues.append("the batch was not confirmed (missing: " + ", ".join(self.missing) + ")")
        if f["trained_at_batch"] and f["batch"] == base:
            notes.append(f"the rate was trained at batch {base} over every seed of the sweep")
        level = min(ceiling, max(0, 2 - len(issues)))
        return ("low", "medium", "high")[level], issues + notes

    def card(self) -> dict:
        """The answer, as far as the finished steps give it; `missing` names the others."""
        opt = self.config.optim
        name = self.optimizer
        out: dict = {
            "status": self.status,
            "message": self.message,
            "dataset": self.info.get("dataset"),
            "model": self.info.get("model"),
            "optimizer": name,
            "momentum": opt.momentum if name == "momentum" else None,
            "steps_done": [s for s in STEPS if self.done(s)],
            "missing": self.missing,
            "suggestions": self.suggestions(),
            "seconds": self.step_seconds,
            "plan": self.budget_plan,
            "train_epochs": self.config.train_epochs,
        }
        best = self.confirmed if self.done("sweep") else None
        base = self.config.batch_size
        out |= {"base_batch": base, "batch": base, "lr": None, "rule": SCALING_RULE[name]}
        if best is None:
            out["confidence"], out["confidence_reasons"] = "low", ["no rate was confirmed"]
            return out
        audit_ = self.audit()
        closest = audit_[audit_.closest]
        carry = self.carry_factor
        s = self.stability
        out |= {
            "base_lr": best.lr * carry,
            "swept_lr": best.lr,
            "band": [best.band_lo, best.band_hi],
            "band_batch": base,  # the batch the band was swept at
            "target_loss": best.loss,
            "loss_noise": best.noise,
            "closest_rule": str(closest.rule.iloc[0]) if not closest.empty else None,
            "audit": audit_.to_dict(orient="records"),
            # the best rate depends on how long one trains (bench/RESULTS.md, section 8): the
            # planned training's updates at the base batch, and those the sweep trained
            "horizon_steps": self.horizon_steps,
            "swept_steps": int(self.effort.sweep_steps),
            "horizon_rule": (
                {
                    "exponent": self.exponent,
                    "factor": carry,
                    "measured_exponent": self.measured_exponent,
                }
                if self.carried
                else None
            ),
            "stability": {
                "max_usable": s.max_usable,
                "smallest_diverged": s.diverged,
                "largest_stable": s.stable,
                "at_batch": base,
            },
        }
        if self.done("probe"):
            out |= {"largest_batch": self.probe.largest, "safe_batch": self.probe.safe}
        if self.done("noise"):
            out["b_simple"] = self.b_simple
        if self.done("throughput") and self.done("noise"):
            out["estimated_batch"] = self.plan()["batch"]
            if self.done("confirm"):
                out["confirm_val_loss"] = self.confirm_run().get("val_loss")
        out |= self.final()
        out["rate_text"] = self.rate_text()
        out["band_text"] = self.band_text()
        steps = out["expected_steps"]
        sched = "one-cycle" if self.optimizer in ("sgd", "momentum") else "warm-up + cosine"
        out["schedule"] = {
            "name": sched,
            "peak_lr": out["band_at_batch"][1],
            "total_steps": steps,
            "warmup_steps": max(1, steps // 20),
        }
        out["confidence"], out["confidence_reasons"] = self.confidence()
        out["snippet"] = snippet(out)
        return out

    def horizon_text(self) -> str:
        """For how long a training the rate holds, and how it got there."""
        h, planned, base = self.effort.sweep_steps, self.horizon_steps, self.config.batch_size
        if not self.budget_plan.get("horizon_steps"):
            return (
                f"confirmed for the sweep's own length, {h:,} updates at batch {base} (no "
                "planned training); the best rate depends on how long one trains: give yours "
                "(--train-epochs) to have it confirmed for that length"
            )
        if not self.carried:
            return f"swept at the planned training's length, {planned:,} updates at batch {base}"
        seen = self.measured_exponent
        inside = (
            f" (over the sweep's own checkpoints the best rate moved as t^{seen:.2f})"
            if seen is not None
            else ""
        )
        return (
            f"swept at {h:,} updates at batch {base} (the budget's longest) and carried to the "
            f"planned {planned:,} by {self.rule_name()}, lr ~ t^{self.exponent:.2f}{inside}: "
            f"x{self.carry_factor:.3g}"
        )

    def explain(self) -> str:
        if self.stopped:
            return "stopped: missing " + ", ".join(self.missing)
        failed = [f"{s}: {v}" for s, v in self.step_status.items() if v.startswith("failed")]
        return "; ".join(failed)

    def status_text(self) -> str:
        """A stopped or failed run in a sentence: the steps that finished, those that did not
        (empty for a finished run)."""
        if self.status == "finished" and not self.missing:
            return ""
        done = [STEP_TITLES[s].lower() for s in STEPS if self.done(s)]
        rest = [
            f"{STEP_TITLES[s].lower()} ({self.step_status.get(s, 'not run')})" for s in self.missing
        ]
        head = f"{self.status.capitalize()} after {len(done)} of {len(STEPS)} steps"
        return (
            head
            + (": finished " + ", ".join(done) if done else ": none finished")
            + ("; not done: " + ", ".join(rest) if rest else "")
        )

    def summary(self) -> dict:
        return self.card()

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "sweep": self.sweep_table(),
            "audit": self.audit(),
            "range": self.range_result.points(),
            "sweep_runs": self.sweep_runs(),
            "checkpoints": self.checkpoints(),
            "batches": self.batch_table(),
            "probe": self.probe.tried(),
            "noise": self.noise_result.measurements(),
            "confirm": pd.DataFrame(self.rows.get("confirm/runs", [])),
        }

    def report(self) -> str:
        c = self.card()
        if c["lr"] is None:
            return f"{self.status}: no rate confirmed (missing: {', '.join(c['missing'])})"
        lines = [
            *([f"{self.status}: missing {', '.join(c['missing'])}"] if self.stopped else []),
            *([self.plan_text()] if self.budget_plan else []),
            f"lr {c['lr']:.3g} at batch {c['batch']} ({c['optimizer']}): {c['rate_text']}",
            f"band within noise {c['band_text']}",
            f"schedule: {c['schedule']['name']}, peak {c['schedule']['peak_lr']:.3g}, "
            f"{c['expected_steps']} steps to val loss {c['target_loss']:.4g}",
            self.horizon_text(),
            f"confidence: {c['confidence']} ({'; '.join(c['confidence_reasons'])})",
        ]
        if c["missing"]:
            lines.append("missing: " + ", ".join(c["missing"]))
        audit_ = self.audit()
        if not audit_.empty:
            lines.append(audit_.to_string(index=False))
        lines.append(c["snippet"])
        return "\n".join(lines)
