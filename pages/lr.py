"""Find the learning rate

icon: :material/search:

The LR range test (Leslie Smith's LR finder): train briefly while the rate grows from 1e-7 to 10
and read off where the loss falls fastest and where it blows up; zoom into the interesting
decade with a finer second pass. Or sweep an exponential grid of rates, each trained from the
same weights for the same wall-clock budget.
"""

from functools import partial

import streamlit as st

from lrbs.charts import X_AXES
from lrbs.charts import lr as lr_charts
from lrbs.core.errors import LrbsError
from lrbs.experiments import sweeps
from pages.common import chosen
from pages.common.job import experiment
from pages.common.live import downloads, events_frame, live_chart, result_columns, show_error
from pages.common.lr_inputs import sweep_config
from pages.common.lr_range_test import range_test_section
from pages.common.sidebar import parse_floats, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Find the learning rate")
MODES = ["Range test", "Sweep at a fixed budget"]
default("lr_mode", MODES[0])
mode = st.radio("Experiment", MODES, key="lr_mode", horizontal=True, label_visibility="collapsed")

setup, arrays = require_setup()


def use_lr(lr: float, source: str) -> None:
    chosen.use("lr", lr, source)


# ============================================================================ sweep


def set_grid(values) -> None:
    st.session_state["sw_grid"] = ", ".join(f"{v:g}" for v in values)


def add_decade() -> None:
    try:
        set_grid(sweeps.add_decade(parse_floats(st.session_state["sw_grid"], "learning rates")))
    except LrbsError as exc:
        st.session_state["sw_grid_error"] = str(exc)


def add_lr(lr: float) -> None:
    grid = parse_floats(st.session_state["sw_grid"], "learning rates")
    if lr not in grid:
        set_grid(sorted((*grid, lr)))


RESULT_COLUMNS = result_columns(
    {
        "lr": st.column_config.NumberColumn(format="%g"),
        "epochs": st.column_config.NumberColumn(format="%.1f"),
        "best": st.column_config.CheckboxColumn("best"),
        "val_loss_std": st.column_config.NumberColumn("val loss std", format="%.4f"),
    }
)


def draw_sweep(snap, running: bool, n_rates: int | None = None) -> None:
    runs = snap.rows.get("runs", [])
    if running:
        of = f" of {n_rates}" if n_rates else ""
        st.progress(snap.progress, text=f"Sweep: {len(runs)}{of} runs done")
    events, x = events_frame(snap), st.session_state.get("sw_x")
    c1, c2 = st.columns(2)
    for cell, y in ((c1, "val_loss"), (c2, "loss")):
        chart = lr_charts.sweep_curves(events, runs, x, y)
        if chart is not None:
            live_chart(cell, chart, running)
    show_error(snap)


def sweep_section() -> None:
    st.markdown(
        "Seed 000's way: train the same initial weights once per learning rate, each for the "
        "same wall-clock budget, on an exponential grid (0.001, 0.01, 0.1, 1), and compare. "
        "Then refine around the best decade."
    )
    cfg = sweep_config(setup, arrays)
    found = chosen.chosen("lr")
    if found is not None:
        c1, c2, c3 = st.columns([4, 2, 2])
        chosen.caption(("lr", None), target=c1)
        c2.button("Add it to the grid", on_click=add_lr, args=(found[0],), key="sw_add_chosen")
        c3.button(
            "Centre the grid on it",
            on_click=set_grid,
            args=(sweeps.around(found[0]),),
            key="sw_centre_chosen",
            help="Five rates a decade either side of it: ×0.1, ×0.3, ×1, ×3, ×10",
        )
    st.radio("x axis", list(X_AXES), key="sw_x", horizontal=True, format_func=X_AXES.get)
    draw = partial(draw_sweep, n_rates=len(cfg.runs()) if cfg is not None else None)
    result = experiment("sw_job", sweeps, setup, cfg, draw, label="Run sweep")
    if st.session_state.get("sw_job") is None:
        st.info(
            "Each rate gets the same budget from the same initial weights; the curves "
            "stream in while they train."
        )
    if result is None or result.table().empty:
        return
    table = result.table()
    st.subheader("Results")
    st.dataframe(table, hide_index=True, width="stretch", column_config=RESULT_COLUMNS)
    verdict = result.verdict()
    if verdict:
        st.markdown(verdict)
    st.caption(
        "The best is the lowest validation loss (the left chart) among the rates whose every "
        "run finished its budget; a diverged or stopped run is never the best."
    )
    best = result.best_lr()
    c1, c2, c3 = st.columns(3)
    c1.button("Add a decade above", on_click=add_decade, key="sw_decade")
    if best is not None:
        c2.button(
            f"Refine around {best:g}",
            on_click=set_grid,
            args=(sweeps.refine(best),),
            key="sw_refine",
        )
        if c3.button(f"Use {best:g} on the other pages", key="sw_use"):
            use_lr(best, "the learning-rate sweep")
            st.success(f"Learning rate {best:g} will be the default on the other pages.")
    downloads("lr_sweep", "sw", result.curves(), table)


if mode == MODES[0]:
    range_test_section(setup, arrays)
else:
    sweep_section()
