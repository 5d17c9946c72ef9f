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
from lrbs.experiments import lr_finder
from lrbs.experiments import schedules as sch
from pages.common import quick_jobs
from pages.common.job import finished
from pages.common.live import csv_download, downloads, live_chart, results_table, show_error
from pages.common.range_test import quick_test, seeding_panel
from pages.common.schedule_inputs import inputs
from pages.common.sidebar import require_setup
from pages.common.state import page_start

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


# ------------------------------------------------------------------ where the bounds come from


def apply_bounds(b: sch.RangeBounds) -> str:
    st.session_state.update(ls_lr=b.lr, ls_base=b.base_lr, ls_max=b.max_lr)
    return b.text()


def use_range_test(found: dict, source: str) -> str:
    return apply_bounds(sch.RangeBounds.from_suggestions(found, source))


def use_quick_test(results: list[lr_finder.Result]) -> str:
    found = results[0].suggestions()
    return apply_bounds(sch.RangeBounds.from_suggestions(found, "a quick range test"))


def bounds_panel(cfg: sch.Config | None) -> None:
    def quick_runs() -> quick_jobs.Runs:
        optim = cfg.optim
        return [
            ("range test", lr_finder, quick_test(cfg.batch_size, optim.name, optim.momentum, N))
        ]

    seeding_panel(
        setup,
        "ls_bounds_note",
        ("Use the range test's answer", "ls_use_rt", use_range_test),
        (
            "Run a quick range test now",
            "ls_quick_rt",
            "100 iterations from 1e-6 to 10 with this optimizer and batch size (seconds), "
            "a job in the run history",
            quick_runs,
        ),
        disabled=cfg is None,
    )
    st.caption(
        "The upper bound is the range test's maximum usable rate (where the loss turns "
        "ragged); the lower one its steepest-descent rate, at most a quarter of the upper; "
        "the constant rate, and where the decays start, is the steepest-descent rate."
    )


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

quick_jobs.take("ls_quick_rt_job", "ls_bounds_note", use_quick_test)  # before the widgets
cfg = inputs(setup, N)
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
