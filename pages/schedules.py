"""LR schedules

icon: :material/timeline:

A rate that changes as training goes: step, exponential and cosine decay, warm restarts, warm-
up, Smith's cyclical rates and one-cycle with their bounds read off the range test, reduce-on-
plateau, and hypergradient descent, whose rate learns itself. Preview every schedule's rate,
then train them side by side from the same weights.
"""

import pandas as pd
import streamlit as st

from lrbs import charts
from lrbs.core.errors import LrbsError
from lrbs.core.loop import OptimSpec
from lrbs.core.setup import load_tensors
from lrbs.experiments import schedules as sch
from pages.common import chosen
from pages.common.job import finished
from pages.common.live import csv_download, downloads, live_chart, results_table, show_error
from pages.common.range_test import seeding_panel
from pages.common.sidebar import optimizer_inputs, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Learning-rate schedules")
st.markdown(
    "A good rate from the range test is a start; a rate that changes as training goes often "
    "does better. Compare the schedules of `torch.optim.lr_scheduler`, Smith's **cyclical** "
    "rates and **one-cycle** (their bounds read off the range test), and **hypergradient "
    "descent**, where the rate learns itself (Baydin et al. 2018). Every schedule trains from "
    "the same initial weights, with the same optimizer, batch size and number of epochs."
)

setup, arrays = require_setup()
N = arrays.n_train

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


# ------------------------------------------------------------------ where the bounds come from


def apply_bounds(b: sch.RangeBounds) -> None:
    st.session_state.update(ls_lr=b.lr, ls_base=b.base_lr, ls_max=b.max_lr)
    st.session_state["ls_bounds_note"] = b.text()


def quick_range_test(cfg: sch.Config) -> None:
    try:
        data = load_tensors(setup, arrays)
        apply_bounds(sch.quick_range_test(setup.fresh_model(data), data, cfg))
    except LrbsError as exc:
        st.session_state["ls_bounds_note"] = f"error: {exc}"


def use_range_test(found: dict, source: str) -> None:
    apply_bounds(sch.RangeBounds.from_suggestions(found, source))


def bounds_panel(cfg: sch.Config | None) -> None:
    seeding_panel(
        setup,
        "ls_bounds_note",
        ("Use the range test's answer", "ls_use_rt", use_range_test),
        (
            "Run a quick range test now",
            "ls_quick_rt",
            "100 iterations from 1e-6 to 10 with this optimizer and batch size (seconds)",
            lambda: quick_range_test(cfg),
        ),
        disabled=cfg is None,
    )
    st.caption(
        "The upper bound is the range test's maximum usable rate (where the loss turns "
        "ragged); the lower one its steepest-descent rate, at most a quarter of the upper; "
        "the constant rate, and where the decays start, is the steepest-descent rate."
    )


# ------------------------------------------------------------------ inputs


def seed_from_chosen() -> None:
    """The chosen lr is the constant rate and the centre of the bounds (a decade wide)."""
    chosen.seed("ls_lr", "lr", DEFAULTS["ls_lr"])
    chosen.seed("ls_base", "lr", DEFAULTS["ls_base"], lambda lr: chosen.lr_range(lr)[0])
    chosen.seed("ls_max", "lr", DEFAULTS["ls_max"], lambda lr: chosen.lr_range(lr)[1])
    chosen.seed("ls_batch", "batch", DEFAULTS["ls_batch"])


def inputs() -> sch.Config | None:
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
        cfg.fits(N)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


@st.cache_data(max_entries=20, show_spinner=False)
def cached_preview(cfg: sch.Config, n_train: int) -> pd.DataFrame:
    return sch.preview(cfg, n_train)


def plan_panel(cfg: sch.Config) -> None:
    plan = cached_preview(cfg, N)
    spe = sch.steps_per_epoch(N, cfg.batch_size)
    with st.container(border=True):
        if plan.empty:
            st.caption("Only reactive schedules chosen: their rates are known once they train.")
        else:
            st.altair_chart(charts.lr_plan_chart(plan, list(cfg.schedules)), width="stretch")
        reactive = [s for s in cfg.schedules if s in sch.REACTIVE]
        not_drawn = (
            f"Not drawn: {', '.join(reactive)}; they start at {cfg.optim.lr:.3g} and react to "
            "training (plateau to the validation loss, HD to the gradients)."
        )
        st.caption(
            f"{cfg.epochs} epochs × {spe:,} updates = {cfg.epochs * spe:,} updates per schedule. "
            + (not_drawn if reactive else "")
        )
        csv_download(
            st, "Download the planned rates (CSV)", plan, "lr_schedules_plan.csv", "ls_plan_csv"
        )


# ------------------------------------------------------------------ live view


def draw(snap, running: bool) -> None:
    done = snap.rows.get("runs", [])
    if running:
        st.progress(snap.progress, text=f"{len(done)} schedules done")
    events = sch.Result(cfg, snap.rows).events()
    if events.empty:
        show_error(snap)
        return
    x = st.session_state.get("ls_x", "epoch")
    domain = list(cfg.schedules) if cfg is not None else None
    diverged = [r["run"] for r in done if r["status"] == "diverged"]
    train_rows = events[events.kind == "train"]
    evals = events[events.kind == "eval"]
    c1, c2 = st.columns(2)
    val = charts.repeats_chart(evals, x, "val_loss", "Validation loss", domain=domain)
    live_chart(c1, val, running)
    train = charts.repeats_chart(train_rows, x, "loss", "Training loss", diverged, domain)
    live_chart(c2, train, running)
    title = "Learning rate each schedule used (hypergradient descent's is learned)"
    if cfg is not None and cfg.repeats > 1:
        title += f", seed {cfg.seed}"
    rates = sch.Result(cfg, snap.rows).rates_used()
    used = charts.runs_chart(rates, x=x, y="lr", title=title, log_y=True, domain=domain)
    live_chart(st, used, running)
    show_error(snap)


# ------------------------------------------------------------------ the page

cfg = inputs()
bounds_panel(cfg)
if cfg is not None:
    plan_panel(cfg)
result = finished(
    "ls_job",
    sch,
    setup,
    cfg,
    draw,
    label="Train the schedules",
    x_key="ls_x",
    hint="Pick schedules in the sidebar and train them; curves stream in as they go.",
)

table = result.table()
results_table(
    table,
    {
        "best_val_loss": st.column_config.NumberColumn("best val loss", format="%.4f"),
        "best_epoch": st.column_config.NumberColumn("at epoch", format="%.0f"),
        "lr_min": st.column_config.NumberColumn("lr min", format="%.3g"),
        "lr_max": st.column_config.NumberColumn("lr max", format="%.3g"),
        "lr_final": st.column_config.NumberColumn("lr at end", format="%.3g"),
        "val_loss_std": st.column_config.NumberColumn("val loss std", format="%.4f"),
    },
)
st.markdown(result.verdict())
st.caption(result.bounds.text())
for r in result.runs():
    if r.get("message"):
        st.caption(f"{r['run']}: {r['message']}")
downloads("lr_schedules", "ls", result.events(), table)
