"""The newest range test a page can build on: this tab's, else the run history's."""

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.core.setup import Setup
from lrbs.experiments.lr_finder import stored_range_test
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
                f"the range test in this tab (round {len(shown.rounds)}, {c.optim.name}, "
                f"batch {c.batch_size})"
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
