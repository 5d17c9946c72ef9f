"""Home: what each concept is, links to its page, and which datasets are here."""

import pandas as pd
import streamlit as st

from lrbs.charts.history import class_counts_chart
from lrbs.core.data import DATASETS
from pages.common.nav import PAGES
from pages.common.sidebar import cached_availability, shared_sidebar
from pages.common.state import page_start

page_start()

st.title("lrbs: the learning-rate & batch-size lab")
st.markdown(
    "The learning rate and the batch size decide whether a network trains, how fast, and "
    "how well it generalises. Here you **see** what they do, live, and **measure** numbers "
    "you can take to your own model. Pick a concept:"
)
for page in PAGES:
    with st.container(border=True):
        st.page_link(page.path, label=f"**{page.title}**", icon=page.icon)
        st.markdown(page.concept)

st.subheader("Datasets")
st.markdown(
    "Everything works offline. The training pages share the data, model and seed chosen in "
    "the sidebar; a summary of the current choice is below."
)
here = cached_availability()
table = pd.DataFrame(
    [
        {
            "dataset": e.title,
            "here": "yes" if here.get(n) else "no",
            "what": e.about if here.get(n) else e.how_to_get,
        }
        for n, e in DATASETS.items()
        if n != "csv"
    ]
)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "dataset": st.column_config.TextColumn(width="small"),
        "here": st.column_config.TextColumn(width="small"),
        "what": st.column_config.TextColumn(width="large"),
    },
)

chosen = shared_sidebar()
if chosen is not None:
    setup, arrays = chosen
    what = DATASETS[arrays.name].title if arrays.name in DATASETS else arrays.name
    if hasattr(arrays, "target_text"):  # a workload's facts say what its targets are
        kind = arrays.target_text()
    else:
        kind = f"{arrays.n_classes} classes" if arrays.n_classes else "real-valued targets"
    st.markdown(
        f"**{what}**: {arrays.n_train:,} training and {arrays.n_val:,} validation"
        f" samples, input shape {arrays.input_shape}, {kind} (source: {arrays.source})."
    )
    if len(arrays.class_counts()):
        st.altair_chart(
            class_counts_chart(arrays.class_names, arrays.class_counts()), width="stretch"
        )
