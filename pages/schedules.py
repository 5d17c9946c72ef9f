"""Learning-rate schedules, seeded from the range test, and hypergradient descent."""

import pandas as pd
import streamlit as st

from lrbs import charts
from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError
from lrbs.experiments import schedules as sch
from pages.common.history import offer_stored, recorder
from pages.common.live import (
    controls,
    csv_download,
    downloads,
    events_frame,
    finished_job,
    live_chart,
    result_columns,
    series_work,
    show_error,
    start_job,
)
from pages.common.range_test import latest_range_test
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
    "ls_schedules": [
        "constant",
        "step",
        "cosine",
        "warmup-cosine",
        "clr",
        "onecycle",
        "plateau",
        "hd",
    ],
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
}


# ------------------------------------------------------------------ where the bounds come from


def range_test_bounds() -> sch.RangeBounds | None:
    latest = latest_range_test(setup)
    return sch.RangeBounds.from_suggestions(*latest) if latest else None


def apply_bounds(b: sch.RangeBounds) -> None:
    st.session_state.update(ls_lr=b.lr, ls_base=b.base_lr, ls_max=b.max_lr)
    st.session_state["ls_bounds_note"] = (
        f"From {b.source}: hold lr {b.lr:.3g}; cycle between {b.base_lr:.3g} and {b.max_lr:.3g}."
    )


def quick_range_test(cfg: sch.SchedulesConfig) -> None:
    try:
        data = TensorData.from_arrays(arrays, setup.torch_device())
        apply_bounds(sch.quick_range_test(setup.fresh_model(data), data, cfg))
    except LrbsError as exc:
        st.session_state["ls_bounds_note"] = f"error: {exc}"


def bounds_panel(cfg: sch.SchedulesConfig | None) -> None:
    found = range_test_bounds()
    c1, c2 = st.columns([3, 2])
    with c1:
        if found is not None:
            st.button(
                "Use the range test's answer",
                on_click=apply_bounds,
                args=(found,),
                key="ls_use_rt",
                help=f"From {found.source}: lr {found.lr:.3g}, bounds {found.base_lr:.3g} "
                f"to {found.max_lr:.3g}",
            )
            st.caption(f"Available: {found.source}.")
        else:
            st.caption(
                "No range test of this dataset and model yet, in this tab or the run history."
            )
    with c2:
        st.button(
            "Run a quick range test now",
            on_click=quick_range_test,
            args=(cfg,),
            disabled=cfg is None,
            key="ls_quick_rt",
            help="100 iterations from 1e-6 to 10 with this optimizer and batch size (seconds)",
        )
    note = st.session_state.pop("ls_bounds_note", None)
    if note and note.startswith("error: "):
        st.error(note.removeprefix("error: "))
    elif note:
        st.success(note)
    st.caption(
        "The upper bound is the range test's maximum usable rate (where the loss turns "
        "ragged); the lower one its steepest-descent rate, at most a quarter of the upper; "
        "the constant rate, and where the decays start, is the steepest-descent rate."
    )


# ------------------------------------------------------------------ inputs


def inputs() -> sch.SchedulesConfig | None:
    for key, value in DEFAULTS.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Schedules")
        chosen = st.multiselect(
            "Schedules",
            list(sch.SCHEDULES),
            key="ls_schedules",
            help="\n\n".join(f"**{k}**: {v}" for k, v in sch.SCHEDULES.items()),
        )
        c1, c2 = st.columns(2)
        epochs = c1.number_input("Epochs", min_value=0, step=5, key="ls_epochs")
        batch = c2.number_input("Batch size", min_value=0, step=16, key="ls_batch")
        opt, momentum = optimizer_inputs("ls")
        st.markdown("**Rates** (fill them from the range test on the page)")
        lr = st.number_input("Constant rate / start of decays", format="%.4g", key="ls_lr")
        c1, c2 = st.columns(2)
        base = c1.number_input("Lower bound", format="%.4g", key="ls_base")
        top = c2.number_input("Upper bound", format="%.4g", key="ls_max")
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
        st.error(f"HD: β must be a number, not {beta_text!r}")
        return None
    try:
        cfg = sch.SchedulesConfig(
            tuple(chosen), int(epochs), int(batch), opt, momentum, float(lr), float(base),
            float(top), float(floor), float(step_epochs), float(gamma), float(final),
            float(warmup), float(restart), int(mult), float(cycle), float(exp_end), float(pct),
            float(div), int(patience), beta, setup.seed,
        )  # fmt: skip
        if cfg.batch > N:
            raise LrbsError(f"batch size {cfg.batch} is larger than the training set ({N:,})")
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


@st.cache_data(max_entries=20, show_spinner=False)
def cached_preview(cfg: sch.SchedulesConfig, n_train: int) -> pd.DataFrame:
    return sch.preview(cfg, n_train)


# ------------------------------------------------------------------ live view


def draw(snap, running: bool) -> None:
    events = events_frame(snap)
    done = snap.rows.get("runs", [])
    if running:
        n = st.session_state["ls_n"]
        st.progress(snap.progress, text=f"{len(done)} of {n} schedules done")
    if events.empty:
        show_error(snap)
        return
    x = st.session_state.get("ls_x", "epoch")
    domain = st.session_state.get("ls_domain")
    diverged = [r["schedule"] for r in done if r["status"] == "diverged"]
    train_rows = events[events.kind == "train"]
    c1, c2 = st.columns(2)
    live_chart(
        c1,
        charts.runs_chart(
            events[events.kind == "eval"], x=x, y="val_loss", title="Validation loss", domain=domain
        ),
        running,
    )
    live_chart(
        c2,
        charts.runs_chart(
            train_rows, x=x, y="loss", title="Training loss", diverged=diverged, domain=domain
        ),
        running,
    )
    live_chart(
        st,
        charts.runs_chart(
            train_rows,
            x=x,
            y="lr",
            title="Learning rate each schedule used (hypergradient descent's is learned)",
            log_y=True,
            domain=domain,
        ),
        running,
    )
    show_error(snap)


def summarize(results: dict) -> tuple[str, dict]:
    return "finished", {"statuses": {k: r.status for k, r in results.items()}}


def rebuild(info: dict, rows: dict) -> dict:
    return info["results"].get("statuses", {})


# ------------------------------------------------------------------ the page

cfg = inputs()
bounds_panel(cfg)
if cfg is not None:
    plan = cached_preview(cfg, N)
    spe = sch.steps_per_epoch(N, cfg.batch)
    with st.container(border=True):
        if plan.empty:
            st.caption("Only reactive schedules chosen: their rates are known once they train.")
        else:
            st.altair_chart(charts.lr_plan_chart(plan, list(cfg.schedules)), width="stretch")
        reactive = [s for s in cfg.schedules if s in sch.REACTIVE]
        st.caption(
            f"{cfg.epochs} epochs × {spe:,} updates = {cfg.epochs * spe:,} updates per schedule. "
            + (
                f"Not drawn: {', '.join(reactive)}; they start at {cfg.lr:.3g} and react to "
                "training (plateau to the validation loss, HD to the gradients)."
                if reactive
                else ""
            )
        )
        csv_download(st, "Download the planned rates (CSV)", plan, "lr_schedules_plan.csv",
                     "ls_plan_csv")  # fmt: skip
    offer_stored("lr-schedules", {"setup": setup, "schedules": cfg}, "ls_job", rebuild)

if controls("ls_job", "Train the schedules", disabled=cfg is None):
    st.session_state["ls_n"] = len(cfg.schedules)
    st.session_state["ls_domain"] = list(cfg.schedules)

    work = series_work(
        arrays,
        setup,
        lambda make, data, **kw: sch.run_schedules(make, data, cfg, **kw),
        len(cfg.schedules),
        cfg.epochs,
        "schedule",
    )
    start_job(
        "ls_job",
        work,
        "lr schedules",
        record=recorder("lr-schedules", {"setup": setup, "schedules": cfg}, setup),
        summarize=summarize,
    )

snap = finished_job(
    "ls_job",
    "ls_x",
    draw,
    "Pick schedules in the sidebar and train them; curves stream in as they go.",
)
statuses = {k: getattr(v, "status", v) for k, v in snap.result.items()}
events = events_frame(snap)
table, verdict = sch.summary(events, statuses)
st.subheader("Results")
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config=result_columns(
        {
            "best_val_loss": st.column_config.NumberColumn("best val loss", format="%.4f"),
            "best_epoch": st.column_config.NumberColumn("at epoch", format="%.0f"),
            "lr_min": st.column_config.NumberColumn("lr min", format="%.3g"),
            "lr_max": st.column_config.NumberColumn("lr max", format="%.3g"),
            "lr_final": st.column_config.NumberColumn("lr at end", format="%.3g"),
        }
    ),
)
st.markdown(verdict)
for r in snap.rows.get("runs", []):
    if r.get("message"):
        st.caption(f"{r['schedule']}: {r['message']}")
downloads("lr_schedules", "ls", events, table)
