"""A page's job on screen: Run and Stop, a fragment that redraws from the job's points while
it runs (the job itself trains in a worker process, pages.common.job), and the shared pieces
of a finished result (tables, CSV downloads, errors)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lrbs.runs.jobs import Job
from lrbs.runs.live import Snapshot

REFRESH_SECONDS = 1.0  # redraw period while a run trains (bench/RESULTS.md: streaming overhead)


def controls(key: str, label: str, disabled: bool = False) -> bool:
    """Run and Stop buttons. Returns True when Run was clicked. Run is off while the run
    history cannot be used: a job is queued and recorded there."""
    from pages.common.history import store_problem
    from pages.common.state import check_url

    check_url()  # the page's settings are drawn: say what of its URL they did not keep
    job: Job | None = st.session_state.get(key)
    running = job is not None and not job.done
    no_store = store_problem()
    c1, c2, c3 = st.columns([2, 1, 4])
    clicked = c1.button(
        label,
        type="primary",
        disabled=running or disabled or no_store is not None,
        key=f"{key}_run",
        help=None if no_store is None else "The run history file in the sidebar cannot be used",
    )
    if no_store is not None:
        c3.caption("Run is off until the run history file (sidebar) can be used.")
    if c2.button("Stop", disabled=not running, key=f"{key}_stop"):
        job.stop()
    return clicked


def live_view(key: str, draw: Callable[[Snapshot, bool], None]) -> None:
    """Draw the job under `key`: every REFRESH_SECONDS while it runs (from a copy of its
    buffer), once more when it ends, then a full rerun so the page shows the finished result."""
    job: Job | None = st.session_state.get(key)
    if job is None:
        return
    if job.done:  # a plain draw: no fragment left behind to poll
        draw(job.snapshot(), False)
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def view() -> None:
        snap = job.snapshot()
        place = job.queue_position()
        if place is not None:
            ahead = "it is next" if place == 0 else f"{place} job(s) are ahead of it"
            st.info(f"Queued until a worker is free: {ahead}.")
        draw(snap, not snap.done)
        if snap.done:
            st.rerun(scope="app")

    view()


def live_chart(target, chart, running: bool) -> None:
    """Draw an Altair chart into `target` (st or a column). While a run streams, skip Altair's
    schema validation: the chart is the same each tick, only its data grow, and validating
    was about half the cost of a redraw, which the web process pays each tick for every tab."""
    if running:
        target.vega_lite_chart(spec=chart.to_dict(validate=False), width="stretch")
    else:
        target.altair_chart(chart, width="stretch")


def events_frame(snap: Snapshot):
    """The training events a job emitted, as the engine's event table."""
    import pandas as pd

    from lrbs.core.loop import EVENT_COLUMNS

    return pd.DataFrame(snap.rows.get("events", []), columns=EVENT_COLUMNS)


def csv_download(target, label: str, frame, file_name: str, key: str) -> None:
    """A button that downloads `frame` as CSV (without rerunning the page)."""
    target.download_button(
        label, frame.to_csv(index=False), file_name, "text/csv", on_click="ignore", key=key
    )


def downloads(stem: str, key: str, curves, table) -> None:
    """The two CSV buttons of a finished experiment: every curve, and the results table."""
    c1, c2 = st.columns(2)
    csv_download(c1, "Download the curves (CSV)", curves, f"{stem}_curves.csv", f"{key}_csv")
    csv_download(c2, "Download the table (CSV)", table, f"{stem}_table.csv", f"{key}_csv_t")


def show_error(snap: Snapshot) -> None:
    """The job's error, and where it came from inside a user's workload file."""
    if snap.error:
        st.error(snap.error)
    if snap.error_detail:
        with st.expander("Traceback in your workload file"):
            st.code(snap.error_detail, language="text")


def result_columns(extra: dict | None = None) -> dict:
    """Column formats of the results tables: the columns every page shares, plus its own."""
    number = st.column_config.NumberColumn
    return {
        "train_loss": number("train loss", format="%.4f"),
        "val_loss": number("val loss", format="%.4f"),
        "val_acc": number("val acc", format="%.3f"),
        "epochs": number(format="%.2f"),
        "seconds": number(format="%.1f"),
    } | (extra or {})


def results_table(table, columns: dict | None = None) -> None:
    """A finished experiment's results table, with the shared column formats and its own."""
    st.subheader("Results")
    st.dataframe(table, hide_index=True, width="stretch", column_config=result_columns(columns))
