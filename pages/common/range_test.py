"""The newest range test a page can build on: this tab's, else the run history's."""

from collections.abc import Callable

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.core.setup import Setup
from lrbs.experiments.lr_finder import round_label, stored_range_test
from lrbs.runs.store import RunStore, StoreError
from pages.common.history import store_path


def latest_range_test(setup: Setup) -> tuple[dict[str, float], str] | None:
    """(suggestions by rule name, where they come from), or None: the same figures as
    the history's record of that run (`stored_range_test`)."""
    shown = st.session_state.get("rt_shown")  # the LR page's finished range test
    if shown is not None and shown.rounds:
        found = shown.suggestions()  # the last round's, the median over seeds
        if "max_usable" in found:
            c = shown.config
            return found, (
                f"the range test in this tab ({round_label(len(shown.rounds) - 1)}, "
                f"{c.optim.name}, batch {c.batch_size})"
            )
    try:
        with RunStore(store_path()) as store:
            stored = stored_range_test(store, setup.data_name, setup.model_name)
    except (StoreError, LrbsError):
        return None
    if stored is None:
        return None
    found, run_id = stored
    return found, f"range test #{run_id} in the history"


def seeding_panel(
    setup: Setup,
    note_key: str,
    use_latest: tuple[str, str, Callable],
    quick: tuple[str, str, str, Callable],
    disabled: bool = False,
) -> None:
    """Two ways to seed a page's settings from a range test, side by side: the newest one
    (`use_latest`: label, key, callback taking (suggestions, source)), or a quick one run now
    (`quick`: label, key, help, callback); then the callbacks' note (`note_key` in the
    session state, "error: ..." for a failure), once."""
    latest = latest_range_test(setup)
    c1, c2 = st.columns(2)
    label, key, use = use_latest
    if latest is not None:
        c1.button(label, on_click=use, args=latest, key=key, help=f"From {latest[1]}")
        c1.caption(f"Available: {latest[1]}.")
    else:
        c1.caption("No range test of this dataset and model yet, in this tab or the history.")
    label, key, help_, run = quick
    c2.button(label, on_click=run, key=key, help=help_, disabled=disabled)
    note = st.session_state.pop(note_key, None)
    if note and note.startswith("error: "):
        st.error(note.removeprefix("error: "))
    elif note:
        st.success(note)
