"""`autotune run` (the experiment: flags from Setup and Config, the common runner) and
`autotune worker` (a plain process that runs trials of an existing study: an auto-tune
study's trials, or the cells of an LR x batch map's)."""

from __future__ import annotations

import argparse
import signal
import threading

from lrbs.cli import flags, runner
from lrbs.core.errors import positive_int
from lrbs.core.setup import Setup
from lrbs.experiments import autotune, lr_batch_map
from lrbs.methods import study


def add_cli(parser: argparse.ArgumentParser, parser_class: type) -> None:
    """The `autotune` command's two actions."""
    actions = parser.add_subparsers(dest="action", required=True, parser_class=parser_class)
    r = actions.add_parser("run", help="create a study and run its trials on this machine")
    flags.add(r, Setup, ("setup",), title="data and model")
    flags.add(r, autotune.Config, ("config",))
    runner.add_output_flags(r)
    r.set_defaults(experiment=autotune)  # main runs it with runner.run_command
    w = actions.add_parser("worker", help="run trials of an existing study (any machine)")
    w.add_argument("--study", required=True)
    w.add_argument("--storage", default=None, help="Optuna URL or journal file")
    w.add_argument("--trials", type=int, default=10, help="trials this worker runs")
    w.add_argument("--worker", type=int, default=0, help="this worker's index (sampler seed)")
    w.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    w.add_argument("--json", action="store_true")
    w.set_defaults(handler=worker_command)


# experiments whose command has actions of its own, by KIND: how to add them
ACTIONS = {autotune.KIND: add_cli}


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


def run_worker(
    storage_url: str | None,
    name: str,
    n_trials: int,
    *,
    worker: int = 0,
    stop: threading.Event | None = None,
    threads: int | None = None,
) -> int:
    """Run up to `n_trials` trials of study `name` in this process: a map's cells (each once)
    or auto-tune's trials. Returns the trials it ran."""
    positive_int("trials", n_trials)
    storage = study.open_storage(storage_url)
    if not lr_batch_map.is_map_study(storage, name):
        return autotune.run_worker(
            storage_url, name, n_trials, worker=worker, stop=stop, threads=threads, storage=storage
        )
    study.prepare_worker(threads)
    return lr_batch_map.run_cells(storage, name, n_trials, stop=stop)
