"""The sidebar of the auto-tune page (pages/autotune.py), its values as the study's Config,
and how the search space is seeded: from the newest range test, or from a quick range test and
the memory probe run now as jobs (pages.common.quick_jobs)."""

import streamlit as st

from lrbs.core.errors import LrbsError, require
from lrbs.core.setup import Setup
from lrbs.experiments import autotune as at
from lrbs.experiments import bs_probe, lr_finder
from pages.common import chosen, quick_jobs
from pages.common.range_test import quick_test
from pages.common.sidebar import (
    OPTIMIZER_TITLES,
    parse_floats,
    parse_ints,
    with_int,
)
from pages.common.state import default

DEFAULTS = {
    "at_trials": 20,
    "at_workers": min(2, at.cores()),
    "at_budget_kind": "seconds",
    "at_budget": 5.0,
    "at_lr_min": 1e-3,
    "at_lr_max": 3.0,
    "at_batches": "16, 32, 64, 128, 256, 512",
    "at_optimizers": ["sgd"],
    "at_warmups": "0",
    "at_pruner": "median",
    "at_objective": "best",
}


def with_chosen_batch(b: int) -> str:
    """The default batch list with the chosen batch in it."""
    text = st.session_state.get("at_batches", DEFAULTS["at_batches"])
    return with_int(text, b, "batch sizes")


def inputs(setup: Setup, n_train: int) -> at.Config | None:
    """The sidebar's widgets, and their values as the study's Config (None after showing what
    is wrong)."""
    chosen.seed("at_lr_min", "lr", DEFAULTS["at_lr_min"], lambda lr: chosen.lr_range(lr)[0])
    chosen.seed("at_lr_max", "lr", DEFAULTS["at_lr_max"], lambda lr: chosen.lr_range(lr)[1])
    chosen.seed("at_batches", "batch", DEFAULTS["at_batches"], with_chosen_batch)
    for key, value in DEFAULTS.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Study")
        name = st.text_input("Study name", key="at_name", placeholder="blank: a new name")
        c1, c2 = st.columns(2)
        trials = c1.number_input("Trials", min_value=0, step=5, key="at_trials")
        workers = c2.number_input("Worker processes", min_value=0, step=1, key="at_workers")
        if warning := at.workers_warning(int(workers)):
            st.warning(warning)
        kind = st.radio(
            "Budget per trial", ["seconds", "epochs"], key="at_budget_kind", horizontal=True
        )
        amount = st.number_input(f"{kind.capitalize()} per trial", min_value=0.0, key="at_budget")
        st.markdown("**Search space**")
        c1, c2 = st.columns(2)
        lo = c1.number_input("Lowest lr", format="%.2e", step=None, key="at_lr_min")
        hi = c2.number_input("Highest lr", format="%.2e", step=None, key="at_lr_max")
        batches = st.text_input("Batch sizes", key="at_batches")
        if chosen.note("lr", "at_lr_min"):
            chosen.caption(("lr", "at_lr_min"), ("batch", "at_batches"))
            st.caption("The lr range: a decade centred on the chosen rate, unless changed.")
        else:
            chosen.caption(("batch", "at_batches"))
        optimizers = st.multiselect(
            "Optimizers",
            list(OPTIMIZER_TITLES),
            key="at_optimizers",
            format_func=OPTIMIZER_TITLES.get,
        )
        warmups = st.text_input("Warm-up epochs to try", key="at_warmups")
        c1, c2 = st.columns(2)
        pruner = c1.selectbox("Pruner", list(at.PRUNERS), key="at_pruner")
        objective = c2.selectbox(
            "Objective",
            list(at.OBJECTIVES),
            key="at_objective",
            help="best: the lowest validation loss a trial reached (the checkpoint you would "
            "keep); final: its validation loss at the end of the budget",
        )
        storage = st.text_input(
            "Optuna storage",
            key="at_storage",
            placeholder="blank: a journal file beside the run history",
            help="A journal file path, or an Optuna URL such as "
            "postgresql://user:password@host/db shared by workers on several machines.",
        )
    try:
        space = at.SearchSpace(
            lr_min=float(lo),
            lr_max=float(hi),
            batches=parse_ints(batches, "batch sizes"),
            optimizers=tuple(optimizers),
            warmups=parse_floats(warmups, "warm-up epochs") or (0.0,),
        )
        cfg = at.Config(
            space=space,
            seconds=float(amount) if kind == "seconds" else None,
            epochs=float(amount) if kind == "epochs" else None,
            pruner=pruner,
            objective=objective,
            seed=setup.seed,
            trials=int(trials),
            workers=int(workers),
            study=name.strip() or at.default_study_name(setup),
            storage=storage.strip() or None,
        )
        cfg.check_data(n_train)
        dropped = [b for b in space.batches if b > n_train]
        if dropped:
            st.warning(
                f"Batch size{'s' * (len(dropped) > 1)} {', '.join(map(str, dropped))} "
                f"{'are' if len(dropped) > 1 else 'is'} larger than the training set "
                f"({n_train:,} samples): the study leaves "
                f"{'them' if len(dropped) > 1 else 'it'} out."
            )
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


# ------------------------------------------------------------------ seeding the search space


def seed_from(found: dict, source: str) -> str:
    centre = at.steepest(found)
    require(bool(centre), f"{source} has no steepest-descent rate")
    st.session_state["at_lr_min"], st.session_state["at_lr_max"] = at.lr_range_around(centre)
    return f"From {source}: a decade of learning rate around its steepest descent, {centre:.3g}."


def probe_runs(n_train: int) -> quick_jobs.Runs:
    """A quick range test with the first optimizer searched, and the memory probe."""
    opt = (st.session_state.get("at_optimizers") or ["sgd"])[0]
    momentum = at.SearchSpace().momentum
    return [
        ("range test", lr_finder, quick_test(64, opt, momentum, n_train)),
        ("memory probe", bs_probe, bs_probe.Config(optim_states=bs_probe.OPTIMIZER_STATES[opt])),
    ]


def use_probe(results: list) -> str:
    """A decade of lr around the range test's steepest descent; powers of two up to the
    largest batch that fits (or the training set): what `autotune.seed_space` gives."""
    found, probe = results[0].suggestions(), results[1]
    centre = at.steepest(found)
    require(bool(centre), "the range test found no steepest descent to centre on")
    top = probe.safe
    space = at.SearchSpace.around(centre, top, min(16, top))
    st.session_state.update(at_lr_min=space.lr_min, at_lr_max=space.lr_max)
    st.session_state["at_batches"] = ", ".join(map(str, space.batches))
    return at.seeding_note(
        {"centre": centre, "largest_batch": probe.largest, "memory_limited": probe.memory_limited}
    )
