"""Page start-up, and settings that must outlive an error, a page change and a reload.

Streamlit forgets a widget's value when a run does not draw that widget: when another page
runs, or when this page stops early on an error in the shared sidebar. Two kinds of keys are
kept by assigning them back at the start of every run (the documented way to keep them): the
shared sidebar's ("s_" keys) and every setting a page seeds with `default(key, value)`. Both
also go into the page's URL (`st.query_params`, JSON values), so a reload, a bookmark or a
link sent to a colleague opens the same experiment; a job's run id rides there too
(`job.<key>`), so a reload shows the same live job.

A URL is typed input: its values wait until the page seeds their key with `default`, which
takes one only if it has the default's type (a whole number for an int, a finite number for a
float, ...); a widget that then clamps or replaces it (out of range, not a choice) is caught
by `check_url`. What was not taken is said once, in one warning at the top of the page."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from typing import Any

import streamlit as st

APP = Path(__file__).resolve().parents[2] / "app.py"
SHARED_PREFIX = "s_"
SETTINGS = "_settings"  # the keys seeded by default(): this session's page settings
JOB_PREFIX = "job."
URL_READ = "_url_read"
URL_PENDING = "_url_pending"  # key -> a URL value not yet seeded by its page
URL_TAKEN = "_url_taken"  # key -> (URL value, default) seeded, until its widget kept it
URL_NOTES = "_url_notes"  # {"page", "notes": "not taken, and why", "seen": the settings then}
URL_BOX = "_url_box"  # this run's place for them, at the top of the page
JS_SAFE = 2**53 - 1  # the largest whole number a browser's widget holds exactly


def page_start() -> None:
    """First call of every page file."""
    _run_through_app()
    from_url()
    keep_shared()
    to_url()
    notes = _notes_kept()
    url_left = any(st.session_state.get(k) for k in (URL_PENDING, URL_TAKEN, "_url_jobs"))
    st.session_state[URL_BOX] = st.empty() if url_left or notes else None
    if notes:
        _show_notes(notes)


def _page() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return getattr(ctx, "page_script_hash", "") if ctx is not None else ""


def _notes_kept() -> list[str]:
    """The notes about this page's URL, kept while the page shows and nobody has changed a
    setting they name (the app reruns on its own after a link opens: a note said only on the
    first run would flash by unread); a new page or such a change ends them."""
    kept = st.session_state.get(URL_NOTES)
    # the settings the notes are about ("`key=value`: why"): a change to one is the user's
    named = {n[1 : n.index("=")] for n in (kept or {}).get("notes", []) if "=" in n}
    settings = {k: st.session_state.get(k) for k in sorted(named)}
    if not kept or kept["page"] != _page():
        kept = st.session_state[URL_NOTES] = {"page": _page(), "notes": [], "seen": None}
    elif kept["seen"] is None:
        kept["seen"] = settings  # the settings as the link left them
    elif kept["seen"] != settings:
        kept["notes"], kept["seen"] = [], None
    return kept["notes"]


def _run_through_app() -> None:
    """Streamlit 1.67 starts a process in its legacy "pages/ folder" mode, in which a file under
    pages/ runs by itself, without app.py's navigation, until some run calls st.navigation.
    That happens when the first visit of a fresh server is a page's URL, and in AppTest on every
    rerun. Leaving that mode and running app.py in its place (within this same run, so a
    button click is not lost to a rerun) gives the page its navigation and shared set-up."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP), run_name="__main__")  # runs this page again, inside app.py
        st.stop()


def _kept_keys() -> list[str]:
    settings = st.session_state.get(SETTINGS, set())
    return [
        k
        for k in list(st.session_state.keys())
        if isinstance(k, str) and (k.startswith(SHARED_PREFIX) or k in settings)
    ]


def keep_shared() -> None:
    """Assign the shared and the page's settings back, so no run forgets them."""
    for key in _kept_keys():
        st.session_state[key] = st.session_state[key]


def default(key: str, value) -> None:
    """Seed a setting's value once, without passing `value=` (which would fight
    session_state), and keep it from now on (errors, page changes, the URL). A value the URL
    gave for `key` is taken here if it has `value`'s type."""
    st.session_state.setdefault(SETTINGS, set()).add(key)
    given = st.session_state.get(URL_PENDING, {}).pop(key, _NOTHING)
    if key in st.session_state:
        return
    st.session_state[key] = value
    if given is _NOTHING:
        return
    taken, why = fit(given, value)
    if why:
        url_note(f"`{key}={_shown(given)}`: {why}; the default {_shown(value)} is used")
    else:
        st.session_state[key] = taken
        st.session_state.setdefault(URL_TAKEN, {})[key] = (taken, value)


def within(key: str, lo: float, hi: float) -> None:
    """Before a slider (which raises on a value outside its range, where a number input
    clamps): a URL value for `key` outside [lo, hi] is said, and the default used."""
    value, fallback = st.session_state.get(URL_TAKEN, {}).get(key, (lo, None))
    if not lo <= value <= hi:
        del st.session_state[URL_TAKEN][key]
        st.session_state[key] = fallback
        url_note(f"`{key}={_shown(value)}`: outside {lo:g} to {hi:g}; the default {fallback} used")


_NOTHING = object()


def fit(given: Any, like: Any) -> tuple[Any, str | None]:
    """`given` (a URL's value) as a value of `like`'s type, or why it is not one."""
    number = isinstance(given, int | float) and not isinstance(given, bool)
    if like is None:
        return given, None if given is None or isinstance(given, str) else "not a text"
    if isinstance(like, bool):
        return given, None if isinstance(given, bool) else "not true or false"
    if isinstance(like, int | float):
        if not number:
            return given, "not a number"
        if not math.isfinite(given):
            return given, "not a finite number"
        if isinstance(like, float):
            return float(given), None
        if given != int(given):
            return given, "not a whole number"
        return int(given), None if abs(given) <= JS_SAFE else "too large"
    if isinstance(like, str):
        return given, None if isinstance(given, str) else "not a text"
    if isinstance(like, list | tuple):
        if not isinstance(given, list):
            return given, "not a list"
        fitted = [fit(g, like[0]) if like else (g, None) for g in given]
        why = next((w for _, w in fitted if w), None)
        return [v for v, _ in fitted], None if why is None else f"an item is {why}"
    return given, None


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:40]) if isinstance(value, str) else text[:40]


def url_note(text: str) -> None:
    """Say that part of the URL was not used: all of its notes, in one warning."""
    kept = st.session_state.setdefault(URL_NOTES, {"page": _page(), "notes": [], "seen": None})
    if text not in kept["notes"]:
        kept["notes"].append(text)
    kept["seen"] = None
    _show_notes(kept["notes"])


def _show_notes(notes: list[str]) -> None:
    body = "Not all of this page's address could be used:\n\n" + "\n".join(f"- {n}" for n in notes)
    box = st.session_state.get(URL_BOX)
    (box or st).warning(body, icon=":material/link_off:")


def check_url() -> None:
    """After the widgets are drawn: a URL value a widget did not keep (out of its range, not
    one of its choices) is said, with the value it uses instead."""
    taken = st.session_state.get(URL_TAKEN)
    if not taken:
        return
    for key, (value, _) in list(taken.items()):
        now = st.session_state.get(key, value)
        del taken[key]
        if now != value and not (isinstance(now, tuple) and list(now) == value):
            why = "out of range" if isinstance(value, int | float) else "not one of the choices"
            url_note(f"`{key}={_shown(value)}`: {why}; {_shown(now)} is used")


def from_url() -> None:
    """On a session's first run (a reload, a shared link), read the settings in the URL; they
    wait for their page to seed them (`default`)."""
    if st.session_state.get(URL_READ):
        return
    st.session_state[URL_READ] = True
    pending = st.session_state.setdefault(URL_PENDING, {})
    for key, text in st.query_params.to_dict().items():
        if key.startswith(JOB_PREFIX):
            st.session_state.setdefault("_url_jobs", {})[key[len(JOB_PREFIX) :]] = text
            continue
        try:
            pending[key] = json.loads(text)
        except ValueError:
            pending[key] = text  # a hand-typed word: a choice or a text, checked as one


def to_url() -> None:
    """The settings as they are now, into the URL (only what is plain JSON), and what the
    URL gave that no page has used yet."""
    params = {}
    for key, value in st.session_state.get(URL_PENDING, {}).items():
        params[key] = json.dumps(value, separators=(",", ":"))
    for key in _kept_keys():
        value = st.session_state[key]
        if value is None or isinstance(value, bool | int | float | str | list | tuple):
            params[key] = json.dumps(value, separators=(",", ":"))
    for key, text in st.session_state.get("_url_jobs", {}).items():
        params[JOB_PREFIX + key] = text
    for key, run_id in st.session_state.get("_jobs", {}).items():
        params[JOB_PREFIX + key] = str(run_id)
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


def url_job(key: str) -> str | None:
    """The run id of job `key` as the URL this session opened with gave it (unchecked)."""
    return st.session_state.get("_url_jobs", {}).pop(key, None)


def remember_job(key: str, run_id: int) -> None:
    st.session_state.setdefault("_jobs", {})[key] = int(run_id)
