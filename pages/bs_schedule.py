"""Batch-size scheduling: "don't decay the learning rate, increase the batch size"."""

import altair as alt
import pandas as pd
import streamlit as st

from lrbs import charts
from lrbs.core.errors import LrbsError
from lrbs.core.loop import RunResult
from lrbs.experiments import bs_schedule as bss
from pages.common.history import offer_stored, recorder
from pages.common.live import (
    controls,
    downloads,
    events_frame,
    finished_job,
    live_chart,
    result_columns,
    series_work,
    show_error,
    start_job,
)
from pages.common.sidebar import optimizer_inputs, parse_floats, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Batch-size scheduling")
st.markdown(
    "Smith, Kindermans, Ying & Le (2017): instead of dividing the learning rate by f at a "
    "milestone, **multiply the batch size by f**. Both shrink the SGD noise scale "
    "g = lr/(1 − m) · N/B by the same factor, so they should reach the same loss, but the "
    "larger batches need far fewer parameter updates. Every regime below trains from the "
    "same initial weights, for the same epochs, with the same optimizer."
)

setup, arrays = require_setup()
N = arrays.n_train


def inputs() -> bss.ScheduleConfig | None:
    for key, value in {
        "bq_regimes": list(bss.REGIMES),
        "bq_epochs": 15,
        "bq_milestones": "5, 10",
        "bq_factor": 5.0,
        "bq_lr": 0.1,
        "bq_batch": 128,
        "bq_patience": 2,
        "bq_hybrid": 1,
        "bq_optimizer": "momentum",
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Schedules")
        regimes = st.multiselect(
            "Regimes",
            list(bss.REGIMES),
            key="bq_regimes",
            format_func=lambda r: f"{r}: {bss.REGIMES[r]}",
        )
        epochs = st.number_input("Epochs", min_value=0, step=1, key="bq_epochs")
        milestones = st.text_input("Milestones (epochs)", key="bq_milestones")
        factor = st.number_input("Factor f", step=0.5, key="bq_factor")
        lr = st.number_input("Initial learning rate", format="%.4g", step=None, key="bq_lr")
        batch = st.number_input("Initial batch size", min_value=0, step=16, key="bq_batch")
        opt, momentum = optimizer_inputs("bq", "momentum")
        with st.expander("Hybrid and plateau"):
            hybrid = st.number_input(
                "Hybrid: milestones that grow the batch", min_value=0, key="bq_hybrid"
            )
            patience = st.number_input("Plateau: patience (epochs)", min_value=0, key="bq_patience")
    try:
        ms = parse_floats(milestones, "milestones")
        if any(m != int(m) for m in ms):
            raise LrbsError("milestones must be whole epochs")
        cfg = bss.ScheduleConfig(
            tuple(regimes),
            int(epochs),
            tuple(int(m) for m in ms),
            float(factor),
            float(lr),
            int(batch),
            opt,
            momentum,
            int(hybrid),
            int(patience),
            setup.seed,
        )
        if cfg.batch > N:
            raise LrbsError(f"batch size {cfg.batch} is larger than the training set ({N:,})")
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def plan_table(cfg: bss.ScheduleConfig) -> pd.DataFrame:
    rows = []
    for r in cfg.regimes:
        if r == "plateau":
            continue
        for e in range(cfg.epochs):
            lr, b = bss.planned(cfg, r, e, N)
            rows.append(
                {
                    "regime": r,
                    "epoch": e + 1,
                    "lr": lr,
                    "batch_size": b,
                    "noise_scale": lr / (1 - cfg.effective_momentum) * N / b,
                }
            )
    return pd.DataFrame(rows)


def small_chart(d: pd.DataFrame, y: str, title: str) -> alt.Chart:
    """One per-epoch quantity of every regime on a log axis (the legend is the big charts')."""
    return (
        alt.Chart(d)
        .mark_line(point=True, interpolate="step-after", strokeWidth=2)
        .encode(
            x=alt.X("epoch:Q"),
            y=alt.Y(f"{y}:Q", title=None, scale=alt.Scale(type="log")),
            color=alt.Color(
                "run_id:N", legend=None, sort=list(bss.REGIMES), scale=alt.Scale(scheme="tableau10")
            ),
            tooltip=["run_id:N", "epoch:Q", alt.Tooltip(f"{y}:Q", format=".4g")],
        )
        .properties(title=title, height=260)
    )


def draw(snap, running: bool) -> None:
    events = events_frame(snap)
    done = snap.rows.get("runs", [])
    if running:
        st.progress(snap.progress, text=f"{len(done)} of {st.session_state['bq_n']} regimes done")
    if events.empty:
        show_error(snap)
        return
    x = st.session_state.get("bq_x", "epoch")
    evals = events[events.kind == "eval"]
    c1, c2 = st.columns(2)
    live_chart(c1, charts.runs_chart(evals, x=x, y="val_loss", title="Validation loss"), running)
    live_chart(
        c2,
        charts.runs_chart(events[events.kind == "train"], x=x, y="loss", title="Training loss"),
        running,
    )
    epochs = bss.per_epoch(events, N, st.session_state.get("bq_momentum_used", 0.0))
    c1, c2, c3 = st.columns(3)
    live_chart(c1, small_chart(epochs, "lr", "Learning rate"), running)
    live_chart(c2, small_chart(epochs, "batch_size", "Batch size"), running)
    live_chart(
        c3,
        small_chart(epochs, "noise_scale", "Noise scale g = lr/(1−m)·N/B"),
        running,
    )
    show_error(snap)


cfg = inputs()
if cfg is not None:
    with st.expander("The plan: lr, batch and noise scale per epoch (before training)"):
        st.dataframe(plan_table(cfg), hide_index=True, width="stretch", height=240)
        st.caption(
            "'plateau' is not planned: it reacts to the validation loss as it trains. "
            f"Its batch may grow up to N/10 = {N // 10:,}."
        )


def summarize(results: dict) -> tuple[str, dict]:
    keep = ("status", "val_loss", "val_acc", "steps", "elapsed")
    return "finished", {
        "regimes": {k: {f: getattr(r, f) for f in keep} for k, r in results.items()}
    }


def rebuild(info: dict, rows: dict) -> dict:
    return {
        k: RunResult(
            k,
            v["status"],
            v["steps"],
            0.0,
            0,
            v["elapsed"],
            None,
            None,
            v["val_loss"],
            v["val_acc"],
            None,
        )
        for k, v in info["results"].get("regimes", {}).items()
    }


if cfg is not None:
    offer_stored("bs-schedule", {"setup": setup, "schedule": cfg}, "bq_job", rebuild)
if controls("bq_job", "Train the regimes", disabled=cfg is None):
    st.session_state["bq_n"] = len(cfg.regimes)
    st.session_state["bq_momentum_used"] = cfg.effective_momentum

    work = series_work(
        arrays,
        setup,
        lambda make, data, **kw: bss.run_regimes(make, data, cfg, **kw),
        len(cfg.regimes),
        cfg.epochs,
        "regime",
    )
    start_job(
        "bq_job",
        work,
        "batch-size schedules",
        record=recorder("bs-schedule", {"setup": setup, "schedule": cfg}, setup),
        summarize=summarize,
    )

snap = finished_job(
    "bq_job",
    "bq_x",
    draw,
    "Pick the regimes in the sidebar and train them; curves stream in as they go.",
)
table, verdict = bss.summary(snap.result)
st.subheader("Results")
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config=result_columns(
        {
            "val_loss_vs_decay": st.column_config.NumberColumn(
                "Δ val loss vs decay", format="%+.4f"
            ),
            "updates_vs_decay": st.column_config.NumberColumn("updates vs decay", format="%.2f×"),
            "seconds_vs_decay": st.column_config.NumberColumn("time vs decay", format="%.2f×"),
        }
    ),
)
st.markdown(f"**Verdict.** {verdict}")
downloads("bs_schedule", "bq", events_frame(snap), table)
