"""Find the learning rate: the range test with zoom-in, and the sweep at a fixed budget."""

from dataclasses import replace

import altair as alt
import pandas as pd
import streamlit as st

from lrbs import charts
from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError
from lrbs.core.loop import Budget
from lrbs.core.models import build_model
from lrbs.experiments import sweeps
from lrbs.experiments.lr_finder import (
    RangeTestConfig,
    RangeTestResult,
    range_from_selection,
    range_test,
    spread,
    suggest,
)
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

st.title("Find the learning rate")
MODES = ["Range test", "Sweep at a fixed budget"]
default("lr_mode", MODES[0])
mode = st.radio("Experiment", MODES, key="lr_mode", horizontal=True, label_visibility="collapsed")

setup, arrays = require_setup()


def tensors() -> TensorData:
    return TensorData.from_arrays(arrays, setup.torch_device())


def use_lr(lr: float, source: str) -> None:
    st.session_state["chosen_lr"] = float(lr)
    st.session_state["chosen_lr_source"] = source


# ============================================================================ range test


def range_test_inputs() -> tuple[RangeTestConfig, int] | None:
    for key, value in {
        "rt_batch": 64,
        "rt_min": 1e-7,
        "rt_max": 10.0,
        "rt_iters": 100,
        "rt_ramp": "exp",
        "rt_beta": 0.98,
        "rt_debias": True,
        "rt_stop": 4.0,
        "rt_seeds": 1,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Range test")
        opt, momentum = optimizer_inputs("rt")
        batch = st.number_input("Batch size", min_value=1, step=16, key="rt_batch")
        c1, c2 = st.columns(2)
        lo = c1.number_input("Min lr", format="%.1e", step=None, key="rt_min")
        hi = c2.number_input("Max lr", format="%.1e", step=None, key="rt_max")
        iters = st.number_input(
            "Iterations", min_value=0, max_value=100000, step=10, key="rt_iters"
        )
        ramp = st.radio(
            "Ramp",
            ["exp", "linear"],
            key="rt_ramp",
            horizontal=True,
            format_func={"exp": "exponential", "linear": "linear"}.get,
        )
        with st.expander("Smoothing and stop"):
            beta = st.slider(
                "Smoothing β (EMA)",
                0.0,
                0.99,
                step=0.01,
                key="rt_beta",
                help="0.98 with bias correction as fastai; torch-lr-finder uses "
                "0.95 (its f = 0.05) without it, and stops at 5×.",
            )
            debias = st.checkbox("Bias correction", key="rt_debias")
            stop = st.number_input(
                "Stop when smoothed loss > k × best (0: never)",
                min_value=0.0,
                step=0.5,
                key="rt_stop",
            )
        seeds = st.number_input(
            "Seeds (spread)",
            min_value=1,
            max_value=8,
            key="rt_seeds",
            help="Repeat the test with more seeds to see how much the "
            "curve and the suggestions move.",
        )
    try:
        cfg = RangeTestConfig(
            float(lo),
            float(hi),
            int(iters),
            ramp,
            int(batch),
            opt,
            momentum,
            float(beta),
            bool(debias),
            float(stop) if stop else None,
            setup.seed,
        )
    except LrbsError as exc:
        st.error(str(exc))
        return None
    if cfg.batch_size > arrays.n_train:
        st.error(
            f"Batch size {cfg.batch_size} is larger than the training set ({arrays.n_train:,})."
        )
        return None
    return cfg, int(seeds)


def start_range_test(cfg: RangeTestConfig, seeds: int, round_no: int) -> None:
    key = (setup, cfg, seeds)
    cache = st.session_state.setdefault("rt_cache", {})
    if key in cache:  # same settings already run in this session: no retraining
        st.session_state["rt_rounds"] = st.session_state.get("rt_rounds", [])[:round_no]
        st.session_state["rt_rounds"].append(cache[key])
        st.toast("These settings already ran: showing that result.")
        return

    def work(emit, stop, progress):
        data = tensors()
        results = []
        for k in range(seeds):
            run_setup = replace(setup, seed=setup.seed + k)
            model = run_setup.fresh_model(data)
            run_cfg = replace(cfg, seed=run_setup.seed)

            def point(p, k=k):
                emit("points", p)
                progress((k + (p["iteration"] + 1) / cfg.iterations) / seeds)

            r = range_test(model, data, run_cfg, on_point=point, stop=stop, round=round_no)
            results.append(r)
            if r.status == "stopped":
                break
        return results

    start_job(
        "rt_job",
        work,
        "range test",
        {"rt_pending": (round_no, key)},
        record=recorder("lr-range-test", rt_config(cfg, seeds), setup, name=f"round {round_no}"),
        summarize=summarize_range_test,
    )


def rt_config(cfg: RangeTestConfig, seeds: int) -> dict:
    return {"setup": setup, "range_test": cfg, "seeds": seeds}


def summarize_range_test(results) -> tuple[str, dict]:
    per_seed = [{"seed": r.config.seed, "status": r.status, "message": r.message,
                 "elapsed": r.elapsed, "suggestions": {s.name: s.lr for s in r.suggestions}}
                for r in results]  # fmt: skip
    return results[0].status, {"seeds": per_seed}


def rebuild_range_test(info: dict, rows: dict) -> list:
    """RangeTestResults from a stored run: its points, config and per-seed statuses."""
    base = RangeTestConfig(**info["config"]["range_test"])
    meta = {m["seed"]: m for m in info["results"].get("seeds", [])}
    points = pd.DataFrame(rows.get("points", []))
    out = []
    for seed, part in points.groupby("seed", sort=True):
        m = meta.get(int(seed), {})
        part = part.sort_values("iteration")
        lrs, sm = part.lr.to_numpy(float), part.smoothed.to_numpy(float)
        out.append(RangeTestResult(
            replace(base, seed=int(seed)), lrs, part.loss.to_numpy(float), sm,
            m.get("status", "finished"), m.get("message", ""), tuple(suggest(lrs, sm)),
            m.get("elapsed", 0.0), int(part["round"].iloc[0]),
        ))  # fmt: skip
    return out


def load_range_test(job) -> None:
    st.session_state["rt_rounds"] = [job.result]
    st.session_state["rt_pending"] = None


def collect_range_test() -> None:
    """Move a finished job's results into the rounds, once."""
    job = st.session_state.get("rt_job")
    pending = st.session_state.get("rt_pending")
    if job is None or not job.done or pending is None:
        return
    round_no, key = pending
    st.session_state["rt_pending"] = None
    snap = job.snapshot()
    if snap.result:
        rounds = st.session_state.get("rt_rounds", [])[:round_no]
        rounds.append(snap.result)
        st.session_state["rt_rounds"] = rounds
        if all(r.status != "stopped" for r in snap.result):
            st.session_state.setdefault("rt_cache", {})[key] = snap.result


def points_of(rounds) -> pd.DataFrame:
    frames = [r.frame() for results in rounds for r in results]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def suggestion_frame(results) -> pd.DataFrame:
    """The suggestions of a round: with several seeds, the median rate of each."""
    table = spread(results)
    meaning = {s.title: (s.name, s.meaning) for s in results[0].suggestions}
    return pd.DataFrame(
        {
            "name": [meaning[t][0] for t in table.suggestion],
            "title": table.suggestion,
            "lr": table.median_lr,
            "meaning": [meaning[t][1] for t in table.suggestion],
            "label": [
                f"{t} {v:.2g}" for t, v in zip(table.suggestion, table.median_lr, strict=True)
            ],
        }
    )


def band_of(results) -> pd.DataFrame | None:
    if len(results) < 2:
        return None
    d = pd.concat([r.frame() for r in results])
    g = d.groupby("iteration").agg(
        lr=("lr", "first"), lo=("smoothed", "min"), hi=("smoothed", "max"), n=("seed", "count")
    )
    return g[g.n == len(results)].reset_index()


def draw_range_test(snap, running: bool) -> None:
    rounds = st.session_state.get("rt_rounds", [])
    pending = st.session_state.get("rt_pending")
    shown = rounds[: pending[0]] if pending else rounds
    live = snap.table("points")
    frame = pd.concat([points_of(shown), live], ignore_index=True)
    if running:
        st.progress(snap.progress, text=f"Range test: {len(live)} iterations so far")
    if not frame.empty:
        live_chart(st, charts.range_test_chart(frame), running)
    show_error(snap)


def range_test_section() -> None:
    st.markdown(
        "Train briefly while the learning rate grows from tiny to huge, and watch the loss: flat "
        "while the rate is too small, falling where it is useful, ragged and then exploding "
        "where it is too large (Leslie Smith, 2017). The model starts from the same initial "
        "weights in every test and is restored afterwards."
    )
    picked = range_test_inputs()
    if picked is not None:
        offer_stored(
            "lr-range-test",
            rt_config(*picked),
            "rt_job",
            rebuild_range_test,
            on_load=load_range_test,
        )
    if controls("rt_job", "Run range test", disabled=picked is None):
        st.session_state["rt_rounds"] = []
        start_range_test(*picked, round_no=0)
    job = st.session_state.get("rt_job")
    if job is not None and not job.done:
        live_view("rt_job", draw_range_test)  # its fragment reruns the page when the job ends
        return
    collect_range_test()  # check "done" first: a job ending in between is then still collected
    if job is not None:
        show_error(job.snapshot())
    rounds = st.session_state.get("rt_rounds", [])
    if not rounds:
        st.info(
            "Set the range in the sidebar and run the test; the curve streams in as it "
            "trains (about a second for 100 iterations of a small MLP on a CPU)."
        )
        return
    finished_view(rounds, picked)


def finished_view(rounds, picked) -> None:
    latest = rounds[-1]
    sugg = suggestion_frame(latest)
    frame = points_of(rounds)
    brush = alt.selection_interval(encodings=["x"], name="zoom")
    chart = charts.range_test_chart(frame, sugg, brush=brush, band=band_of(latest))
    event = st.altair_chart(
        chart, width="stretch", on_select="rerun", key="rt_chart", selection_mode="zoom"
    )
    status = latest[0]
    stop_note = f" ({status.message})" if status.message else ""
    st.caption(
        f"Round {len(rounds) - 1}: {status.status}{stop_note}; {len(status.lrs)} iterations in "
        f"{status.elapsed:.1f} s. Drag across the chart to pick a range to zoom into."
    )
    st.subheader("Suggestions")
    table = sugg[["title", "lr", "meaning"]].rename(
        columns={"title": "suggestion", "lr": "learning rate"}
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={"learning rate": st.column_config.NumberColumn(format="%.3g")},
    )
    if len(latest) > 1:
        st.markdown(
            f"**Spread over {len(latest)} seeds** (the band on the chart): how far each "
            "suggestion moves between seeds."
        )
        st.dataframe(spread(latest), hide_index=True, width="stretch")
    c1, c2 = st.columns([3, 2])
    pick = c1.selectbox("Carry a suggestion to the other pages", sugg.title.tolist(), key="rt_pick")
    if c2.button("Use this learning rate", key="rt_use"):
        lr = float(sugg.loc[sugg.title == pick, "lr"].iloc[0])
        use_lr(lr, f"range test ({pick})")
        st.success(f"Learning rate {lr:.3g} will be the default on the other pages.")

    st.subheader("Zoom in")
    picked_range = range_from_selection(event.selection if event else None)
    if picked_range is not None:
        st.session_state["rt_zoom_lo"], st.session_state["rt_zoom_hi"] = picked_range
    steep = latest[0].suggestion("steep")
    top = latest[0].suggestion("max_usable")
    default("rt_zoom_lo", float(f"{(steep.lr if steep else 1e-3) / 10:.2g}"))
    default("rt_zoom_hi", float(f"{(top.lr if top else 1.0) * 2:.2g}"))
    c1, c2, c3 = st.columns([2, 2, 3])
    lo = c1.number_input("From lr", format="%.2e", step=None, key="rt_zoom_lo")
    hi = c2.number_input("To lr", format="%.2e", step=None, key="rt_zoom_hi")
    c3.write("")
    if c3.button("Run a finer test over this range", key="rt_zoom"):
        if picked is None:
            st.error("Fix the range-test settings in the sidebar first.")
        else:
            cfg, seeds = picked
            try:
                zcfg = cfg.zoom(float(lo), float(hi))
            except LrbsError as exc:
                st.error(f"Zoom range: {exc}")
            else:
                start_range_test(zcfg, seeds, round_no=len(rounds))
                st.rerun()
    st.caption(
        "Each round re-runs the test from the same initial weights over the chosen "
        "range, with twice the points per decade of the round before."
    )
    csv_download(st, "Download every curve (CSV)", frame, "lr_range_test.csv", "rt_csv")


# ============================================================================ sweep


def add_decade() -> None:
    try:
        grid = parse_floats(st.session_state["sw_grid"], "learning rates")
        st.session_state["sw_grid"] = ", ".join(f"{v:g}" for v in sweeps.add_decade(grid))
    except LrbsError as exc:
        st.session_state["sw_grid_error"] = str(exc)


def refine(best: float) -> None:
    st.session_state["sw_grid"] = ", ".join(f"{v:g}" for v in sweeps.refine(best))


def add_lr(lr: float) -> None:
    grid = parse_floats(st.session_state["sw_grid"], "learning rates")
    if lr not in grid:
        st.session_state["sw_grid"] = ", ".join(f"{v:g}" for v in sorted((*grid, lr)))


def sweep_inputs() -> sweeps.LRSweepConfig | None:
    for key, value in {
        "sw_grid": "0.001, 0.01, 0.1, 1",
        "sw_budget_kind": "seconds",
        "sw_budget": 5.0,
        "sw_batch": 128,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Sweep")
        text = st.text_input("Learning rates (exponential grid)", key="sw_grid")
        kind = st.radio(
            "Budget per rate", ["seconds", "epochs", "steps"], key="sw_budget_kind", horizontal=True
        )
        amount = st.number_input(
            f"{kind.capitalize()} per rate", min_value=0.0, step=1.0, key="sw_budget"
        )
        batch = st.number_input("Batch size", min_value=1, step=16, key="sw_batch")
        opt, momentum = optimizer_inputs("sw")
        stacked_option(kind)
    error = st.session_state.pop("sw_grid_error", None)
    if error:
        st.error(error)
    try:
        lrs = parse_floats(text, "learning rates")
        amount = int(amount) if kind == "steps" and amount == int(amount) else amount
        budget = Budget(**{kind: amount})
        return sweeps.LRSweepConfig(lrs, budget, int(batch), opt, momentum, setup.seed)
    except LrbsError as exc:
        st.error(str(exc))
        return None


def stacked_option(kind: str) -> None:
    """'Train every rate at once' (lrbs.core.stacked), where it can apply: a budget in epochs or
    steps (stacked runs would share a time budget) and a model without dropout."""
    from lrbs.core.stacked import stackable

    why = "the budget is in seconds, which stacked runs would share" if kind == "seconds" else None
    if why is None:
        why = stackable(build_model(setup.model, arrays.input_shape, arrays.n_classes, 0))
    default("sw_stacked", setup.torch_device().type == "cuda")
    st.checkbox(
        "Train every rate at once (torch.func)",
        key="sw_stacked",
        disabled=why is not None,
        help="The models of all the rates stacked and trained in one vmapped loop: the same "
        "curves as one after the other, in less time where a step is mostly overhead (a GPU; "
        "on 2 CPU cores 1.3-1.9x faster for 4-8 rates, slower for 2)."
        + (f" Not available here: {why}." if why else ""),
    )


def sweep_stacked() -> bool:
    kind = st.session_state.get("sw_budget_kind", "seconds")
    return kind != "seconds" and bool(st.session_state.get("sw_stacked"))


RESULT_COLUMNS = result_columns(
    {
        "lr": st.column_config.NumberColumn(format="%g"),
        "epochs": st.column_config.NumberColumn(format="%.1f"),
        "best": st.column_config.CheckboxColumn("best"),
    }
)


def draw_sweep(snap, running: bool) -> None:
    events = events_frame(snap)
    runs = snap.rows.get("runs", [])
    if running:
        st.progress(
            snap.progress,
            text=f"Sweep: {len(runs)} of {st.session_state['sw_running_n']} rates done",
        )
    x = st.session_state.get("sw_x", "elapsed")
    train_rows = events[events.kind == "train"]
    if not train_rows.empty:
        diverged = [r["run_id"] for r in runs if r["status"] == "diverged"]
        live_chart(
            st,
            charts.runs_chart(train_rows, x=x, y="loss", title="Training loss", diverged=diverged),
            running,
        )
    show_error(snap)


def sweep_section() -> None:
    st.markdown(
        "Seed 000's way: train the same initial weights once per learning rate, each for the "
        "same wall-clock budget, on an exponential grid (0.001, 0.01, 0.1, 1), and compare. "
        "Then refine around the best decade."
    )
    cfg = sweep_inputs()
    chosen_lr = st.session_state.get("chosen_lr")
    if chosen_lr:
        c1, c2 = st.columns([4, 2])
        c1.caption(f"From the {st.session_state.get('chosen_lr_source')}: lr = {chosen_lr:.3g}")
        c2.button("Add it to the grid", on_click=add_lr, args=(chosen_lr,), key="sw_add_chosen")
    if cfg is not None:
        offer_stored("lr-sweep", sweep_record(cfg), "sw_job")
    if controls("sw_job", "Run sweep", disabled=cfg is None):
        start_sweep(cfg)
    st.radio(
        "x axis", list(charts.X_AXES), key="sw_x", horizontal=True, format_func=charts.X_AXES.get
    )
    job = st.session_state.get("sw_job")
    if job is None:
        st.info(
            "Each rate gets the same budget from the same initial weights; the curves "
            "stream in while they train."
        )
        return
    live_view("sw_job", draw_sweep)
    if not job.done:
        return
    snap = job.snapshot()
    runs = snap.rows.get("runs", [])
    if not runs:
        return
    table = sweeps.mark_best(pd.DataFrame(runs))
    st.subheader("Results")
    st.dataframe(
        table.drop(columns=["run_id"]),
        hide_index=True,
        width="stretch",
        column_config=RESULT_COLUMNS,
    )
    best = sweeps.best_lr(table)
    c1, c2, c3 = st.columns(3)
    c1.button("Add a decade above", on_click=add_decade, key="sw_decade")
    if best is not None:
        c2.button(f"Refine around {best:g}", on_click=refine, args=(best,), key="sw_refine")
        if c3.button(f"Use {best:g} on the other pages", key="sw_use"):
            use_lr(best, "learning-rate sweep")
            st.success(f"Learning rate {best:g} will be the default on the other pages.")
    downloads("lr_sweep", "sw", events_frame(snap), table)


def sweep_record(cfg: sweeps.LRSweepConfig) -> dict:
    """The sweep's config in the run history (stacked runs are marked: they time differently)."""
    return {"setup": setup, "lr_sweep": cfg} | ({"stacked": True} if sweep_stacked() else {})


def start_sweep(cfg: sweeps.LRSweepConfig) -> None:
    st.session_state["sw_running_n"] = len(cfg.lrs)
    stacked = sweep_stacked()

    def work(emit, stop, progress):
        data = tensors()
        done = []

        def on_event(e):
            emit("events", e.as_dict())
            if stacked:  # every rate advances together
                progress(cfg.budget.fraction(e))
            else:
                progress((len(done) + cfg.budget.fraction(e)) / len(cfg.lrs))

        def on_run_end(lr, r):
            done.append(r)
            row = sweeps.sweep_table([r], (lr,)).iloc[0].to_dict()
            row.pop("best")
            emit("runs", {"run_id": r.run_id, **row})

        results = sweeps.lr_sweep(
            lambda: setup.fresh_model(data),
            data,
            cfg,
            on_event=on_event,
            stop=stop,
            on_run_end=on_run_end,
            vectorize=stacked,
        )
        return sweeps.sweep_table(results, cfg.lrs)

    start_job(
        "sw_job",
        work,
        "lr sweep",
        record=recorder("lr-sweep", sweep_record(cfg), setup),
        summarize=lambda t: (
            "finished",
            {"table": t.to_dict("records"), "best_lr": sweeps.best_lr(t)},
        ),
    )


if mode == MODES[0]:
    range_test_section()
else:
    sweep_section()
