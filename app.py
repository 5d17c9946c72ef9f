"""lrbs: the learning-rate & batch-size lab. `streamlit run app.py`."""

import logging

import streamlit as st

from pages.common.job import job_pool
from pages.common.nav import PAGES
from pages.common.state import check_url, keep_shared

st.set_page_config(page_title="lrbs: learning rate & batch size lab", page_icon="📉", layout="wide")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
keep_shared()
job_pool()  # the worker processes start (and import torch) with the first session

home = st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)
concepts = [st.Page(p.path, title=p.title, icon=p.icon) for p in PAGES]
st.navigation({"lrbs": [home], "Concepts": concepts}).run()
check_url()  # the page ran to its end: a URL value its last widgets did not keep is said
