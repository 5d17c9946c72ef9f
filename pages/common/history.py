"""Pages and the run history: where the file is, recording a run, offering a stored result."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from lrbs.runs.live import Snapshot
from lrbs.runs.store import RunStore, StoreError, default_path
from pages.common.state import default


def store_path() -> str:
    return st.session_state.get("s_db_path") or str(default_path())


def store_problem() -> str | None:
    """Why the chosen history file cannot be used, or None when it can."""
    try:
        RunStore(store_path()).close()
    except StoreError as exc:
        return str(exc)
    return None


def open_store() -> RunStore | None:
    try:
        return RunStore(store_path())
    except StoreError as exc:
        st.error(str(exc))
        return None


@dataclass
class StoredJob:
    """A finished run read back from the history, shaped like a Job (lrbs.runs.jobs)."""

    rows: dict[str, list[dict]]
    result: Any
    run_id: int
    done: bool = True

    def snapshot(self) -> Snapshot:
        return Snapshot(rows=self.rows, progress=1.0, done=True, result=self.result, error=None)

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> bool:
        return True


def load_job(store: RunStore, run_id: int, rebuild=None) -> StoredJob:
    info = store.run(run_id)
    pts = store.points(run_id)
    rows = {}
    if not pts.empty:
        for channel, part in pts.groupby("channel", sort=False):
            rows[channel] = (
                part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
            )
    result = rebuild(info, rows) if rebuild is not None else None
    return StoredJob(rows, result, run_id)


def offer_stored(
    kind: str,
    config: dict,
    job_key: str,
    rebuild: Callable | None = None,
    on_load: Callable[[StoredJob], None] | None = None,
) -> None:
    """If this exact config already ran, say when, and offer its result instead of training."""
    try:
        store = RunStore(store_path())
    except StoreError:
        return  # the sidebar shows that error
    try:
        found = store.find(kind, config)
        if not found:
            return
        latest = found[0]
        shown = st.session_state.get(job_key)
        shown_ids = {getattr(shown, "run_id", None), st.session_state.get(f"{job_key}_loaded")}
        if latest["id"] in shown_ids:  # the page already shows that very run
            return
        when = dt.datetime.fromtimestamp(latest["started"]).strftime("%Y-%m-%d %H:%M")
        c1, c2 = st.columns([4, 1])
        c1.info(
            f"These settings already ran at {when} (run #{latest['id']}, "
            f"{latest['status']}); load it instead of training again?"
        )
        if c2.button("Load stored result", key=f"{job_key}_load"):
            job = load_job(store, latest["id"], rebuild)
            st.session_state[f"{job_key}_loaded"] = latest["id"]
            if on_load is not None:
                on_load(job)
            else:
                st.session_state[job_key] = job
            st.rerun()
    finally:
        store.close()


def history_sidebar(show_problem: bool = True) -> None:
    """The history file's input; with `show_problem`, why the file cannot be used, under it."""
    default("s_db_path", None)
    problem = store_problem() if show_problem else None
    with st.sidebar.expander("Run history file", expanded=problem is not None):
        st.text_input(
            "History file (SQLite)",
            key="s_db_path",
            value=None,
            placeholder=str(default_path()),
            help="Every run is saved here. Also settable with LRBS_DB.",
        )
        if problem:
            st.error(problem)
