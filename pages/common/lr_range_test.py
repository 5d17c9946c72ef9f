"""The range test section of the learning-rate page (pages/lr.py): run it (or show the run of
these settings this tab already has), watch it, read the suggestions, carry one to the other
pages, and zoom into a sub-range with a finer round."""

import streamlit as st

from lrbs.charts import lr as lr_charts
from lrbs.core.data import Arrays
from lrbs.core.errors import LrbsError
from lrbs.core.setup import Setup
from lrbs.experiments import lr_finder
from lrbs.runs.experiment import rebuild
from lrbs.runs.store import record_config
from pages.common import chosen
from pages.common.history import offer_stored
from pages.common.job import attach, start
from pages.common.live import controls, csv_download, live_chart, live_view, show_error
from pages.common.lr_inputs import range_test_config
from pages.common.state import default


def show(result: lr_finder.Result) -> None:
    """Put a finished range test on show (its rounds are what other pages build on)."""
    st.session_state["rt_shown"] = result
    st.session_state["rt_rounds"] = result.rounds


def run_range_test(setup: Setup, cfg: lr_finder.Config, keep_shown: bool = False) -> None:
    """Start `cfg`, unless this session already ran exactly these settings: then show that."""
    cached = st.session_state.setdefault("rt_cache", {}).get((setup, cfg))
    if cached is not None:
        show(cached)
        st.toast("These settings already ran: showing that result.")
        return
    if not keep_shown:
        st.session_state["rt_shown"], st.session_state["rt_rounds"] = None, []
    start("rt_job", lr_finder, setup, cfg)


def collect(setup: Setup, job) -> None:
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


def range_test_section(setup: Setup, arrays: Arrays) -> None:
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
        run_range_test(setup, cfg)
    if job is not None and not job.done:
        live_view("rt_job", draw_range_test)  # its fragment reruns the page when the job ends
        return
    collect(setup, job)  # check "done" first: a job ending in between is then still collected
    if job is not None:
        show_error(job.snapshot())
    result = st.session_state.get("rt_shown")
    if result is None or not result.rounds:
        st.info(
            "Set the range in the sidebar and run the test; the curve streams in as it "
            "trains (about a second for 100 iterations of a small MLP on a CPU)."
        )
        return
    finished_view(setup, result)


def finished_view(setup: Setup, result: lr_finder.Result) -> None:
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
        chosen.use("lr", lr, f"the range test ({pick})")
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
            run_range_test(setup, zoomed, keep_shown=True)
            st.rerun()
    st.caption(
        "Each round re-runs the test from the same initial weights over the chosen "
        "range, with twice the points per decade of the first round."
    )
    csv_download(st, "Download every curve (CSV)", result.points(), "lr_range_test.csv", "rt_csv")
