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
from lrbs.experiments import lr_finder, sweeps
from lrbs.runs.experiment import rebuild
from lrbs.runs.store import record_config
from pages.common import chosen
from pages.common.history import offer_stored
from pages.common.job import attach, experiment, start
from pages.common.live import (
    controls,
    csv_download,
    downloads,
    events_frame,
    live_chart,
    live_view,
    result_columns,
    show_error,
)
from pages.common.lr_inputs import range_test_config, sweep_config
from pages.common.sidebar import parse_floats, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Find the learning rate")
MODES = ["Range test", "Sweep at a fixed budget"]
default("lr_mode", MODES[0])
mode = st.radio("Experiment", MODES, key="lr_mode", horizontal=True, label_visibility="collapsed")

setup, arrays = require_setup()
sweeps.keep_arrays(setup.data, arrays)  # the experiments train on the data loaded here


def use_lr(lr: float, source: str) -> None:
    chosen.use("lr", lr, source)


# ============================================================================ range test


def show(result: lr_finder.Result) -> None:
    """Put a finished range test on show (its rounds are what other pages build on)."""
    st.session_state["rt_shown"] = result
    st.session_state["rt_rounds"] = result.rounds


def run_range_test(cfg: lr_finder.Config, keep_shown: bool = False) -> None:
    """Start `cfg`, unless this session already ran exactly these settings: then show that."""
    cached = st.session_state.setdefault("rt_cache", {}).get((setup, cfg))
    if cached is not None:
        show(cached)
        st.toast("These settings already ran: showing that result.")
        return
    if not keep_shown:
        st.session_state["rt_shown"], st.session_state["rt_rounds"] = None, []
    start("rt_job", lr_finder, setup, cfg)


def collect(job) -> None:
    """Show a finished job's result, once, and remember it for these settings."""
    if job is None or not job.done or st.session_state.get("rt_collected") is job:
        return
    st.session_state["rt_collected"] = job
    result = job.snapshot().result
    if result is not None:
        show(result)
        if not result.stopped:
            st.session_state.setdefault("rt_cache", {})[(setup, result.config)] = result


def draw_range_test(snap, running: bool) -> None:
    points = snap.table("points")
    if running:
        st.progress(snap.progress, text=f"Range test: {len(points)} iterations so far")
    if not points.empty:
        live_chart(st, lr_charts.range_test_live(points), running)
    show_error(snap)


def range_test_section() -> None:
    """Not `job.experiment`'s one-run flow: Run with settings this tab already ran shows that
    result instead of training again, and a zoom-in round is a new run of the test on show
    with one more zoom range (`Config.zoomed`)."""
    st.markdown(
        "Train briefly while the learning rate grows from tiny to huge, and watch the loss: flat "
        "while the rate is too small, falling where it is useful, ragged and then exploding "
        "where it is too large (Leslie Smith, 2017). The model starts from the same initial "
        "weights in every test and is restored afterwards."
    )
    cfg = range_test_config(arrays)
    if cfg is not None:
        offer_stored(
            lr_finder.KIND,
            record_config(setup, cfg),
            "rt_job",
            lambda info, rows: rebuild(lr_finder, info, rows),
            on_load=lambda job: show(job.result),
        )
    job = attach("rt_job", lr_finder.KIND)  # this tab's, or the one a reloaded URL names
    if controls("rt_job", "Run range test", disabled=cfg is None):
        run_range_test(cfg)
    if job is not None and not job.done:
        live_view("rt_job", draw_range_test)  # its fragment reruns the page when the job ends
        return
    collect(job)  # check "done" first: a job ending in between is then still collected
    if job is not None:
        show_error(job.snapshot())
    result = st.session_state.get("rt_shown")
    if result is None or not result.rounds:
        st.info(
            "Set the range in the sidebar and run the test; the curve streams in as it "
            "trains (about a second for 100 iterations of a small MLP on a CPU)."
        )
        return
    finished_view(result)


def finished_view(result: lr_finder.Result) -> None:
    sugg = result.suggestion_frame()
    if sugg.empty:
        st.warning(lr_finder.NO_DESCENT.capitalize() + ".")
    chart = lr_charts.range_test_zoom(result.points(), sugg, result.band())
    event = st.altair_chart(
        chart, width="stretch", on_select="rerun", key="rt_chart", selection_mode=lr_charts.ZOOM
    )
    earlier = lr_charts.earlier_rounds(result.points())
    if earlier:
        with st.expander(f"Earlier rounds ({len(earlier)}), each on its own rate axis"):
            for cell, (r, chart) in zip(
                st.columns(min(len(earlier), 3)) * 4, earlier, strict=False
            ):
                cell.caption(lr_finder.round_label(r).capitalize())
                cell.altair_chart(chart, width="stretch")
    latest = result.latest
    first = latest[0]
    stop_note = f" ({first.message})" if first.message else ""
    st.caption(
        f"{lr_finder.round_label(len(result.rounds) - 1).capitalize()}: {first.status}"
        f"{stop_note}; {len(first.lrs)} iterations in {lr_finder.seconds_text(first.elapsed)}, "
        "on its own rate axis. Drag across the chart to "
        "pick a range to zoom into."
    )
    st.subheader("Suggestions")
    table = sugg[["title", "lr", "meaning"]].rename(
        columns={"title": "suggestion", "lr": "learning rate"}
    )
    lr_format = st.column_config.NumberColumn(format="%.3g")
    st.dataframe(
        table, hide_index=True, width="stretch", column_config={"learning rate": lr_format}
    )
    if len(latest) > 1:
        st.markdown(
            f"**Spread over {len(latest)} seeds** (the band on the chart): how far each "
            "suggestion moves between seeds."
        )
        st.dataframe(result.spread(), hide_index=True, width="stretch")
    c1, c2 = st.columns([3, 2])
    pick = c1.selectbox("Carry a suggestion to the other pages", sugg.title.tolist(), key="rt_pick")
    if c2.button("Use this learning rate", key="rt_use", disabled=sugg.empty):
        lr = float(sugg.loc[sugg.title == pick, "lr"].iloc[0])
        use_lr(lr, f"the range test ({pick})")
        st.success(f"Learning rate {lr:.3g} will be the default on the other pages.")

    st.subheader("Zoom in")
    picked = lr_finder.range_from_selection(event.selection if event else None)
    if picked is not None:
        st.session_state["rt_zoom_lo"], st.session_state["rt_zoom_hi"] = picked
    lo_default, hi_default = result.zoom_default()
    default("rt_zoom_lo", lo_default)
    default("rt_zoom_hi", hi_default)
    c1, c2, c3 = st.columns([2, 2, 3])
    lo = c1.number_input("From lr", format="%.2e", step=None, key="rt_zoom_lo")
    hi = c2.number_input("To lr", format="%.2e", step=None, key="rt_zoom_hi")
    c3.write("")
    if c3.button("Run a finer test over this range", key="rt_zoom"):
        try:
            zoomed = result.config.zoomed(float(lo), float(hi))
        except LrbsError as exc:
            st.error(f"Zoom range: {exc}")
        else:
            run_range_test(zoomed, keep_shown=True)
            st.rerun()
    st.caption(
        "Each round re-runs the test from the same initial weights over the chosen "
        "range, with twice the points per decade of the first round."
    )
    csv_download(st, "Download every curve (CSV)", result.points(), "lr_range_test.csv", "rt_csv")


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
    range_test_section()
else:
    sweep_section()
