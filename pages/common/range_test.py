"""The newest range test a page can build on: this tab's, else the run history's."""

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.core.setup import Setup
from lrbs.experiments.lr_finder import stored_range_test
from lrbs.runs.store import RunStore, StoreError
from pages.common.history import store_path


def latest_range_test(setup: Setup) -> tuple[dict[str, float], str] | None:
    """(suggestions by rule name, where they come from), or None."""
    rounds = st.session_state.get("rt_rounds") or []
    if rounds and rounds[-1]:
        result = rounds[-1][0]
        found = {s.name: s.lr for s in result.suggestions}
        if "max_usable" in found:
            c = result.config
            return found, (
                f"the range test in this tab (round {result.round + 1}, {c.optimizer}, "
                f"batch {c.batch_size})"
            )
    try:
        with RunStore(store_path()) as store:
            stored = stored_range_test(store, setup.data.name, setup.model.name)
    except (StoreError, LrbsError):
        return None
    if stored is None:
        return None
    found, run_id = stored
    return found, f"range test #{run_id} in the history"
