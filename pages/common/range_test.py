"""The range test a page builds on: the newest one (this tab's, else the run history's), or a
quick one run now as a job."""

from collections.abc import Callable
from dataclasses import replace

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.core.setup import Setup
from lrbs.experiments import lr_finder
from lrbs.experiments.lr_finder import round_label, stored_range_test
from lrbs.runs.store import RunStore, StoreError
from pages.common import quick_jobs
from pages.common.history import store_path


def quick_test(batch_size: int, optimizer: str, momentum: float, n_train: int) -> lr_finder.Config:
    """The quick range test that seeds a page: 100 iterations from 1e-6 to 10 at this batch
    size (at most the training set) with this optimizer, one seed."""
    cfg = lr_finder.Config(lr_min=1e-6, batch_size=min(batch_size, n_train))
    return replace(cfg, optim=replace(cfg.optim, name=optimizer, momentum=momentum))


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
    quick: tuple[str, str, str, Callable[[], quick_jobs.Runs]],
    disabled: bool = False,
) -> None:
    """Two ways to seed a page's settings from a range test, side by side: the newest one
    (`use_latest`: label, key, callback taking (suggestions, source) returning its note), or
    quick jobs run now
    (`quick`: label, button key, help, the runs to start; the page takes their results with
    `quick_jobs.take(key + "_job", ...)` before its widgets); then the note (`note_key` in the
    session state, "error: ..." for a failure), once."""
    latest = latest_range_test(setup)
    c1, c2 = st.columns(2)
    label, key, use = use_latest
    if latest is not None:
        c1.button(
            label,
            on_click=quick_jobs.noted,
            args=(note_key, use, *latest),
            key=key,
            help=f"From {latest[1]}",
        )
        c1.caption(f"Available: {latest[1]}.")
    else:
        c1.caption("No range test of this dataset and model yet, in this tab or the history.")
    label, key, help_, runs = quick
    busy = quick_jobs.running(f"{key}_job")
    if c2.button(label, key=key, help=help_, disabled=disabled or busy):
        quick_jobs.start(f"{key}_job", setup, runs())
    quick_jobs.view(f"{key}_job")
    quick_jobs.show_note(note_key)
