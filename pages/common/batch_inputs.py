"""The sidebar of the batch-size page (pages/batch.py): each experiment's widgets, and their
values as its Config (None after showing what is wrong)."""

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.core.loop import Budget, OptimSpec
from lrbs.core.setup import Setup
from lrbs.experiments import bs_probe, bs_scaling_check, bs_sweep, scaling
from pages.common import chosen
from pages.common.sidebar import optimizer_inputs
from pages.common.state import default


def sweep_inputs(setup: Setup, n_train: int) -> bs_sweep.Config | None:
    """The batch-size sweep's widgets, and their values as its Config."""
    chosen.seed("bs_lr", "lr", 0.1, lambda lr: float(f"{lr:.3g}"))
    grid = st.session_state.get("bs_grid", "64, 128, 256, full")
    chosen.seed("bs_grid", "batch", grid, lambda b: scaling.with_batch(grid, b))
    # a chosen rate came with its batch: the rate belongs to that batch, not the smallest
    chosen.seed("bs_base", "batch", 0)
    for key, value in {
        "bs_budget_kind": "seconds",
        "bs_budget": 5.0,
        "bs_rule": "fixed",
        "bs_warmup": 0.0,
        "bs_repeats": 1,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Batch-size sweep")
        text = st.text_input("Batch sizes ('full' = the whole training set)", key="bs_grid")
        chosen.caption(("batch", None))
        kind = st.radio(
            "Budget per batch size",
            ["seconds", "epochs", "updates"],
            key="bs_budget_kind",
            horizontal=True,
        )
        amount = st.number_input(
            f"{kind.capitalize()} each", min_value=0.0, step=1.0, key="bs_budget"
        )
        c1, c2 = st.columns(2)
        lr = c1.number_input("Learning rate", format="%.4g", step=None, key="bs_lr")
        base = c2.number_input(
            "of batch (0: smallest)",
            min_value=0,
            step=16,
            key="bs_base",
            help="The batch this rate belongs to; the scaling rule rescales it for the others.",
        )
        chosen.caption(("lr", "bs_lr"), ("batch", "bs_base"))
        rule = st.selectbox(
            "Learning-rate scaling",
            list(scaling.RULES),
            key="bs_rule",
            format_func=lambda r: f"{r}: {scaling.RULES[r]}",
        )
        warm = st.number_input(
            "Linear warmup (epochs)",
            min_value=0.0,
            step=0.5,
            key="bs_warmup",
            disabled=rule == "fixed",
        )
        opt, momentum = optimizer_inputs("bs")
        repeats = st.number_input(
            "Repeats (seeds per batch size)", min_value=1, max_value=10, key="bs_repeats"
        )
    try:
        budget = Budget(steps=int(amount)) if kind == "updates" else Budget(**{kind: amount})
        cfg = bs_sweep.Config(
            batch_sizes=scaling.batches_from_text(text),
            budget=budget,
            optim=OptimSpec(opt, float(lr), momentum),
            scaling=rule,
            base_batch=int(base) or None,
            warmup_epochs=float(warm),
            seed=setup.seed,
            repeats=int(repeats),
        )
        cfg.plan(n_train)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def scaling_inputs(setup: Setup, n_train: int) -> bs_scaling_check.Config | None:
    """The scaling-rule check's widgets, and their values as its Config."""
    chosen.seed("sc_b0", "batch", 8)
    chosen.seed("sc_lr0", "lr", 0.001)
    for key, value in {"sc_k": 4, "sc_epochs": 2.0, "sc_repeats": 1}.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Scaling-rule check")
        b0 = st.number_input("Base batch B₀", min_value=1, step=1, key="sc_b0")
        lr0 = st.number_input("Base learning rate lr₀", format="%.4g", step=None, key="sc_lr0")
        chosen.caption(("batch", "sc_b0"), ("lr", "sc_lr0"))
        k = st.number_input("K (batches B₀·1 … B₀·K)", min_value=2, max_value=32, key="sc_k")
        epochs = st.number_input("Epochs per run", min_value=0.0, step=1.0, key="sc_epochs")
        opt, momentum = optimizer_inputs("sc")
        repeats = st.number_input(
            "Repeats (seeds per run)",
            min_value=1,
            max_value=10,
            key="sc_repeats",
            help="With repeats the verdict says whether the gaps between batch sizes are more "
            "than reseeding moves one curve.",
        )
    try:
        cfg = bs_scaling_check.Config(
            base_batch=int(b0),
            optim=OptimSpec(opt, float(lr0), momentum),
            k_max=int(k),
            epochs=float(epochs),
            seed=setup.seed,
            repeats=int(repeats),
        )
        cfg.plan(n_train)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def probe_inputs(setup: Setup) -> bs_probe.Config | None:
    """The memory probe's widgets (a cap on the CPU), and their values as its Config."""
    default("mp_cap", 512)
    default("mp_optim", "sgd")
    with st.sidebar:
        st.subheader("Memory probe")
        cap = None
        if setup.torch_device().type == "cpu":
            cap = st.number_input("Memory cap (MiB)", min_value=1, step=64, key="mp_cap")
        opt = st.selectbox(
            "Optimizer (its state counts)", ["sgd", "momentum", "adam"], key="mp_optim"
        )
    try:
        cfg = bs_probe.Config(
            cap_mib=float(cap) if cap else None, optim_states=bs_probe.OPTIMIZER_STATES[opt]
        )
    except LrbsError as exc:
        st.error(str(exc))
        cfg = None
    return cfg
