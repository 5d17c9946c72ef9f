"""Pages and the run history: where the file is, recording a run, offering a stored result."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from lrbs.runs.live import Snapshot
from lrbs.runs.store import RunStore, StoreError, default_path
from pages.common.state import default


def store_path() -> str:
    return st.session_state.get("s_db_path") or str(default_path())


def store_problem() -> str | None:
    """Why the chosen history file cannot be used, or None when it can."""
    try:
        RunStore(store_path()).close()
    except StoreError as exc:
        return str(exc)
    return None


def open_store() -> RunStore | None:
    try:
        return RunStore(store_path())
    except StoreError as exc:
        st.error(str(exc))
        return None


@dataclass
class StoredJob:
    """A finished run read back from the history, shaped like a Job (lrbs.runs.jobs)."""

    rows: dict[str, list[dict]]
    result: Any
    run_id: int
    done: bool = True

    def snapshot(self) -> Snapshot:
        return Snapshot(rows=self.rows, progress=1.0, done=True, result=self.result, error=None)

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> bool:
        return True


def load_job(store: RunStore, run_id: int, rebuild=None) -> StoredJob:
    info = store.run(run_id)
    pts = store.points(run_id)
    rows = {}
    if not pts.empty:
        for channel, part in pts.groupby("channel", sort=False):
            rows[channel] = (
                part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
            )
    result = rebuild(info, rows) if rebuild is not None else None
    return StoredJob(rows, result, run_id)


def offer_stored(
    kind: str,
    config: dict,
    job_key: str,
    rebuild: Callable | None = None,
    on_load: Callable[[StoredJob], None] | None = None,
) -> None:
    """If this exact config already ran, say when, and offer its result instead of training."""
    try:
        store = RunStore(store_path())
    except StoreError:
        return  # the sidebar shows that error
    try:
        found = store.find(kind, config)
        if not found:
            return
        latest = found[0]
        shown = st.session_state.get(job_key)
        shown_ids = {getattr(shown, "run_id", None), st.session_state.get(f"{job_key}_loaded")}
        if latest["id"] in shown_ids:  # the page already shows that very run
            return
        when = dt.datetime.fromtimestamp(latest["started"]).strftime("%Y-%m-%d %H:%M")
        c1, c2 = st.columns([4, 1])
        c1.info(
            f"These settings already ran at {when} (run #{latest['id']}, "
            f"{latest['status']}); load it instead of training again?"
        )
        if c2.button("Load stored result", key=f"{job_key}_load"):
            job = load_job(store, latest["id"], rebuild)
            st.session_state[f"{job_key}_loaded"] = latest["id"]
            if on_load is not None:
                on_load(job)
            else:
                st.session_state[job_key] = job
            st.rerun()
    finally:
        store.close()


def history_sidebar(show_problem: bool = True) -> None:
    """The history file's input; with `show_problem`, why the file cannot be used, under it."""
    default("s_db_path", None)
    problem = store_problem() if show_problem else None
    with st.sidebar.expander("Run history file", expanded=problem is not None):
        st.text_input(
            "History file (SQLite)",
            key="s_db_path",
            value=None,
            placeholder=str(default_path()),
            help="Every run is saved here. Also settable with LRBS_DB.",
        )
        if problem:
            st.error(problem)


def _monitor_points(store: RunStore, run_id: int) -> tuple[list[dict], list[dict]]:
    """A monitored run's "steps" and "advice" rows, read incrementally: each redraw reads only
    the points written since the last (kept in the session per run)."""
    cache = st.session_state.setdefault("_h_monitor_points", {})
    key = f"{store_path()}#{run_id}"
    seen = cache.get(key) or {"after": 0, "steps": [], "advice": []}
    new, last = store.points_after(run_id, seen["after"])
    seen = {
        "after": last if new else seen["after"],
        "steps": seen["steps"] + new.get("steps", []),
        "advice": seen["advice"] + new.get("advice", []),
    }
    cache[key] = seen
    return seen["steps"], seen["advice"]


def _draw_monitor(store: RunStore, run_id: int, info: dict) -> None:
    import pandas as pd

    from lrbs.charts import monitor as monitor_charts

    steps_rows, advice_rows = _monitor_points(store, run_id)
    steps = pd.DataFrame(steps_rows)
    results = info.get("results") or {}
    n = len(steps)
    if info["status"] == "running":
        st.info(
            f"Running: {n} step(s) recorded so far; the curves refresh as the loop writes "
            "them (about once a second)."
        )
    else:
        st.caption(f"{info['status']}: {n} step(s) recorded.")
    if steps.empty:
        return
    last = steps.iloc[-1]
    c = st.columns(4)
    c[0].metric("steps", int(last.get("step", n)))
    batch = monitor_charts.in_use(steps).iloc[-1] if "batch" in steps else float("nan")
    c[1].metric("batch in use", f"{batch:.0f}")
    b = pd.to_numeric(steps.get("b_simple", pd.Series(dtype=float)), errors="coerce").dropna()
    c[2].metric("B_simple (averaged)", f"{float(b.iloc[-1]):.3g}" if len(b) else "—")
    c[3].metric("loss", f"{float(last['loss']):.4g}" if pd.notna(last.get("loss")) else "—")
    charts = monitor_charts.monitor_charts(steps)
    running = info["status"] == "running"
    pairs = [("loss", "rate"), ("batch", "noise"), ("sharpness",)]
    for names in pairs:
        shown = [charts[k] for k in names if k in charts]
        if not shown:
            continue
        cols = st.columns(len(names))
        for col, chart in zip(cols, shown, strict=False):
            if running:  # the same chart each tick: skip Altair's validation (see live_chart)
                col.vega_lite_chart(spec=chart.to_dict(validate=False), width="stretch")
            else:
                col.altair_chart(chart, width="stretch")
    if "sharpness" not in charts:
        st.caption("No sharpness measured (lrbs.monitor(..., sharpness_every=k, loss_fn=...)).")
    st.caption("Advice (the noise scale past the batch in use)")
    advice = monitor_charts.advice_table(pd.DataFrame(advice_rows))
    if advice.empty:
        st.caption("None given.")
    else:
        st.dataframe(advice, hide_index=True, width="stretch", key=f"h_advice_{run_id}")
    if results.get("diverged_at"):
        st.warning(f"The loss was NaN or infinite at step {results['diverged_at']}.")


def monitor_view(run_id: int, status: str) -> None:
    """A monitored run (kind "monitor", lrbs.monitor in the user's own loop): its curves,
    B_simple against the batch in use, the sharpness against its limit and the advice. While
    it runs, redrawn every REFRESH_SECONDS from the points written since; once it ends, the
    whole page reruns (its status in the table changes too)."""
    from pages.common.live import REFRESH_SECONDS

    def draw() -> str | None:
        try:
            with RunStore(store_path()) as store:
                store.mark_interrupted()  # a loop killed mid-run reads "interrupted"
                info = store.run(run_id)
                _draw_monitor(store, run_id, info)
                return info["status"]
        except StoreError as exc:
            st.error(str(exc))
            return None

    if status != "running":
        draw()
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def live() -> None:
        now = draw()
        if now is not None and now != "running":
            st.rerun(scope="app")

    live()
