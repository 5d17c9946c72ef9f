"""The learning-rate range test (Leslie Smith, "Cyclical Learning Rates", 2017), its suggestions,
and the zoom-in second pass.

The rate grows each step from `lr_min` to `lr_max` (exponentially by default, the last step
landing exactly on `lr_max`); the loss is smoothed with a debiased moving average and the test
stops when the smoothed loss passes `stop_factor` x its best. Suggestions are plain functions
of (lrs, smoothed losses) returning an index, so callers can add their own. Model, optimizer
and RNG state are restored afterwards: the next experiment starts from the same weights.

The experiment "lr-find" (page, `python -m lrbs lr-find`, `run(setup, Config(...))`) runs the
test once per seed and per round (the first, then one per zoom range), streaming every
iteration; its Result rebuilds each test from those rows, and its summary's "suggestions" (the
last round's, the median over seeds) are what other experiments read back from the run history
(`stored_range_test`).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.loop import Budget, Event, OptimSpec, TrainConfig, evaluate_data, train
from lrbs.core.setup import Setup
from lrbs.core.stream import StreamData
from lrbs.experiments.sweeps import SweptOptim, load_data
from lrbs.methods.suggestions import (  # noqa: F401  (re-exported: lr_finder's public names)
    EMA,
    NO_DESCENT,
    SUGGESTIONS,
    Suggestion,
    SuggestionRule,
    descent_region,
    minimum,
    smooth,
    steepest,
    suggest,
    valley,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink

MODES = ("exp", "linear")
FOLLOW = ("train", "val")


@dataclass(frozen=True)
class RangeTestConfig:
    lr_min: float = 1e-7
    lr_max: float = 10.0
    iterations: int = 100
    mode: str = "exp"
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    beta: float = 0.98  # smoothing; 0 = none
    debias: bool = True  # False: torch-lr-finder's style (first value = first loss)
    stop_factor: float | None = 4.0  # None: run all iterations
    seed: int = 0
    weight_decay: float = 0.0
    follow: str = "train"  # "val": the validation loss after each step (torch-lr-finder)

    def __post_init__(self) -> None:
        require(self.follow in FOLLOW, f"follow must be 'train' or 'val', got {self.follow!r}")
        positive_number("minimum learning rate", self.lr_min)
        positive_number("maximum learning rate", self.lr_max)
        require(self.lr_max <= 1e6, f"maximum learning rate {self.lr_max:g} is absurd (limit 1e6)")
        require(
            self.lr_min < self.lr_max,
            f"the minimum learning rate ({self.lr_min:g}) must be below the maximum "
            f"({self.lr_max:g})",
        )
        positive_int("iterations", self.iterations)
        require(self.iterations >= 5, "a range test needs at least 5 iterations")
        require(self.iterations <= 100_000, "iterations is at most 100000")
        require(self.mode in MODES, f"ramp must be 'exp' or 'linear', got {self.mode!r}")
        require(0 <= self.beta < 1, f"smoothing beta must be in [0, 1), got {self.beta}")
        if self.stop_factor is not None:
            require(self.stop_factor > 1, "the stop factor must be above 1")
        self.optim()  # validates the optimizer

    def optim(self) -> OptimSpec:
        return OptimSpec(self.optimizer, self.lr_min, self.momentum, self.weight_decay)

    def lr_at(self, i: int) -> float:
        """The rate of iteration i: i/(n-1) of the way, so the last one is exactly lr_max."""
        t = i / (self.iterations - 1)
        if self.mode == "exp":
            return self.lr_min * (self.lr_max / self.lr_min) ** t
        return self.lr_min + (self.lr_max - self.lr_min) * t

    def lrs(self) -> np.ndarray:
        return np.array([self.lr_at(i) for i in range(self.iterations)])

    def zoom(self, lo: float, hi: float, points_per_decade: float | None = None) -> RangeTestConfig:
        """A finer test over [lo, hi]: by default twice the density of this one, at least 50
        iterations, always exponential."""
        cfg = replace(self, lr_min=lo, lr_max=hi)  # validates lo < hi
        if points_per_decade is None:
            points_per_decade = 2 * self.points_per_decade()
        decades = math.log10(hi / lo)
        return replace(cfg, mode="exp", iterations=max(50, math.ceil(points_per_decade * decades)))

    def points_per_decade(self) -> float:
        return self.iterations / max(math.log10(self.lr_max / self.lr_min), 1e-9)


# ---------------------------------------------------------------------------- the test


@dataclass(frozen=True)
class RangeTestResult:
    config: RangeTestConfig
    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    status: str  # "finished", "diverged" (stop rule or NaN) or "stopped" (by the user)
    message: str
    suggestions: tuple[Suggestion, ...]
    elapsed: float
    round: int = 0

    def frame(self) -> pd.DataFrame:
        """The CSV the page offers: one row per iteration."""
        return pd.DataFrame(
            {
                "round": self.round,
                "seed": self.config.seed,
                "iteration": np.arange(len(self.lrs)),
                "lr": self.lrs,
                "loss": self.losses,
                "smoothed": self.smoothed,
            }
        )

    def suggestion(self, name: str) -> Suggestion | None:
        return next((s for s in self.suggestions if s.name == name), None)

    @property
    def best(self) -> tuple[float, float]:
        """(lr, smoothed loss) at the lowest smoothed loss."""
        i = int(np.nanargmin(self.smoothed))
        return float(self.lrs[i]), float(self.smoothed[i])

    def headline(self) -> dict:
        lr, loss = self.best
        return {
            "status": self.status,
            "iterations": len(self.lrs),
            "elapsed": self.elapsed,
            "lr_at_min": lr,
            "min_smoothed_loss": loss,
            "suggestions": {s.name: s.lr for s in self.suggestions},
        }


@dataclass
class _Snapshot:
    model: dict
    optimizer: dict | None
    rng: torch.Tensor
    training: bool = True
    extra: dict = field(default_factory=dict)


def _save(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> _Snapshot:
    """Weights and buffers (BatchNorm's running statistics), the optimizer's state and
    groups, torch's RNGs (CPU and CUDA) and the train/eval mode."""
    extra = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else {}
    return _Snapshot(
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
        torch.random.get_rng_state(),
        model.training,
        extra,
    )


def _restore(snap: _Snapshot, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    model.load_state_dict(snap.model)
    if optimizer is not None and snap.optimizer is not None:
        optimizer.load_state_dict(snap.optimizer)
    torch.random.set_rng_state(snap.rng)
    if "cuda" in snap.extra:
        torch.cuda.set_rng_state_all(snap.extra["cuda"])
    model.train(snap.training)


def range_test(
    model: nn.Module,
    data: TensorData | StreamData,
    cfg: RangeTestConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    on_point: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    round: int = 0,
    rules: tuple[SuggestionRule, ...] = SUGGESTIONS,
) -> RangeTestResult:
    """Run the test on `model` (and `optimizer`, if given: its state is restored too; else the
    data's task builds one, a workload's own included). Every parameter group's rate follows
    the ramp times its ratio to the first group's, so a head at a tenth of the body's rate
    stays at a tenth. The loss followed is each step's training batch, or with
    `cfg.follow == "val"` the whole validation set after each step. `on_point` receives
    {"round", "seed", "iteration", "lr", "loss", "smoothed"} per step, lr the first group's."""
    if cfg.batch_size > data.n_train:
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training set ({data.n_train})"
        )
    snap = _save(model, optimizer)
    losses: list[float] = []
    smoothed: list[float] = []
    ema = EMA(cfg.beta, cfg.debias)
    best = {"smoothed": math.inf}

    def on_event(ev: Event) -> None:
        x, i = ev.loss, len(losses)
        if cfg.follow == "val" and math.isfinite(x):
            x = evaluate_data(model, data)[0]
        s = ema(x)
        losses.append(x)
        smoothed.append(s)
        if on_point is not None:
            on_point(
                {
                    "round": round,
                    "seed": cfg.seed,
                    "iteration": i,
                    "lr": ev.lr,
                    "loss": x,
                    "smoothed": s,
                }
            )

    def stop_rule(ev: Event) -> str | None:
        s = smoothed[-1]
        if cfg.stop_factor is not None and s > cfg.stop_factor * best["smoothed"]:
            return "diverged"
        best["smoothed"] = min(best["smoothed"], s)
        return None

    train_cfg = TrainConfig(
        batch_size=cfg.batch_size,
        budget=Budget(steps=cfg.iterations),
        optim=cfg.optim(),
        seed=cfg.seed,
        log_every=1,
        eval_each_epoch=False,
        eval_at_end=False,
        divergence_factor=None,
    )
    if optimizer is not None:  # the ramp's start, each group keeping its ratio to the first
        first = optimizer.param_groups[0]["lr"] or 1.0
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_min * group["lr"] / first
            group.pop("initial_lr", None)  # a previous scheduler's; LambdaLR sets its own

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: cfg.lr_at(i) / cfg.lr_min)

    t0 = time.perf_counter()
    try:
        result = train(
            model,
            data,
            train_cfg,
            run_id=f"round {round}",
            on_event=on_event,
            stop=stop,
            optimizer=optimizer,
            lr_scheduler=schedule,
            stop_rule=stop_rule,
        )
    finally:
        _restore(snap, model, optimizer)
    lrs = np.array([e.lr for e in result.events if e.kind == "train"])
    message = result.message
    if result.status == "diverged" and not message:
        message = f"smoothed loss passed {cfg.stop_factor:g} x its best at lr {lrs[-1]:.3g}"
    sm = np.array(smoothed)
    return RangeTestResult(
        config=cfg,
        lrs=lrs,
        losses=np.array(losses),
        smoothed=sm,
        status=result.status,
        message=message,
        suggestions=tuple(suggest(lrs, sm, rules)),
        elapsed=time.perf_counter() - t0,
        round=round,
    )


def range_from_selection(selection: dict | None, field: str = "lr") -> tuple[float, float] | None:
    """The (lo, hi) learning-rate range of an Altair interval selection as Streamlit returns
    it ({"param": {"lr": [a, b]}} or {"lr": [a, b]}), or None if there is none."""
    if not selection:
        return None
    values = selection.get(field)
    if values is None:
        for v in selection.values():
            if isinstance(v, dict) and field in v:
                values = v[field]
                break
    if not values or len(values) != 2:
        return None
    lo, hi = sorted(float(v) for v in values)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        return None
    return lo, hi


def spread(results: list[RangeTestResult]) -> pd.DataFrame:
    """Across seeds: per suggestion, the median rate and how far it moves (max/min ratio)."""
    rows = []
    names = {s.name: s.title for r in results for s in r.suggestions}
    for name, title in names.items():
        vals = np.array([s.lr for r in results for s in r.suggestions if s.name == name])
        rows.append(
            {
                "suggestion": title,
                "median_lr": float(np.median(vals)),
                "min_lr": float(vals.min()),
                "max_lr": float(vals.max()),
                "max_over_min": float(vals.max() / vals.min()),
                "seeds": len(vals),
            }
        )
    return pd.DataFrame(rows)


def suggestion_frame(results: list[RangeTestResult]) -> pd.DataFrame:
    """The suggestions of one round: per rule its name, title, meaning, and rate (with several
    seeds, the median rate), with a label for the chart."""
    table = spread(results)
    columns = ["name", "title", "lr", "meaning", "label"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    meaning = {s.title: (s.name, s.meaning) for r in results for s in r.suggestions}
    return pd.DataFrame(
        {
            "name": [meaning[t][0] for t in table.suggestion],
            "title": table.suggestion,
            "lr": table.median_lr,
            "meaning": [meaning[t][1] for t in table.suggestion],
            "label": [
                f"{t} {v:.2g}" for t, v in zip(table.suggestion, table.median_lr, strict=True)
            ],
        },
        columns=columns,
    )


def band_of(results: list[RangeTestResult]) -> pd.DataFrame | None:
    """Across the seeds of one round: per iteration the lowest and highest smoothed loss, where
    every seed got that far; None for a single seed."""
    if len(results) < 2:
        return None
    d = pd.concat([r.frame() for r in results])
    g = d.groupby("iteration").agg(
        lr=("lr", "first"), lo=("smoothed", "min"), hi=("smoothed", "max"), n=("seed", "count")
    )
    return g[g.n == len(results)].reset_index()


# ---------------------------------------------------------------------------- the experiment

KIND = "lr-find"
POINT_COLUMNS = ["round", "seed", "iteration", "lr", "loss", "smoothed"]


@dataclass(frozen=True, kw_only=True)
class Config:
    """The range test, repeated over `seeds` seeds (the setup's seed, +1, ...), then once more
    per `zoom` range: a finer exponential test of that range (twice the first round's points
    per decade), from the same initial weights."""

    lr_min: float = option(1e-7, help="the first rate of the ramp", label="minimum learning rate")
    lr_max: float = option(10.0, help="the last rate of the ramp", label="maximum learning rate")
    iterations: int = option(100, help="steps of the first round")
    ramp: str = option("exp", choices=MODES, help="exponential or linear ramp")
    batch_size: int = option(64, help="batch size")
    optim: SweptOptim = option(factory=SweptOptim, help="the optimizer (the ramp sets its rate)")
    beta: float = option(0.98, help="smoothing (EMA); 0: none", label="smoothing beta")
    debias: bool = option(True, help="bias-corrected smoothing (no: torch-lr-finder's style)")
    stop_factor: float | None = option(
        4.0, help="stop when the smoothed loss passes k x its best; 0: never", label="stop factor"
    )
    follow: str = option(
        "train",
        choices=FOLLOW,
        help="the loss followed: each step's training batch, or the whole validation set "
        "after each step (torch-lr-finder's val_loader: slower, less noisy)",
    )
    seeds: int = option(1, low=1, high=32, help="repeat with this many seeds")
    zoom: tuple[tuple[float, float], ...] = option(
        (), help="a finer round over [LO, HI] after the first; repeatable"
    )

    def __post_init__(self) -> None:
        check(self)
        if self.stop_factor == 0:
            object.__setattr__(self, "stop_factor", None)
        object.__setattr__(self, "zoom", tuple((float(lo), float(hi)) for lo, hi in self.zoom))
        self.rounds()  # every round's checks: the first's settings, each zoom range

    def base(self) -> RangeTestConfig:
        """The first round's test (seed 0: each run sets its own)."""
        return RangeTestConfig(
            lr_min=self.lr_min,
            lr_max=self.lr_max,
            iterations=self.iterations,
            mode=self.ramp,
            batch_size=self.batch_size,
            optimizer=self.optim.name,
            momentum=self.optim.momentum,
            beta=self.beta,
            debias=self.debias,
            stop_factor=self.stop_factor,
            weight_decay=self.optim.weight_decay,
            follow=self.follow,
        )

    def rounds(self) -> list[RangeTestConfig]:
        """The test of each round: the first, then one per zoom range."""
        base = self.base()
        out = [base]
        for lo, hi in self.zoom:
            try:
                out.append(base.zoom(lo, hi))
            except ConfigError as exc:
                raise ConfigError(f"zoom range {lo:g} to {hi:g}: {exc}") from None
        return out

    def zoomed(self, lo: float, hi: float) -> Config:
        """These settings with one more zoom round, over [lo, hi]."""
        return replace(self, zoom=(*self.zoom, (lo, hi)))


def round_label(r: int) -> str:
    """How a round is named to a person, on every page and in the CLI: counted from 1, the
    first over the whole range, each later one a zoom (the stored `round` column counts from
    0)."""
    return "round 1 (the whole range)" if r == 0 else f"round {r + 1} (zoom {r})"


def seconds_text(seconds: float) -> str:
    """A duration as a person reads it: 2 significant digits below 10 s (a range test of a
    small model takes a few hundredths of a second; "0.0 s" reads as nothing measured)."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    return f"{seconds:.0f} s"


def data_info(data: TensorData | StreamData, optimizer: str) -> dict:
    """What the test ran on: the optimizer (a workload's own, or the config's), the task (its
    loss) and the data path (memory or streamed)."""
    return {
        "optimizer": "the workload's optimizer()" if data.task.optimizer else optimizer,
        "task": data.task.name,
        "data_path": "stream" if isinstance(data, StreamData) else "memory",
    }


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Every round x seed: one "points" row per iteration as it goes, and a "tests" row as
    each test ends (its status, message and time). A user stop ends it after the test under
    way, which keeps what it computed."""
    rows, sink = collect(sink)
    data = load_data(setup)
    rounds = config.rounds()
    total = sum(c.iterations for c in rounds) * config.seeds
    done = 0
    stopped = False
    for r_no, round_cfg in enumerate(rounds):
        for k in range(config.seeds):
            seed = setup.seed + k
            text = f"{round_label(r_no)}, seed {seed}"

            def on_point(p: dict, done: int = done, text: str = text) -> None:
                sink.emit("points", p)
                sink.progress((done + p["iteration"] + 1) / total, text)

            r = range_test(
                setup.fresh_model(data, seed),
                data,
                replace(round_cfg, seed=seed),
                on_point=on_point,
                stop=stop,
                round=r_no,
            )
            sink.emit(
                "tests",
                {
                    "round": r_no,
                    "seed": seed,
                    "status": r.status,
                    "message": r.message,
                    "elapsed": r.elapsed,
                },
            )
            done += round_cfg.iterations
            stopped = r.status == "stopped" or (stop is not None and stop.is_set())
            if stopped:
                break
        if stopped:
            break
    sink.emit("info", data_info(data, config.optim.name))
    return Result(config, rows.rows, "stopped" if stopped else "finished")


@dataclass(frozen=True)
class Result(experiment.Result):
    @cached_property
    def rounds(self) -> list[list[RangeTestResult]]:
        """Per round, the test of each seed, rebuilt from the streamed rows: the same curves,
        statuses and suggestions the run computed."""
        configs = self.config.rounds()
        points = self.points()
        tests = {(int(t["round"]), int(t["seed"])): t for t in self.rows.get("tests", [])}
        out: list[list[RangeTestResult]] = []
        for (r_no, seed), part in points.groupby(["round", "seed"], sort=True):
            key = (int(r_no), int(seed))
            meta = tests.get(key, {"status": "stopped", "message": "", "elapsed": 0.0})
            part = part.sort_values("iteration")
            lrs, smoothed = part.lr.to_numpy(float), part.smoothed.to_numpy(float)
            result = RangeTestResult(
                config=replace(configs[key[0]], seed=key[1]),
                lrs=lrs,
                losses=part.loss.to_numpy(float),
                smoothed=smoothed,
                status=meta["status"],
                message=meta["message"] or "",
                suggestions=tuple(suggest(lrs, smoothed)),
                elapsed=float(meta["elapsed"] or 0.0),
                round=key[0],
            )
            while len(out) <= key[0]:
                out.append([])
            out[key[0]].append(result)
        return [r for r in out if r]

    @property
    def latest(self) -> list[RangeTestResult]:
        """The last round's tests, one per seed ([] before any point)."""
        return self.rounds[-1] if self.rounds else []

    def points(self) -> pd.DataFrame:
        """Every iteration of every round and seed: the CSV the page offers."""
        points = self.frame("points", POINT_COLUMNS)
        if points.empty:
            return points
        # whole numbers, also when read back from the history (where they may come as floats)
        return points.astype({"round": int, "seed": int, "iteration": int})

    def curve(self) -> pd.DataFrame:
        """The curve: lr, loss and smoothed loss per iteration, every round and seed."""
        return self.points()

    def chart(self):
        """The page's chart of the finished test (Altair): curves, suggestions, seed band."""
        from lrbs.charts import range_test_chart

        return range_test_chart(self.points(), self.suggestion_frame(), band=self.band())

    def suggestion_frame(self) -> pd.DataFrame:
        """The last round's suggestions (the median over seeds)."""
        return suggestion_frame(self.latest)

    def suggestions(self) -> dict[str, float]:
        frame = self.suggestion_frame()
        return dict(zip(frame.name, frame.lr.astype(float), strict=True))

    def band(self) -> pd.DataFrame | None:
        return band_of(self.latest)

    def spread(self) -> pd.DataFrame:
        return spread(self.latest)

    def zoom_default(self) -> tuple[float, float]:
        """A zoom range to start from: a tenth of the steepest descent to twice the maximum
        usable rate, rounded."""
        found = self.suggestions()
        lo = found.get("steep", 1e-2) / 10
        hi = found.get("max_usable", 1.0) * 2
        return float(f"{lo:.2g}"), float(f"{hi:.2g}")

    def summary(self) -> dict:
        latest = self.latest
        out = {
            "status": self.status,
            "message": self.message,
            **(self.rows.get("info") or [{"optimizer": self.config.optim.name}])[0],
            "rounds": [
                r.headline() | {"round": r.round, "seed": r.config.seed}
                for results in self.rounds
                for r in results
            ],
        }
        if latest:
            best = np.array([r.best for r in latest])
            out.update(
                iterations=len(latest[0].lrs),
                elapsed=sum(r.elapsed for results in self.rounds for r in results),
                lr_at_min=float(np.median(best[:, 0])),
                min_smoothed_loss=float(np.median(best[:, 1])),
            )
        if len(latest) > 1:
            out["spread"] = self.spread().to_dict(orient="records")
        out["suggestions"] = self.suggestions()
        out["final_round_suggestions"] = out["suggestions"]
        if latest and not out["suggestions"]:
            out["no_suggestion"] = NO_DESCENT
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"points": self.points()}

    def report(self) -> str:
        lines = []
        for results in self.rounds:
            for r in results:
                lr, loss = r.best
                lines.append(
                    f"{round_label(r.round)} seed {r.config.seed}: {r.status}, {len(r.lrs)} "
                    f"iterations in {seconds_text(r.elapsed)}, lowest smoothed loss {loss:.4g} "
                    f"at lr {lr:.3g}"
                )
                lines += [f"  {s.title:<18} {s.lr:<10.3g} {s.meaning}" for s in r.suggestions]
        return "\n".join(lines) if lines else self.status


# ---------------------------------------------------------------------------- the history


def stored_range_test(
    store, dataset: str | None = None, model: str | None = None
) -> tuple[dict[str, float], int] | None:
    """(suggestions, run id) of the newest range test in a RunStore on this dataset and model
    that found a maximum usable rate, or None. Its suggestions are the record's
    results["suggestions"] (the last round's, the median over seeds)."""
    for run_id in store.ids([KIND], dataset, model):
        found = (store.run(run_id).get("results") or {}).get("suggestions")
        if found and found.get("max_usable"):
            return found, run_id
    return None
