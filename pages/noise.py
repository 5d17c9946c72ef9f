"""Noise scale & critical batch

icon: :material/blur_on:

Measure the gradient noise scale B_simple = tr(Σ)/|G|² while a model trains: it predicts the
critical batch size, beyond which a bigger batch no longer buys fewer updates. Then check the
prediction against steps-to-target at several batch sizes.
"""

from dataclasses import replace

import streamlit as st

from lrbs.charts import noise as charts
from lrbs.core.errors import LrbsError
from lrbs.core.loop import OptimSpec
from lrbs.experiments import noise_scale as ns
from pages.common import chosen
from pages.common.job import experiment
from pages.common.live import csv_download, live_chart, show_error
from pages.common.sidebar import optimizer_inputs, parse_ints, require_setup
from pages.common.state import default, page_start, within

page_start()

st.title("Gradient noise scale & critical batch size")
st.markdown(
    "McCandlish, Kaplan, Amodei et al. (2018): the **simple noise scale** "
    "B_simple = tr(Σ)/|G|², the gradient's variance over its squared mean, predicts the "
    "**critical batch size**. Below it, doubling the batch nearly halves the updates needed; "
    "above it, the extra samples are wasted compute. It is measured here during an ordinary "
    "training run, from gradient norms at a small and a big batch taken at the same weights."
)

setup, arrays = require_setup()
N = arrays.n_train


def inputs() -> ns.Config | None:
    chosen.seed("ns_batch", "batch", 128)
    chosen.seed("ns_lr", "lr", 0.1)
    for key, value in {
        "ns_small": 32,
        "ns_big": 512,
        "ns_every": 40,
        "ns_steps": 1000,
        "ns_beta": 0.8,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Noise-scale measurement")
        batch = st.number_input("Training batch", min_value=0, step=16, key="ns_batch")
        lr = st.number_input("Learning rate", format="%.4g", step=None, key="ns_lr")
        chosen.caption(("batch", "ns_batch"), ("lr", "ns_lr"))
        opt, momentum = optimizer_inputs("ns")
        steps = st.number_input("Training steps", min_value=0, step=100, key="ns_steps")
        c1, c2 = st.columns(2)
        small = c1.number_input("Small batch B_s", min_value=0, step=8, key="ns_small")
        big = c2.number_input("Big batch B_b", min_value=0, step=64, key="ns_big")
        every = st.number_input("Measure every k steps", min_value=0, step=5, key="ns_every")
        within("ns_beta", 0.0, 0.99)
        beta = st.slider("Averaging β", 0.0, 0.99, step=0.01, key="ns_beta")
    try:
        cfg = ns.Config(
            batch_small=int(small),
            batch_big=int(big),
            every=int(every),
            beta=float(beta),
            batch_size=int(batch),
            optim=OptimSpec(opt, float(lr), momentum),
            steps=int(steps),
            seed=setup.seed,
        )
        cfg.check_data(N)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def draw(snap, running: bool) -> None:
    rows = snap.table("rows")
    if running:
        st.progress(snap.progress, text=f"Measuring: {len(rows)} measurements so far")
    if rows.empty:
        show_error(snap)
        return
    c1, c2 = st.columns(2)
    live_chart(c1, charts.b_simple_chart(rows), running)
    live_chart(c2, charts.measured_loss_chart(rows), running)
    show_error(snap)


def draw_check(snap, running: bool) -> None:
    if running:
        runs = [r["run"] for r in snap.rows.get("runs", [])]
        now = "measuring" if not runs else f"{len(runs) - 1} of the batch sizes done"
        st.progress(snap.progress, text=f"Training each batch size to the target ({now})")
    show_error(snap)


def check_inputs(result: ns.Result) -> ns.Config | None:
    """The check's settings over the measured run's: batch sizes, target, steps each."""
    default("nc_batches", ", ".join(str(b) for b in (16, 64, 256, 1024) if b <= N))
    default("nc_target", float(f"{result.default_target():.3g}"))
    default("nc_max", 3000)
    c1, c2, c3 = st.columns(3)
    text = c1.text_input("Batch sizes", key="nc_batches")
    target = c2.number_input("Target training loss", format="%.3g", step=None, key="nc_target")
    max_steps = c3.number_input("Max steps each", min_value=0, step=500, key="nc_max")
    try:
        values = parse_ints(text, "batch sizes")
        if not values or min(values) < 1:
            raise LrbsError("batch sizes must be whole numbers of at least 1")
        ccfg = replace(
            result.config,
            check=values,
            target_loss=float(target),
            check_steps=int(max_steps) or 1,
        )
        ccfg.check_data(N)
        return ccfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def check_section(result: ns.Result) -> None:
    st.subheader("Check it: steps and examples to a target loss")
    if not result.measurements().b_simple.notna().any() or result.diverged:
        st.warning(
            result.message
            or "There is no measured noise scale to check: measure it first (the last run "
            "was stopped before its first measurement)."
        )
        return
    st.markdown(
        "Train several batch sizes until the training loss reaches a target, each at the rate "
        "the paper predicts for it (ε_opt(B), anchored at your rate for your batch), and fit "
        "the trade-off (S/S_min − 1)(E/E_min − 1) = 1. Its B_crit = E_min/S_min is the "
        "measured critical batch size. (The measurement runs again first, with the same seed, "
        "so that the stored check holds everything it rests on.)"
    )
    ccfg = check_inputs(result)
    checked = experiment("nc_job", ns, setup, ccfg, draw_check, label="Run the check")
    if checked is None:
        return
    if checked.diverged or checked.check_table().empty:
        st.warning(checked.message or "The check was stopped before any batch size ran.")
        return
    table = checked.check_table()
    try:
        fit = checked.fit()
    except LrbsError as exc:
        st.dataframe(table, hide_index=True, width="stretch")
        st.warning(str(exc))
        return
    st.markdown(
        f"Fitted **S_min = {fit.s_min:,.0f}** updates, **E_min = {fit.e_min:,.0f}** examples: "
        f"**B_crit = {fit.b_crit:,.0f}** against the measured **B_simple = "
        f"{checked.b_simple:,.0f}**; they {checked.agreement(fit)}. The paper finds B_simple a "
        "good predictor up to a small factor (B_simple ignores the Hessian's shape, which "
        "B_noise would weigh in)."
    )
    target = checked.target_loss()
    st.caption(ns.critical_batch_note(fit.b_crit, "b_crit", N, target=target, why=False))
    st.altair_chart(charts.tradeoff_chart(table, checked.fitted_frame(fit)), width="stretch")
    csv_download(
        st,
        "Download the check and the fit (CSV)",
        checked.tables()["check"],
        "noise_scale_check.csv",
        "nc_csv",
    )
    st.dataframe(table, hide_index=True, width="stretch")


def headline(result: ns.Result) -> None:
    if result.message:
        (st.error if result.diverged else st.warning)(result.message)
    s0, s1 = result.spread
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("B_simple at the end of training", f"{result.b_simple:,.0f}")
    c2.metric("Spread, last quarter (25–75 %)", f"{s0:,.0f} – {s1:,.0f}")
    c3.metric("Measurement overhead", f"{result.overhead:.1%}")
    g = result.smith_le_g()
    c4.metric("Smith & Le g = ε/(1−m)·N/B", f"{g:,.3g}" if g is not None else "–")
    if result.n_train is not None:
        st.caption(f"Measured on {result.n_train:,} training samples (n_train).")
    if result.measurements().b_simple.notna().any():
        st.info(result.critical_note())


cfg = inputs()
result = experiment("ns_job", ns, setup, cfg, draw, label="Measure the noise scale")
if st.session_state.get("ns_job") is None:
    st.info(
        "Measuring costs two extra gradient evaluations every k steps; the page reports "
        "that overhead."
    )
    st.stop()
if result is None:
    st.stop()
run_cfg = result.config
headline(result)
st.markdown(
    "**Two noise scales.** B_simple is a property of the *gradients* (their variance over "
    "their mean at the current weights); it says which batch sizes still buy faster progress "
    "and grows as training proceeds. Smith & Le's g is a property of the *optimizer settings* "
    "(learning rate, momentum, N/B): it measures how much noise SGD injects, which is why "
    "decaying ε and growing B by the same factor are equivalent."
)
if result.measurements().b_simple.notna().any():
    st.subheader("Predicted best learning rate per batch size")
    st.altair_chart(charts.optimal_lr_chart(result.lr_curve(N), result.b_simple), width="stretch")
    st.caption(
        f"ε_opt(B) = ε_max / (1 + B_noise/B) with B_noise = B_simple = {result.b_simple:,.0f} "
        f"(dashed), anchored at lr {run_cfg.optim.lr:g} for batch {run_cfg.batch_size}: below "
        "B_noise the best rate grows about linearly with the batch, above it, it saturates at "
        "ε_max."
    )
csv_download(
    st, "Download the measurements (CSV)", result.tables()["rows"], "noise_scale.csv", "ns_csv"
)
if st.toggle("Check it against a batch-size sweep", key="ns_check"):
    check_section(result)
