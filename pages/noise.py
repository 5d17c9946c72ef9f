"""The gradient noise scale: measure the critical batch size instead of guessing it."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError
from lrbs.core.loop import RunResult
from lrbs.experiments import noise_scale as ns
from pages.common.history import offer_stored, recorder
from pages.common.live import (
    controls,
    csv_download,
    live_chart,
    live_view,
    show_error,
    start_job,
)
from pages.common.sidebar import optimizer_inputs, parse_floats, require_setup
from pages.common.state import default, page_start

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


def inputs() -> ns.NoiseScaleConfig | None:
    for key, value in {
        "ns_small": 32,
        "ns_big": 512,
        "ns_every": 40,
        "ns_steps": 1000,
        "ns_batch": 128,
        "ns_lr": 0.1,
        "ns_beta": 0.8,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Noise-scale measurement")
        batch = st.number_input("Training batch", min_value=0, step=16, key="ns_batch")
        lr = st.number_input("Learning rate", format="%.4g", step=None, key="ns_lr")
        opt, momentum = optimizer_inputs("ns")
        steps = st.number_input("Training steps", min_value=0, step=100, key="ns_steps")
        c1, c2 = st.columns(2)
        small = c1.number_input("Small batch B_s", min_value=0, step=8, key="ns_small")
        big = c2.number_input("Big batch B_b", min_value=0, step=64, key="ns_big")
        every = st.number_input("Measure every k steps", min_value=0, step=5, key="ns_every")
        beta = st.slider("Averaging β", 0.0, 0.99, step=0.01, key="ns_beta")
    try:
        cfg = ns.NoiseScaleConfig(
            int(small),
            int(big),
            int(every),
            float(beta),
            int(batch),
            float(lr),
            opt,
            momentum,
            int(steps),
            setup.seed,
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
    base = alt.Chart(rows).encode(x=alt.X("step:Q", title="training step"))
    b = base.mark_line(color="#d9480f", strokeWidth=2.5).encode(
        y=alt.Y("b_simple:Q", title="B_simple (averaged)", scale=alt.Scale(type="log")),
        tooltip=["step:Q", alt.Tooltip("b_simple:Q", format=".4g")],
    )
    raw = base.mark_circle(color="#d9480f", opacity=0.3, size=25).encode(
        y=alt.Y("b_simple_raw:Q", scale=alt.Scale(type="log"))
    )
    loss = base.mark_line(color="#1971c2").encode(y=alt.Y("loss:Q", title="training loss"))
    c1, c2 = st.columns(2)
    live_chart(c1, alt.layer(raw, b).properties(title="Simple noise scale", height=300), running)
    live_chart(c2, loss.properties(title="Training loss", height=300), running)
    show_error(snap)


def lr_curve(b_noise: float, lr: float, base_batch: int) -> alt.Chart:
    batches = np.unique(np.geomspace(1, max(N, 2), 200).round())
    eps_max = lr * (1 + b_noise / base_batch)
    d = pd.DataFrame({"batch": batches, "lr": ns.optimal_lr(batches, b_noise, eps_max)})
    line = (
        alt.Chart(d)
        .mark_line(strokeWidth=2.5)
        .encode(
            x=alt.X("batch:Q", title="batch size B", scale=alt.Scale(type="log")),
            y=alt.Y(
                "lr:Q", title="predicted best learning rate ε_opt(B)", scale=alt.Scale(type="log")
            ),
            tooltip=[alt.Tooltip("batch:Q", format=","), alt.Tooltip("lr:Q", format=".3g")],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"batch": [b_noise]}))
        .mark_rule(strokeDash=[5, 3])
        .encode(x="batch:Q")
    )
    return alt.layer(line, rule).properties(height=280)


def check_section(result: ns.NoiseScaleResult, cfg: ns.NoiseScaleConfig) -> None:
    st.subheader("Check it: steps and examples to a target loss")
    st.markdown(
        "Train several batch sizes until the training loss reaches a target, each at the rate "
        "the paper predicts for it (ε_opt(B), anchored at your rate for your batch), and fit "
        "the trade-off (S/S_min − 1)(E/E_min − 1) = 1. Its B_crit = E_min/S_min is the "
        "measured critical batch size."
    )
    mid = float(result.rows.loss.iloc[len(result.rows) // 2])
    default("nc_batches", ", ".join(str(b) for b in (16, 64, 256, 1024) if b <= N))
    default("nc_target", float(f"{mid:.3g}"))
    default("nc_max", 3000)
    c1, c2, c3 = st.columns(3)
    text = c1.text_input("Batch sizes", key="nc_batches")
    target = c2.number_input("Target training loss", format="%.3g", step=None, key="nc_target")
    max_steps = c3.number_input("Max steps each", min_value=0, step=500, key="nc_max")
    try:
        batches = tuple(int(b) for b in parse_floats(text, "batch sizes"))
        if not batches or min(batches) < 1:
            raise LrbsError("batch sizes must be whole numbers of at least 1")
        ccfg = ns.CheckConfig(
            batches,
            float(target),
            int(max_steps) or 1,
            cfg.batch,
            cfg.lr,
            result.b_simple,
            cfg.optimizer,
            cfg.momentum,
            setup.seed,
        )
        if target <= 0:
            raise LrbsError("the target loss must be > 0")
    except LrbsError as exc:
        st.error(str(exc))
        ccfg = None
    if controls("nc_job", "Run the check", disabled=ccfg is None):

        def work(emit, stop, progress):
            data = TensorData.from_arrays(arrays, setup.torch_device())
            seen = []

            def on_event(e):
                if e.run_id not in seen:
                    seen.append(e.run_id)
                progress((len(seen) - 1 + e.step / ccfg.max_steps) / len(ccfg.batches))
                emit("events", e.as_dict())

            return ns.steps_to_target(
                lambda: setup.fresh_model(data), data, ccfg, on_event=on_event, stop=stop
            )

        start_job(
            "nc_job",
            work,
            "noise-scale check",
            record=recorder("noise-check", {"setup": setup, "check": ccfg}, setup),
            summarize=lambda t: ("finished", {"table": t.to_dict("records")}),
        )

    def draw_check(snap, running):
        if running:
            st.progress(snap.progress, text="Training each batch size to the target")
        show_error(snap)

    live_view("nc_job", draw_check)
    job = st.session_state.get("nc_job")
    if job is None or not job.done or job.snapshot().result is None:
        return
    table = job.snapshot().result
    st.dataframe(table, hide_index=True, width="stretch")
    try:
        fit = ns.fit_tradeoff(table.batch, table.steps)
    except LrbsError as exc:
        st.warning(str(exc))
        return
    ratio = fit.b_crit / result.b_simple
    agree = (
        "agree within a factor of 2"
        if 0.5 <= ratio <= 2
        else (f"differ by a factor of {max(ratio, 1 / ratio):.1f}")
    )
    st.markdown(
        f"Fitted **S_min = {fit.s_min:,.0f}** updates, **E_min = {fit.e_min:,.0f}** examples: "
        f"**B_crit = {fit.b_crit:,.0f}** against the measured **B_simple = "
        f"{result.b_simple:,.0f}**; they {agree}. The paper finds B_simple a good predictor up "
        "to a small factor (B_simple ignores the Hessian's shape, which B_noise would weigh in)."
    )
    bb = np.geomspace(min(table.batch) / 2, max(table.batch) * 2, 100)
    fitted = pd.DataFrame({"S": fit.s_min + fit.e_min / bb, "E": (fit.s_min + fit.e_min / bb) * bb})
    pts = table.dropna(subset=["steps"]).rename(columns={"steps": "S", "examples": "E"})
    chart = alt.layer(
        alt.Chart(fitted)
        .mark_line(color="#868e96")
        .encode(
            x=alt.X("S:Q", title="updates S", scale=alt.Scale(type="log")),
            y=alt.Y("E:Q", title="examples E", scale=alt.Scale(type="log")),
        ),
        alt.Chart(pts)
        .mark_circle(size=120, color="#d9480f")
        .encode(x="S:Q", y="E:Q", tooltip=["batch:Q", "S:Q", "E:Q"]),
        alt.Chart(pts)
        .mark_text(dx=12, align="left")
        .encode(x="S:Q", y="E:Q", text=alt.Text("batch:Q", format=",")),
    ).properties(height=320, title="Steps vs examples to the target, and the fitted trade-off")
    st.altair_chart(chart, width="stretch")
    fit_row = pd.DataFrame(
        [
            {
                "s_min": fit.s_min,
                "e_min": fit.e_min,
                "b_crit": fit.b_crit,
                "b_simple": result.b_simple,
            }
        ]
    )
    csv_download(st, "Download the check and the fit (CSV)",
                 pd.concat([table, fit_row], ignore_index=True), "noise_scale_check.csv",
                 "nc_csv")  # fmt: skip


def rebuild(info: dict, rows: dict) -> ns.NoiseScaleResult:
    h = info["results"]
    run = RunResult(
        "noise",
        h.get("status", "finished"),
        h.get("steps", 0),
        0.0,
        0,
        0.0,
        h.get("final_loss"),
        None,
        None,
        None,
        None,
    )
    return ns.NoiseScaleResult(
        pd.DataFrame(rows.get("rows", [])),
        run,
        h["b_simple"],
        (h["b_simple_q25"], h["b_simple_q75"]),
        h["overhead"],
    )


def load_noise(job) -> None:
    st.session_state["ns_job"] = job
    st.session_state["ns_cfg"] = cfg


cfg = inputs()
if cfg is not None:
    offer_stored(
        "noise-scale", {"setup": setup, "noise": cfg}, "ns_job", rebuild, on_load=load_noise
    )
if controls("ns_job", "Measure the noise scale", disabled=cfg is None):

    def work(emit, stop, progress):
        data = TensorData.from_arrays(arrays, setup.torch_device())
        model = setup.fresh_model(data)

        def on_row(row):
            emit("rows", row)
            progress(row["step"] / cfg.steps)

        return ns.measure(
            model,
            data,
            cfg,
            on_row=on_row,
            stop=stop,
            on_event=lambda e: emit("events", e.as_dict()),
        )

    start_job(
        "ns_job",
        work,
        "noise scale",
        {"ns_cfg": cfg},
        record=recorder("noise-scale", {"setup": setup, "noise": cfg}, setup),
        summarize=lambda r: ("finished", r.headline()),
    )

job = st.session_state.get("ns_job")
if job is None:
    st.info(
        "Measuring costs two extra gradient evaluations every k steps; the page reports "
        "that overhead."
    )
    st.stop()
live_view("ns_job", draw)
if not job.done or job.snapshot().result is None:
    st.stop()
result: ns.NoiseScaleResult = job.snapshot().result
run_cfg: ns.NoiseScaleConfig = st.session_state.get("ns_cfg", cfg)
c1, c2, c3, c4 = st.columns(4)
c1.metric("B_simple (critical batch ≈)", f"{result.b_simple:,.0f}")
c2.metric("Spread, last quarter (25–75 %)", f"{result.spread[0]:,.0f} – {result.spread[1]:,.0f}")
c3.metric("Measurement overhead", f"{result.overhead:.1%}")
g = ns.smith_le_noise(
    run_cfg.lr, N, run_cfg.batch, run_cfg.momentum if run_cfg.optimizer == "momentum" else 0.0
)
c4.metric("Smith & Le g = ε/(1−m)·N/B", f"{g:,.3g}")
st.markdown(
    "**Two noise scales.** B_simple is a property of the *gradients* (their variance over "
    "their mean at the current weights); it says which batch sizes still buy faster progress "
    "and grows as training proceeds. Smith & Le's g is a property of the *optimizer settings* "
    "(learning rate, momentum, N/B): it measures how much noise SGD injects, which is why "
    "decaying ε and growing B by the same factor are equivalent."
)
st.subheader("Predicted best learning rate per batch size")
st.altair_chart(lr_curve(result.b_simple, run_cfg.lr, run_cfg.batch), width="stretch")
st.caption(
    f"ε_opt(B) = ε_max / (1 + B_noise/B) with B_noise = B_simple = {result.b_simple:,.0f} "
    f"(dashed), anchored at lr {run_cfg.lr:g} for batch {run_cfg.batch}: below B_noise the "
    "best rate grows about linearly with the batch, above it, it saturates at ε_max."
)
csv_download(st, "Download the measurements (CSV)", result.rows, "noise_scale.csv", "ns_csv")
if st.toggle("Check it against a batch-size sweep", key="ns_check"):
    check_section(result, run_cfg)
