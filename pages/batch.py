"""Batch size: the sweep at equal budgets, scaling rules, the largest batch that fits."""

import altair as alt
import pandas as pd
import streamlit as st

from lrbs import charts
from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError
from lrbs.core.loop import EVENT_COLUMNS, Budget
from lrbs.experiments import batch as bs
from pages.common.history import offer_stored, recorder
from pages.common.live import (
    controls,
    csv_download,
    downloads,
    events_frame,
    live_chart,
    live_view,
    result_columns,
    show_error,
    start_job,
)
from pages.common.sidebar import optimizer_inputs, parse_floats, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Batch size")
MODES = ["Sweep at equal budgets", "Scaling-rule check", "Largest batch that fits"]
default("bs_mode", MODES[0])
mode = st.radio("Experiment", MODES, key="bs_mode", horizontal=True, label_visibility="collapsed")

setup, arrays = require_setup()
N = arrays.n_train


def tensors() -> TensorData:
    return TensorData.from_arrays(arrays, setup.torch_device())


def model_factory(data: TensorData):
    return lambda seed: setup.fresh_model(data, seed)


TABLE_COLUMNS = result_columns(
    {
        "lr": st.column_config.NumberColumn(format="%.4g"),
        "noise_scale": st.column_config.NumberColumn("noise scale g", format="%.3g"),
        "gap": st.column_config.NumberColumn("gap (val − train)", format="%.4f"),
        "samples_per_s": st.column_config.NumberColumn("samples/s", format="%.0f"),
        "peak_memory_mib": st.column_config.NumberColumn("peak MiB", format="%.0f"),
        "val_loss_std": st.column_config.NumberColumn("val loss std", format="%.4f"),
    }
)


# ============================================================================ sweep


def sweep_inputs() -> bs.BatchSweepConfig | None:
    lr0 = st.session_state.get("chosen_lr", 0.1)
    for key, value in {
        "bs_grid": "64, 128, 256, full",
        "bs_budget_kind": "seconds",
        "bs_budget": 5.0,
        "bs_lr": float(f"{lr0:.3g}"),
        "bs_rule": "fixed",
        "bs_warmup": 0.0,
        "bs_repeats": 1,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Batch-size sweep")
        text = st.text_input("Batch sizes ('full' = the whole training set)", key="bs_grid")
        kind = st.radio(
            "Budget per batch size",
            ["seconds", "epochs", "updates"],
            key="bs_budget_kind",
            horizontal=True,
        )
        amount = st.number_input(
            f"{kind.capitalize()} each", min_value=0.0, step=1.0, key="bs_budget"
        )
        lr = st.number_input(
            "Learning rate (of the smallest batch)", format="%.4g", step=None, key="bs_lr"
        )
        rule = st.selectbox(
            "Learning-rate scaling",
            list(bs.RULES),
            key="bs_rule",
            format_func=lambda r: f"{r}: {bs.RULES[r]}",
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
        batches = tuple(
            p.strip() if p.strip().lower() == bs.FULL else parse_floats(p, "batch sizes")[0]
            for p in text.split(",")
            if p.strip()
        )
        budget = Budget(
            **{"steps" if kind == "updates" else kind: int(amount) if kind == "updates" else amount}
        )
        cfg = bs.BatchSweepConfig(
            batches,
            budget,
            float(lr),
            None,
            rule,
            float(warm),
            opt,
            momentum,
            setup.seed,
            int(repeats),
        )
        cfg.plan(N)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def draw_sweep(snap, running: bool) -> None:
    events = events_frame(snap)
    runs = snap.rows.get("runs", [])
    if running:
        st.progress(
            snap.progress,
            text=f"Sweep: {len(runs)} of {st.session_state['bs_running_n']} runs done",
        )
    x = st.session_state.get("bs_x", "elapsed")
    diverged = [r["run_id"] for r in runs if r["status"] == "diverged"]
    c1, c2 = st.columns(2)
    train_rows = events[events.kind == "train"]
    evals = events[events.kind == "eval"]
    repeated = events.run_id.str.contains(" seed ").any()

    def chart(rows, y, title):
        if repeated:  # mean of the seeds inside their min-max band, per batch size
            rows = rows.assign(batch=rows.run_id.str.replace(r" seed \d+$", "", regex=True))
            return charts.band_chart(
                rows, x=x, y=y, group="batch", title=title + " (seeds: mean and min-max band)"
            )
        return charts.runs_chart(rows, x=x, y=y, title=title, diverged=diverged)

    if not train_rows.empty:
        live_chart(c1, chart(train_rows, "loss", "Training loss"), running)
    if not evals.empty:
        live_chart(c2, chart(evals, "val_loss", "Validation loss"), running)
    show_error(snap)


def start_sweep(cfg: bs.BatchSweepConfig) -> None:
    st.session_state["bs_running_n"] = len(cfg.plan(N)) * cfg.repeats

    def work(emit, stop, progress):
        data = tensors()
        n_runs = len(cfg.plan(data.n_train)) * cfg.repeats
        done = []

        def on_event(e):
            emit("events", e.as_dict())
            progress((len(done) + cfg.budget.fraction(e)) / n_runs)

        def on_run_end(run):
            done.append(run)
            emit(
                "runs",
                {
                    "run_id": run.result.run_id,
                    **bs.run_row(run, data.n_train, cfg.effective_momentum),
                },
            )

        bs.batch_sweep(
            model_factory(data), data, cfg, on_event=on_event, stop=stop, on_run_end=on_run_end
        )

    start_job(
        "bs_job",
        work,
        "batch sweep",
        record=recorder("batch-sweep", {"setup": setup, "batch_sweep": cfg}, setup),
    )


def classes_section(cfg: bs.BatchSweepConfig | None) -> None:
    counts = arrays.class_counts()
    batches = cfg.plan(N) if cfg else []
    with st.expander("Classes per batch (seed 003)", expanded=False):
        st.markdown(
            f"Expected samples of each of the {arrays.n_classes} classes in one batch, "
            "drawn uniformly from the training set."
        )
        if batches:
            table = pd.concat(
                [
                    bs.classes_per_batch(counts, b, arrays.class_names).assign(batch=b)
                    for b, _ in batches
                ]
            )
            wide = table.pivot(index="class", columns="batch", values="expected_per_batch")
            wide.columns = [f"B={c}" for c in wide.columns]
            st.dataframe(wide.reset_index(), hide_index=True, width="stretch")
    for b, _ in batches:
        warning = bs.smallest_class_warning(counts, b)
        if warning:
            st.warning(warning)


def sweep_section() -> None:
    st.markdown(
        "Every batch size trains from the **same initial weights** for the **same budget**: "
        "small batches make many noisy updates, large ones few precise ones. Which reaches the "
        "lower loss in the time you have? And does the gap between training and validation "
        "loss grow with the batch (seed 004)?"
    )
    cfg = sweep_inputs()
    if cfg is not None:
        plan = cfg.plan(N)
        st.caption(
            "Plan: "
            + "; ".join(
                f"B={b}: lr {lr:.3g}, g = {bs.noise_scale(lr, N, b, cfg.effective_momentum):.3g}"
                for b, lr in plan
            )
            + f". Noise scale g = lr·N/B with N = {N:,}."
        )
    classes_section(cfg)
    if cfg is not None:
        offer_stored("batch-sweep", {"setup": setup, "batch_sweep": cfg}, "bs_job")
    if controls("bs_job", "Run sweep", disabled=cfg is None):
        start_sweep(cfg)
    st.radio(
        "x axis", list(charts.X_AXES), key="bs_x", horizontal=True, format_func=charts.X_AXES.get
    )
    job = st.session_state.get("bs_job")
    if job is None:
        st.info("Curves stream in while each batch size trains.")
        return
    live_view("bs_job", draw_sweep)
    if not job.done:
        return
    snap = job.snapshot()
    rows = snap.rows.get("runs", [])
    if not rows:
        return
    table = bs.sweep_table([{k: v for k, v in r.items() if k != "run_id"} for r in rows])
    st.subheader("Results")
    st.dataframe(table, hide_index=True, width="stretch", column_config=TABLE_COLUMNS)
    ok = table[table.status.str.contains("finished|stopped")]
    if not ok.empty:
        best = ok.loc[ok.val_loss.idxmin()]
        st.success(
            f"Lowest validation loss in this budget: batch {int(best.batch)} "
            f"(val loss {best.val_loss:.4f}, {best.updates:.0f} updates)."
        )
    downloads("batch_sweep", "bs", events_frame(snap), table)


# ============================================================================ scaling check


def scaling_inputs() -> bs.ScalingCheckConfig | None:
    for key, value in {"sc_b0": 8, "sc_lr0": 0.001, "sc_k": 4, "sc_epochs": 2.0}.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Scaling-rule check")
        b0 = st.number_input("Base batch B₀", min_value=1, step=1, key="sc_b0")
        lr0 = st.number_input("Base learning rate lr₀", format="%.4g", step=None, key="sc_lr0")
        k = st.number_input("K (batches B₀·1 … B₀·K)", min_value=2, max_value=32, key="sc_k")
        epochs = st.number_input("Epochs per run", min_value=0.0, step=1.0, key="sc_epochs")
        opt, momentum = optimizer_inputs("sc")
    try:
        cfg = bs.ScalingCheckConfig(
            int(b0), float(lr0), int(k), float(epochs), opt, momentum, setup.seed
        )
        cfg.plan(N)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def curves_from_events(events: pd.DataFrame) -> pd.DataFrame:
    ev = events[events.kind == "eval"].copy()
    if ev.empty:
        return ev
    ev[["rule", "k"]] = ev.run_id.str.extract(r"(\w+) k=(\d+)")
    ev["k"] = ev.k.astype(int)
    return ev


def scaling_chart(curves: pd.DataFrame, rule: str, title: str) -> alt.Chart:
    lo, hi = float(curves.val_loss.min()), float(curves.val_loss.max())
    pad = 0.05 * max(hi - lo, 1e-3)
    d = curves[curves.rule == rule].copy()
    d["run"] = "B₀×" + d.k.astype(str)
    return (
        alt.Chart(d)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch"),
            y=alt.Y(
                "val_loss:Q", title="validation loss", scale=alt.Scale(domain=[lo - pad, hi + pad])
            ),
            color=alt.Color("run:N", title=None, sort=None, scale=alt.Scale(scheme="viridis")),
            tooltip=["run:N", "lr:Q", "batch_size:Q", alt.Tooltip("val_loss:Q", format=".4f")],
        )
        .properties(title=title, height=300)
    )


def draw_scaling(snap, running: bool) -> None:
    events = events_frame(snap)
    if running:
        st.progress(snap.progress, text="Scaling-rule check")
    curves = curves_from_events(events)
    if not curves.empty:
        c1, c2 = st.columns(2)
        live_chart(c1, scaling_chart(curves, "linear", "Linear rule: B₀·k with lr₀·k"), running)
        live_chart(c2, scaling_chart(curves, "fixed", "Fixed rate: B₀·k with lr₀"), running)
    show_error(snap)


def scaling_section() -> None:
    st.markdown(
        "Seed 001's experiment (Goyal et al. 2017): multiply the batch by k and the learning "
        "rate by k, and the validation loss per epoch should follow the same curve for every "
        "k; keep the rate fixed instead, and larger batches fall behind."
    )
    cfg = scaling_inputs()
    if cfg is not None:
        offer_stored(
            "scaling-check",
            {"setup": setup, "scaling_check": cfg},
            "sc_job",
            rebuild=lambda info, rows: curves_from_events(
                pd.DataFrame(rows.get("events", []), columns=EVENT_COLUMNS)
            ),
        )
    if controls("sc_job", "Run the check", disabled=cfg is None):

        def work(emit, stop, progress):
            data = tensors()
            plan = cfg.plan(data.n_train)
            seen = []

            def on_event(e):
                emit("events", e.as_dict())
                if e.run_id not in seen:
                    seen.append(e.run_id)
                progress((len(seen) - 1 + min(1.0, e.epoch / cfg.epochs)) / len(plan))

            return bs.scaling_check(model_factory(data), data, cfg, on_event=on_event, stop=stop)

        start_job(
            "sc_job",
            work,
            "scaling check",
            record=recorder("scaling-check", {"setup": setup, "scaling_check": cfg}, setup),
            summarize=lambda c: ("finished", {"agreement": bs.agreement(c).to_dict("records")}),
        )
    job = st.session_state.get("sc_job")
    if job is None:
        st.info(f"Runs 2 × K trainings of {cfg.epochs if cfg else '?'} epochs each.")
        return
    live_view("sc_job", draw_scaling)
    if not job.done:
        return
    snap = job.snapshot()
    curves = snap.result if snap.result is not None else pd.DataFrame()
    if curves.empty:
        return
    agree = bs.agreement(curves)
    st.dataframe(agree, hide_index=True, width="stretch")
    by = agree.set_index("rule")
    if {"linear", "fixed"} <= set(by.index):
        lin, fix = by.loc["linear"], by.loc["fixed"]
        verdict = "agree" if lin.relative_spread < 0.5 * fix.relative_spread else "do not agree"
        st.markdown(
            f"Under the linear rule the curves differ by **{lin.mean_spread:.4f}** on average "
            f"({lin.relative_spread:.2%} of the loss); at a fixed rate by "
            f"**{fix.mean_spread:.4f}** ({fix.relative_spread:.2%}). Both charts share one y "
            "scale; curves that agree lie on top of each other. On this data the linear "
            f"rule's curves **{verdict}** better than the fixed rate's."
        )
    csv_download(st, "Download the curves (CSV)", curves, "scaling_check.csv", "sc_csv")


# ============================================================================ memory probe


def add_batch_to_sweep(b: int) -> None:
    parts = [p.strip() for p in st.session_state.get("bs_grid", "").split(",") if p.strip()]
    if str(b) not in parts:
        parts.append(str(b))
    st.session_state["bs_grid"] = ", ".join(parts)
    st.session_state["bs_mode"] = MODES[0]


def probe_section() -> None:
    st.markdown(
        "How large can a batch get before the device runs out of memory? The probe doubles the "
        "batch until a training step no longer fits, then binary-searches the boundary. On a "
        "GPU it tries real steps (out-of-memory caught and memory released); on the CPU it "
        "measures what a step needs (saved activations, parameters, gradients, optimizer "
        "state) against a cap you set."
    )
    device = setup.torch_device()
    default("mp_cap", 512)
    default("mp_optim", "sgd")
    with st.sidebar:
        st.subheader("Memory probe")
        cap = None
        if device.type == "cpu":
            cap = st.number_input("Memory cap (MiB)", min_value=1, step=64, key="mp_cap")
        opt = st.selectbox(
            "Optimizer (its state counts)", ["sgd", "momentum", "adam"], key="mp_optim"
        )
    states = {"sgd": 0, "momentum": 1, "adam": 2}[opt]
    if controls("mp_job", "Probe"):

        def work(emit, stop, progress):
            data = tensors()
            model = setup.fresh_model(data)
            fits = bs.make_fits(model, data, int(cap * 2**20) if cap else None, states)

            def logged(b):
                ok = fits(b)
                emit("tried", {"batch": b, "fits": ok})
                return ok

            return bs.largest_batch(logged, data.n_train)

        start_job(
            "mp_job",
            work,
            "memory probe",
            record=recorder(
                "memory-probe", {"setup": setup, "cap_mib": cap, "optimizer": opt}, setup
            ),
            summarize=lambda r: (
                "finished",
                {"largest": r.largest, "safe": r.safe, "memory_limited": r.hit_limit},
            ),
        )
    job = st.session_state.get("mp_job")
    if job is None:
        return

    def draw(snap, running):
        tried = snap.table("tried")
        if not tried.empty:
            st.dataframe(tried, hide_index=True)
        show_error(snap)

    live_view("mp_job", draw)
    if not job.done or job.snapshot().result is None:
        return
    r = job.snapshot().result
    limit = "memory" if r.hit_limit else f"the training set size ({N:,})"
    st.success(
        f"Largest batch that fits: **{r.largest:,}** (limited by {limit}). "
        f"With a 10 % margin, a power of two: **{r.safe:,}**."
    )
    st.button(
        f"Add {r.safe} to the batch-size sweep",
        on_click=add_batch_to_sweep,
        args=(r.safe,),
        key="mp_add",
    )


if mode == MODES[0]:
    sweep_section()
elif mode == MODES[1]:
    scaling_section()
else:
    probe_section()
