"""Tune the learning rate and the batch size together with Optuna (seed 003: tune the most
important hyperparameters first, in a small discrete space, then automate).

A study lives in an Optuna storage: an embedded journal file by default, or any Optuna URL
(PostgreSQL, MySQL, SQLite), so workers on several machines can run one study together. The
study keeps lrbs's settings (data, model, search space, per-trial budget) as a user attribute:
a worker needs only the study's name and storage. Every trial trains with THE training loop
from the same initial weights; its validation loss is reported to the pruner at each epoch's
end, at the step "percent of the trial's budget spent": under a time budget trials are compared
at equal time, not at equal epochs (a large batch runs many more epochs per second).

`run` (the `autotune run` command, the page's Start) creates the study, starts worker
processes on this machine (each a plain `python -m lrbs autotune worker`) and watches them,
streaming each finished trial as a row, so the run history keeps the finished trials even when
the study is stopped or interrupted.

The study's storage and its worker processes are lrbs.methods.study's (shared with the LR x
batch map); the trials' table and the Result are in lrbs.experiments.autotune.result; the
`autotune` command's actions in lrbs.cli.autotune.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd

from lrbs.core.config import check, from_dict, option
from lrbs.core.data import load
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.loop import OPTIMIZERS, Budget, OptimSpec, TrainConfig, train
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments.autotune.result import (  # noqa: F401 (the experiment's public names)
    CURVE_COLUMNS,
    TRIAL_COLUMNS,
    Best,
    Result,
    best,
    curve_rows,
    curves_frame,
    importances,
    near_best,
    trial_row,
)
from lrbs.methods import study as studies
from lrbs.methods.memory import largest_batch, make_fits, optimizer_states
from lrbs.methods.range_test import lr_range_around, quick_range_test
from lrbs.methods.scaling import warmup
from lrbs.methods.study import (  # noqa: F401 (the experiment's public names)
    MAX_WORKERS,
    Workers,
    cores,
    default_storage,
    launch_workers,
    log_dir_for,
    open_storage,
    safe_url,
    split_trials,
    study_names,
    workers_warning,
)
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink

log = logging.getLogger(__name__)

KIND = "autotune"
ATTR = "lrbs"  # the study's user attribute holding the settings
PRUNERS = ("median", "hyperband", "none")
# What a trial is worth. "best" is the validation loss of the checkpoint one would keep (early
# stopping): on a fixed budget a fast learner may reach a low loss and then overfit, and
# "final" would rank it below a slow learner that never got as far.
OBJECTIVES = ("best", "final")
DEFAULT_SECONDS = 10.0  # a trial's budget when neither seconds nor epochs are given


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    lr_min: float = option(1e-3, label="the lowest learning rate", help="lowest learning rate")
    lr_max: float = option(3.0, label="the highest learning rate", help="highest learning rate")
    batches: tuple[int, ...] = option(
        (16, 32, 64, 128, 256, 512), label="batch size", help="batch sizes to try"
    )
    optimizers: tuple[str, ...] = option(
        ("sgd",), help="optimizers to try: " + ", ".join(OPTIMIZERS)
    )
    warmups: tuple[float, ...] = option((0.0,), help="warm-up epochs to try")
    momentum: float = option(0.9, help="momentum, for the momentum optimizer")

    def __post_init__(self) -> None:
        check(self)
        positive_number("the lowest learning rate", self.lr_min)
        positive_number("the highest learning rate", self.lr_max)
        require(
            self.lr_min < self.lr_max,
            f"the lowest learning rate {self.lr_min:g} must be below the highest {self.lr_max:g}",
        )
        require(len(self.batches) > 0, "give at least one batch size")
        for b in self.batches:
            positive_int("batch size", b)
        require(len(set(self.batches)) == len(self.batches), "a batch size is listed twice")
        require(len(self.optimizers) > 0, "give at least one optimizer")
        for o in self.optimizers:
            require(o in OPTIMIZERS, f"unknown optimizer {o!r}; known: {', '.join(OPTIMIZERS)}")
        for w in self.warmups:
            require(w >= 0 and math.isfinite(w), f"warm-up epochs must be >= 0, got {w}")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")

    @classmethod
    def around(
        cls,
        lr: float,
        largest_batch: int,
        smallest_batch: int = 16,
        decades: float = 1.0,
        **kw,
    ) -> SearchSpace:
        """Seeded by the range test and the memory probe: `decades` of learning rate centred
        on a suggestion, and powers of two from `smallest_batch` up to the largest batch that
        fits (or the training set)."""
        positive_number("the suggested learning rate", lr)
        positive_int("the largest batch", largest_batch)
        lo, hi = lr_range_around(lr, decades)
        return cls(lr_min=lo, lr_max=hi, batches=powers_of_two(smallest_batch, largest_batch), **kw)

    def fit_to(self, n_train: int) -> SearchSpace:
        """Batch sizes above the training set dropped (an error if none is left)."""
        kept = tuple(b for b in self.batches if b <= n_train)
        require(
            bool(kept), f"every batch size is larger than the training set ({n_train:,} samples)"
        )
        return replace(self, batches=kept)


def steepest(found: dict) -> float | None:
    """The range test's rate to centre a search on: its steepest descent, else its valley."""
    return found.get("steep") or found.get("valley")


def powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    require(1 <= lo <= hi, f"no power of two between {lo} and {hi}")
    p = 1 << max(0, math.ceil(math.log2(lo)))
    out = []
    while p <= hi:
        out.append(p)
        p *= 2
    return tuple(out) or (hi,)


STUDY_FIELDS = ("space", "seconds", "epochs", "pruner", "seed", "objective")


@dataclass(frozen=True, kw_only=True)
class Config:
    """A study's settings (search space, budget per trial, pruner, objective, seed: what the
    study stores and every worker reads back) and how this machine runs it (trials, workers,
    study name, storage, seeding the space)."""

    space: SearchSpace = option(factory=SearchSpace)
    seconds: float | None = option(
        None,
        flag="--seconds-per-trial",
        label="seconds per trial",
        help=f"each trial's budget in seconds ({DEFAULT_SECONDS:g} when no epochs are given)",
    )
    epochs: float | None = option(
        None, flag="--epochs-per-trial", label="epochs per trial", help="instead, or as well"
    )
    pruner: str = option("median", choices=PRUNERS, help="stops trials that lag the others")
    objective: str = option(
        "best",
        choices=OBJECTIVES,
        help="best: the lowest validation loss a trial reached; final: its last one",
    )
    seed: int = option(0, help="seed of the sampler")
    trials: int = option(20, low=1, help="trials to run")
    workers: int = option(
        2,
        low=1,
        high=MAX_WORKERS,
        help="worker processes on this machine (more than its "
        "cores take turns on them: allowed, with a warning)",
    )
    study: str = option("", help="study name (default: dataset-model-time)")
    storage: str | None = option(None, help="Optuna URL or journal file")
    seed_space: bool = option(
        False,
        help="lr: a decade around a quick range test's steepest descent; batches: powers of "
        "two up to the largest that fits (--cap-mib on the CPU) or the training set",
    )
    cap_mib: float | None = option(None, low=0, help="memory cap for the probe (CPU)")

    def __post_init__(self) -> None:
        check(self)
        if self.seconds is None and self.epochs is None:  # the default budget, made explicit
            object.__setattr__(self, "seconds", DEFAULT_SECONDS)
        if self.seconds is not None:
            positive_number("seconds per trial", self.seconds)
        if self.epochs is not None:
            positive_number("epochs per trial", self.epochs)

    def budget(self) -> Budget:
        return Budget(epochs=self.epochs, seconds=self.seconds)

    def report_step(self, progress) -> int:
        """Where a validation loss goes on the pruner's axis: the percent of the trial's budget
        spent (see the module's docstring)."""
        return min(100, int(100 * self.budget().fraction(progress)))

    def study_settings(self) -> dict:
        """What defines the study (and what it stores): not how many trials or workers run."""
        return {name: getattr(self, name) for name in STUDY_FIELDS}

    def check_data(self, n_train: int) -> None:
        """Some batch size fits the training set."""
        self.space.fit_to(n_train)


def seed_space(
    setup: Setup, data, space: SearchSpace, cap_bytes: int | None = None, smallest: int = 16
) -> tuple[SearchSpace, dict]:
    """The search space seeded by a quick range test (a decade around its steepest descent)
    and the memory probe (powers of two up to the largest batch that fits). Returns it and
    what was found."""
    opt = space.optimizers[0]
    found = quick_range_test(
        setup.fresh_model(data), data, optimizer=opt, momentum=space.momentum, seed=setup.seed
    )
    centre = steepest(found)
    require(centre is not None, "the range test found no steepest descent to centre on")
    fits = make_fits(setup.fresh_model(data), data, cap_bytes, optimizer_states(opt))
    probe = largest_batch(fits, data.n_train)
    top = probe.safe if probe.hit_limit else data.n_train
    seeded = SearchSpace.around(
        centre,
        top,
        min(smallest, top),
        optimizers=space.optimizers,
        warmups=space.warmups,
        momentum=space.momentum,
    )
    return seeded, {
        "suggestions": found,
        "centre": centre,
        "largest_batch": probe.largest,
        "memory_limited": probe.hit_limit,
    }


def seeding_note(found: dict) -> str:
    """What `seed_space` found, in words."""
    limit = "memory" if found["memory_limited"] else "the training set"
    return (
        f"From a quick range test (steepest descent {found['centre']:.3g}) and the memory probe "
        f"(largest batch {found['largest_batch']:,}, limited by {limit})."
    )


def make_sampler(seed: int, n_trials: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(4, n_trials // 3)))


def make_pruner(cfg: Config):
    import optuna

    # steps are percents of a trial's budget
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=5, max_resource=100)
    return optuna.pruners.NopPruner()


def settings(setup: Setup, cfg: Config) -> dict:
    """The study's user attribute: its setup and its study settings (the same keys studies
    made by earlier versions of lrbs hold, so they still load)."""
    from lrbs.runs.store import jsonable

    return jsonable({"setup": setup, "tune": cfg.study_settings()})


def from_settings(d: dict) -> tuple[Setup, Config]:
    tune = {k: v for k, v in d["tune"].items() if k in STUDY_FIELDS}
    return from_dict(Setup, d["setup"]), from_dict(Config, tune)


def create_study(storage, name: str, setup: Setup, cfg: Config):
    """A new study, or the one of that name if its settings are the same (to add trials)."""
    return studies.create_or_join(
        storage,
        name,
        ATTR,
        settings(setup, cfg),
        sampler=make_sampler(cfg.seed, 20),
        pruner=make_pruner(cfg),
    )


def load_study(storage, name: str, seed_offset: int = 0, n_trials: int = 20):
    """(study, setup, config) of an lrbs study, with lrbs's sampler and pruner attached."""
    import optuna

    try:
        summaries = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    except Exception as exc:
        raise ConfigError(f"cannot read the study storage: {exc}") from None
    require(name in summaries, f"there is no study named {name!r} in this storage")
    probe = optuna.load_study(study_name=name, storage=storage)
    attrs = probe.user_attrs.get(ATTR)
    require(attrs is not None, f"study {name!r} was not made by lrbs (it has no lrbs settings)")
    setup, cfg = from_settings(attrs)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(cfg.seed + seed_offset, n_trials),
        pruner=make_pruner(cfg),
    )
    return study, setup, cfg


def default_study_name(setup: Setup) -> str:
    return f"{setup.data_name}-{setup.model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------ trials


class TrialStopped(Exception):
    """The user stopped the study while this trial trained (recorded as a failed trial)."""


def objective(
    setup: Setup,
    data,
    cfg: Config,
    stop: threading.Event | None = None,
    on_event: Callable | None = None,
):
    """The Optuna objective: final validation loss after the per-trial budget."""
    import optuna

    space = cfg.space.fit_to(data.n_train)

    def run(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", space.lr_min, space.lr_max, log=True)
        batch = trial.suggest_categorical("batch_size", list(space.batches))
        opt = _choose(trial, "optimizer", space.optimizers)
        warm = _choose(trial, "warmup_epochs", space.warmups)
        pruned = threading.Event()
        halt = threading.Event()
        reported: set[int] = set()
        lowest = [math.inf]

        def on_epoch_end(p, ev, o) -> None:
            if ev is None or ev.val_loss is None or not math.isfinite(ev.val_loss):
                return
            lowest[0] = min(lowest[0], ev.val_loss)
            step = cfg.report_step(p)
            if step in reported:
                return
            reported.add(step)
            trial.report(lowest[0] if cfg.objective == "best" else ev.val_loss, step)
            if trial.should_prune():
                pruned.set()
                halt.set()

        scheduler = None
        if warm > 0:
            spe = math.ceil(data.n_train / batch)
            scheduler = warmup(lr, lr / 10, warm, spe)
        tc = TrainConfig(
            batch_size=batch,
            budget=cfg.budget(),
            optim=OptimSpec(opt, lr, space.momentum),
            seed=setup.seed,
            log_every=10,
            min_eval_seconds=(cfg.seconds / 25) if cfg.seconds else 0.0,
        )
        result = train(
            setup.fresh_model(data),
            data,
            tc,
            run_id=f"trial {trial.number}",
            on_event=on_event,
            stop=halt,
            lr_scheduler=scheduler,
            on_epoch_end=on_epoch_end,
            stop_rule=lambda ev: "stopped" if stop is not None and stop.is_set() else None,
        )
        trial.set_user_attr("status", "pruned" if pruned.is_set() else result.status)
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("updates", result.steps)
        trial.set_user_attr("val_acc", result.val_acc)
        if pruned.is_set():
            raise optuna.TrialPruned()
        if result.status == "stopped":
            raise TrialStopped("stopped by the user")
        if result.status in ("diverged", "oom") or result.val_loss is None:
            trial.set_user_attr("message", result.message)
            return math.inf  # a result: this corner of the space is unusable
        if cfg.objective == "best":
            return min(e.val_loss for e in result.events if e.kind == "eval" and e.val_loss)
        return result.val_loss

    return run


def _choose(trial, name: str, options: tuple):
    if len(options) == 1:
        return options[0]
    return trial.suggest_categorical(name, list(options))


def run_worker(
    storage_url: str | None,
    name: str,
    n_trials: int,
    *,
    worker: int = 0,
    stop: threading.Event | None = None,
    threads: int | None = None,
    storage=None,
) -> int:
    """Run `n_trials` trials of study `name` in this process (`storage`: the storage of
    `storage_url`, when it is open already). Returns the trials it ran."""
    positive_int("trials", n_trials)
    studies.prepare_worker(threads)
    storage = storage or open_storage(storage_url)
    study, setup, cfg = load_study(storage, name, seed_offset=worker, n_trials=n_trials)
    fn = objective(setup, load_tensors(setup), cfg, stop)
    return studies.optimize(
        study, fn, n_trials, stop=stop, catch=(TrialStopped,), storage_url=storage_url
    )


def trials_frame(study) -> pd.DataFrame:
    """One row per trial, every state: the table the page shows and offers as CSV."""
    _, cfg = from_settings(study.user_attrs[ATTR])
    rows = [trial_row(t, cfg.space) for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


# ------------------------------------------------------------------ a study run on this machine


class _Watch:
    """Streams each trial of a study once it has ended (complete, pruned or failed): its row,
    its reported curve, and the importances once enough trials have completed."""

    def __init__(self, study, space: SearchSpace, sink: Sink) -> None:
        self.study, self.space, self.sink = study, space, sink
        self.seen: set[int] = set()
        self.complete = 0

    def poll(self) -> int:
        """Streams the trials that ended since the last poll; returns how many there were."""
        import optuna

        ended = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.number not in self.seen
            and t.state != optuna.trial.TrialState.RUNNING
            and t.state != optuna.trial.TrialState.WAITING
        ]
        for t in sorted(ended, key=lambda t: t.number):
            self.seen.add(t.number)
            self.sink.emit("trials", trial_row(t, self.space))
            for row in curve_rows(t):
                self.sink.emit("curves", row)
            self.complete += t.state == optuna.trial.TrialState.COMPLETE
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in ended):
            found = importances(self.study)
            if found:
                self.sink.emit("importances", dict(found))
        return len(ended)


def prepared_space(setup: Setup, config: Config) -> tuple[SearchSpace, dict | None]:
    """The space the study searches: seeded by a range test and the memory probe when asked,
    else the configured one without batches above the training set."""
    if config.seed_space:
        cap = int(config.cap_mib * 2**20) if config.cap_mib else None
        return seed_space(setup, load_tensors(setup), config.space, cap)
    if setup.workload is not None:
        return config.space.fit_to(load_tensors(setup).n_train), None
    return config.space.fit_to(load(setup.data).n_train), None


def _info(name: str, url: str, setup: Setup, space: SearchSpace) -> dict:
    """The "study" row: its name, storage, data, model and space."""
    return {
        "study": name,
        "storage": safe_url(url),
        "dataset": setup.data_name,
        "model": setup.model_name,
        "lr_min": space.lr_min,
        "lr_max": space.lr_max,
        "batches": list(space.batches),
    }


def run(setup: Setup, config: Config, sink: Sink | None = None, stop=None) -> Result:
    """Create (or join) the study, run `config.trials` trials on `config.workers` worker
    processes here, and stream each trial as it ends. A stop asks every worker to end its
    current trial and take no new one; what ended is kept."""
    rows, sink = collect(sink)
    if warning := workers_warning(config.workers):
        log.warning(warning)
    name = config.study.strip() or default_study_name(setup)
    url = config.storage or default_storage()
    storage = open_storage(url)
    space, found = prepared_space(setup, config)
    study = create_study(storage, name, setup, replace(config, space=space))
    info = _info(name, url, setup, space)
    sink.emit("study", info | ({"seeded_from": found} if found else {}))
    watch = _Watch(study, space, sink)
    before = watch.poll()  # trials the study already had (it is joined, not made)
    workers = launch_workers(url, name, config.trials, config.workers, log_dir_for(url))
    per = split_trials(config.trials, config.workers)
    for i, (proc, path) in enumerate(zip(workers.procs, workers.logs, strict=True)):
        sink.emit("workers", {"worker": i, "pid": proc.pid, "trials": per[i], "log": str(path)})

    def poll() -> None:
        watch.poll()
        n = len(watch.seen) - before
        sink.progress(n / config.trials, f"{n} of {config.trials} trials")

    if workers.supervise(poll, stop):
        return Result(config, rows.rows, "stopped", "stopped: each worker ended its trial")
    return Result(config, rows.rows)


def study_result(storage_url: str | None, name: str) -> Result:
    """A study as it stands in its storage (one fed by other machines, say), as the Result of
    a run would hold it: every trial (running ones too), what they reported, importances."""
    url = storage_url or default_storage()
    study, setup, cfg = load_study(open_storage(url), name)
    trials = study.get_trials(deepcopy=False)
    rows = {
        "study": [_info(name, url, setup, cfg.space)],
        "trials": [trial_row(t, cfg.space) for t in trials],
        "curves": [r for t in trials for r in curve_rows(t)],
    }
    found = importances(study)
    if found:
        rows["importances"] = [dict(found)]
    return Result(cfg, rows)
