"""Experiments as jobs run by worker processes, so training never shares the web server's
interpreter lock, and a job outlives the browser tab that started it.

The run history is the queue and the record: `submit` writes a 'queued' run; a worker claims
it (atomically, so one worker gets it), runs the experiment through `execute` with the one
recorder, and writes its points and progress as it goes. Anyone holding the run id (a reload,
another tab, another page) reads the same points back and can stop it: `request_stop` cancels
a queued job (it never starts) and asks a running one to stop at its next step. A worker that
dies leaves its points and its run is reported 'interrupted'; the pool starts another worker.
A job whose tab closed runs to its end (its result is then in the history, offered the next
time the same settings are asked for).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrbs.runs.sink import Sink
from lrbs.runs.store import RunStore, record_config, setup_meta

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25  # how often a worker checks whether its job was asked to stop


def default_workers() -> int:
    """One worker per core. Each run picks its torch threads on the cores the other workers
    and processes leave free (lrbs.core.threads), so busy workers train on one thread each."""
    env = os.environ.get("LRBS_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)


class ProgressWriter(Sink):
    """A job's progress into its run record, at most a few times a second."""

    def __init__(self, store: RunStore, run_id: int, every: float = 0.3) -> None:
        self.store, self.run_id, self.every, self.last = store, run_id, every, 0.0

    def progress(self, fraction: float, text: str = "") -> None:
        now = time.monotonic()
        if now - self.last >= self.every or fraction >= 1.0:
            self.last = now
            self.store.set_progress(self.run_id, float(fraction))


def run_job(db: str, run_id: int) -> str:
    """Claim and run one queued job in this process; returns how it ended ('cancelled' if
    it was stopped before it started, or claimed elsewhere)."""
    from lrbs.experiments import registry
    from lrbs.runs.experiment import config_of, execute, setup_of
    from lrbs.runs.store import Recorder

    with RunStore(db) as store:
        info = store.run(run_id)
    exp = registry()[info["kind"]]
    rec = Recorder(db, info["kind"], info["config"])
    if not rec.resume(run_id):
        return "cancelled"
    stop = threading.Event()
    watcher = RunStore(db)
    done = threading.Event()

    def watch() -> None:  # its own connection: one per thread
        with RunStore(db) as store:
            while not done.wait(POLL_SECONDS):
                if store.stop_requested(run_id):
                    stop.set()
                    return

    thread = threading.Thread(target=watch, name=f"lrbs-stop-{run_id}", daemon=True)
    thread.start()
    try:
        setup = setup_of(info["config"])
        config = config_of(exp, info["config"])
        result = execute(
            exp, setup, config, sink=ProgressWriter(watcher, run_id), stop=stop, recorder=rec
        )
        status = "stopped" if stop.is_set() and result.status == "finished" else result.status
    except Exception as exc:  # recorded as 'error' by execute; the worker lives on
        log.warning("job %s failed: %s", run_id, exc)
        rec.finish("error", {"error": str(exc)})  # in case it failed before execute
        status = "error"
    finally:
        done.set()
        thread.join()
    watcher.set_progress(run_id, 1.0)
    watcher.close()
    return status


def warm() -> None:
    """Import what is slow to import once, before the first job (torch, and the optimizer
    machinery whose first use pulls in torch._dynamo)."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).step()
    from lrbs.experiments import registry

    registry()


def die_with_parent() -> None:
    """End this worker when the server that started it is gone (killed, not only stopped),
    as a thread of the server would: its job is then 'interrupted', with its points."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="lrbs-parent", daemon=True).start()


def worker_main() -> None:
    """A worker process (`python -m lrbs.runs.jobs`): reads "DB<TAB>RUN_ID" lines on stdin,
    runs each job, and says "ready" on stdout whenever it can take the next one."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # whatever a job prints must not enter the protocol
    die_with_parent()
    warm()
    print("ready", file=proto)
    for line in sys.stdin:
        db, _, run_id = line.rstrip("\n").partition("\t")
        try:
            run_job(db, int(run_id))
        except Exception:  # a job that cannot even be read: the next one still runs
            log.exception("job %s in %s could not run", run_id, db)
        print("ready", file=proto)


class _Worker:
    """One worker process and whether it waits for a job."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        # no OMP_NUM_THREADS=1: each run chooses its threads by the load (lrbs.core.threads)
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lrbs.runs.jobs"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        self.idle = False
        self._on_ready = on_ready
        threading.Thread(
            target=self._read, name=f"lrbs-worker-{self.proc.pid}", daemon=True
        ).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.idle = True
                self._on_ready()

    def send(self, db: str, run_id: int) -> None:
        self.idle = False
        self.proc.stdin.write(f"{db}\t{run_id}\n")
        self.proc.stdin.flush()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class JobPool:
    """`workers` processes taking jobs in the order they were queued; more jobs wait."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._lock = threading.RLock()
        self._pending: deque[tuple[str, int]] = deque()
        self._closed = threading.Event()
        self._procs = [_Worker(self._dispatch) for _ in range(self.workers)]
        threading.Thread(target=self._supervise, name="lrbs-jobs", daemon=True).start()

    def _dispatch(self) -> None:
        with self._lock:
            for w in self._procs:
                if self._pending and w.idle and w.alive:
                    db, run_id = self._pending.popleft()
                    try:
                        w.send(db, run_id)
                    except (BrokenPipeError, OSError):  # it died just now: try another
                        self._pending.appendleft((db, run_id))

    def _supervise(self) -> None:
        """Replace a worker that died (its job is then reported 'interrupted')."""
        while not self._closed.wait(0.5):
            with self._lock:
                for i, w in enumerate(self._procs):
                    if not w.alive:
                        log.warning(
                            "job worker %s ended (exit %s); starting another",
                            w.proc.pid,
                            w.proc.returncode,
                        )
                        self._procs[i] = _Worker(self._dispatch)

    def submit(self, db: str, kind: str, setup: Any, config: Any, name: str = "") -> int:
        """Queue an experiment; returns its run id in the history file `db`."""
        with RunStore(db) as store:
            run_id = store.start_run(
                kind, record_config(setup, config), name=name, queued=True, **setup_meta(setup)
            )
        with self._lock:
            self._pending.append((str(db), run_id))
        self._dispatch()
        return run_id

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._procs]

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        for w in self._procs:
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        for w in self._procs:
            try:
                w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                w.proc.terminate()


ENDED = ("finished", "stopped", "diverged", "oom", "error", "interrupted", "cancelled")


class Job:
    """A handle on a job by its run id, for any process or tab: its rows as they arrive
    (read incrementally), progress, place in the queue, the rebuilt Result once it has ended,
    and Stop. Shaped like `runs.live.LiveRun` so the pages' live view draws either."""

    def __init__(self, db: str, run_id: int) -> None:
        self.db, self.run_id = str(db), int(run_id)
        self._rows: dict[str, list[dict]] = {}
        self._after = 0
        self._status = "queued"
        self._info: dict | None = None
        self._result: Any = None
        self._error: str | None = None
        self._error_detail = ""
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Read what is new; returns whether anything changed (new rows or a new status)."""
        with self._lock:
            if self._info is not None and self._status in ENDED:
                return False
            with RunStore(self.db) as store:
                status = store.status(self.run_id)
                new, self._after = store.points_after(self.run_id, self._after)
                info = store.run(self.run_id)
            for channel, rows in new.items():
                self._rows.setdefault(channel, []).extend(rows)
            changed = bool(new) or status != self._status or self._info is None
            self._status, self._info = status, info
            if status in ENDED and self._result is None:
                self._finish(info)
            return changed

    def _finish(self, info: dict) -> None:
        from lrbs.experiments import registry
        from lrbs.runs.experiment import rebuild

        results = info.get("results") or {}
        if self._status == "error":
            self._error = results.get("error", "the job failed")
            self._error_detail = results.get("traceback", "")
            return
        if self._status == "cancelled":
            return
        if self._status == "interrupted":
            self._error = (
                "the worker process running this job ended before it did (killed or out of "
                "memory); the points it had written are kept"
            )
        try:
            self._result = rebuild(registry()[info["kind"]], info, self._rows)
        except Exception as exc:  # a record too incomplete to rebuild: its rows still show
            log.warning("job %s: result not rebuilt: %s", self.run_id, exc)

    @property
    def status(self) -> str:
        self.refresh()
        return self._status

    @property
    def done(self) -> bool:
        return self.status in ENDED

    def queue_position(self) -> int | None:
        with RunStore(self.db) as store:
            return store.queue_position(self.run_id)

    def stop(self) -> None:
        with RunStore(self.db) as store:
            store.request_stop(self.run_id)

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def snapshot(self):
        from lrbs.runs.live import Snapshot

        self.refresh()
        with self._lock:
            info = self._info or {}
            return Snapshot(
                rows={k: list(v) for k, v in self._rows.items()},
                progress=1.0 if self._status in ENDED else float(info.get("progress") or 0.0),
                done=self._status in ENDED,
                result=self._result,
                error=self._error,
                error_detail=self._error_detail,
                started=info.get("started") or 0.0,
                finished=info.get("ended"),
            )


if __name__ == "__main__":
    worker_main()
