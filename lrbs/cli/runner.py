"""The one command runner: flags -> Setup and Config -> `execute` with a progress bar and the
run history -> `--out`, `--json`, a report. Ctrl-C or SIGTERM stops the experiment the way the
page's Stop does (what was computed is kept and recorded as "stopped"); a second Ctrl-C
abandons it (recorded as "interrupted"); a SIGKILL leaves the points written so far, listed
as "interrupted" once the process is gone."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from lrbs.cli import flags
from lrbs.core import threads
from lrbs.core.errors import ConfigError, LrbsError
from lrbs.core.setup import Setup
from lrbs.runs.experiment import execute, summary_of
from lrbs.runs.sink import Sink
from lrbs.runs.store import recorder

log = logging.getLogger("lrbs")


def add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write the CSV the page offers")
    p.add_argument("--json", action="store_true", help="headline figures as JSON, last line")
    p.add_argument("--no-store", action="store_true", help="do not save the run in the history")
    p.add_argument("--db", default=None, help="run-history file (default: LRBS_DB or ~/.local)")
    p.add_argument(
        "--threads",
        default=None,
        help="torch CPU threads: auto (the fastest count on the cores other processes leave "
        "free, timed per model and batch), torch (its default) or a number "
        "(default: LRBS_THREADS or auto)",
    )


def check_out(path: str | None) -> None:
    """Refuse an --out that cannot be written, before any training."""
    if not path:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name such as {p / 'out.csv'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--out {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"--out {path}: no permission to write there")


class ProgressBar(Sink):
    """The experiment's progress as a tqdm bar on stderr, so stdout keeps only results."""

    def __init__(self) -> None:
        self.bar = tqdm(
            total=1000,
            file=sys.stderr,
            leave=False,
            disable=None,
            bar_format="{l_bar}{bar}| {elapsed}",
        )

    def progress(self, fraction: float, text: str = "") -> None:
        n = int(1000 * max(0.0, min(1.0, fraction)))
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
        if text:
            self.bar.set_description_str(text[:30], refresh=False)

    def close(self) -> None:
        self.bar.close()


class Signals:
    """Ctrl-C and SIGTERM set `stop` (the experiment ends as after the page's Stop); a second
    Ctrl-C raises KeyboardInterrupt. Only where signals can be handled (the main thread)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()
        print("\nstopping: what was computed is kept (Ctrl-C again to abandon)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def open_recorder(a: argparse.Namespace, kind: str, setup: Any, config: Any):
    """A started recorder, or None with --no-store; a history that cannot be opened is a
    warning, not a failed experiment."""
    if a.no_store:
        return None
    rec = recorder(kind, setup, config, path=a.db, name="cli")
    try:
        rec.start()
    except LrbsError as exc:
        log.warning("not saved in the run history: %s", exc)
        print(f"warning: not saved in the run history: {exc}", file=sys.stderr)
        return None
    return rec


def run_command(exp: ModuleType, a: argparse.Namespace) -> tuple[dict, int]:
    check_out(a.out)
    policy = threads.parse_policy(a.threads) if a.threads is not None else threads.policy()
    setup = flags.build(a, Setup, ("setup",)) if getattr(exp, "USES_SETUP", True) else None
    config = flags.build(a, exp.Config, ("config",))
    rec = open_recorder(a, exp.KIND, setup, config)
    bar = ProgressBar()
    try:
        with Signals() as signals, threads.using(policy):
            result = execute(exp, setup, config, sink=bar, stop=signals.stop, recorder=rec)
    finally:
        bar.close()
    tables = result.tables()
    if a.out and tables:
        frame = next(iter(tables.values()))
        frame.to_csv(a.out, index=False)
        log.info("wrote %d rows to %s", len(frame), a.out)
    out = summary_of(result)
    if rec is not None:
        out["run_id"] = rec.run_id
    if not a.json:
        print(result.report())
    return out, 130 if signals.stop.is_set() else 0
