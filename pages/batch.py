"""Batch size

icon: :material/stacks:

Sweep batch sizes at equal wall-clock, epoch or update budgets from the same initial weights,
and see the generalization gap. Check the linear scaling rule (batch x k, lr x k) against a
fixed rate, and probe the largest batch that fits in memory.
"""

import streamlit as st

from lrbs import charts
from lrbs.charts.batch import scaling_chart, sweep_chart
from lrbs.experiments import bs_probe, bs_scaling_check, bs_sweep, scaling
from pages.common import chosen
from pages.common.batch_inputs import probe_inputs, scaling_inputs, sweep_inputs
from pages.common.job import experiment
from pages.common.live import (
    csv_download,
    downloads,
    events_frame,
    live_chart,
    result_columns,
    show_error,
)
from pages.common.sidebar import require_setup
from pages.common.state import default, page_start

page_start()

st.title("Batch size")
MODES = ["Sweep at equal budgets", "Scaling-rule check", "Largest batch that fits"]
default("bs_mode", MODES[0])
mode = st.radio("Experiment", MODES, key="bs_mode", horizontal=True, label_visibility="collapsed")

setup, arrays = require_setup()
N = arrays.n_train

TABLE_COLUMNS = result_columns(
    {
        "lr": st.column_config.NumberColumn(format="%.4g"),
        "noise_scale": st.column_config.NumberColumn("noise scale g", format="%.3g"),
        "gap": st.column_config.NumberColumn("gap (val − train)", format="%.4f"),
        "samples_per_s": st.column_config.NumberColumn("samples/s", format="%.0f"),
        "peak_memory_mib": st.column_config.NumberColumn("peak MiB", format="%.0f"),
        "val_loss_std": st.column_config.NumberColumn("val loss std", format="%.4f"),
    }
)


# ============================================================================ sweep


def classes_section(cfg: bs_sweep.Config | None) -> None:
    counts = arrays.class_counts()
    if not len(counts):  # a workload: its labels are not read before training
        return
    batches = [b for b, _ in cfg.plan(N)] if cfg else []
    with st.expander("Classes per batch (seed 003)", expanded=False):
        st.markdown(
            f"Expected samples of each of the {arrays.n_classes} classes in one batch, "
            "drawn uniformly from the training set."
        )
        if batches:
            table = scaling.classes_table(counts, batches, arrays.class_names)
            st.dataframe(table, hide_index=True, width="stretch")
    for b in batches:
        warning = scaling.smallest_class_warning(counts, b)
        if warning:
            st.warning(warning)


def sweep_section() -> None:
    st.markdown(
        "Every batch size trains from the **same initial weights** for the **same budget**: "
        "small batches make many noisy updates, large ones few precise ones. Which reaches the "
        "lower loss in the time you have? And does the gap between training and validation "
        "loss grow with the batch (seed 004)?"
    )
    cfg = sweep_inputs(setup, N)
    if cfg is not None:
        st.caption(cfg.describe_plan(N))
    classes_section(cfg)
    st.radio(
        "x axis", list(charts.X_AXES), key="bs_x", horizontal=True, format_func=charts.X_AXES.get
    )
    n_runs = len(cfg.runs(N)) if cfg is not None else None

    def draw(snap, running: bool) -> None:
        events = events_frame(snap)
        runs = snap.rows.get("runs", [])
        if running:
            of = f" of {n_runs}" if n_runs else ""
            st.progress(snap.progress, text=f"Sweep: {len(runs)}{of} runs done")
        x = st.session_state.get("bs_x", "elapsed")
        diverged = [r["run"] for r in runs if r["status"] == "diverged"]
        c1, c2 = st.columns(2)
        train_rows, evals = events[events.kind == "train"], events[events.kind == "eval"]
        if not train_rows.empty:
            live_chart(c1, sweep_chart(train_rows, diverged, x, "loss", "Training loss"), running)
        if not evals.empty:
            chart = sweep_chart(evals, diverged, x, "val_loss", "Validation loss")
            live_chart(c2, chart, running)
        show_error(snap)

    result = experiment("bs_job", bs_sweep, setup, cfg, draw, label="Run sweep")
    if st.session_state.get("bs_job") is None:
        st.info("Curves stream in while each batch size trains.")
    table = result.table() if result is not None else None
    if table is None or table.empty:
        return
    st.subheader("Results")
    st.dataframe(table, hide_index=True, width="stretch", column_config=TABLE_COLUMNS)
    verdict = result.verdict()
    best = result.best()
    if verdict:
        (st.success if best is not None else st.warning)(verdict)
    if best is not None:
        b, lr = int(best["batch"]), float(best["lr"])
        # the pair it ran with: its rate is the one the scaling rule gave this batch
        if st.button(
            f"Use batch {b} with lr {lr:.3g} (its rate here) on the other pages", key="bs_use"
        ):
            chosen.use("batch", b, "the batch-size sweep")
            chosen.use("lr", lr, f"the batch-size sweep (batch {b}'s rate)")
            st.success(f"Batch size {b} with lr {lr:.3g} will be the default on the other pages.")
    downloads("batch_sweep", "bs", result.events(), table)


# ============================================================================ scaling check


def scaling_section() -> None:
    st.markdown(
        "Seed 001's experiment (Goyal et al. 2017): multiply the batch by k and the learning "
        "rate by k, and the validation loss per epoch should follow the same curve for every "
        "k; keep the rate fixed instead, and larger batches fall behind."
    )
    cfg = scaling_inputs(setup, N)

    def draw(snap, running: bool) -> None:
        if running:
            st.progress(snap.progress, text="Scaling-rule check")
        curves = bs_scaling_check.Result(cfg, snap.rows).curves()
        if not curves.empty:
            c1, c2 = st.columns(2)
            linear = scaling_chart(curves, "linear", "Linear rule: B₀·k with lr₀·k")
            live_chart(c1, linear, running)
            live_chart(c2, scaling_chart(curves, "fixed", "Fixed rate: B₀·k with lr₀"), running)
        show_error(snap)

    result = experiment("sc_job", bs_scaling_check, setup, cfg, draw, label="Run the check")
    if st.session_state.get("sc_job") is None:
        times = f"2 × K × {cfg.repeats}" if cfg and cfg.repeats > 1 else "2 × K"
        st.info(f"Runs {times} trainings of {cfg.epochs if cfg else '?'} epochs each.")
    curves = result.curves() if result is not None else None
    if curves is None or curves.empty:
        return
    st.dataframe(result.agreement(), hide_index=True, width="stretch")
    verdict = result.verdict()
    if verdict:
        st.markdown(verdict)
    csv_download(st, "Download the curves (CSV)", curves, "scaling_check.csv", "sc_csv")


# ============================================================================ memory probe


def add_batch_to_sweep(b: int) -> None:
    st.session_state["bs_grid"] = scaling.with_batch(st.session_state.get("bs_grid", ""), b)
    st.session_state["bs_mode"] = MODES[0]


def probe_section() -> None:
    st.markdown(
        "How large can a batch get before the device runs out of memory? The probe doubles the "
        "batch until a training step no longer fits, then binary-searches the boundary. On a "
        "GPU it tries real steps (out-of-memory caught and memory released); on the CPU it "
        "measures what a step needs (saved activations, parameters, gradients, optimizer "
        "state) against a cap you set."
    )
    cfg = probe_inputs(setup)

    def draw(snap, running: bool) -> None:
        tried = snap.table("tried")
        if not tried.empty:
            st.dataframe(tried, hide_index=True)
        show_error(snap)

    result = experiment("mp_job", bs_probe, setup, cfg, draw, label="Probe")
    if result is None or result.largest == 0:
        return
    st.success(result.verdict())
    st.button(
        f"Add {result.safe} to the batch-size sweep",
        on_click=add_batch_to_sweep,
        args=(result.safe,),
        key="mp_add",
    )
    csv_download(st, "Download the tries (CSV)", result.tried(), "memory_probe.csv", "mp_csv")


if mode == MODES[0]:
    sweep_section()
elif mode == MODES[1]:
    scaling_section()
else:
    probe_section()
