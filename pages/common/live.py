"""Running an engine job from a page: a worker thread per run, a Stop button, and a fragment
that redraws from the run's buffer every half second while it trains."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lrbs.runs.live import LiveRun, Snapshot

ACTIVE = "active_job"  # the one run a browser session may have going
REFRESH_SECONDS = 1.0  # redraw period while a run trains (bench/RESULTS.md: streaming overhead)


def _session_alive() -> Callable[[], bool] | None:
    """A check the worker can call: is this browser session still connected? Lets a run stop
    when its tab is closed."""
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        rt = runtime.get_instance()
        sid = ctx.session_id
    except Exception:
        return None
    return lambda: bool(rt.is_active_session(sid))


def busy_elsewhere(key: str) -> bool:
    job = st.session_state.get(ACTIVE)
    return job is not None and not job.done and st.session_state.get(ACTIVE + "_key") != key


def start_job(
    key: str, work, name: str, state: dict | None = None, record=None, summarize=None
) -> None:
    """Start `work` as this page's job, unless a run is already going in this session; put
    `state` into session_state, then rerun, so the page redraws with Stop enabled."""
    if busy_elsewhere(key) or (st.session_state.get(key) and not st.session_state[key].done):
        st.warning("A run is already going in this browser tab: stop it or wait for it first.")
        return
    job = LiveRun(
        work, name=name, alive=_session_alive(), recorder=record, summarize=summarize
    ).start()
    st.session_state[key] = job
    st.session_state[ACTIVE] = job
    st.session_state[ACTIVE + "_key"] = key
    st.session_state.update(state or {})
    st.rerun()


def controls(key: str, label: str, disabled: bool = False) -> bool:
    """Run and Stop buttons. Returns True when Run was clicked. Run is off while the run
    history cannot be used: a job is queued and recorded there."""
    from pages.common.history import store_problem
    from pages.common.state import check_url

    check_url()  # the page's settings are drawn: say what of its URL they did not keep
    job: LiveRun | None = st.session_state.get(key)
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
    job: LiveRun | None = st.session_state.get(key)
    if job is None:
        return
    if job.done:  # a plain draw: no fragment left behind to poll
        draw(job.snapshot(), False)
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def view() -> None:
        snap = job.snapshot()
        place = job.queue_position() if hasattr(job, "queue_position") else None
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
    was about half the cost of a redraw (which competes with training for the GIL)."""
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


def series_work(arrays, setup, run: Callable, n_runs: int, epochs: float, label: str):
    """The job of a page that trains a series of named runs of `epochs` each (regimes,
    schedules): `run(make_model, data, on_event=, stop=, on_run_end=)`. Streams the events,
    the progress, and a "runs" row as each run ends."""
    from lrbs.core.data import TensorData

    def work(emit, stop, progress):
        data = TensorData.from_arrays(arrays, setup.torch_device())
        done = []

        def on_event(e):
            emit("events", e.as_dict())
            progress((len(done) + min(1.0, e.epoch / epochs)) / n_runs)

        def on_run_end(name, r):
            done.append(name)
            emit("runs", {label: name, "status": r.status, "message": r.message})

        return run(
            lambda: setup.fresh_model(data),
            data,
            on_event=on_event,
            stop=stop,
            on_run_end=on_run_end,
        )

    return work


def finished_job(key: str, x_key: str, draw: Callable[[Snapshot, bool], None], hint: str):
    """The lower half of a training page: the x-axis choice, the live view of job `key`, and
    (once it is done) its snapshot. Stops the page while there is nothing finished to show."""
    from lrbs.charts import X_AXES

    st.radio("x axis", list(X_AXES), key=x_key, horizontal=True, format_func=X_AXES.get, index=2)
    job = st.session_state.get(key)
    if job is None:
        st.info(hint)
        st.stop()
    live_view(key, draw)
    if not job.done:
        st.stop()
    snap = job.snapshot()
    if not snap.result:
        st.stop()
    return snap


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
