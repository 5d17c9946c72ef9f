"""Streamlit helpers shared by the pages (the engine in lrbs/ knows nothing of these)."""
