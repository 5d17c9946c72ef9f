"""A job on a worker thread whose progress a UI can poll. No UI code here: the worker only
appends plain rows under a lock, and readers take copies."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lrbs.core import threads
from lrbs.core.device import is_out_of_memory, release_memory
from lrbs.core.errors import LrbsError

log = logging.getLogger(__name__)

Emit = Callable[[str, dict], None]


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, list[dict]]
    progress: float
    done: bool
    result: Any = None
    error: str | None = None
    started: float = 0.0
    error_detail: str = ""  # a workload's traceback in the user's own file
    finished: float | None = None

    def table(self, channel: str):
        import pandas as pd

        return pd.DataFrame(self.rows.get(channel, []))


@dataclass
class LiveRun:
    """`work(emit, stop, set_progress)` runs on a thread; its return value is the result.
    A LrbsError becomes `error` (its message); out-of-memory too; anything else as well, with
    its traceback logged, so that a page never shows a traceback."""

    work: Callable[[Emit, threading.Event, Callable[[float], None]], Any]
    name: str = "run"
    alive: Callable[[], bool] | None = None  # e.g. "is the browser tab still open"
    # torch threads for CPU work on the worker: "auto" lets each run time the counts the other
    # processes and runs leave free (a second OpenMP team, or a busy machine, can make 2
    # threads 2-3x slower than 1: bench/RESULTS.md); a number fixes it; None leaves torch's
    cpu_threads: int | str | None = "auto"
    recorder: Any = None  # a store.Recorder: the run is also written to the history
    summarize: Callable[[Any], tuple[str, dict]] | None = None  # result -> (status, results)
    stop_event: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rows: dict[str, list[dict]] = field(default_factory=dict)
    _progress: float = 0.0
    _result: Any = None
    _error: str | None = None
    _done: bool = False
    _thread: threading.Thread | None = None
    _started: float = 0.0
    _finished: float | None = None

    def start(self) -> LiveRun:
        self._started = time.time()
        self._thread = threading.Thread(target=self._main, name=f"lrbs-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    def emit(self, channel: str, row: dict) -> None:
        with self._lock:
            self._rows.setdefault(channel, []).append(row)
        if self.recorder is not None:
            self.recorder.emit(channel, row)
        if self.alive is not None and not self.stop_event.is_set() and not self.alive():
            log.info("%s: its session is gone; stopping", self.name)
            self.stop_event.set()

    def set_progress(self, fraction: float) -> None:
        with self._lock:
            self._progress = max(0.0, min(1.0, float(fraction)))

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                rows={k: list(v) for k, v in self._rows.items()},
                progress=self._progress,
                done=self._done,
                result=self._result,
                error=self._error,
                started=self._started,
                finished=self._finished,
            )

    def _main(self) -> None:
        result, error = None, None
        policy = "torch" if self.cpu_threads is None else self.cpu_threads
        if isinstance(policy, int):
            import torch

            torch.set_num_threads(policy)  # per thread: the caller's stays as it was
        self._start_recording()
        try:
            with threads.using(policy):
                result = self.work(self.emit, self.stop_event, self.set_progress)
        except LrbsError as exc:
            error = str(exc)
        except Exception as exc:
            if is_out_of_memory(exc):
                release_memory()
                error = "out of memory: try a smaller batch size or model"
            else:
                log.exception("%s failed", self.name)
                error = f"{type(exc).__name__}: {exc}"
        self._finish_recording(result, error)
        with self._lock:
            self._result, self._error, self._done = result, error, True
            self._progress = 1.0 if error is None else self._progress
            self._finished = time.time()

    def _start_recording(self) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.start()
        except Exception as exc:  # the run goes on; only its history entry is lost
            log.warning("%s: not recorded: %s", self.name, exc)
            self.recorder = None
            with self._lock:
                self._rows.setdefault("warnings", []).append({"message": f"not saved: {exc}"})

    def _finish_recording(self, result: Any, error: str | None) -> None:
        if self.recorder is None:
            return
        status, results = "finished", {}
        if error is not None:
            status, results = "error", {"error": error}
        elif self.summarize is not None and result is not None:
            status, results = self.summarize(result)
        if self.stop_event.is_set() and status == "finished":
            status = "stopped"
        try:
            self.recorder.finish(status, results)
        except Exception as exc:
            log.warning("%s: history entry not closed: %s", self.name, exc)
