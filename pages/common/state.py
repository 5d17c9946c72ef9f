"""Page start-up, and settings that must outlive an error, a page change and a reload.

Streamlit forgets a widget's value when a run does not draw that widget: when another page
runs, or when this page stops early on an error in the shared sidebar. Two kinds of keys are
kept by assigning them back at the start of every run (the documented way to keep them): the
shared sidebar's ("s_" keys) and every setting a page seeds with `default(key, value)`. Both
also go into the page's URL (`st.query_params`, JSON values), so a reload, a bookmark or a
link sent to a colleague opens the same experiment; a job's run id rides there too
(`job.<key>`), so a reload shows the same live job."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parents[2] / "app.py"
SHARED_PREFIX = "s_"
SETTINGS = "_settings"  # the keys seeded by default(): this session's page settings
JOB_PREFIX = "job."
URL_READ = "_url_read"


def page_start() -> None:
    """First call of every page file."""
    _run_through_app()
    from_url()
    keep_shared()
    to_url()


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
    session_state), and keep it from now on (errors, page changes, the URL)."""
    st.session_state.setdefault(SETTINGS, set()).add(key)
    if key not in st.session_state:
        st.session_state[key] = value


def from_url() -> None:
    """On a session's first run (a reload, a shared link), take the settings in the URL."""
    if st.session_state.get(URL_READ):
        return
    st.session_state[URL_READ] = True
    for key, text in st.query_params.to_dict().items():
        if key.startswith(JOB_PREFIX):
            name = key[len(JOB_PREFIX) :]
            st.session_state.setdefault("_url_jobs", {})[name] = text
            if text.isdigit():  # kept in the URL from this first run on
                remember_job(name, int(text))
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue  # a hand-edited URL: ignored, the page's defaults apply
        if isinstance(value, list):
            value = list(value)
        st.session_state.setdefault(SETTINGS, set()).add(key)
        st.session_state.setdefault(key, value)


def to_url() -> None:
    """The settings as they are now, into the URL (only what is plain JSON)."""
    params = {}
    for key in _kept_keys():
        value = st.session_state[key]
        if value is None or isinstance(value, bool | int | float | str | list | tuple):
            params[key] = json.dumps(value, separators=(",", ":"))
    for key, run_id in st.session_state.get("_jobs", {}).items():
        params[JOB_PREFIX + key] = str(run_id)
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


def url_job(key: str) -> int | None:
    """The run id of job `key` named in the URL this session opened with, if any."""
    text = st.session_state.get("_url_jobs", {}).pop(key, None)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def remember_job(key: str, run_id: int) -> None:
    st.session_state.setdefault("_jobs", {})[key] = int(run_id)
