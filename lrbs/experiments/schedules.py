"""Learning-rate schedules side by side, and a rate that adapts itself, as an experiment.

Every schedule trains from the same initial weights for the same epochs and batch; the
schedules themselves (torch's, stepped once per update, and hypergradient descent) are
`lrbs.methods.schedules`. The bounds of the cyclical and one-cycle schedules come from the
settings, a quick LR range test run now, or the newest one in the run history (seed 002): the
lower bound where the loss falls fastest, the upper one where it turns ragged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import cached_property

import pandas as pd
from torch import nn
from torch.optim import lr_scheduler as sched

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, require
from lrbs.core.loop import EVENT_COLUMNS, Budget, OptimSpec, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.spread import difference, spread
from lrbs.methods.range_test import quick_range_test as range_test_suggestions
from lrbs.methods.schedules import (  # noqa: F401  (the schedules' names, offered here as before)
    HD_BETA,
    PLAN_COLUMNS,
    REACTIVE,
    SCHEDULES,
    Hypergradient,
    build_scheduler,
    per_group,
    preview,
    steps_per_epoch,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink, Tee

KIND = "schedules"

DEFAULT_SCHEDULES = ("constant", "cosine", "onecycle", "clr", "hd")
BOUNDS = ("given", "range-test", "history")
SUMMARY_COLUMNS = [
    "schedule",
    "status",
    "train_loss",
    "val_loss",
    "val_acc",
    "best_val_loss",
    "best_epoch",
    "lr_min",
    "lr_max",
    "lr_final",
    "updates",
    "seconds",
]


@dataclass(frozen=True, kw_only=True)
class Config:
    schedules: tuple[str, ...] = option(
        DEFAULT_SCHEDULES, label="schedule", help="schedules to train: " + ", ".join(SCHEDULES)
    )
    epochs: int = option(30, low=1, high=1000, help="epochs each schedule trains")
    batch_size: int = option(64, low=1, help="batch size")
    optim: OptimSpec = option(factory=lambda: OptimSpec("sgd", 0.5))  # lr: the base rate
    base_lr: float = option(0.25, help="cyclical lower bound")
    max_lr: float = option(1.0, help="cyclical upper bound; one-cycle's peak")
    bounds: str = option(
        "given",
        choices=BOUNDS,
        help="lr, base and max from the flags (given), from a quick range test run now "
        "(range-test), or from the newest range test in the run history for this dataset and "
        "model (history)",
    )
    history_db: str | None = option(
        None,
        help="the run-history file --bounds history reads (default: the file this run is "
        "saved in, i.e. --db, else LRBS_DB or ~/.local/share/lrbs/runs.db)",
    )
    preview: bool = option(False, help="only the planned lr per step, no training")
    floor: float = option(0.0, help="cosine's end, as a fraction of the base lr")
    step_epochs: float = option(10.0, help="step decay: every k epochs ...")
    gamma: float = option(0.1, help="... multiply by gamma (also plateau's factor)")
    final_factor: float = option(0.01, help="exponential: the end rate / the start rate")
    warmup_epochs: float = option(2.0, help="warm-up-cosine: epochs of linear warm-up")
    restart_epochs: float = option(5.0, help="SGDR's first period (epochs)")
    restart_mult: int = option(2, label="the restart multiplier", help="each SGDR period x this")
    cycle_epochs: float = option(2.5, help="CLR step size: half a cycle, in epochs")
    exp_range_end: float = option(0.01, help="exp_range: the amplitude left at the end")
    onecycle_pct: float = option(0.3, help="share of one-cycle spent going up")
    onecycle_div: float = option(25.0, help="one-cycle starts at max lr / div")
    patience: int = option(2, low=1, help="plateau: epochs without improvement before it acts")
    hd_beta: float | None = option(
        None,
        flag="--beta",
        label="the hypergradient rate beta",
        help="HD's hypergradient rate (default: Baydin et al.'s, 1e-3 for SGD, 1e-7 for Adam)",
    )
    seed: int = option(0, help="seed of every schedule's weights and batches (first repeat)")
    repeats: int = option(1, low=1, high=10, help="seeds per schedule: seed, seed+1, ...")
    log_every: int = option(5, low=1, help="updates between training points")

    def __post_init__(self) -> None:
        check(self)
        require(len(self.schedules) > 0, "choose at least one schedule")
        for s in self.schedules:
            require(s in SCHEDULES, f"unknown schedule {s!r}; known: {', '.join(SCHEDULES)}")
        require(len(set(self.schedules)) == len(self.schedules), "a schedule is listed twice")
        positive("the lower bound (base lr)", self.base_lr)
        positive("the upper bound (max lr)", self.max_lr)
        require(
            self.base_lr < self.max_lr,
            f"the lower bound {self.base_lr:g} must be below the upper bound {self.max_lr:g}",
        )
        require(0 <= self.floor < 1, f"the cosine floor must be in [0, 1), got {self.floor}")
        positive("the step-decay interval (epochs)", self.step_epochs)
        require(0 < self.gamma < 1, f"gamma must be between 0 and 1, got {self.gamma}")
        require(
            0 < self.final_factor < 1,
            f"the exponential final factor must be between 0 and 1, got {self.final_factor}",
        )
        require(self.warmup_epochs >= 0, "the warm-up must be >= 0 epochs")
        if "warmup-cosine" in self.schedules:
            require(
                self.warmup_epochs < self.epochs,
                f"the warm-up ({self.warmup_epochs:g} epochs) must be shorter than the run "
                f"({self.epochs} epochs)",
            )
        positive("the restart period (epochs)", self.restart_epochs)
        require(self.restart_mult >= 1, "the restart multiplier must be at least 1")
        positive("the cycle step size (epochs)", self.cycle_epochs)
        require(0 < self.exp_range_end <= 1, "the exp_range end amplitude must be in (0, 1]")
        require(0 < self.onecycle_pct < 1, "one-cycle's rising share must be in (0, 1)")
        require(self.onecycle_div > 1, "one-cycle's divisor must be above 1")
        if self.hd_beta is not None:
            require(
                self.hd_beta >= 0, f"the hypergradient rate beta must be >= 0, got {self.hd_beta}"
            )

    @property
    def beta(self) -> float:
        return HD_BETA[self.optim.name] if self.hd_beta is None else self.hd_beta

    def fits(self, n_train: int) -> None:
        """Refuse a batch larger than the training set, before anything trains."""
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch size {self.batch_size} is larger than the training set ({n_train:,})"
            )


def positive(what: str, value: float) -> None:
    require(value > 0, f"{what} must be greater than 0, got {value:g}")


# ------------------------------------------------------------------ bounds


@dataclass(frozen=True)
class RangeBounds:
    """What the range test says for schedules: a rate to hold, and the cyclical bounds."""

    lr: float
    base_lr: float
    max_lr: float
    source: str

    @classmethod
    def from_suggestions(
        cls, suggestions: dict[str, float], source: str = "the range test"
    ) -> RangeBounds:
        """The upper bound is the maximum usable rate, where the loss turns ragged; the lower
        one the steepest-descent rate (as the CLR paper reads the test), but at most a quarter
        of the upper one, so a cycle spans at least 4x. The rate to hold is the steepest."""
        top = suggestions.get("max_usable")
        if top is None or not top > 0:
            raise ConfigError(f"{source} has no maximum usable rate to bound a cycle with")
        steep = suggestions.get("steep")
        hold = steep if steep is not None and 0 < steep < top else top / 4
        return cls(hold, min(hold, top / 4), top, source)

    @classmethod
    def given(cls, cfg: Config) -> RangeBounds:
        return cls(cfg.optim.lr, cfg.base_lr, cfg.max_lr, "the settings")

    def apply(self, cfg: Config) -> Config:
        """`cfg` with these rates, as it trains (bounds "given": nothing left to look up)."""
        optim = replace(cfg.optim, lr=self.lr)
        return replace(cfg, optim=optim, base_lr=self.base_lr, max_lr=self.max_lr, bounds="given")

    def text(self) -> str:
        return (
            f"From {self.source}: hold lr {self.lr:.3g}; cycle between {self.base_lr:.3g} and "
            f"{self.max_lr:.3g}."
        )


def bounds_from_history(store, dataset: str | None = None, model: str | None = None):
    """RangeBounds from the newest range test in the run history (page or CLI) on this dataset
    and model, or None when there is none."""
    from lrbs.runs.history import stored_range_test

    found = stored_range_test(store, dataset, model)
    if found is None:
        return None
    suggestions, run_id = found
    return RangeBounds.from_suggestions(suggestions, f"range test #{run_id} in the history")


def quick_range_test(model: nn.Module, data: TensorData, cfg: Config) -> RangeBounds:
    """The quick range test (`lrbs.methods.range_test.quick_range_test`) with this optimizer
    and batch size, for bounds right now."""
    found = range_test_suggestions(
        model,
        data,
        optimizer=cfg.optim.name,
        momentum=cfg.optim.momentum,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    return RangeBounds.from_suggestions(found, "a quick range test")


def recording_path(sink: Sink | None):
    """The run-history file a sink records to (the CLI's --db), or None."""
    from lrbs.runs.store import Recorder

    if isinstance(sink, Recorder):
        return sink.path
    if isinstance(sink, Tee):
        return next((p for s in sink.sinks if (p := recording_path(s)) is not None), None)
    return None


def resolve_bounds(setup: Setup, data: TensorData, cfg: Config, sink: Sink) -> RangeBounds:
    """The rates this run uses: the settings', a quick range test's, or the history's."""
    if cfg.bounds == "range-test":
        sink.progress(0.0, "quick range test")
        return quick_range_test(setup.fresh_model(data), data, cfg)
    if cfg.bounds == "history":
        from lrbs.runs.store import RunStore, default_path

        path = cfg.history_db or recording_path(sink) or default_path()
        with RunStore(path) as store:
            found = bounds_from_history(store, setup.data_name, setup.model_name)
        require(
            found is not None,
            f"no range test of this dataset and model in the history ({path}): run "
            "`python -m lrbs lr-find` first, or give the bounds",
        )
        return found
    return RangeBounds.given(cfg)


# ------------------------------------------------------------------ training them


def run_names(cfg: Config) -> dict[str, tuple[str, int]]:
    """Every run by name: (schedule, seed), schedule by schedule, repeats inside
    ("cosine seed 1")."""
    seeds = range(cfg.seed, cfg.seed + cfg.repeats)
    return {
        (n if cfg.repeats == 1 else f"{n} seed {s}"): (n, s) for n in cfg.schedules for s in seeds
    }


def plan_run(run: str, cfg: Config, setup: Setup, data: TensorData) -> Planned:
    """One run of a schedule ("cosine" or "cosine seed 1"): fresh weights of its seed, its
    optimizer, its scheduler or hooks."""
    name, seed = run_names(cfg).get(run, (run, cfg.seed))
    model = setup.fresh_model(data, seed)
    opt = data.task.build_optimizer(model.parameters(), cfg.optim)
    extra: dict = {"optimizer": opt}
    per_update = build_scheduler(name, cfg, opt, steps_per_epoch(data.n_train, cfg.batch_size))
    if per_update is not None:
        extra["lr_scheduler"] = lambda _opt: per_update
    if name == "hd":
        Hypergradient(opt, cfg.beta)  # hooks on this run's own optimizer
    if name == "plateau":
        reducer = sched.ReduceLROnPlateau(
            opt, factor=cfg.gamma, patience=cfg.patience - 1, threshold=0
        )

        def on_epoch_end(p, ev, o) -> None:
            if ev is not None and ev.val_loss is not None:
                reducer.step(ev.val_loss)

        extra["on_epoch_end"] = on_epoch_end
    tc = TrainConfig(
        batch_size=cfg.batch_size,
        budget=Budget(epochs=cfg.epochs),
        optim=cfg.optim,
        seed=seed,
        log_every=cfg.log_every,
        eval_at_start=True,
    )
    return Planned(model, tc, extra, {"schedule": name, "seed": seed})


def run(
    setup: Setup, config: Config, sink: Sink | None = None, stop: threading.Event | None = None
) -> Result:
    """Every schedule from the same initial weights, for the same epochs and batch size
    (with `config.preview`, only the rate each would use). Streams the bounds used ("bounds"),
    the planned rates ("plan", preview only), every training point ("events") and one row as
    each schedule ends ("runs")."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    config.fits(data.n_train)
    bounds = resolve_bounds(setup, data, config, sink)
    used = bounds.apply(config)
    sink.emit(
        "bounds",
        {
            "source": bounds.source,
            "lr": bounds.lr,
            "base_lr": bounds.base_lr,
            "max_lr": bounds.max_lr,
            "n_train": data.n_train,
            "dataset": setup.data_name,
            "model": setup.model_name,
        },
    )
    if config.preview:
        for row in preview(used, data.n_train).to_dict("records"):
            sink.emit("plan", row)
        sink.progress(1.0, "planned")
        return Result(config, rows.rows)
    results = run_series(
        list(run_names(used)), lambda name: plan_run(name, used, setup, data), data, sink, stop
    )
    stopped = (stop is not None and stop.is_set()) or any(
        r.status == "stopped" for r in results.values()
    )
    return Result(config, rows.rows, "stopped" if stopped else "finished")


def run_table(events: pd.DataFrame, statuses: dict[str, str]) -> pd.DataFrame:
    """One row per run, from its events (the curves' CSV) and how it ended: final and best
    validation loss, accuracy, the rates it used."""
    rows = []
    for name, status in statuses.items():
        ev = events[events.run_id == name]
        evals = ev[(ev.kind == "eval") & ev.val_loss.notna()]
        trains = ev[ev.kind == "train"]
        last = evals.iloc[-1] if len(evals) else None
        best = evals.loc[evals.val_loss.astype(float).idxmin()] if len(evals) else None
        rows.append(
            {
                "schedule": name,
                "status": status,
                "train_loss": last.train_eval_loss if last is not None else None,
                "val_loss": last.val_loss if last is not None else None,
                "val_acc": last.val_acc if last is not None else None,
                "best_val_loss": best.val_loss if best is not None else None,
                "best_epoch": best.epoch if best is not None else None,
                "lr_min": trains.lr.min() if len(trains) else None,
                "lr_max": trains.lr.max() if len(trains) else None,
                "lr_final": trains.lr.iloc[-1] if len(trains) else None,
                "updates": int(ev.step.max()) if len(ev) else 0,
                "seconds": float(ev.elapsed.max()) if len(ev) else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def summary_table(events: pd.DataFrame, statuses: dict[str, str]) -> tuple[pd.DataFrame, str]:
    """One row per schedule (means over its seeds, the spread of the final validation loss
    when repeated), and a sentence naming the winner (markdown) and whether the runner-up
    and the constant rate are within noise of it."""
    per_run = run_table(events, statuses)
    per_run["run"] = per_run.schedule
    per_run["schedule"] = per_run.schedule.str.replace(r" seed \d+$", "", regex=True)
    numbers = [c for c in SUMMARY_COLUMNS if c not in ("schedule", "status")]
    per_run[numbers] = per_run[numbers].apply(pd.to_numeric, errors="coerce")
    by = per_run.groupby("schedule", sort=False)
    df = by[numbers].mean().reset_index()
    df.insert(1, "status", by.status.agg(lambda s: "/".join(dict.fromkeys(s))).values)
    df.insert(2, "repeats", by.size().values)
    if not df.empty and df.repeats.max() > 1:
        df["val_loss_std"] = by.val_loss.std().values
    losses = {k: g.val_loss.tolist() for k, g in by}
    ok = df[(df.status == "finished") & df.val_loss.notna()].sort_values("val_loss")
    if ok.empty:
        return df, "No schedule finished its budget."
    win = ok.iloc[0]
    verdict = f"Lowest final validation loss: **{win.schedule}** at " + (
        f"{spread(losses[win.schedule]).text()}"
        + (f" (accuracy {win.val_acc:.3f})" if pd.notna(win.val_acc) else "")
    )
    if len(ok) > 1:
        second = ok.schedule.iloc[1]
        gap = difference(losses[second], losses[win.schedule])
        verdict += f"; the runner-up, {second}, differs by {gap.text()}"
    if win.schedule != "constant" and "constant" in losses and len(ok) > 1:
        if ok.schedule.iloc[1] != "constant":
            gap = difference(losses["constant"], losses[win.schedule])
            verdict += f"; the constant rate by {gap.text()}"
    bad = df[df.status != "finished"]
    if not bad.empty:
        verdict += ". Did not finish: " + ", ".join(
            f"{r.schedule} ({r.status})" for r in bad.itertuples()
        )
    return df, verdict + "."


@dataclass(frozen=True)
class Result(experiment.Result):
    """The schedules' curves, their summary and verdict, the planned rates and the bounds."""

    @cached_property
    def bounds(self) -> RangeBounds:
        found = self.rows.get("bounds") or []
        if not found:
            return RangeBounds.given(self.config)
        b = found[0]
        return RangeBounds(b["lr"], b["base_lr"], b["max_lr"], b["source"])

    @cached_property
    def used(self) -> Config:
        """The config as it trained: the bounds applied."""
        return self.bounds.apply(self.config)

    @cached_property
    def n_train(self) -> int | None:
        found = self.rows.get("bounds") or []
        n = found[0].get("n_train") if found else None
        return None if n is None or pd.isna(n) else int(n)  # the history may give a float

    def events(self) -> pd.DataFrame:
        return self.frame("events", EVENT_COLUMNS)

    def runs(self) -> list[dict]:
        return list(self.rows.get("runs", []))

    def rates_used(self) -> pd.DataFrame:
        """The training events, one curve per schedule: with repeats, the first seed's (every
        seed uses the same rates), its run ids without the seed."""
        rows = self.events()
        rows = rows[rows.kind == "train"]
        if self.config is None or self.config.repeats == 1:
            return rows
        first = rows[rows.run_id.str.endswith(f" seed {self.config.seed}")]
        return first.assign(run_id=first.run_id.str.replace(r" seed \d+$", "", regex=True))

    @cached_property
    def _summary(self) -> tuple[pd.DataFrame, str]:
        statuses = {r["run"]: r["status"] for r in self.runs()}
        return summary_table(self.events(), statuses)

    def table(self) -> pd.DataFrame:
        return self._summary[0]

    def verdict(self, markdown: bool = True) -> str:
        text = self._summary[1]
        if self.stopped:
            text += " Stopped before every schedule ran."
        return text if markdown else text.replace("**", "")

    def plan(self) -> pd.DataFrame:
        """The rate each per-update schedule uses at every update (thinned on long runs)."""
        return self._plan

    @cached_property
    def _plan(self) -> pd.DataFrame:
        if "plan" in self.rows:
            return self.frame("plan", PLAN_COLUMNS)
        if self.n_train is None:
            return pd.DataFrame(columns=PLAN_COLUMNS)
        return preview(self.used, self.n_train)

    def summary(self) -> dict:
        b = self.bounds
        out = {
            "status": self.status,
            "message": self.message,
            "optimizer": self.config.optim.name,
            "lr": b.lr,
            "base_lr": b.base_lr,
            "max_lr": b.max_lr,
            "bounds": {"source": b.source, "lr": b.lr, "base_lr": b.base_lr, "max_lr": b.max_lr},
        }
        found = self.rows.get("bounds") or []
        if found:
            out |= {"dataset": found[0].get("dataset"), "model": found[0].get("model")}
        if self.config.preview:
            plan = self.plan()
            return out | {"steps": int(plan.step.max()) + 1 if len(plan) else 0}
        return out | {
            "verdict": self.verdict(markdown=False),
            "schedules": self.table().to_dict(orient="records"),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        if self.config.preview:
            return {"plan": self.plan()}
        return {"curves": self.events(), "table": self.table(), "plan": self.plan()}

    def report(self) -> str:
        lines = []
        if self.config.bounds != "given":
            lines.append(self.bounds.text())
        if self.config.preview:
            plan = self.plan()
            if plan.empty:
                return "\n".join([*lines, "no per-update schedule chosen: nothing to plan"])
            agg = plan.groupby("schedule", sort=False).lr.agg(["first", "min", "max", "last"])
            return "\n".join([*lines, agg.to_string()])
        table = self.table()
        lines += [table.to_string(index=False) if not table.empty else self.status]
        return "\n".join([*lines, self.verdict(markdown=False)])
