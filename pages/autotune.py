"""Auto-tune the learning rate and the batch size together (Optuna), on worker processes."""

import os
import time

import streamlit as st

from lrbs import charts
from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError
from lrbs.experiments import autotune as at
from pages.common.history import recorder
from pages.common.live import csv_download, result_columns
from pages.common.range_test import latest_range_test
from pages.common.sidebar import OPTIMIZER_TITLES, parse_floats, require_setup
from pages.common.state import default, page_start

page_start()

st.title("Auto-tune learning rate and batch size")
st.markdown(
    "Seed 003's advice: tune the most important hyperparameters first, keep the search space "
    "small and discrete, then let a tool search it. Here **Optuna** searches the learning rate "
    "(log scale) and the batch size (powers of two), optionally the optimizer and a warm-up: "
    "its TPE sampler proposes each trial from the ones before, and a pruner stops trials whose "
    "validation loss lags the others'. Every trial trains with the same loop from the same "
    "initial weights under the same budget. Trials run in worker processes; more machines can "
    "join a study through a shared database (see the README)."
)

setup, arrays = require_setup()
N = arrays.n_train

DEFAULTS = {
    "at_name": "",
    "at_trials": 20,
    "at_workers": min(2, os.cpu_count() or 1),
    "at_budget_kind": "seconds",
    "at_budget": 5.0,
    "at_lr_min": 1e-3,
    "at_lr_max": 3.0,
    "at_batches": "16, 32, 64, 128, 256, 512",
    "at_optimizers": ["sgd"],
    "at_warmups": "0",
    "at_pruner": "median",
    "at_objective": "best",
    "at_storage": "",
}


def inputs() -> tuple[at.TuneConfig, int, int, str, str] | None:
    for key, value in DEFAULTS.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Study")
        name = st.text_input("Study name", key="at_name", placeholder="blank: a new name")
        c1, c2 = st.columns(2)
        trials = c1.number_input("Trials", min_value=0, step=5, key="at_trials")
        workers = c2.number_input("Worker processes", min_value=0, step=1, key="at_workers")
        kind = st.radio("Budget per trial", ["seconds", "epochs"], key="at_budget_kind",
                        horizontal=True)  # fmt: skip
        amount = st.number_input(f"{kind.capitalize()} per trial", min_value=0.0, key="at_budget")
        st.markdown("**Search space**")
        c1, c2 = st.columns(2)
        lo = c1.number_input("Lowest lr", format="%.2e", step=None, key="at_lr_min")
        hi = c2.number_input("Highest lr", format="%.2e", step=None, key="at_lr_max")
        batches = st.text_input("Batch sizes", key="at_batches")
        optimizers = st.multiselect(
            "Optimizers", list(OPTIMIZER_TITLES), key="at_optimizers",
            format_func=OPTIMIZER_TITLES.get,
        )  # fmt: skip
        warmups = st.text_input("Warm-up epochs to try", key="at_warmups")
        c1, c2 = st.columns(2)
        pruner = c1.selectbox("Pruner", list(at.PRUNERS), key="at_pruner")
        objective = c2.selectbox(
            "Objective",
            list(at.OBJECTIVES),
            key="at_objective",
            help="best: the lowest validation loss a trial reached (the checkpoint you would "
            "keep); final: its validation loss at the end of the budget",
        )
        storage = st.text_input(
            "Optuna storage",
            key="at_storage",
            placeholder="blank: a journal file beside the run history",
            help="A journal file path, or an Optuna URL such as "
            "postgresql://user:password@host/db shared by workers on several machines.",
        )
    try:
        bs = tuple(int(b) for b in parse_floats(batches, "batch sizes"))
        if any(b != v for b, v in zip(bs, parse_floats(batches, "batch sizes"), strict=True)):
            raise LrbsError("batch sizes must be whole numbers")
        space = at.SearchSpace(float(lo), float(hi), bs, tuple(optimizers),
                               parse_floats(warmups, "warm-up epochs") or (0.0,))  # fmt: skip
        cfg = at.TuneConfig(
            space.fit_to(N),
            float(amount) if kind == "seconds" else None,
            float(amount) if kind == "epochs" else None,
            pruner,
            setup.seed,
            objective,
        )
        if int(trials) < 1 or int(workers) < 1:
            raise LrbsError("trials and worker processes must be at least 1")
        return cfg, int(trials), int(workers), name.strip(), storage.strip()
    except LrbsError as exc:
        st.error(str(exc))
        return None


# ------------------------------------------------------------------ seeding the space


def seed_from(found: dict, source: str) -> None:
    centre = found.get("steep") or found.get("valley")
    if not centre:
        st.session_state["at_note"] = f"error: {source} has no steepest-descent rate"
        return
    st.session_state.update(at_lr_min=centre / 10**0.5, at_lr_max=centre * 10**0.5)
    st.session_state["at_note"] = (
        f"From {source}: a decade of learning rate around its steepest descent, {centre:.3g}."
    )


def seed_by_probe() -> None:
    """A quick range test and the memory probe, right now."""
    try:
        data = TensorData.from_arrays(arrays, setup.torch_device())
        opts = tuple(st.session_state["at_optimizers"]) or ("sgd",)
        space, found = at.seed_space(setup, data, at.SearchSpace(optimizers=opts))
    except LrbsError as exc:
        st.session_state["at_note"] = f"error: {exc}"
        return
    st.session_state.update(
        at_lr_min=space.lr_min,
        at_lr_max=space.lr_max,
        at_batches=", ".join(map(str, space.batches)),
    )
    limit = "memory" if found["memory_limited"] else "the training set"
    st.session_state["at_note"] = (
        f"From a quick range test (steepest descent {found['centre']:.3g}) and the memory probe "
        f"(largest batch {found['largest_batch']:,}, limited by {limit})."
    )


def seeding_panel() -> None:
    latest = latest_range_test(setup)
    c1, c2 = st.columns(2)
    if latest is not None:
        c1.button("Seed the lr range from the range test", on_click=seed_from, args=latest,
                  key="at_seed_rt", help=f"From {latest[1]}")  # fmt: skip
    else:
        c1.caption("No range test of this dataset and model yet, in this tab or the history.")
    c2.button(
        "Seed from a quick range test + memory probe",
        on_click=seed_by_probe,
        key="at_seed_probe",
        help="lr: a decade around the steepest descent; batch sizes: powers of two up to the "
        "largest batch that fits in memory (or the training set)",
    )
    note = st.session_state.pop("at_note", None)
    if note and note.startswith("error: "):
        st.error(note.removeprefix("error: "))
    elif note:
        st.success(note)


# ------------------------------------------------------------------ running and watching


def start(cfg: at.TuneConfig, trials: int, workers: int, name: str, storage_url: str) -> None:
    running = st.session_state.get("at_procs")
    if running is not None and running.running:
        st.warning("A study is already running in this tab: stop it or wait for it first.")
        return
    name = name or f"{setup.data.name}-{setup.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    url = storage_url or at.default_storage()
    try:
        at.create_study(at.open_storage(url), name, setup, cfg)
        procs = at.launch_workers(url, name, trials, workers, at.log_dir_for(url))
    except LrbsError as exc:
        st.error(str(exc))
        return
    st.session_state.update(
        at_procs=procs, at_watch={"study": name, "storage": url, "trials": trials}
    )
    st.rerun()


def read_study(watch: dict):
    try:
        storage = at.open_storage(watch["storage"])
        study = at.load_study(storage, watch["study"])[0]
    except LrbsError as exc:
        st.error(str(exc))
        return None
    return study


def draw(watch: dict, running: bool) -> None:
    study = read_study(watch)
    if study is None:
        return
    trials = at.trials_frame(study)
    done = int((trials.state != "running").sum())
    if running:
        total = watch.get("trials") or max(done, 1)
        st.progress(min(1.0, done / total), text=f"{done} of {total} trials done")
    if trials.empty:
        st.info("Waiting for the first trial (workers start in a few seconds)…")
        return
    counts = trials.state.value_counts()
    st.caption(
        f"Study **{watch['study']}** in {at.safe_url(watch['storage'])}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    c1, c2 = st.columns(2)
    chart = charts.objective_chart(trials)
    c1.vega_lite_chart(spec=chart.to_dict(validate=False), width="stretch")
    c2.vega_lite_chart(spec=charts.search_space_chart(trials).to_dict(validate=False),
                       width="stretch")  # fmt: skip
    c1, c2 = st.columns(2)
    x_title = "percent of the trial's budget"
    c1.vega_lite_chart(
        spec=charts.trial_curves_chart(at.curves_frame(study), x_title).to_dict(validate=False),
        width="stretch",
    )
    imp = importances_of(watch["storage"], watch["study"], int((trials.state == "complete").sum()))
    if imp:
        c2.vega_lite_chart(spec=charts.importance_chart(imp).to_dict(validate=False),
                           width="stretch")  # fmt: skip
    else:
        c2.caption("Parameter importances appear once 5 trials have finished.")


@st.cache_data(max_entries=50, show_spinner=False)
def importances_of(storage_url: str, name: str, complete: int) -> dict | None:
    """Parameter importances, computed again only when a trial has finished (`complete` is
    the cache key), not on every redraw while workers run."""
    study = at.load_study(at.open_storage(storage_url), name)[0]
    return at.importances(study)


def use_best(best: at.Best, study: str) -> None:
    st.session_state["chosen_lr"] = best.lr
    st.session_state["chosen_lr_source"] = f"auto-tune study {study}"
    st.session_state["chosen_batch"] = best.batch_size
    st.session_state.update(ls_lr=best.lr, ls_batch=best.batch_size)
    st.session_state["at_used"] = (
        f"lr {best.lr:.4g} and batch {best.batch_size} now fill the LR sweep's 'add it' button, "
        "the batch-size page's base rate and the LR schedules page."
    )


def record(watch: dict, trials, best: at.Best | None) -> None:
    """Put a study this tab ran into the run history once, when its workers are done: its
    trials as points, the best as its result."""
    if watch.get("recorded") or watch.get("trials") is None:  # watched only, or done already
        return
    watch["recorded"] = True
    try:
        rec = recorder("autotune", {"setup": setup, "study": watch["study"]}, setup,
                       name=watch["study"])  # fmt: skip
        rec.start()
        for row in trials.to_dict("records"):
            rec.emit("trials", row)
        counts = trials.state.value_counts().to_dict()
        rec.finish("finished", {"trials": counts, "best": best.as_dict() if best else None,
                                "storage": at.safe_url(watch["storage"])})  # fmt: skip
    except LrbsError as exc:
        st.warning(f"Not saved in the run history: {exc}")


def finished(watch: dict) -> None:
    study = read_study(watch)
    if study is None:
        return
    trials = at.trials_frame(study)
    procs = st.session_state.get("at_procs")
    for line in procs.failures() if procs is not None else []:
        st.error(f"A worker failed: {line}")
    best = at.best(trials)
    record(watch, trials, best)
    st.subheader("Best configuration")
    if best is None:
        st.warning("No trial finished with a finite validation loss.")
    else:
        c = st.columns(5)
        c[0].metric("learning rate", f"{best.lr:.4g}")
        c[1].metric("batch size", f"{best.batch_size:,}")
        c[2].metric("validation loss", f"{best.value:.4f}")
        c[3].metric("optimizer", OPTIMIZER_TITLES.get(best.optimizer, best.optimizer))
        c[4].metric("trial", best.trial)
        near = at.near_best(trials)
        if len(near) > 1:
            st.caption(
                f"{len(near)} trials within 1 % of the best: lr {near.lr.min():.3g} to "
                f"{near.lr.max():.3g}, batch {near.batch_size.min():,} to "
                f"{near.batch_size.max():,}, lr/B {near.lr_over_batch.min():.2g} to "
                f"{near.lr_over_batch.max():.2g}. A band rather than a point: the rate and the "
                "batch trade off through the noise scale lr/B."
            )
        st.button("Use this", type="primary", on_click=use_best, args=(best, watch["study"]),
                  key="at_use")  # fmt: skip
        used = st.session_state.pop("at_used", None)
        if used:
            st.success(used)
    st.dataframe(
        trials,
        hide_index=True,
        width="stretch",
        column_config=result_columns(
            {
                "value": st.column_config.NumberColumn("val loss", format="%.4f"),
                "lr": st.column_config.NumberColumn(format="%.4g"),
                "lr_over_batch": st.column_config.NumberColumn("lr / B", format="%.3g"),
                "epochs": st.column_config.NumberColumn(format="%.1f"),
            }
        ),
    )
    c1, c2 = st.columns(2)
    stem = f"autotune_{watch['study']}"
    csv_download(c1, "Download the trials (CSV)", trials, f"{stem}_trials.csv", "at_csv")
    csv_download(c2, "Download what trials reported (CSV)", at.curves_frame(study),
                 f"{stem}_curves.csv", "at_csv_curves")  # fmt: skip


def watch_existing(storage_url: str) -> None:
    with st.expander("Watch a study already in the storage (e.g. one fed by other machines)"):
        try:
            names = at.study_names(at.open_storage(storage_url or at.default_storage()))
        except Exception as exc:  # an unreadable storage is a message here, not a traceback
            st.caption(f"Cannot list studies: {exc}")
            return
        if not names:
            st.caption("No studies yet.")
            return
        c1, c2 = st.columns([3, 1])
        pick = c1.selectbox("Study", names[::-1], key="at_pick")
        if c2.button("Watch", key="at_watch_btn"):
            st.session_state["at_watch"] = {
                "study": pick,
                "storage": storage_url or at.default_storage(),
                "trials": None,
            }
            st.rerun()


# ------------------------------------------------------------------ the page

chosen = inputs()
seeding_panel()
procs = st.session_state.get("at_procs")
running = procs is not None and procs.running
c1, c2, _ = st.columns([2, 1, 4])
if c1.button("Start the study", type="primary", disabled=running or chosen is None,
             key="at_start"):  # fmt: skip
    start(*chosen)
if c2.button("Stop", disabled=not running, key="at_stop"):
    procs.stop()
    st.toast("Stopping: each worker ends its current trial.")
watch_existing(chosen[4] if chosen else "")

watch = st.session_state.get("at_watch")
if watch is None:
    st.info(
        "Set the search space in the sidebar (or seed it above) and start a study; trials "
        "appear here as they finish."
    )
    st.stop()
if running:

    @st.fragment(run_every=1.0)
    def live() -> None:
        still = procs.running
        draw(watch, still)
        if not still:
            st.rerun(scope="app")

    live()
    st.stop()
draw(watch, False)
finished(watch)
