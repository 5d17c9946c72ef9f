"""The sidebar of the schedules page (pages/schedules.py): its widgets, and their values as the
experiment's Config (None after showing what is wrong)."""

import streamlit as st

from lrbs.core.errors import LrbsError
from lrbs.core.loop import OptimSpec
from lrbs.core.setup import Setup
from lrbs.experiments import schedules as sch
from pages.common import chosen
from pages.common.sidebar import optimizer_inputs
from pages.common.state import default

DEFAULTS = {
    "ls_schedules": "constant step cosine warmup-cosine clr onecycle plateau hd".split(),
    "ls_epochs": 30,
    "ls_batch": 64,
    "ls_lr": 0.5,
    "ls_base": 0.25,
    "ls_max": 1.0,
    "ls_floor": 0.0,
    "ls_step_epochs": 10.0,
    "ls_gamma": 0.1,
    "ls_final": 0.01,
    "ls_warmup": 2.0,
    "ls_restart": 5.0,
    "ls_restart_mult": 2,
    "ls_cycle": 2.5,
    "ls_exp_end": 0.01,
    "ls_pct": 0.3,
    "ls_div": 25.0,
    "ls_patience": 2,
    "ls_beta": "",
    "ls_repeats": 1,
}


def seed_from_chosen() -> None:
    """The chosen lr is the constant rate and the centre of the bounds (a decade wide)."""
    chosen.seed("ls_lr", "lr", DEFAULTS["ls_lr"])
    chosen.seed("ls_base", "lr", DEFAULTS["ls_base"], lambda lr: chosen.lr_range(lr)[0])
    chosen.seed("ls_max", "lr", DEFAULTS["ls_max"], lambda lr: chosen.lr_range(lr)[1])
    chosen.seed("ls_batch", "batch", DEFAULTS["ls_batch"])


def inputs(setup: Setup, n_train: int) -> sch.Config | None:
    """The sidebar's widgets, and their values as the experiment's Config (None after showing
    what is wrong)."""
    seed_from_chosen()
    for key, value in DEFAULTS.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Schedules")
        picked = st.multiselect(
            "Schedules",
            list(sch.SCHEDULES),
            key="ls_schedules",
            help="\n\n".join(f"**{k}**: {v}" for k, v in sch.SCHEDULES.items()),
        )
        c1, c2 = st.columns(2)
        epochs = c1.number_input("Epochs", min_value=0, step=5, key="ls_epochs")
        batch = c2.number_input("Batch size", min_value=0, step=16, key="ls_batch")
        chosen.caption(("batch", "ls_batch"))
        opt, momentum = optimizer_inputs("ls")
        repeats = st.number_input(
            "Repeats (seeds per schedule)",
            min_value=1,
            max_value=10,
            key="ls_repeats",
            help="Each schedule trains with seed, seed+1, ...: the table gives the mean and "
            "its spread, and the verdict says whether a gap is within the noise.",
        )
        st.markdown("**Rates** (fill them from the range test on the page)")
        lr = st.number_input("Constant rate / start of decays", format="%.4g", key="ls_lr")
        c1, c2 = st.columns(2)
        base = c1.number_input("Lower bound", format="%.4g", key="ls_base")
        top = c2.number_input("Upper bound", format="%.4g", key="ls_max")
        if chosen.note("lr", "ls_lr"):
            chosen.caption(("lr", "ls_lr"))
            st.caption("The bounds: a decade centred on it, unless changed.")
        with st.expander("Schedule settings"):
            step_epochs = st.number_input("Step: every k epochs", key="ls_step_epochs")
            gamma = st.number_input("Step and plateau: factor γ", format="%.3g", key="ls_gamma")
            patience = st.number_input("Plateau: patience (epochs)", min_value=0, key="ls_patience")
            final = st.number_input(
                "Exponential: end rate ÷ start rate", format="%.3g", key="ls_final"
            )
            floor = st.number_input("Cosine: floor ÷ start rate", format="%.3g", key="ls_floor")
            warmup = st.number_input("Warm-up: epochs", key="ls_warmup")
            c1, c2 = st.columns(2)
            restart = c1.number_input("SGDR: first period", key="ls_restart")
            mult = c2.number_input("× each period", min_value=0, key="ls_restart_mult")
            cycle = st.number_input(
                "CLR: step size (epochs, half a cycle)",
                key="ls_cycle",
                help="Smith suggests 2 to 10 epochs, and stopping at the end of a cycle",
            )
            exp_end = st.number_input(
                "exp_range: amplitude left at the end", format="%.3g", key="ls_exp_end"
            )
            c1, c2 = st.columns(2)
            pct = c1.number_input("One-cycle: share rising", key="ls_pct")
            div = c2.number_input("start = max ÷", key="ls_div")
            beta_text = st.text_input(
                "HD: hypergradient rate β",
                key="ls_beta",
                placeholder=f"paper's: {sch.HD_BETA[opt]:g}",
                help="Blank: Baydin et al.'s choice, 1e-3 with SGD and 1e-7 with Adam (Adam's "
                "step direction is ~±1 per weight, so its hypergradient is far larger).",
            )
    try:
        beta = float(beta_text) if beta_text.strip() else None
    except ValueError:
        st.error(f"HD: the hypergradient rate beta must be a finite number, not {beta_text!r}")
        return None
    try:
        cfg = sch.Config(
            schedules=tuple(picked),
            epochs=int(epochs),
            batch_size=int(batch),
            optim=OptimSpec(name=opt, lr=float(lr), momentum=momentum),
            base_lr=float(base),
            max_lr=float(top),
            floor=float(floor),
            step_epochs=float(step_epochs),
            gamma=float(gamma),
            final_factor=float(final),
            warmup_epochs=float(warmup),
            restart_epochs=float(restart),
            restart_mult=int(mult),
            cycle_epochs=float(cycle),
            exp_range_end=float(exp_end),
            onecycle_pct=float(pct),
            onecycle_div=float(div),
            patience=int(patience),
            hd_beta=beta,
            seed=setup.seed,
            repeats=int(repeats),
        )
        cfg.fits(n_train)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None
