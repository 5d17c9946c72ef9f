"""Recommend

icon: :material/recommend:

One learning rate and one batch size to trust without reading a plot: the range test over
seeds, confirmed by a short sweep; the batch that reaches the target loss fastest, its rate
rescaled; a schedule, a PyTorch snippet, and how sure the answer is.
"""

import json

import streamlit as st

from lrbs import charts
from lrbs.charts.noise import b_simple_chart
from lrbs.charts.recommend import (
    horizon_chart,
    sweep_chart,
    throughput_chart,
    time_to_target_chart,
)
from lrbs.core.errors import LrbsError
from lrbs.experiments import lr_finder, recommend
from lrbs.experiments.sweeps import SweptOptim
from pages.common.job import experiment
from pages.common.live import csv_download, live_chart, show_error
from pages.common.sidebar import optimizer_inputs, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Recommend: the learning rate and the batch size")
st.markdown(
    "The range test over several seeds suggests rates by four rules; a short sweep at equal "
    "budget **confirms** the best and the band of rates within noise of it. Then the batch: "
    "the largest that fits, the measured throughput and the gradient noise scale B_simple "
    "give the batch that reaches the same loss **fastest** (S(B) = S_min (1 + B_noise/B) "
    "steps), the rate rescaled to it by this optimizer's rule, and one short run to confirm."
)

setup, arrays = require_setup()
default("rec_budget", "quick")
default("rec_batch", 64)
default("rec_cap", 512)
default("rec_epochs", recommend.TRAIN_EPOCHS)
with st.sidebar:
    st.subheader("Recommend")
    budget = st.radio(
        "Budget",
        list(recommend.BUDGETS),
        key="rec_budget",
        horizontal=True,
        help="quick: about 1 min on 2 CPU cores at the defaults; thorough: about 5. The "
        "pipeline first times this model's updates and fits the seeds, rates and updates to "
        "the budget (never below what a meaningful answer needs).",
    )
    opt, momentum = optimizer_inputs("rec")
    batch = st.number_input("Base batch (range test, sweep)", min_value=1, key="rec_batch")
    epochs = st.number_input(
        "Planned training (epochs at the base batch; 0: the sweep's own length)",
        min_value=0.0,
        step=1.0,
        key="rec_epochs",
        help="The best rate depends on how long you train. Give your training's length "
        f"(default {recommend.TRAIN_EPOCHS:g} epochs, a short first training) and the sweep "
        "trains each rate that long when the budget allows; otherwise it trains as long as it "
        "can and carries the rate to your length: lr ~ 1/sqrt(updates), or faster where the "
        "sweep itself measured a faster fall. 0: the rate of the sweep's own few hundred "
        "updates, far shorter than a real training.",
    )
    cap = None
    if setup.torch_device().type == "cpu":
        cap = st.number_input("Memory cap for the batch probe (MiB)", min_value=1, key="rec_cap")
    effort = recommend.EFFORT[budget]
    with st.expander("Override the budget (0: the budget's own)"):
        for key in ("rec_rates", "rec_seeds", "rec_steps"):
            default(key, 0)
        rates = st.number_input(f"Rates in the sweep ({effort.rates})", 0, 12, key="rec_rates")
        seeds = st.number_input(
            f"Seeds of the sweep ({effort.sweep_seeds})", 0, 10, key="rec_seeds"
        )
        sweep_steps = st.number_input(
            f"Updates per sweep run ({effort.sweep_steps})", 0, None, key="rec_steps"
        )

try:
    cfg = recommend.Config(
        budget=budget,
        optim=SweptOptim(opt, momentum=momentum),
        batch_size=int(batch),
        cap_mib=float(cap) if cap else None,
        rates=int(rates) or None,
        seeds=int(seeds) or None,
        sweep_steps=int(sweep_steps) or None,
        train_epochs=float(epochs) or None,
    )
    if cfg.batch_size > arrays.n_train:
        raise LrbsError(
            f"the base batch ({cfg.batch_size}) is larger than the training set ({arrays.n_train})"
        )
except LrbsError as exc:
    st.error(str(exc))
    cfg = None


def use_this(lr: float, batch: int) -> None:
    st.session_state["chosen_lr"] = float(lr)
    st.session_state["chosen_lr_source"] = "Recommend page"
    st.session_state["chosen_batch"] = int(batch)


def card_view(result: recommend.Result, running: bool) -> None:
    """The answer card, as far as the finished steps give it."""
    card = result.card()
    if not running and result.status_text():
        st.warning(result.status_text() + ".")
    empty = "…" if running else result.status
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Learning rate", f"{card['lr']:.3g}" if card["lr"] else empty)
    c2.metric("Batch size", card["batch"] if card["lr"] else empty)
    steps = card.get("expected_steps")
    c3.metric("Steps to the target", f"{steps:,}" if steps and card["lr"] else empty)
    c4.metric("Confidence", card["confidence"] if card["lr"] else empty)
    if card["lr"]:
        sched = card["schedule"]
        st.markdown(
            f"**Rate:** {card['rate_text']} · **band within noise:** {card['band_text']} · "
            f"**schedule:** {sched['name']} peaking at {sched['peak_lr']:.3g} over "
            f"{sched['total_steps']:,} steps · **target:** validation loss "
            f"{card['target_loss']:.4f}"
        )
        st.markdown(
            f"**Confidence: {card['confidence']}**\n"
            + "\n".join(f"- {r}" for r in card["confidence_reasons"])
        )
        text = result.horizon_text()
        st.caption(text[0].upper() + text[1:] + ".")
    elif card["suggestions"]:
        found = " · ".join(f"{k} {v:.3g}" for k, v in card["suggestions"].items())
        st.markdown(f"**The range test's suggestions** (not confirmed by a sweep): {found}")
    if result.budget_plan:
        st.caption("Plan: " + result.plan_text() + ".")
    if card["missing"] and running:
        st.caption("Steps not done yet: " + ", ".join(card["missing"]) + ".")
    done = [f"{recommend.STEP_TITLES[s]} {t:.1f} s" for s, t in card["seconds"].items()]
    if done:
        st.caption("Seconds per step: " + " · ".join(done))
    if card["lr"] and not running:
        st.button(
            f"Use lr {card['lr']:.3g} and batch {card['batch']} on the other pages",
            on_click=use_this,
            args=(card["lr"], card["batch"]),
            key="rec_use",
        )
    if card["lr"]:
        st.code(card["snippet"], language="python")


def evidence(result: recommend.Result, running: bool) -> None:
    """Each step's evidence, as soon as the step has ended (downloads once the run has)."""
    tables = result.tables()
    card = result.card()
    tabs = st.tabs(["Range test", "Sweep & audit", "Batch", "Noise scale", "Card (JSON)"])
    with tabs[0]:
        points = tables["range"]
        if points.empty or not result.done("range"):
            st.info("The range test has not ended.")
        else:
            latest = result.range_result.latest
            chart = charts.range_test_chart(
                points, lr_finder.suggestion_frame(latest), band=lr_finder.band_of(latest)
            )
            live_chart(st, chart, running)
            st.dataframe(result.range_spread(), hide_index=True, width="stretch")
            if not running:
                csv_download(
                    st, "Download the range tests (CSV)", points, "recommend_range.csv", "rec_r"
                )
    with tabs[1]:
        sweep = tables["sweep"]
        if sweep.empty:
            st.info("The confirmation sweep has not trained a rate yet.")
        else:
            live_chart(st, sweep_chart(sweep, tables["audit"]), running)
            if result.done("sweep") and result.carried:
                st.markdown(f"**Carried to the planned training:** {result.horizon_text()}")
                law_chart = horizon_chart(
                    result.checkpoints(),
                    result.exponent,
                    result.confirmed.lr,
                    result.effort.sweep_steps,
                    result.horizon_steps,
                    result.carry_start,
                )
                live_chart(st, law_chart, running)
            if result.done("sweep"):
                st.markdown("**Audit:** each rule's rate against the confirmed best")
                st.dataframe(tables["audit"], hide_index=True, width="stretch")
            if not running:
                csv_download(st, "Download the sweep (CSV)", sweep, "recommend_sweep.csv", "rec_s")
                audit = tables["audit"]
                csv_download(st, "Download the audit (CSV)", audit, "recommend_audit.csv", "rec_a")
    with tabs[2]:
        batches = tables["batches"] if result.done("noise") else None
        if result.done("probe"):
            st.markdown(result.probe.verdict())
        if batches is None or batches.empty:
            st.info("The throughput and the noise scale are both needed for the batch choice.")
        else:
            c1, c2 = st.columns(2)
            live_chart(c1, time_to_target_chart(batches), running)
            live_chart(c2, throughput_chart(batches), running)
            st.dataframe(batches, hide_index=True, width="stretch")
            if not tables["confirm"].empty:
                st.markdown(
                    "**The runs at the chosen batch** (the short run at the swept rate; where "
                    "the rate was carried, the run at the card's rate)"
                )
                st.dataframe(tables["confirm"], hide_index=True, width="stretch")
            if not running:
                csv_download(
                    st, "Download the batch table (CSV)", batches, "recommend_batch.csv", "rec_b"
                )
    with tabs[3]:
        noise = tables["noise"]
        if noise.empty or not result.done("noise"):
            st.info("The noise scale has not been measured yet.")
        else:
            st.markdown(f"B_simple = **{result.b_simple:,.0f}** (the last averaged estimate)")
            st.caption(result.noise_result.critical_note())
            live_chart(st, b_simple_chart(noise), running)
            if not running:
                csv_download(
                    st, "Download the measurements (CSV)", noise, "recommend_noise.csv", "rec_n"
                )
    with tabs[4]:
        shown = {k: v for k, v in card.items() if k != "snippet"}
        st.code(json.dumps(shown, indent=1, default=str))


def draw(snap, running: bool) -> None:
    result = snap.result
    if result is None and cfg is not None:  # live, or ended without a record to rebuild
        status = "running" if running else "error" if snap.error else "stopped"
        result = recommend.Result(cfg, snap.rows, status)
    if running:
        fraction, text = recommend.step_progress(snap.rows, snap.progress)
        st.progress(fraction, text="Pipeline: " + text)
    show_error(snap)
    if result is not None:
        card_view(result, running)
        evidence(result, running)


experiment("rec_job", recommend, setup, cfg, draw, label="Recommend")
if st.session_state.get("rec_job") is None:
    st.info("The card fills in as each step ends; the evidence of each step follows below it.")
