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
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import pandas as pd

from lrbs.core.config import check, from_dict, option
from lrbs.core.data import load
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.loop import OPTIMIZERS, Budget, OptimSpec, TrainConfig, train
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.spread import spread
from lrbs.runs import experiment
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
MAX_WORKERS = 32  # worker processes on one machine: each imports torch (~300 MB)
POLL_SECONDS = 1.0  # how often a running study is read for finished trials


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


def lr_range_around(centre: float, decades: float = 1.0) -> tuple[float, float]:
    """`decades` of learning rate centred (geometrically) on `centre`."""
    half = 10 ** (decades / 2)
    return centre / half, centre * half


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


# ------------------------------------------------------------------ storage and studies


def default_storage() -> str:
    """A journal file next to the run history."""
    from lrbs.runs.store import default_path

    return str(Path(default_path()).with_name("autotune.journal"))


def open_storage(url: str | None = None):
    """An Optuna storage: a URL with '://' (postgresql://, mysql://, sqlite:///) as Optuna
    takes it, anything else a journal file path (made if absent). ConfigError when it cannot
    be opened or reached."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    url = url or default_storage()
    try:
        if "://" in url:
            # heartbeats: a trial whose worker died (another machine, a kill) is marked
            # failed by the next worker instead of staying "running" for ever
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                beat = int(os.environ.get("LRBS_HEARTBEAT_SECONDS") or 30)
                rdb = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=beat,
                    grace_period=4 * beat,
                )
                _reconnect_with_retries(rdb.engine)  # a restarted database is waited for
                return rdb
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "?"
        raise ConfigError(
            f"cannot open the study storage {safe_url(url)}: its database driver {missing!r} "
            f"is not installed (pip install '{_DRIVERS.get(missing, missing)}')"
        ) from None
    except Exception as exc:  # sqlalchemy, OS and Optuna errors all mean the same to a user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open the study storage {safe_url(url)}: {reason}") from None


_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        # pre-ping: a pooled connection the server dropped (a restart) is replaced, not used
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    return {}


def _reconnect_with_retries(engine) -> None:
    """Once a storage has been reached, a new connection that fails (the database restarting,
    a network blip) is tried again for LRBS_STORAGE_RETRY_SECONDS (default 60) before the
    error stands. The first connection is not retried: a wrong URL or password fails at once."""
    import time

    from sqlalchemy import event

    patience = float(os.environ.get("LRBS_STORAGE_RETRY_SECONDS") or 60)

    @event.listens_for(engine, "do_connect")
    def connect(dialect, conn_rec, cargs, cparams):
        start, attempt = time.monotonic(), 0
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if time.monotonic() - start >= patience:
                    raise
                if attempt == 0:
                    why = (str(exc).strip().splitlines() or ["?"])[0]
                    log.warning("study storage unreachable, retrying for %.0f s: %s", patience, why)
                time.sleep(1.0)
                attempt += 1
                continue
            if attempt:
                log.warning("study storage reachable again after %.0f s", time.monotonic() - start)
            return conn


def safe_url(url: str) -> str:
    """The URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}"
    return url


def log_dir_for(storage_url: str | None) -> Path:
    """Where local workers write their logs: beside a journal file, else beside the history."""
    if storage_url and "://" not in storage_url:
        return Path(storage_url).resolve().parent / "autotune-logs"
    return Path(default_storage()).parent / "autotune-logs"


def seed_space(
    setup: Setup, data, space: SearchSpace, cap_bytes: int | None = None, smallest: int = 16
) -> tuple[SearchSpace, dict]:
    """The search space seeded by a quick range test (a decade around its steepest descent)
    and the memory probe (powers of two up to the largest batch that fits). Returns it and
    what was found."""
    from lrbs.experiments.bs_probe import largest_batch, make_fits
    from lrbs.experiments.lr_finder import RangeTestConfig, range_test

    opt = space.optimizers[0]
    rt = RangeTestConfig(
        lr_min=1e-6,
        batch_size=min(64, data.n_train),
        optimizer=opt,
        momentum=space.momentum,
        seed=setup.seed,
    )
    found = {s.name: s.lr for s in range_test(setup.fresh_model(data), data, rt).suggestions}
    centre = steepest(found)
    require(centre is not None, "the range test found no steepest descent to centre on")
    states = 2 if opt in ("adam", "adamw") else 1
    probe = largest_batch(make_fits(setup.fresh_model(data), data, cap_bytes, states), data.n_train)
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
    import time

    import optuna

    require(bool(name.strip()), "the study needs a name")
    mine = settings(setup, cfg)
    kw = dict(
        storage=storage,
        study_name=name,
        direction="minimize",
        sampler=make_sampler(cfg.seed, 20),
        pruner=make_pruner(cfg),
    )
    try:  # the storage's unique name decides who made it, when two processes try at once
        study = optuna.create_study(**kw)
        study.set_user_attr(ATTR, mine)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=kw["sampler"], pruner=kw["pruner"]
        )
    theirs, deadline = study.user_attrs.get(ATTR), time.monotonic() + 5
    while theirs is None and time.monotonic() < deadline:  # its maker is storing its settings
        time.sleep(0.2)
        theirs = optuna.load_study(study_name=name, storage=storage).user_attrs.get(ATTR)
    if theirs is None:
        study.set_user_attr(ATTR, mine)
    elif theirs != mine:
        raise ConfigError(
            f"a study named {name!r} already exists with other settings: pick another name"
        )
    return study


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


def study_names(storage) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


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
            from lrbs.experiments.scaling import warmup

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
) -> int:
    """Run `n_trials` trials of study `name` in this process. Returns the trials it ran."""
    import optuna
    import torch

    from lrbs.core.setup import load_tensors

    positive_int("trials", n_trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    storage = open_storage(storage_url)
    from lrbs.experiments import lr_batch_map

    if lr_batch_map.is_map_study(storage, name):  # a map's grid: its cells, each once
        return lr_batch_map.run_cells(storage, name, n_trials, stop=stop)
    study, setup, cfg = load_study(storage, name, seed_offset=worker, n_trials=n_trials)
    data = load_tensors(setup)
    fn = objective(setup, data, cfg, stop)
    done = 0

    def count(study, trial) -> None:
        nonlocal done
        done += 1
        if stop is not None and stop.is_set():
            study.stop()

    from optuna.trial import TrialState
    from sqlalchemy.exc import (  # (Optuna requires SQLAlchemy)
        InterfaceError,
        OperationalError,
        PendingRollbackError,
    )

    lost_kinds = (OperationalError, InterfaceError, PendingRollbackError)

    def connection_lost(exc: BaseException) -> BaseException | None:
        """The database error behind `exc` if it is a lost connection, anywhere in its chain
        (Optuna may raise another error while it handles the storage's, or fail a commit on
        a session the outage left to roll back)."""
        storage_error, seen = False, 0
        while exc is not None and seen < 20:
            storage_error |= isinstance(exc, optuna.exceptions.StorageInternalError)
            if storage_error and isinstance(exc, lost_kinds):
                return exc
            exc, seen = exc.__cause__ or exc.__context__, seen + 1
        return None

    current: list = [None]  # the trial in hand
    ended = 0  # trials whose training ended (a value or pruned): their result may be stored
    # even when the connection goes before `count` hears of it

    def tracked(trial):
        nonlocal ended
        current[0] = trial
        try:
            value = fn(trial)
        except optuna.TrialPruned:
            ended += 1
            raise
        ended += 1
        return value

    lost = 0  # trials cut short by a lost connection: each recorded failed, and one of ours
    while done + lost < n_trials:
        try:
            study.optimize(
                tracked, n_trials=n_trials - done - lost, catch=(TrialStopped,), callbacks=[count]
            )
            break
        except Exception as exc:
            cause = connection_lost(exc)
            if cause is None:
                raise
            lost += 1
            why = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or ["?"])[0]
            try:  # the database back (a restart)? A new connection waits for it; then the trial
                # cut short is failed here if Optuna could not, and the next one starts
                cut = current[0]
                running = {
                    t.number
                    for t in study.get_trials(deepcopy=False)
                    if t.state == TrialState.RUNNING
                }
                if cut is not None and cut.number in running:
                    cut.set_user_attr("status", "connection lost")
                    study.tell(cut.number, state=TrialState.FAIL, skip_if_finished=True)
            except Exception:
                pending = max(0, ended - done)
                more = (
                    f" (and perhaps {pending} more, whose result was being stored when it went)"
                    if pending
                    else ""
                )
                raise ConfigError(
                    f"lost the study storage {safe_url(storage_url or '')} after {done} "
                    f"finished trial(s), which it keeps{more}: {why}"
                ) from None
            log.warning("lost the study storage (%s), now back: going on", why)
            if stop is not None and stop.is_set():
                break
    return done


def split_trials(n_trials: int, n_workers: int) -> list[int]:
    """Trials per worker, summing to n_trials exactly (no worker with none)."""
    positive_int("trials", n_trials)
    positive_int("workers", n_workers)
    n_workers = min(n_workers, n_trials)
    return [
        n_trials // n_workers + (1 if i < n_trials % n_workers else 0) for i in range(n_workers)
    ]


@dataclass
class Workers:
    """Worker processes of one study on this machine (each `python -m lrbs autotune worker`)."""

    procs: list[subprocess.Popen]
    logs: list[Path]

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """Ask each worker to end its current trial and stop (SIGTERM, caught by the CLI)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()

    def wait(self, timeout: float | None = None) -> bool:
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        return True

    def failures(self) -> list[str]:
        """The last line of each worker that exited with an error."""
        out = []
        for p, path in zip(self.procs, self.logs, strict=True):
            if p.poll() not in (None, 0, -15):
                lines = (
                    path.read_text(errors="replace").strip().splitlines() if path.exists() else []
                )
                out.append(lines[-1] if lines else f"worker exited with status {p.returncode}")
        return out


def launch_workers(
    storage_url: str | None, name: str, n_trials: int, n_workers: int, log_dir: str | Path
) -> Workers:
    """Start worker processes that share the trials; with several, each trains on one thread
    (two processes each using every core would fight over them)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    per = split_trials(n_trials, n_workers)
    threads = "1" if len(per) > 1 else "0"
    procs, logs = [], []
    for i, k in enumerate(per):
        path = log_dir / f"{_slug(name)}-worker{i}.log"
        cmd = [sys.executable, "-m", "lrbs", "autotune", "worker", "--study", name]
        cmd += ["--storage", storage_url or default_storage(), "--trials", str(k)]
        cmd += ["--worker", str(i), "--threads", threads]
        with open(path, "w") as fh:
            procs.append(
                subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env())
            )
        logs.append(path)
    return Workers(procs, logs)


def _worker_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


# ------------------------------------------------------------------ reading a study


TRIAL_COLUMNS = [
    "trial",
    "state",
    "status",
    "value",
    "lr",
    "batch_size",
    "lr_over_batch",
    "optimizer",
    "warmup_epochs",
    "epochs",
    "updates",
    "val_acc",
    "seconds",
    "note",
]
CURVE_COLUMNS = ["trial", "state", "step", "val_loss"]


def trial_row(t, space: SearchSpace) -> dict:
    """One trial as a row of the trials table (any state)."""
    p = t.params
    last = max(t.intermediate_values) if t.intermediate_values else None
    value = t.value
    if value is None and last is not None:  # a pruned trial: the last loss it reported
        value = t.intermediate_values[last]
    both = "lr" in p and "batch_size" in p
    return {
        "trial": t.number,
        "state": t.state.name.lower(),
        "status": t.user_attrs.get("status", t.state.name.lower()),
        "value": value,
        "lr": p.get("lr"),
        "batch_size": p.get("batch_size"),
        "lr_over_batch": p["lr"] / p["batch_size"] if both else None,
        "optimizer": p.get("optimizer", space.optimizers[0]),
        "warmup_epochs": p.get("warmup_epochs", space.warmups[0]),
        "epochs": t.user_attrs.get("epochs"),
        "updates": t.user_attrs.get("updates"),
        "val_acc": t.user_attrs.get("val_acc"),
        "seconds": t.duration.total_seconds() if t.duration else None,
        "note": t.user_attrs.get("message", ""),
    }


def curve_rows(t) -> list[dict]:
    """Every validation loss a trial reported: step (percent of its budget), value."""
    state = t.state.name.lower()
    return [
        {"trial": t.number, "state": state, "step": s, "val_loss": v}
        for s, v in sorted(t.intermediate_values.items())
    ]


def trials_frame(study) -> pd.DataFrame:
    """One row per trial, every state: the table the page shows and offers as CSV."""
    _, cfg = from_settings(study.user_attrs[ATTR])
    rows = [trial_row(t, cfg.space) for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def curves_frame(study) -> pd.DataFrame:
    """Every reported validation loss: trial, step (percent of budget or epoch), value."""
    rows = [r for t in study.get_trials(deepcopy=False) for r in curve_rows(t)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


@dataclass(frozen=True)
class Best:
    trial: int
    value: float
    lr: float
    batch_size: int
    optimizer: str
    warmup_epochs: float

    def as_dict(self) -> dict:
        return asdict(self)


def best(trials: pd.DataFrame) -> Best | None:
    done = trials[(trials.state == "complete") & trials.value.notna()]
    done = done[done.value.apply(math.isfinite)]
    if done.empty:
        return None
    r = done.loc[done.value.idxmin()]
    return Best(
        trial=int(r.trial),
        value=float(r.value),
        lr=float(r.lr),
        batch_size=int(r.batch_size),
        optimizer=str(r.optimizer),
        warmup_epochs=float(r.warmup_epochs),
    )


def near_best(trials: pd.DataFrame, tolerance: float = 0.01) -> pd.DataFrame:
    """Finished trials within `tolerance` (relative) of the best: often a band of rates and
    batches rather than one point (with lr/B roughly constant: the SGD noise scale)."""
    b = best(trials)
    if b is None:
        return trials.iloc[0:0]
    done = trials[(trials.state == "complete") & trials.value.notna()]
    return done[done.value <= b.value * (1 + tolerance)].sort_values("value")


def importances(study, min_trials: int = 5) -> dict[str, float] | None:
    """Optuna's parameter importances (its default evaluator), once there are enough finished
    trials; 1 = the parameter explains all of the variation in the objective."""
    import optuna

    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.COMPLETE and math.isfinite(t.value)
    ]
    if len(done) < min_trials:
        return None
    worst = max(t.value for t in done)

    def finite(t) -> float:  # diverged trials count as the worst finished one
        return t.value if t.value is not None and math.isfinite(t.value) else worst

    try:
        with warnings.catch_warnings():  # a note that low target values count as good
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study, target=finite)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        log.info("no importances yet: %s", exc)
        return None


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


def cores() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers_warning(workers: int, n_cores: int | None = None) -> str | None:
    """What more worker processes than cores mean, or None when they fit."""
    n_cores = cores() if n_cores is None else n_cores
    if workers <= n_cores:
        return None
    return (
        f"{workers} worker processes on {n_cores} CPU core{'s' * (n_cores != 1)}: they take "
        f"turns, so at most {n_cores} train at once, each trial is slower, and a budget in "
        "seconds buys each trial less training than it would alone (the scores then compare "
        f"less well). {n_cores} worker{'s' * (n_cores != 1)} finish the same trials as soon."
    )


def prepared_space(setup: Setup, config: Config) -> tuple[SearchSpace, dict | None]:
    """The space the study searches: seeded by a range test and the memory probe when asked,
    else the configured one without batches above the training set."""
    if config.seed_space:
        cap = int(config.cap_mib * 2**20) if config.cap_mib else None
        return seed_space(setup, load_tensors(setup), config.space, cap)
    if setup.workload is not None:
        return config.space.fit_to(load_tensors(setup).n_train), None
    return config.space.fit_to(load(setup.data).n_train), None


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
    info = {
        "study": name,
        "storage": safe_url(url),
        "dataset": setup.data_name,
        "model": setup.model_name,
        "lr_min": space.lr_min,
        "lr_max": space.lr_max,
        "batches": list(space.batches),
    }
    sink.emit("study", info | ({"seeded_from": found} if found else {}))
    watch = _Watch(study, space, sink)
    before = watch.poll()  # trials the study already had (it is joined, not made)
    workers = launch_workers(url, name, config.trials, config.workers, log_dir_for(url))
    per = split_trials(config.trials, config.workers)
    for i, (proc, path) in enumerate(zip(workers.procs, workers.logs, strict=True)):
        sink.emit("workers", {"worker": i, "pid": proc.pid, "trials": per[i], "log": str(path)})
    stopping = False
    try:
        while True:
            done = workers.wait(POLL_SECONDS)
            watch.poll()
            n = len(watch.seen) - before
            sink.progress(n / config.trials, f"{n} of {config.trials} trials")
            if done:
                break
            if stop is not None and stop.is_set() and not stopping:
                stopping = True
                workers.stop()  # each ends its current trial ("stopped") and takes no new one
    except KeyboardInterrupt:
        workers.stop()
        workers.wait(60)
        watch.poll()
        raise
    if stopping:
        return Result(config, rows.rows, "stopped", "stopped: each worker ended its trial")
    failed = workers.failures()
    require(not failed, "a worker failed: " + "; ".join(failed))
    return Result(config, rows.rows)


def study_result(storage_url: str | None, name: str) -> Result:
    """A study as it stands in its storage (one fed by other machines, say), as the Result of
    a run would hold it: every trial (running ones too), what they reported, importances."""
    url = storage_url or default_storage()
    study, setup, cfg = load_study(open_storage(url), name)
    space = cfg.space
    info = {
        "study": name,
        "storage": safe_url(url),
        "dataset": setup.data_name,
        "model": setup.model_name,
        "lr_min": space.lr_min,
        "lr_max": space.lr_max,
        "batches": list(space.batches),
    }
    trials = study.get_trials(deepcopy=False)
    rows = {
        "study": [info],
        "trials": [trial_row(t, space) for t in trials],
        "curves": [r for t in trials for r in curve_rows(t)],
    }
    found = importances(study)
    if found:
        rows["importances"] = [dict(found)]
    return Result(cfg, rows)


@dataclass(frozen=True)
class Result(experiment.Result):
    """From the streamed rows: "study" (its name, storage, space), "workers" (one per worker
    process), "trials" (one per ended trial), "curves" (what trials reported) and
    "importances" (the latest parameter importances)."""

    @cached_property
    def study(self) -> dict:
        found = self.rows.get("study", [])
        return dict(found[0]) if found else {}

    def trials(self) -> pd.DataFrame:
        return self.frame("trials", TRIAL_COLUMNS).sort_values("trial", ignore_index=True)

    def curves(self) -> pd.DataFrame:
        return self.frame("curves", CURVE_COLUMNS)

    def best(self) -> Best | None:
        return best(self.trials())

    def near_best(self, tolerance: float = 0.01) -> pd.DataFrame:
        return near_best(self.trials(), tolerance)

    def band_text(self, tolerance: float = 0.01) -> str:
        """The trials within `tolerance` of the best, in words ('' for fewer than two)."""
        near = self.near_best(tolerance)
        if len(near) < 2:
            return ""
        return (
            f"{len(near)} trials within {tolerance:.0%} of the best: lr {near.lr.min():.3g} to "
            f"{near.lr.max():.3g}, batch {near.batch_size.min():,} to "
            f"{near.batch_size.max():,}, lr/B {near.lr_over_batch.min():.2g} to "
            f"{near.lr_over_batch.max():.2g}. A band rather than a point: the rate and the "
            "batch trade off through the noise scale lr/B."
        )

    def noise_text(self) -> str:
        """How far the best's score can be trusted: the spread of the trials that ran its very
        settings (a repeat), else a note that one score per setting carries the noise of a
        reseeded, re-timed run."""
        b = self.best()
        if b is None:
            return ""
        done = self.trials()
        done = done[(done.state == "complete") & done.value.notna()]
        same = done[
            (done.lr == b.lr)
            & (done.batch_size == b.batch_size)
            & (done.optimizer == b.optimizer)
            & (done.warmup_epochs == b.warmup_epochs)
        ]
        if len(same) > 1:
            return (
                f"The best settings ran {len(same)} times here: validation loss "
                f"{spread(same.value).text()}; trials closer than that are within noise."
            )
        return (
            "Each setting ran once: the same settings trained again (another study, another "
            "seed, another load on the machine under a time budget) score differently, e.g. "
            "1.09 in one study and 1.16 in the next. That is noise, not a better setting: "
            "trials whose scores differ by less than it are ties. To measure it, repeat the "
            "best with the LR sweep's repeats (seeds per rate)."
        )

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.trials().state.value_counts().items()}

    def planned_trials(self) -> int:
        """The trials this run's workers were given (0 before they start, or when watched)."""
        return sum(int(w["trials"]) for w in self.rows.get("workers", []))

    def importances(self) -> dict[str, float] | None:
        found = self.rows.get("importances", [])
        if not found:
            return None
        return {k: float(v) for k, v in found[-1].items() if v is not None and v == v}

    def summary(self) -> dict:
        b = self.best()
        out = {
            "dataset": self.study.get("dataset"),
            "model": self.study.get("model"),
            "study": self.study.get("study"),
            "storage": self.study.get("storage"),
            "trials": self.counts(),
            "workers": len(self.rows.get("workers", [])),
            "best": b.as_dict() if b else None,
            "status": self.status,
            "message": self.message,
        }
        if self.study.get("seeded_from"):
            out["seeded_from"] = self.study["seeded_from"]
        if b is not None:
            out |= {"lr": b.lr, "batch_size": b.batch_size, "val_loss": b.value}
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"trials": self.trials(), "curves": self.curves()}

    def report(self) -> str:
        s = self.study
        lines = []
        if s.get("seeded_from"):
            batches = ", ".join(map(str, s.get("batches", [])))
            lines.append(
                f"search space from a range test: lr {s['lr_min']:.3g} to "
                f"{s['lr_max']:.3g}, batches {batches}"
            )
        lines.append(self.trials().to_string(index=False))
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        lines.append(f"study {s.get('study')!r}: {counts}")
        b = self.best()
        if b is not None:
            lines.append(
                f"best: trial {b.trial}, lr {b.lr:.4g}, batch {b.batch_size}, "
                f"{b.optimizer}, val loss {b.value:.4f}"
            )
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


# ------------------------------------------------------------------ the command line


def add_cli(parser: argparse.ArgumentParser, parser_class: type) -> None:
    """`autotune run` (the experiment: flags from Setup and Config, the common runner) and
    `autotune worker` (a plain process that runs trials of an existing study)."""
    from lrbs.cli import flags, runner

    actions = parser.add_subparsers(dest="action", required=True, parser_class=parser_class)
    r = actions.add_parser("run", help="create a study and run its trials on this machine")
    flags.add(r, Setup, ("setup",), title="data and model")
    flags.add(r, Config, ("config",))
    runner.add_output_flags(r)
    r.set_defaults(experiment=sys.modules[__name__])  # main runs it with runner.run_command
    w = actions.add_parser("worker", help="run trials of an existing study (any machine)")
    w.add_argument("--study", required=True)
    w.add_argument("--storage", default=None, help="Optuna URL or journal file")
    w.add_argument("--trials", type=int, default=10, help="trials this worker runs")
    w.add_argument("--worker", type=int, default=0, help="this worker's index (sampler seed)")
    w.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    w.add_argument("--json", action="store_true")
    w.set_defaults(handler=worker_command)


def worker_command(a: argparse.Namespace) -> dict:
    """`autotune worker`: SIGTERM ends the current trial ("stopped") and the worker."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    n = run_worker(
        a.storage, a.study, a.trials, worker=a.worker, stop=stop, threads=a.threads or None
    )
    if not a.json:  # the command's output (a worker's log line)
        print(f"worker {a.worker}: ran {n} trial(s) of study {a.study!r}")
    return {"study": a.study, "worker": a.worker, "trials": n, "stopped": stop.is_set()}
