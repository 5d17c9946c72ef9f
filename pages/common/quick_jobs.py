"""Short runs that fill a page's settings (a quick range test, the memory probe). They are jobs
like every other run: they train in the server's worker processes (lrbs.runs.jobs), can be
stopped, and are recorded in the run history. A page starts them from a button, shows them
live, and takes their results at the top of its next run (`take`): a widget's value cannot be
set once the widget is drawn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.runs.jobs import Job
from lrbs.runs.store import StoreError
from pages.common.history import store_path
from pages.common.live import REFRESH_SECONDS

Runs = Sequence[tuple[str, ModuleType, Any]]  # (what it is, experiment module, its Config)


def start(key: str, setup: Any, runs: Runs) -> None:
    """Queue each run as a job of this page's quick runs `key`, then rerun to show them."""
    from pages.common.job import job_pool

    db = store_path()
    try:
        jobs = [(what, job_pool().submit(db, exp.KIND, setup, cfg)) for what, exp, cfg in runs]
    except StoreError as exc:
        st.error(f"Not started: {exc}")
        return
    st.session_state[key] = {"jobs": [(what, Job(db, rid)) for what, rid in jobs], "taken": False}
    st.rerun()


def running(key: str) -> bool:
    quick = st.session_state.get(key)
    return quick is not None and not all(job.done for _, job in quick["jobs"])


def take(key: str, note_key: str, use: Callable[[list[Any]], str]) -> None:
    """Once every job of `key` has ended, hand their Results to `use` (once), which sets the
    page's settings and returns what it did; its note (or why nothing was taken) goes under
    `note_key` ("error: ..." for a failure). Call it before the page draws its widgets."""
    quick = st.session_state.get(key)
    if quick is None or quick["taken"] or running(key):
        return
    quick["taken"] = True
    snaps = [(what, job.status, job.snapshot()) for what, job in quick["jobs"]]
    for what, status, snap in snaps:
        if status in ("stopped", "cancelled"):
            st.session_state[note_key] = f"error: the {what} was stopped; nothing was filled in"
            return
        if snap.error or snap.result is None or status != "finished":
            why = snap.error or f"it ended {status}"
            st.session_state[note_key] = f"error: the {what} gave no answer: {why}"
            return
    noted(note_key, use, [snap.result for _, _, snap in snaps])


def noted(note_key: str, use: Callable[..., str | None], *args: Any) -> None:
    """Run `use(*args)`, which fills some settings and returns what it did, and keep its note
    with the settings it changed: `show_note` shows it while they still hold those values (the
    app's own reruns do not wipe it; the user's change of one does). An LrbsError is a note
    said once."""
    before = dict(st.session_state)
    try:
        text = use(*args)
    except LrbsError as exc:
        st.session_state[note_key] = f"error: {exc}"
        return
    if text is None:  # `use` set its own note (an "error: ..." said once)
        return
    changed = {k: v for k, v in st.session_state.items() if not same(before.get(k, same), v)}
    changed.pop(note_key, None)
    st.session_state[note_key] = {"text": text, "while": changed}


def show_note(note_key: str) -> None:
    """The note of the last seeding: a failure once, a success while its settings hold."""
    note = st.session_state.get(note_key)
    if isinstance(note, str):
        del st.session_state[note_key]
        st.error(note.removeprefix("error: "))
    elif note is not None:
        if all(same(st.session_state.get(k), v) for k, v in note["while"].items()):
            st.success(note["text"])
        else:
            del st.session_state[note_key]


def view(key: str) -> None:
    """The quick runs of `key` while they go: each one's progress, and Stop. The page reruns
    when the last one ends, so `take` fills the settings."""
    if not running(key):
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def live() -> None:
        jobs = st.session_state[key]["jobs"]
        for what, job in jobs:
            snap = job.snapshot()
            place = None if snap.done else job.queue_position()
            text = f"{what}: waiting for a worker" if place is not None else what
            st.progress(snap.progress, text=text)
        if st.button("Stop", key=f"{key}_stop"):
            for _, job in jobs:
                job.stop()
        if not running(key):
            st.rerun(scope="app")

    live()


def same(a: Any, b: Any) -> bool:
    """Equal, for any two session values (a frame or a result compares as itself only)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (an ambiguous comparison: not the same)
        return False
