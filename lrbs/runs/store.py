"""The run history: every run, finished, stopped or diverged, in one SQLite file.

WAL mode, so the app's sessions and CLI processes can write at once; points are written in
batches as a run goes, so a run killed mid-way keeps what it had computed. The file carries
SQLite's application_id, so a foreign or corrupt file is refused with a clear message and never
overwritten; `user_version` is the schema version, and MIGRATIONS lifts old files forward.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lrbs.core.errors import LrbsError
from lrbs.runs.sink import Sink

log = logging.getLogger(__name__)

APPLICATION_ID = 0x6C726273  # "lrbs"
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            config TEXT NOT NULL,
            config_key TEXT NOT NULL,
            dataset TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            device TEXT NOT NULL DEFAULT '',
            seed INTEGER,
            status TEXT NOT NULL DEFAULT 'running',
            started REAL NOT NULL,
            ended REAL,
            results TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX runs_key ON runs (kind, config_key)",
        """CREATE TABLE points (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX points_run ON points (run_id, channel, seq)",
    ],
    # who writes a run, so that one whose process died can be told from one still going
    2: [
        "ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
    ],
    # one name per experiment: the pages' old names become the CLI's (lrbs.experiments KIND)
    3: [
        f"UPDATE runs SET kind = '{new}' WHERE kind = '{old}'"
        for old, new in (
            ("lr-range-test", "lr-find"),
            ("batch-sweep", "bs-sweep"),
            ("memory-probe", "bs-probe"),
            ("lr-schedules", "schedules"),
            ("scaling-check", "bs-scaling-check"),
            ("batch-schedule", "bs-schedule"),
            ("noise-check", "noise-scale"),
        )
    ],
    # jobs run by worker processes: queued until one claims them, stopped from any process
    4: [
        "ALTER TABLE runs ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN progress REAL NOT NULL DEFAULT 0",
        "CREATE INDEX runs_status ON runs (status, id)",
    ],
}
HOST = socket.gethostname()
# the columns `RunStore.export` puts before a point's own
EXPORT_COLUMNS = ("history_id", "history_kind", "history_name", "channel")
SCHEMA_VERSION = max(MIGRATIONS)


class StoreError(LrbsError):
    """The run-history file cannot be used; the message says why and what to do."""


def default_path() -> Path:
    if os.environ.get("LRBS_DB"):
        return Path(os.environ["LRBS_DB"]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "lrbs" / "runs.db"


def jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, numpy numbers and NaN/inf into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def config_key(config: dict) -> str:
    text = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RunStore:
    """One connection to the history file; use one per thread."""

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 30.0) -> None:
        self.path = Path(path) if path else default_path()
        self._check_file()
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout)
            self.db.row_factory = sqlite3.Row
            self._open()
        except sqlite3.DatabaseError as exc:
            if getattr(self, "db", None) is not None:
                self.db.close()
            if "not a database" in str(exc):
                raise StoreError(
                    f"{self.path} is not an lrbs run history (not a SQLite file); it was left "
                    "untouched: choose another file (sidebar or LRBS_DB)"
                ) from None
            raise StoreError(
                f"{self.path} is not a usable lrbs run history ({exc}); choose "
                "another file (sidebar or LRBS_DB)"
            ) from None

    def _check_file(self) -> None:
        # The header is left to SQLite to read: opening and closing the file here would drop
        # every lock this process's other connections hold on it (POSIX locks are per
        # process), and another process would then read a stale history.
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; the run history must be a file")
        if self.path.exists() and not self.path.is_file():  # a device, a pipe: never opened
            raise StoreError(f"{self.path} is not a plain file; the run history must be one")
        folder = next(p for p in self.path.parents if p.exists())  # "/" always exists
        if not folder.is_dir():
            raise StoreError(
                f"{self.path} cannot be a run history: {folder} is a file, not a folder; "
                "choose another file (sidebar or LRBS_DB)"
            )
        writable = self.path if self.path.exists() else folder
        if not os.access(writable, os.W_OK):
            raise StoreError(
                f"{self.path} cannot be a run history: no permission to write {writable}; "
                "choose another file (sidebar or LRBS_DB)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.path} cannot be a run history: its folder cannot be made "
                f"({exc.strerror}); choose another file (sidebar or LRBS_DB)"
            ) from None

    def _open(self) -> None:
        db = self.db
        db.execute("PRAGMA busy_timeout = 30000").fetchall()
        app_id = first(db.execute("PRAGMA application_id"))[0]
        tables = first(db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'"))[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables > 0):
            raise StoreError(
                f"{self.path} is a SQLite file of another program, not an lrbs run history; "
                "it was left untouched: choose another file (sidebar or LRBS_DB)"
            )
        version = first(db.execute("PRAGMA user_version"))[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer lrbs (schema {version}, this "
                f"one reads up to {SCHEMA_VERSION}); upgrade lrbs"
            )
        # read to the end: a pragma's result row left unread keeps a statement open, and
        # then another process does not see this file's later commits (measured)
        db.execute("PRAGMA journal_mode = WAL").fetchall()
        db.execute("PRAGMA foreign_keys = ON")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        with self.db:  # one transaction: a failed migration leaves the file as it was
            self.db.execute("BEGIN IMMEDIATE")
            current = first(self.db.execute("PRAGMA user_version"))[0]  # another writer?
            for v in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[v]:
                    self.db.execute(statement)
                log.info("run history %s: schema %d -> %d", self.path, v - 1, v)
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def start_run(
        self,
        kind: str,
        config: dict,
        *,
        name: str = "",
        dataset: str = "",
        model: str = "",
        device: str = "",
        seed: int | None = None,
        queued: bool = False,
    ) -> int:
        """A new run, 'running' in this process, or 'queued' for a worker to `claim`."""
        cfg = jsonable(config)
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (kind, name, config, config_key, dataset, model, device, seed,"
                " started, host, pid, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    name,
                    json.dumps(cfg),
                    config_key(cfg),
                    dataset,
                    model,
                    device,
                    seed,
                    time.time(),
                    HOST,
                    None if queued else os.getpid(),
                    "queued" if queued else "running",
                ),
            )
        return int(cur.lastrowid)

    def claim(self, run_id: int) -> bool:
        """Take a queued run for this process (atomic: of two workers, one gets it)."""
        with self.db:
            cur = self.db.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, started = ? "
                "WHERE id = ? AND status = 'queued'",
                (os.getpid(), HOST, time.time(), int(run_id)),
            )
        return cur.rowcount == 1

    def request_stop(self, run_id: int) -> str:
        """Ask a run to stop, from any process: a queued run is cancelled at once (it never
        starts), a running one stops at its next step. Returns the run's status after."""
        with self.db:
            self.db.execute(
                "UPDATE runs SET status = 'cancelled', ended = ? WHERE id = ? AND "
                "status = 'queued'",
                (time.time(), int(run_id)),
            )
            self.db.execute("UPDATE runs SET stop_requested = 1 WHERE id = ?", (int(run_id),))
        return self.status(run_id)

    def stop_requested(self, run_id: int) -> bool:
        found = first(
            self.db.execute("SELECT stop_requested FROM runs WHERE id = ?", (int(run_id),))
        )
        return bool(found and found[0])

    def set_progress(self, run_id: int, fraction: float) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET progress = ? WHERE id = ?", (fraction, int(run_id)))

    def status(self, run_id: int) -> str:
        """A run's status, with a dead writer's 'running' turned into 'interrupted'."""
        row = first(
            self.db.execute("SELECT status, pid, host FROM runs WHERE id = ?", (int(run_id),))
        )
        if row is None:
            raise StoreError(f"there is no run {run_id} in {self.path}")
        if row["status"] == "running" and row["host"] == HOST and row["pid"] is not None:
            if not _process_alive(row["pid"]):
                with self.db:
                    self.db.execute(
                        "UPDATE runs SET status = 'interrupted' WHERE id = ? AND "
                        "status = 'running'",
                        (int(run_id),),
                    )
                return "interrupted"
        return row["status"]

    def queue_position(self, run_id: int) -> int | None:
        """How many queued runs are ahead of this one (0: next), or None if not queued."""
        row = first(self.db.execute("SELECT status FROM runs WHERE id = ?", (int(run_id),)))
        if row is None or row[0] != "queued":
            return None
        ahead = self.db.execute(
            "SELECT count(*) FROM runs WHERE status = 'queued' AND id < ?", (int(run_id),)
        ).fetchall()[0][0]
        return int(ahead)

    def points_after(self, run_id: int, after: int = 0) -> tuple[dict[str, list[dict]], int]:
        """The points of a run written after row `after` (0: all), by channel, and the last
        row read: a live view reads only what is new."""
        rows = self.db.execute(
            "SELECT rowid, channel, data FROM points WHERE run_id = ? AND rowid > ? ORDER BY rowid",
            (int(run_id), int(after)),
        ).fetchall()
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(r["channel"], []).append(json.loads(r["data"]))
        return out, (rows[-1]["rowid"] if rows else after)

    def add_points(self, run_id: int, channel: str, rows: Iterable[dict], start: int = 0) -> int:
        data = [(run_id, channel, start + i, json.dumps(jsonable(r))) for i, r in enumerate(rows)]
        with self.db:
            self.db.executemany(
                "INSERT INTO points (run_id, channel, seq, data) VALUES (?, ?, ?, ?)", data
            )
        return start + len(data)

    def finish(self, run_id: int, status: str, results: dict | None = None) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET status = ?, ended = ?, results = ? WHERE id = ?",
                (status, time.time(), json.dumps(jsonable(results or {})), run_id),
            )

    def update(self, run_id: int, *, name: str | None = None, note: str | None = None) -> None:
        with self.db:
            if name is not None:
                self.db.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))
            if note is not None:
                self.db.execute("UPDATE runs SET note = ? WHERE id = ?", (note, run_id))

    def delete(self, run_ids: Iterable[int]) -> int:
        ids = [int(i) for i in run_ids]
        with self.db:
            self.db.executemany("DELETE FROM points WHERE run_id = ?", [(i,) for i in ids])
            cur = self.db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in ids])
        return cur.rowcount

    # ------------------------------------------------------------------ reading

    def mark_interrupted(self) -> int:
        """Runs still 'running' whose writing process, on this machine, is gone: killed, or
        the app stopped mid-run. They become 'interrupted' (their points stay). Returns how
        many."""
        rows = self.db.execute(
            "SELECT id, pid FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL",
            (HOST,),
        ).fetchall()
        gone = [(r["id"],) for r in rows if not _process_alive(r["pid"])]
        if gone:
            with self.db:
                self.db.executemany(
                    "UPDATE runs SET status = 'interrupted' WHERE id = ? AND status = 'running'",
                    gone,
                )
        return len(gone)

    def runs(
        self, kind: str | None = None, dataset: str | None = None, status: str | None = None
    ) -> pd.DataFrame:
        self.mark_interrupted()
        sql = (
            "SELECT r.id, r.kind, r.name, r.dataset, r.model, r.device, r.seed, r.status, "
            "r.started, r.ended, r.note, (SELECT count(*) FROM points p WHERE p.run_id = r.id)"
            " AS points FROM runs r WHERE 1 = 1"
        )
        args: list = []
        for column, value in (("kind", kind), ("dataset", dataset), ("status", status)):
            if value:
                sql += f" AND r.{column} = ?"
                args.append(value)
        df = pd.read_sql_query(sql + " ORDER BY r.id DESC", self.db, params=args)
        for col in ("started", "ended"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True).dt.tz_convert(None)
        return df

    def run(self, run_id: int) -> dict:
        row = first(self.db.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)))
        if row is None:
            raise StoreError(f"there is no run {run_id} in {self.path}")
        out = dict(row)
        out["config"] = json.loads(out["config"])
        out["results"] = json.loads(out["results"])
        return out

    def points(self, run_id: int, channel: str | None = None) -> pd.DataFrame:
        sql, args = "SELECT channel, data FROM points WHERE run_id = ?", [int(run_id)]
        if channel:
            sql += " AND channel = ?"
            args.append(channel)
        rows = self.db.execute(sql + " ORDER BY channel, seq", args).fetchall()
        records = [{"channel": r["channel"], **json.loads(r["data"])} for r in rows]
        return pd.DataFrame(records)

    def channels(self, run_id: int) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT channel FROM points WHERE run_id = ?", (int(run_id),)
        ).fetchall()
        return [r[0] for r in rows]

    def find(self, kind: str, config: dict) -> list[dict]:
        """Finished runs of this kind with exactly this config, newest first."""
        key = config_key(config)
        rows = self.db.execute(
            "SELECT id, started, status FROM runs WHERE kind = ? AND config_key = ? AND "
            "status IN ('finished', 'diverged') ORDER BY id DESC",
            (kind, key),
        ).fetchall()
        return [dict(r) for r in rows]

    def ids(
        self, kinds: Iterable[str], dataset: str | None = None, model: str | None = None
    ) -> list[int]:
        """Runs of these kinds that have ended (any status but running), newest first: a
        light query for pages that look for one, without counting every run's points."""
        kinds = list(kinds)
        marks = ", ".join("?" * len(kinds))
        sql = f"SELECT id FROM runs WHERE status != 'running' AND kind IN ({marks})"
        args: list = kinds
        for column, value in (("dataset", dataset), ("model", model)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [r[0] for r in self.db.execute(sql + " ORDER BY id DESC", args).fetchall()]

    def export(self, run_ids: Iterable[int]) -> pd.DataFrame:
        """Every point of these runs, one row each (EXPORT_COLUMNS): the stored run's
        `history_id`, `history_kind` and `history_name`, the point's `channel`, then the
        point's own columns as the experiment wrote them (a sweep's `run` and `run_id` name
        its sub-runs). A point column named like one of the first three becomes point_<name>."""
        frames = []
        for i in run_ids:
            info = self.run(i)
            pts = self.points(i)
            ours = dict(zip(EXPORT_COLUMNS[:3], (int(i), info["kind"], info["name"]), strict=True))
            pts = pts.rename(columns={c: f"point_{c}" for c in ours if c in pts})
            for at, (column, value) in enumerate(ours.items()):
                pts.insert(at, column, value)
            frames.append(pts)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def first(cursor: sqlite3.Cursor):
    """A query's first row, reading it to the end: a cursor left half-read keeps its read
    transaction open, and another process then does not see this connection's view move."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class Recorder(Sink):
    """Writes one run as it goes: `emit(channel, row)` buffers, and a batch is written every
    `every_rows` rows or `every_seconds`, so little is lost if the process dies. The one way
    every page, CLI command and auto-tune study is recorded (see `recorder`)."""

    def __init__(
        self,
        path,
        kind: str,
        config: dict,
        meta: dict | None = None,
        every_rows: int = 200,
        every_seconds: float = 1.0,
    ) -> None:
        self.path, self.kind, self.config, self.meta = path, kind, config, meta or {}
        self.every_rows, self.every_seconds = every_rows, every_seconds
        self.store: RunStore | None = None
        self.run_id: int | None = None
        self._buffer: dict[str, list[dict]] = {}
        self._seq: dict[str, int] = {}
        self._last = time.time()
        self._lock = threading.Lock()

    def start(self) -> int:
        self.store = RunStore(self.path)
        self.run_id = self.store.start_run(self.kind, self.config, **self.meta)
        return self.run_id

    def resume(self, run_id: int) -> bool:
        """Write into a queued run (a job's) instead of a new one, if this process can claim
        it; False if it was cancelled or claimed by another worker."""
        self.store = RunStore(self.path)
        if not self.store.claim(run_id):
            self.store.close()
            self.store = None
            return False
        self.run_id = int(run_id)
        return True

    def emit(self, channel: str, row: dict) -> None:
        with self._lock:
            self._buffer.setdefault(channel, []).append(row)
            size = sum(len(v) for v in self._buffer.values())
            due = size >= self.every_rows or time.time() - self._last >= self.every_seconds
        if due:
            self.flush()

    def flush(self) -> None:
        if self.store is None:
            return
        with self._lock:
            buffer, self._buffer = self._buffer, {}
            self._last = time.time()
        for channel, rows in buffer.items():
            self._seq[channel] = self.store.add_points(
                self.run_id, channel, rows, self._seq.get(channel, 0)
            )

    def finish(self, status: str, results: dict | None = None) -> None:
        if self.store is None:  # never started, or already finished
            return
        self.flush()
        self.store.finish(self.run_id, status, results)
        self.store.close()
        self.store = None


def setup_meta(setup: Any) -> dict:
    """The history's searchable columns of a run on this setup (a `core.setup.Setup`)."""
    if setup is None:
        return {}
    return {
        "dataset": setup.data_name,
        "model": setup.model_name,
        "seed": setup.seed,
        "device": str(setup.torch_device()),
    }


def recorder(kind: str, setup: Any, config: Any, path=None, name: str = "") -> Recorder:
    """A recorder for one experiment run, not yet started: its history config is
    `{"setup": ..., "config": ...}` whoever runs it, so a page offers a CLI run and back."""
    meta = {"name": name, **setup_meta(setup)}
    return Recorder(path or default_path(), kind, record_config(setup, config), meta)


def record_config(setup: Any, config: Any) -> dict:
    """The history's config of an experiment run: the same for a page, the CLI and the API,
    so a run made in one is offered by the others."""
    return {"setup": setup, "config": config}
