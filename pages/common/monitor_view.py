"""A monitored run (lrbs.monitor, kind "monitor") on the Run history page: its curves and advice,
redrawn while the user's loop trains."""

from __future__ import annotations

import streamlit as st

from lrbs.runs.store import RunStore, StoreError
from pages.common.history import store_path
from pages.common.live import REFRESH_SECONDS


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
