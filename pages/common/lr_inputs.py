"""The sidebar of the learning-rate page (pages/lr.py): its widgets, and their values as the
experiments' Configs (None after showing what is wrong)."""

import streamlit as st

from lrbs.core.data import Arrays
from lrbs.core.errors import LrbsError
from lrbs.core.loop import Budget
from lrbs.core.models import build_model
from lrbs.core.setup import Setup
from lrbs.core.stacked import stackable
from lrbs.experiments import lr_finder, sweeps
from lrbs.experiments.sweeps import SweptOptim
from pages.common import chosen
from pages.common.sidebar import optimizer_inputs, parse_floats
from pages.common.state import default, within


def range_test_widgets() -> dict:
    chosen.seed("rt_batch", "batch", 64)
    for key, value in {
        "rt_min": 1e-7,
        "rt_max": 10.0,
        "rt_iters": 100,
        "rt_ramp": "exp",
        "rt_beta": 0.98,
        "rt_debias": True,
        "rt_stop": 4.0,
        "rt_seeds": 1,
    }.items():
        default(key, value)
    w: dict = {}
    with st.sidebar:
        st.subheader("Range test")
        w["optimizer"], w["momentum"] = optimizer_inputs("rt")
        w["batch"] = st.number_input("Batch size", min_value=1, step=16, key="rt_batch")
        chosen.caption(("batch", "rt_batch"))
        c1, c2 = st.columns(2)
        w["lo"] = c1.number_input("Min lr", format="%.1e", step=None, key="rt_min")
        w["hi"] = c2.number_input("Max lr", format="%.1e", step=None, key="rt_max")
        w["iters"] = st.number_input(
            "Iterations", min_value=0, max_value=100000, step=10, key="rt_iters"
        )
        w["ramp"] = st.radio(
            "Ramp",
            ["exp", "linear"],
            key="rt_ramp",
            horizontal=True,
            format_func={"exp": "exponential", "linear": "linear"}.get,
        )
        with st.expander("Smoothing and stop"):
            within("rt_beta", 0.0, 0.99)
            w["beta"] = st.slider(
                "Smoothing β (EMA)",
                0.0,
                0.99,
                step=0.01,
                key="rt_beta",
                help="0.98 with bias correction as fastai; torch-lr-finder uses "
                "0.95 (its f = 0.05) without it, and stops at 5×.",
            )
            w["debias"] = st.checkbox("Bias correction", key="rt_debias")
            w["stop"] = st.number_input(
                "Stop when smoothed loss > k × best (0: never)",
                min_value=0.0,
                step=0.5,
                key="rt_stop",
            )
        w["seeds"] = st.number_input(
            "Seeds (spread)",
            min_value=1,
            max_value=8,
            key="rt_seeds",
            help="Repeat the test with more seeds to see how much the "
            "curve and the suggestions move.",
        )
    return w


def sweep_widgets(why_not_stacked: str | None, on_gpu: bool) -> dict:
    """`why_not_stacked`: why "train every rate at once" cannot apply here, or None."""
    for key, value in {
        "sw_grid": "0.001, 0.01, 0.1, 1",
        "sw_budget_kind": "seconds",
        "sw_budget": 5.0,
        "sw_repeats": 1,
    }.items():
        default(key, value)
    chosen.seed("sw_batch", "batch", 128)
    w: dict = {}
    with st.sidebar:
        st.subheader("Sweep")
        w["text"] = st.text_input("Learning rates (exponential grid)", key="sw_grid")
        w["kind"] = st.radio(
            "Budget per rate", ["seconds", "epochs", "steps"], key="sw_budget_kind", horizontal=True
        )
        w["amount"] = st.number_input(
            f"{w['kind'].capitalize()} per rate", min_value=0.0, step=1.0, key="sw_budget"
        )
        w["batch"] = st.number_input("Batch size", min_value=1, step=16, key="sw_batch")
        chosen.caption(("batch", "sw_batch"))
        w["optimizer"], w["momentum"] = optimizer_inputs("sw")
        w["repeats"] = st.number_input(
            "Repeats (seeds per rate)",
            min_value=1,
            max_value=10,
            key="sw_repeats",
            help="Each rate trains with seed, seed+1, ...: the table gives the mean and its "
            "spread, and the verdict says whether the runner-up is within noise of the best.",
        )
        default("sw_stacked", on_gpu)
        w["stacked"] = st.checkbox(
            "Train every rate at once (torch.func)",
            key="sw_stacked",
            disabled=why_not_stacked is not None,
            help="The models of all the rates stacked and trained in one vmapped loop: the same "
            "curves as one after the other, in less time where a step is mostly overhead (a "
            "GPU; on 2 CPU cores 1.3-1.9x faster for 4-8 rates, slower for 2)."
            + (f" Not available here: {why_not_stacked}." if why_not_stacked else ""),
        )
    return w


def range_test_config(arrays: Arrays) -> lr_finder.Config | None:
    """The sidebar's settings as the experiment's Config, or None after showing the error."""
    w = range_test_widgets()
    try:
        cfg = lr_finder.Config(
            lr_min=float(w["lo"]),
            lr_max=float(w["hi"]),
            iterations=int(w["iters"]),
            ramp=w["ramp"],
            batch_size=int(w["batch"]),
            optim=SweptOptim(w["optimizer"], momentum=w["momentum"]),
            beta=float(w["beta"]),
            debias=bool(w["debias"]),
            stop_factor=float(w["stop"]) if w["stop"] else None,
            seeds=int(w["seeds"]),
        )
    except LrbsError as exc:
        st.error(str(exc))
        return None
    if cfg.batch_size > arrays.n_train:
        st.error(
            f"Batch size {cfg.batch_size} is larger than the training set ({arrays.n_train:,})."
        )
        return None
    return cfg


def sweep_config(setup: Setup, arrays: Arrays) -> sweeps.Config | None:
    """The sidebar's sweep settings as the experiment's Config, or None after the error."""
    kind = st.session_state.get("sw_budget_kind", "seconds")
    why = "the budget is in seconds, which stacked runs would share" if kind == "seconds" else None
    if why is None:
        why = stackable(build_model(setup.model, arrays.input_shape, arrays.n_classes, 0))
    w = sweep_widgets(why, setup.torch_device().type == "cuda")
    error = st.session_state.pop("sw_grid_error", None)
    if error:
        st.error(error)
    try:
        amount = w["amount"]
        amount = int(amount) if w["kind"] == "steps" and amount == int(amount) else amount
        if int(w["batch"]) > arrays.n_train:
            raise LrbsError(
                f"Batch size {int(w['batch'])} is larger than the training set "
                f"({arrays.n_train:,})."
            )
        return sweeps.Config(
            lrs=parse_floats(w["text"], "learning rates"),
            budget=Budget(**{w["kind"]: amount}),
            batch_size=int(w["batch"]),
            optim=SweptOptim(w["optimizer"], momentum=w["momentum"]),
            seed=setup.seed,
            repeats=int(w["repeats"]),
            stacked="yes" if w["kind"] != "seconds" and w["stacked"] else "no",
        )
    except LrbsError as exc:
        st.error(str(exc))
        return None
