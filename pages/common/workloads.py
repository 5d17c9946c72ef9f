"""Workload files in the sidebar: offered only from the folder named when the app started
(`LRBS_WORKLOADS`), never from a typed path, since a workload file is code that runs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lrbs.core.data import DATASETS
from lrbs.core.errors import LrbsError
from lrbs.core.facts import DataFacts, facts_of_workload
from lrbs.core.setup import Setup
from lrbs.core.workload import (
    ENV_FOLDER,
    WorkloadError,
    check_listed,
    load_workload,
    workload_folder,
)

KEY = "workload:"
HELP = (
    f"Your own model and data: start the app with {ENV_FOLDER}=<folder> (for example "
    f"`{ENV_FOLDER}=examples make run`) and each workload file in that folder is offered here."
)


def title(name: str) -> str:
    if name.startswith(KEY):
        return f"Workload: {name[len(KEY) :]}"
    return DATASETS[name].title


OWN_OPTIMIZER = "_workload_optimizer"  # derived from the file, never a URL setting


@st.cache_data(show_spinner="Reading the workload…", max_entries=8)
def cached_facts(path: str, modified: float) -> DataFacts:
    return facts_of_workload(load_workload(path))


def show_workload_error(exc: WorkloadError, where=st) -> None:
    """The message, and the user's own traceback (their file's lines only) to open."""
    where.error(str(exc))
    if exc.user_traceback:
        with where.expander("Traceback in your workload file"):
            st.code(exc.user_traceback, language="text")


def workload_setup(name: str, seed: int, device: str) -> tuple[Setup, DataFacts] | None:
    """The setup and data facts of the listed workload `name`, or None after saying why."""
    folder = workload_folder()
    sb = st.sidebar
    try:
        path = check_listed(Path(folder or ".") / name[len(KEY) :], folder)
        facts = cached_facts(str(path), path.stat().st_mtime)
        setup = Setup(seed=seed, device=device, workload=str(path))
    except WorkloadError as exc:
        show_workload_error(exc, sb)
        return None
    except LrbsError as exc:
        sb.error(str(exc))
        return None
    own = f"its optimizer() ({facts.optimizer})" if facts.optimizer else "no optimizer()"
    sb.caption(
        f"{path.name}: {facts.n_train:,} training and {facts.n_val:,} validation samples, "
        f"input {facts.input_shape}, {facts.target_text()}. Its model and loss come from the "
        f"file, and {own}."
    )
    st.session_state[OWN_OPTIMIZER] = facts.optimizer
    return setup, facts
