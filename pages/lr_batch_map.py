"""LR × batch map

icon: :material/grid_on:

The whole plane of learning rate × batch size, each cell trained from the same weights at an
equal budget: the ridge of best rates, its fitted exponent α beside the linear and square-root
rules, McCandlish's ε_opt(B), and steps-to-target with the critical batch beside B_simple.
"""

import pandas as pd
import streamlit as st

from lrbs.charts import map as charts
from lrbs.core.errors import LrbsError
from lrbs.core.loop import OptimSpec
from lrbs.experiments import lr_batch_map as m
from lrbs.experiments import noise_scale as ns
from lrbs.methods import critical_batch as cb
from pages.common.job import experiment
from pages.common.live import csv_download, live_chart, show_error
from pages.common.sidebar import optimizer_inputs, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Learning rate × batch size: the map")
st.markdown(
    "Which scaling rule holds? Goyal et al. (2017) scale the rate **linearly** with the batch "
    "(α = 1 in lr_opt ∝ B^α), Malladi et al. (2022) derive a **square root** for Adam "
    "(α = 0.5), and McCandlish et al. (2018) predict the best rate saturates past the noise "
    "scale: ε_opt(B) = ε_max / (1 + B_noise/B). Every cell below trains from the same initial "
    "weights at the same budget; the **ridge** is the best rate per batch, with the rates "
    "whose loss is within noise of it (2 standard errors over seeds)."
)

setup, arrays = require_setup()
N = arrays.n_train


def inputs() -> m.Config | None:
    for key, value in {
        "map_lr": 0.1,
        "map_base_batch": 32,
        "map_centre": "between",
        "map_rates": 7,
        "map_decades": 2.0,
        "map_bmin": 16,
        "map_bmax": 0,
        "map_budget": "steps",
        "map_steps": 300,
        "map_epochs": 2.0,
        "map_target": 0.0,
        "map_max_steps": 3000,
        "map_metric": "val",
        "map_seeds": 2,
        "map_noise_steps": 200,
        "map_workers": 0,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("The map")
        c1, c2 = st.columns(2)
        lr = c1.number_input("Base rate", format="%.4g", step=None, key="map_lr")
        base = c2.number_input("at batch", min_value=0, step=16, key="map_base_batch")
        opt, momentum = optimizer_inputs("map")
        centre = st.selectbox(
            "Centre each batch's rates on",
            list(cb.CENTRES),
            key="map_centre",
            format_func=lambda c: {
                "between": "between the rules (k^0.75)",
                "linear": "the linear rule",
                "sqrt": "the square-root rule",
                "fixed": "the base rate",
            }[c],
        )
        c1, c2 = st.columns(2)
        rates = c1.number_input("Rates per batch", min_value=0, step=1, key="map_rates")
        decades = c2.number_input("spanning decades", min_value=0.0, step=0.5, key="map_decades")
        c1, c2 = st.columns(2)
        bmin = c1.number_input("Smallest batch", min_value=0, step=8, key="map_bmin")
        bmax = c2.number_input("Largest (0: the data)", min_value=0, step=256, key="map_bmax")
        budget = st.radio(
            "Equal budget",
            list(m.BUDGETS),
            key="map_budget",
            horizontal=True,
            format_func=lambda b: {"steps": "updates", "epochs": "epochs", "target": "to a loss"}[
                b
            ],
        )
        c1, c2 = st.columns(2)
        if budget == "epochs":
            c1.number_input("Epochs per cell", min_value=0.0, step=0.5, key="map_epochs")
        elif budget == "steps":
            c1.number_input("Updates per cell", min_value=0, step=50, key="map_steps")
        else:
            c1.number_input("Most updates", min_value=0, step=500, key="map_max_steps")
        c2.number_input(
            "Target train loss (0: auto)", min_value=0.0, format="%.3g", step=None, key="map_target"
        )
        metric = st.radio(
            "Map the final",
            list(m.METRICS),
            key="map_metric",
            horizontal=True,
            format_func=lambda v: f"{v} loss",
        )
        c1, c2 = st.columns(2)
        seeds = c1.number_input("Seeds per cell", min_value=0, step=1, key="map_seeds")
        noise = c2.number_input("Noise-meter steps", min_value=0, step=50, key="map_noise_steps")
        workers = st.number_input(
            "Worker processes (0: this one)",
            min_value=0,
            max_value=8,
            step=1,
            key="map_workers",
            help="share the cells out through an Optuna study on the auto-tune storage; "
            "`python -m lrbs autotune worker --study NAME` on other machines joins it",
        )
    target = float(st.session_state["map_target"])
    try:
        cfg = m.Config(
            base_lr=float(lr),
            base_batch=int(base),
            centre=centre,
            rates=int(rates),
            decades=float(decades),
            batch_min=int(bmin),
            batch_max=int(bmax) or None,
            optim=OptimSpec(opt, float(lr), momentum),
            budget=budget,
            steps=int(st.session_state["map_steps"]),
            epochs=float(st.session_state["map_epochs"]),
            max_steps=int(st.session_state["map_max_steps"]),
            target_loss=target if target > 0 else None,
            metric=metric,
            seeds=int(seeds),
            seed=setup.seed,
            noise_steps=int(noise),
            workers=int(workers),
        )
        n_cells = len(cfg.cells(N))
    except LrbsError as exc:
        st.error(str(exc))
        return None
    st.caption(
        f"{n_cells} cells: batches {', '.join(map(str, cfg.batches(N)))} × {cfg.rates} rates "
        f"× {cfg.seeds} seed(s), each {cfg.describe_budget()}."
    )
    return cfg


def draw(snap, running: bool) -> None:
    res = snap.result if snap.result is not None else m.Result(cfg or m.Config(), snap.rows)
    cells = res.cells()
    if running:
        total = res.info.get("cells") or 0
        st.progress(snap.progress, text=f"{len(cells)} of {total} cells done")
    # once the job is done the page draws the full map (with its fits) below: not twice
    if not cells.empty and (running or snap.result is None):
        empty = pd.DataFrame(columns=["batch", "curve", "lr", "steps"])
        live_chart(
            st, charts.map_chart(res.cell_means(), res.ridge, empty, res.value_name), running
        )
    show_error(snap)


def headline(res: m.Result) -> None:
    s = res.summary()
    a = res.alpha
    c1, c2, c3, c4 = st.columns(4)
    if a is not None:
        c1.metric("Fitted α (lr_opt ∝ B^α)", f"{a.alpha:.2f}", help=a.method)
        c2.metric("α's 95 % interval", f"{a.lo:.2f} – {a.hi:.2f}")
    else:
        c1.metric("Fitted α", "–")
    b_crit = s["b_crit"]
    c3.metric("B_crit (steps-to-target)", f"{b_crit:,.0f}" if b_crit else "–")
    c4.metric("B_simple (noise meter)", f"{res.b_simple:,.0f}" if res.b_simple > 0 else "–")
    if a is not None:
        bend = f"; the ridge bends away at B = {a.bend:,}" if a.bend else ""
        st.markdown(
            f"Over B = {a.b_first:,} … {a.b_last:,} ({a.points} batches) the ridge follows "
            f"**α = {a.alpha:.2f}** [{a.lo:.2f}, {a.hi:.2f}]: **{a.nearest_rule()}** "
            f"(linear α = 1, square root α = 0.5){bend}."
        )
    if res.eps is not None:
        st.markdown(
            f"ε_opt(B) fitted to the ridge: ε_max = {res.eps.eps_max:.3g}, "
            f"B_noise = {res.eps.b_noise:,.0f}."
        )
    if b_crit:
        st.markdown(
            f"Steps to training loss {s['target_loss']:.3g}: S_min = {s['s_min']:,.0f}, "
            f"B_crit = {b_crit:,.0f} against B_simple = {res.b_simple:,.0f}: they "
            f"**{s['b_crit_vs_b_simple']}**."
        )
    critical_notes(res)
    st.caption(f"{s['cells']} cells in {res.seconds:,.1f} s ({res.status}).")
    for w in res.warnings():
        st.warning(w)


def critical_notes(res: m.Result) -> None:
    """What the map's B_crit, B_noise and B_simple are and why they differ from the other
    pages' (one explanation, the engine's)."""
    s, n = res.summary(), res.info.get("n_train")
    notes = []
    if s["b_crit"]:
        notes.append(ns.critical_batch_note(s["b_crit"], "b_crit", n, target=s["target_loss"]))
    if res.eps is not None:
        notes.append(ns.critical_batch_note(res.eps.b_noise, "b_noise", n, why=not notes))
    if res.b_simple > 0:
        noise = res.frame("noise")
        batches = res.info.get("batches") or [res.config.base_batch]
        notes.append(
            ns.critical_batch_note(
                res.b_simple,
                "b_simple",
                n,
                steps=int(noise.step.iloc[-1]) if "step" in noise else None,
                batch=min(res.config.base_batch, max(batches)),
                lr=res.config.base_lr,
                loss=float(noise.loss.iloc[-1]) if "loss" in noise else None,
                why=not notes,
            )
        )
    for note in notes:
        st.caption(note)


cfg = inputs()
result = experiment("map_job", m, setup, cfg, draw, label="Run the map")
if st.session_state.get("map_job") is None:
    st.info(
        "Small first: a few hundred updates per cell on MNIST-1D take a few seconds each; the "
        "map streams as its cells finish."
    )
    st.stop()
if result is None:
    st.stop()
headline(result)
fits = result.fitted_curves()
st.altair_chart(
    charts.map_chart(result.cell_means(), result.ridge, fits, result.value_name), width="stretch"
)
# one per row: side by side, their legends were cut ("sqrt rul…")
st.altair_chart(charts.ridge_chart(result.ridge, fits), width="stretch")
st.altair_chart(
    charts.steps_chart(result.steps_table(), fits, result.summary()["b_crit"], result.b_simple),
    width="stretch",
)
tables = result.tables()
c1, c2, c3 = st.columns(3)
csv_download(c1, "Every cell (CSV)", tables["cells"], "lr_batch_map_cells.csv", "map_csv")
csv_download(
    c2,
    "Ridge, steps and fits (CSV)",
    pd.concat(
        [
            tables["ridge"].assign(table="ridge"),
            tables["steps"].assign(table="steps"),
            tables["fits"].assign(table="fits"),
        ],
        ignore_index=True,
    ),
    "lr_batch_map_fits.csv",
    "map_csv_f",
)
csv_download(c3, "Every curve (CSV)", tables["curves"], "lr_batch_map_curves.csv", "map_csv_c")
st.subheader("The ridge")
st.dataframe(result.ridge, hide_index=True, width="stretch")
