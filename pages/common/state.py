"""Page start-up, and values that must outlive a page change.

Widgets whose value is shared across pages use keys starting with "s_"; Streamlit drops a
widget's key when a page without that widget runs, so `keep_shared` assigns each one back on
every run (the documented way to keep them)."""

import runpy
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parents[2] / "app.py"
SHARED_PREFIX = "s_"


def page_start() -> None:
    """First call of every page file."""
    _run_through_app()
    keep_shared()


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


def keep_shared() -> None:
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(SHARED_PREFIX):
            st.session_state[key] = st.session_state[key]


def default(key: str, value) -> None:
    """Seed a widget's value once, without passing `value=` (which would fight session_state)."""
    if key not in st.session_state:
        st.session_state[key] = value
