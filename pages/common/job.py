"""One helper for every experiment on a page: offer the stored result, Run and Stop, the live
view while it trains, the finished Result. A page builds the experiment's Config from its
widgets and hands it here; the engine's `run` does the work and its charts draw it."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import streamlit as st

from lrbs.runs.experiment import rebuild
from lrbs.runs.live import Snapshot
from lrbs.runs.sink import Sink
from lrbs.runs.store import record_config, recorder
from pages.common.history import offer_stored, store_path
from pages.common.live import controls, live_view, start_job


class _Callbacks(Sink):
    """The live job's emit and progress as the Sink an experiment reports to."""

    def __init__(self, emit: Callable[[str, dict], None], progress: Callable[[float], None]):
        self._emit, self._progress = emit, progress

    def emit(self, channel: str, row: dict) -> None:
        self._emit(channel, row)

    def progress(self, fraction: float, text: str = "") -> None:
        self._progress(fraction)


def start(key: str, exp: ModuleType, setup: Any, config: Any, name: str = "", state=None):
    """Start `exp` with `config` as this page's job `key`, recorded in the run history."""

    def work(emit, stop, progress):
        return exp.run(setup, config, _Callbacks(emit, progress), stop)

    start_job(
        key,
        work,
        exp.KIND,
        state,
        record=recorder(exp.KIND, setup, config, path=store_path(), name=name),
        summarize=lambda r: (r.status, r.summary()),
    )


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
    job = st.session_state.get(key)
    if job is None:
        return None
    live_view(key, draw)
    if not job.done:
        return None
    return job.snapshot().result
