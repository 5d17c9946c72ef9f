"""One helper for every experiment on a page: offer the stored result, Run and Stop, the live
view while it trains, the finished Result. A page builds the experiment's Config from its
widgets and hands it here; the engine's `run` does the work and its charts draw it.

The work runs in the server's pool of worker processes (lrbs.runs.jobs), never in the web
process: the page holds only the job's run id (also in its URL), so a reload, another page
or another tab attaches to the same live job and can stop it."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import streamlit as st

from lrbs.runs.experiment import rebuild
from lrbs.runs.jobs import Job, JobPool
from lrbs.runs.live import Snapshot
from lrbs.runs.store import RunStore, StoreError, record_config
from pages.common.history import offer_stored, store_path
from pages.common.live import controls, live_view, show_error
from pages.common.state import remember_job, url_job, url_note


@st.cache_resource(show_spinner=False)
def job_pool() -> JobPool:
    """The server's worker processes, started (and warmed: torch imported) once."""
    return JobPool()


def start(key: str, exp: ModuleType, setup: Any, config: Any, name: str = "") -> None:
    """Queue `exp` with `config` as this page's job `key`, recorded in the run history (not
    started, with the reason, while that file cannot be used)."""
    db = store_path()
    try:
        run_id = job_pool().submit(db, exp.KIND, setup, config, name=name)
    except StoreError as exc:
        st.error(f"Not started: {exc}")
        return
    st.session_state[key] = Job(db, run_id)
    remember_job(key, run_id)
    st.rerun()


def attach(key: str, kind: str) -> Job | None:
    """This page's job: the one in session_state, else the one the URL names (a reload), if
    that is a run of `kind` in this history; else the URL's id is said and dropped."""
    job = st.session_state.get(key)
    if job is None:
        text = url_job(key)
        if text is not None:
            run_id, problem = url_run(text, kind)
            if problem:
                url_note(f"`job.{key}={text[:20]!r}`: {problem}")
            else:
                job = st.session_state[key] = Job(store_path(), run_id)
                remember_job(key, run_id)
    return job


def url_run(text: str, kind: str) -> tuple[int, str | None]:
    """A URL's run id as a run of `kind` in the chosen history, or why it is not one."""
    if not text.isdigit() or len(text) > 18:
        return 0, "not a run id"
    run_id = int(text)
    try:
        with RunStore(store_path()) as store:
            found = store.run(run_id)["kind"]
    except StoreError as exc:
        missing = str(exc).startswith("there is no run")
        if missing:
            return run_id, f"run {run_id} is not in this history"
        return run_id, f"run {run_id} not looked up: the run history file cannot be read"
    if found != kind:
        return run_id, f"run {run_id} is a {found} run, not a {kind} run"
    return run_id, None


def experiment(
    key: str,
    exp: ModuleType,
    setup: Any,
    config: Any | None,
    draw: Callable[[Snapshot, bool], None],
    *,
    label: str = "Run",
    name: str = "",
    on_load: Callable | None = None,
) -> Any | None:
    """The whole life of one experiment on a page: offers a stored run of the same settings,
    draws Run/Stop (Run disabled while `config` is None, i.e. the settings have an error),
    starts the job, draws it live with `draw(snapshot, running)`, and returns the finished
    Result (live or loaded from the history), or None while there is none."""
    job = attach(key, exp.KIND)
    if config is not None:
        offer_stored(
            exp.KIND,
            record_config(setup, config),
            key,
            lambda info, rows: rebuild(exp, info, rows),
            on_load=on_load,
        )
    if controls(key, label, disabled=config is None):
        start(key, exp, setup, config, name)
    if job is None:
        return None
    live_view(key, draw)
    if not job.done:
        return None
    snap = job.snapshot()
    show_error(snap)
    busy_note(snap.result)
    return snap.result


def busy_note(result: Any) -> None:
    """Say when a wall-clock comparison was made on a busy machine: it does not hold there."""
    if getattr(result, "busy", False):
        st.warning(result.machine.note())


def finished(
    key: str,
    exp: ModuleType,
    setup: Any,
    config: Any | None,
    draw: Callable[[Snapshot, bool], None],
    *,
    label: str,
    x_key: str,
    hint: str,
) -> Any:
    """`experiment` for a page whose lower half needs the finished Result: the x-axis choice
    for its curves, a hint while nothing has run, and the page stops until there is one."""
    from lrbs.charts import X_AXES

    st.radio("x axis", list(X_AXES), key=x_key, horizontal=True, format_func=X_AXES.get, index=2)
    result = experiment(key, exp, setup, config, draw, label=label)
    if key not in st.session_state:
        st.info(hint)
    if result is None:
        st.stop()
    return result
