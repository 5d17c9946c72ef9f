"""Values that must outlive a page change live under plain session_state keys.

Widgets whose value is shared across pages use keys starting with "s_"; Streamlit drops a
widget's key when a page without that widget runs, so `keep_shared` assigns each one back on
every run (the documented way to keep them)."""

import streamlit as st

SHARED_PREFIX = "s_"


def keep_shared() -> None:
    """Call at the top of every page (and app.py). Pages call it themselves because Streamlit
    may run a file under pages/ without app.py: AppTest does on every rerun, and so does the
    server's very first run when it is opened on a page's URL (its legacy pages/ mode)."""
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(SHARED_PREFIX):
            st.session_state[key] = st.session_state[key]


def default(key: str, value) -> None:
    """Seed a widget's value once, without passing `value=` (which would fight session_state)."""
    if key not in st.session_state:
        st.session_state[key] = value
