"""Run history

icon: :material/history:

Every run from every page and from the command line, kept in a SQLite file: filter, overlay
curves of several runs, open, rename, annotate, delete, export as CSV. A run of lrbs.monitor in
the user's own loop (kind "monitor") opens on its own curves, live while it trains.
"""

import streamlit as st

from lrbs.charts import history as history_charts
from lrbs.core.errors import LrbsError
from lrbs.monitor.core import KIND as MONITOR_KIND
from pages.common.history import history_sidebar, open_store, store_path
from pages.common.live import csv_download
from pages.common.monitor_view import monitor_view
from pages.common.state import check_url, page_start, url_job, url_note

page_start()
st.title("Run history")
history_sidebar(show_problem=False)  # said once, below, where the page stops
check_url()
st.caption(f"File: {store_path()}")
store = open_store()
if store is None:
    st.stop()

runs = store.runs()
if runs.empty:
    st.info(
        "No runs yet: every experiment you run on the other pages (or with `python -m lrbs`) "
        "is saved here, finished, stopped or diverged."
    )
    st.stop()

c1, c2, c3, c4 = st.columns(4)
kinds = c1.multiselect("Kind", sorted(runs.kind.unique()), key="h_kind")
datasets = c2.multiselect("Dataset", sorted(runs.dataset.unique()), key="h_dataset")
models = c3.multiselect("Model", sorted(runs.model.unique()), key="h_model")
statuses = c4.multiselect("Status", sorted(runs.status.unique()), key="h_status")
shown = runs
for column, chosen in (
    ("kind", kinds),
    ("dataset", datasets),
    ("model", models),
    ("status", statuses),
):
    if chosen:
        shown = shown[shown[column].isin(chosen)]
st.caption(f"{len(shown)} of {len(runs)} runs. Select rows to compare them.")
event = st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="multi-row",
    key="h_table",
    column_config={
        "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        "ended": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
    },
)
picked_rows = event.selection.rows if event and event.selection else []
selected = [int(shown.iloc[i].id) for i in picked_rows]
linked = url_job("h_open")  # ?job.h_open=<id>: a link to one run (a live monitored run's)
if linked is not None:
    if linked.isdigit() and len(linked) < 19 and int(linked) in set(runs.id):
        st.session_state["h_selected"] = [int(linked)]
    else:
        url_note(f"`job.h_open={linked[:20]!r}`: not a run in this history")
if not selected:
    selected = [int(i) for i in st.session_state.get("h_selected", [])]
if not selected:
    st.info(
        "Select one or more runs in the table to overlay their curves, open, rename, "
        "export or delete them."
    )
    st.stop()

# ------------------------------------------------------------------ overlay
st.subheader(f"{len(selected)} run(s) selected")
points = store.export(selected)
if points.empty:
    st.info("The selected runs have no points.")
else:
    channels = points.channel.value_counts().index.tolist()  # the curve (most points) first
    channel = st.selectbox("Curve", channels, key="h_channel")
    part = points[points.channel == channel].dropna(axis=1, how="all")
    numeric = history_charts.numeric_columns(part)
    if len(numeric) >= 2:
        kinds = part.history_kind.unique().tolist() if "history_kind" in part else []
        x_default, y_default = history_charts.default_axes(numeric, kinds)
        c1, c2, c3 = st.columns(3)
        x = c1.selectbox("x", numeric, index=numeric.index(x_default), key="h_x")
        y = c2.selectbox("y", numeric, index=numeric.index(y_default), key="h_y")
        # one box per x: its default follows the column (a rate spanning decades reads on log)
        log_x = c3.checkbox("log x", value=history_charts.wants_log(part[x]), key=f"h_logx_{x}")
        chart = history_charts.overlay_chart(part, x, y, log_x)
        st.altair_chart(chart, width="stretch")
csv_download(st, "Download the selected runs' points (CSV)", points, "lrbs_runs.csv", "h_csv")

# ------------------------------------------------------------------ one run
st.subheader("Open a run")
run_id = st.selectbox("Run", selected, key="h_open", format_func=lambda i: f"#{i}")
try:
    info = store.run(run_id)
except LrbsError as exc:
    st.error(str(exc))
    st.stop()
c1, c2 = st.columns(2)
with c1:
    st.markdown(
        f"**{info['kind']}** · {info['status']} · dataset {info['dataset'] or '—'} · "
        f"model {info['model'] or '—'} · seed {info['seed']}"
    )
    st.caption("Results (headline figures)")
    st.json(info["results"], expanded=False)
    st.caption("Settings")
    st.json(info["config"], expanded=False)
with c2:
    with st.form(f"h_edit_{run_id}"):
        name = st.text_input("Name", value=info["name"])
        note = st.text_area("Note", value=info["note"])
        if st.form_submit_button("Save"):
            store.update(run_id, name=name, note=note)
            st.rerun()
    if st.button(f"Delete {len(selected)} selected run(s)", key="h_delete"):
        st.session_state["h_confirm"] = list(selected)
    if st.session_state.get("h_confirm"):
        st.warning(f"Delete runs {st.session_state['h_confirm']} for good?")
        if st.button("Yes, delete", key="h_delete_yes"):
            store.delete(st.session_state.pop("h_confirm"))
            st.session_state["h_selected"] = []
            st.rerun()
if info["kind"] == MONITOR_KIND:
    st.subheader("Monitored run")
    monitor_view(run_id, info["status"])
store.close()
