"""Optuna studies shared by worker processes: the storage (a journal file, or a database URL
with connection retry), a study made or joined by its settings, trials run so that a lost
database connection costs one trial rather than the worker, and the worker processes on this
machine. One implementation for auto-tune and the LR x batch map; the trials themselves (what
an objective trains) belong to them.

Each local worker is a plain `python -m lrbs autotune worker --study NAME --storage URL`, the
same command a worker on another machine runs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lrbs.core.errors import ConfigError, positive_int, require

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a study run by workers is read for finished trials
MAX_WORKERS = 32  # worker processes on one machine: each imports torch (~300 MB)
JOIN_WAIT_SECONDS = 5.0  # how long a study just made by another process may lack its settings
WORKER_COMMAND = ("-m", "lrbs", "autotune", "worker")
_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}


# ------------------------------------------------------------------ the storage


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


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        # pre-ping: a pooled connection the server dropped (a restart) is replaced, not used
        return {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    return {}


def _reconnect_with_retries(engine) -> None:
    """Once a storage has been reached, a new connection that fails (the database restarting,
    a network blip) is tried again for LRBS_STORAGE_RETRY_SECONDS (default 60) before the
    error stands. The first connection is not retried: a wrong URL or password fails at once."""
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


# ------------------------------------------------------------------ studies


def study_names(storage) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def study_attr(storage, name: str, attr: str):
    """User attribute `attr` of study `name` (None when the study or the attribute is absent)."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    return study.user_attrs.get(attr)


def create_or_join(storage, name: str, attr: str, settings: dict, *, sampler, pruner=None):
    """A new minimizing study whose user attribute `attr` holds `settings`, or the one of that
    name if it holds the same settings (to add trials). The storage's unique name decides who
    made it when two processes try at once; the other waits for the maker's settings. A study
    of that name with other settings (or another kind of study) is refused; one with no user
    attributes at all (its maker died before storing them) is adopted."""
    import optuna

    require(bool(name.strip()), "the study needs a name")
    kw = dict(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
    try:
        study = optuna.create_study(direction="minimize", **kw)
        study.set_user_attr(attr, settings)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kw)
    deadline = time.monotonic() + JOIN_WAIT_SECONDS
    while not (attrs := study.user_attrs) and time.monotonic() < deadline:
        time.sleep(0.2)  # its maker is storing its settings
    if not attrs:
        study.set_user_attr(attr, settings)
    elif attrs.get(attr) != settings:
        raise ConfigError(
            f"a study named {name!r} already exists with other settings: pick another name"
        )
    return study


def prepare_worker(threads: int | None = None) -> None:
    """A worker process: Optuna's per-trial log lines off, and `threads` torch threads."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _connection_lost(exc: BaseException | None) -> BaseException | None:
    """The database error behind `exc` if it is a lost connection, anywhere in its chain
    (Optuna may raise another error while it handles the storage's, or fail a commit on a
    session the outage left to roll back)."""
    import optuna
    from sqlalchemy.exc import (  # (Optuna requires SQLAlchemy)
        InterfaceError,
        OperationalError,
        PendingRollbackError,
    )

    lost_kinds = (OperationalError, InterfaceError, PendingRollbackError)
    storage_error, seen = False, 0
    while exc is not None and seen < 20:
        storage_error |= isinstance(exc, optuna.exceptions.StorageInternalError)
        if storage_error and isinstance(exc, lost_kinds):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def optimize(
    study,
    objective: Callable,
    n_trials: int,
    *,
    stop=None,
    catch: tuple[type[Exception], ...] = (),
    storage_url: str | None = None,
) -> int:
    """Run `n_trials` trials of `objective` (Optuna's `study.optimize`); a stop set between
    trials ends the loop. A lost database connection costs the trial in hand (recorded failed)
    and the worker goes on once the database is back; if it stays away, one ConfigError says
    what the storage keeps. Returns the trials that finished."""
    from optuna import TrialPruned
    from optuna.trial import TrialState

    done = 0
    current: list = [None]  # the trial in hand
    ended = 0  # trials whose training ended (a value or pruned): their result may be stored
    # even when the connection goes before `count` hears of it

    def count(study, trial) -> None:
        nonlocal done
        done += 1
        if stop is not None and stop.is_set():
            study.stop()

    def tracked(trial):
        nonlocal ended
        current[0] = trial
        try:
            value = objective(trial)
        except TrialPruned:
            ended += 1
            raise
        ended += 1
        return value

    lost = 0  # trials cut short by a lost connection: each recorded failed, and one of ours
    while done + lost < n_trials:
        try:
            study.optimize(tracked, n_trials=n_trials - done - lost, catch=catch, callbacks=[count])
            break
        except Exception as exc:
            cause = _connection_lost(exc)
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


# ------------------------------------------------------------------ worker processes


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

    def supervise(self, poll: Callable[[], None], stop=None) -> bool:
        """Call `poll` every POLL_SECONDS until every worker has exited; a stop asks them to
        end their current trial (once); a read that a lost connection cut is tried again at
        the next poll. Returns whether they were stopped; a worker that failed otherwise is a
        ConfigError with its last log line. Ctrl-C stops them, waits a minute for them, polls
        once more, and goes on up."""
        stopping = False
        try:
            while True:
                finished = self.wait(POLL_SECONDS)
                try:
                    poll()
                except Exception as exc:  # a query the database's restart cut: poll again
                    if finished or _connection_lost(exc) is None:
                        raise
                    log.warning("lost the study storage while reading it: reading it again")
                    continue
                if finished:
                    break
                if stop is not None and stop.is_set() and not stopping:
                    stopping = True
                    self.stop()  # each ends its current trial ("stopped") and takes no new one
        except KeyboardInterrupt:
            self.stop()
            self.wait(60)
            poll()
            raise
        if not stopping:
            failed = self.failures()
            require(not failed, "a worker failed: " + "; ".join(failed))
        return stopping


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
        cmd = [sys.executable, *WORKER_COMMAND, "--study", name]
        cmd += ["--storage", storage_url or default_storage(), "--trials", str(k)]
        cmd += ["--worker", str(i), "--threads", threads]
        with open(path, "w") as fh:
            procs.append(
                subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env())
            )
        logs.append(path)
    return Workers(procs, logs)


def _worker_env() -> dict:
    """This environment, with the folder holding this lrbs first on the path (a worker runs
    this lrbs whatever its working directory)."""
    import lrbs

    env = dict(os.environ)
    root = str(Path(lrbs.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]
