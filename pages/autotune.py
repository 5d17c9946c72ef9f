"""Auto-tune

icon: :material/tune:

Let Optuna search the learning rate and the batch size together (TPE sampling, median or
Hyperband pruning), seeded from the range test and the largest batch that fits; watch trials
arrive, see which parameter mattered, take the best. Workers on several machines can share one
study through a database.
"""

import streamlit as st

from lrbs import charts
from lrbs.core.errors import LrbsError
from lrbs.core.setup import load_tensors
from lrbs.experiments import autotune as at
from pages.common import chosen
from pages.common.job import experiment
from pages.common.live import csv_download, result_columns, show_error
from pages.common.range_test import seeding_panel
from pages.common.sidebar import (
    OPTIMIZER_TITLES,
    parse_floats,
    parse_ints,
    require_setup,
    with_int,
)
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
    "at_trials": 20,
    "at_workers": min(2, at.cores()),
    "at_budget_kind": "seconds",
    "at_budget": 5.0,
    "at_lr_min": 1e-3,
    "at_lr_max": 3.0,
    "at_batches": "16, 32, 64, 128, 256, 512",
    "at_optimizers": ["sgd"],
    "at_warmups": "0",
    "at_pruner": "median",
    "at_objective": "best",
}


def with_chosen_batch(b: int) -> str:
    """The default batch list with the chosen batch in it."""
    text = st.session_state.get("at_batches", DEFAULTS["at_batches"])
    return with_int(text, b, "batch sizes")


def inputs() -> at.Config | None:
    chosen.seed("at_lr_min", "lr", DEFAULTS["at_lr_min"], lambda lr: chosen.lr_range(lr)[0])
    chosen.seed("at_lr_max", "lr", DEFAULTS["at_lr_max"], lambda lr: chosen.lr_range(lr)[1])
    chosen.seed("at_batches", "batch", DEFAULTS["at_batches"], with_chosen_batch)
    for key, value in DEFAULTS.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Study")
        name = st.text_input("Study name", key="at_name", placeholder="blank: a new name")
        c1, c2 = st.columns(2)
        trials = c1.number_input("Trials", min_value=0, step=5, key="at_trials")
        workers = c2.number_input("Worker processes", min_value=0, step=1, key="at_workers")
        if warning := at.workers_warning(int(workers)):
            st.warning(warning)
        kind = st.radio(
            "Budget per trial", ["seconds", "epochs"], key="at_budget_kind", horizontal=True
        )
        amount = st.number_input(f"{kind.capitalize()} per trial", min_value=0.0, key="at_budget")
        st.markdown("**Search space**")
        c1, c2 = st.columns(2)
        lo = c1.number_input("Lowest lr", format="%.2e", step=None, key="at_lr_min")
        hi = c2.number_input("Highest lr", format="%.2e", step=None, key="at_lr_max")
        batches = st.text_input("Batch sizes", key="at_batches")
        if chosen.note("lr", "at_lr_min"):
            chosen.caption(("lr", "at_lr_min"), ("batch", "at_batches"))
            st.caption("The lr range: a decade centred on the chosen rate, unless changed.")
        else:
            chosen.caption(("batch", "at_batches"))
        optimizers = st.multiselect(
            "Optimizers",
            list(OPTIMIZER_TITLES),
            key="at_optimizers",
            format_func=OPTIMIZER_TITLES.get,
        )
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
        space = at.SearchSpace(
            lr_min=float(lo),
            lr_max=float(hi),
            batches=parse_ints(batches, "batch sizes"),
            optimizers=tuple(optimizers),
            warmups=parse_floats(warmups, "warm-up epochs") or (0.0,),
        )
        cfg = at.Config(
            space=space,
            seconds=float(amount) if kind == "seconds" else None,
            epochs=float(amount) if kind == "epochs" else None,
            pruner=pruner,
            objective=objective,
            seed=setup.seed,
            trials=int(trials),
            workers=int(workers),
            study=name.strip() or at.default_study_name(setup),
            storage=storage.strip() or None,
        )
        cfg.check_data(N)
        dropped = [b for b in space.batches if b > N]
        if dropped:
            st.warning(
                f"Batch size{'s' * (len(dropped) > 1)} {', '.join(map(str, dropped))} "
                f"{'are' if len(dropped) > 1 else 'is'} larger than the training set "
                f"({N:,} samples): the study leaves {'them' if len(dropped) > 1 else 'it'} out."
            )
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def seed_from(found: dict, source: str) -> None:
    centre = at.steepest(found)
    if not centre:
        st.session_state["at_note"] = f"error: {source} has no steepest-descent rate"
        return
    st.session_state["at_lr_min"], st.session_state["at_lr_max"] = at.lr_range_around(centre)
    st.session_state["at_note"] = (
        f"From {source}: a decade of learning rate around its steepest descent, {centre:.3g}."
    )


def seed_by_probe() -> None:
    """A quick range test and the memory probe, right now."""
    try:
        opts = tuple(st.session_state["at_optimizers"]) or ("sgd",)
        data = load_tensors(setup, arrays)
        space, found = at.seed_space(setup, data, at.SearchSpace(optimizers=opts))
    except LrbsError as exc:
        st.session_state["at_note"] = f"error: {exc}"
        return
    st.session_state.update(at_lr_min=space.lr_min, at_lr_max=space.lr_max)
    st.session_state["at_batches"] = ", ".join(map(str, space.batches))
    st.session_state["at_note"] = at.seeding_note(found)


def draw_study(result: at.Result, running: bool = False) -> None:
    trials = result.trials()
    if running:
        done, total = len(trials), result.planned_trials()
        st.progress(min(1.0, done / max(total, done, 1)), text=f"{done} of {total} trials done")
    if trials.empty:
        if running:
            st.info("Waiting for the first trial (workers start in a few seconds)…")
        return
    info = result.study
    counts = ", ".join(f"{v} {k}" for k, v in result.counts().items())
    st.caption(f"Study **{info.get('study')}** in {info.get('storage')}: {counts}")
    built = [
        charts.objective_chart(trials),
        charts.search_space_chart(trials),
        charts.trial_curves_chart(result.curves(), "percent of the trial's budget"),
    ]
    importance = charts.importance_chart(result.importances())
    if importance is not None:
        built.append(importance)
    cells = st.columns(2) + st.columns(2)
    for cell, chart in zip(cells, built, strict=False):
        cell.vega_lite_chart(spec=chart.to_dict(validate=False), width="stretch")
    if importance is None:  # never an empty frame: a sentence in its place
        cells[3].caption(charts.IMPORTANCES_NOTE)


def draw(snap, running: bool) -> None:
    """The study as its trials end (from the rows the run streams)."""
    draw_study(at.Result(None, snap.rows), running)
    show_error(snap)


def use_best(best: at.Best, study: str) -> None:
    chosen.use("lr", best.lr, f"auto-tune study {study}")
    chosen.use("batch", best.batch_size, f"auto-tune study {study}")
    st.session_state["at_used"] = (
        f"lr {best.lr:.4g} and batch {best.batch_size} are now the defaults of every page's "
        "learning rate and batch size (ranges centred on them)."
    )


def finished(result: at.Result) -> None:
    if result.message:
        st.warning(result.message)
    st.subheader("Best configuration")
    best = result.best()
    name = result.study.get("study", "")
    if best is None:
        st.warning("No trial finished with a finite validation loss.")
    else:
        c = st.columns(5)
        c[0].metric("learning rate", f"{best.lr:.4g}")
        c[1].metric("batch size", f"{best.batch_size:,}")
        c[2].metric("validation loss", f"{best.value:.4f}")
        c[3].metric("optimizer", OPTIMIZER_TITLES.get(best.optimizer, best.optimizer))
        c[4].metric("trial", best.trial)
        band = result.band_text()
        if band:
            st.caption(band)
        st.caption(result.noise_text())
        st.button("Use this", type="primary", on_click=use_best, args=(best, name), key="at_use")
        used = st.session_state.pop("at_used", None)
        if used:
            st.success(used)
    number = st.column_config.NumberColumn
    formats = {
        "value": number("val loss", format="%.4f"),
        "lr": number(format="%.4g"),
        "lr_over_batch": number("lr / B", format="%.3g"),
        "epochs": number(format="%.1f"),
    }
    tables = result.tables()
    stem = f"autotune_{name}"
    labels = {"trials": "the trials", "curves": "what trials reported"}
    for cell, (what, frame) in zip(st.columns(2), tables.items(), strict=True):
        key = "at_csv" if what == "trials" else f"at_csv_{what}"
        csv_download(cell, f"Download {labels[what]} (CSV)", frame, f"{stem}_{what}.csv", key)
    st.dataframe(
        tables["trials"], hide_index=True, width="stretch", column_config=result_columns(formats)
    )


def watch_existing(storage_url: str | None, running: bool) -> None:
    with st.expander("Watch a study already in the storage (e.g. one fed by other machines)"):
        try:
            names = at.study_names(at.open_storage(storage_url))
        except Exception as exc:  # an unreadable storage is a message here, not a traceback
            st.caption(f"Cannot list studies: {exc}")
            return
        if not names:
            st.caption("No studies yet.")
            return
        c1, c2 = st.columns([3, 1])
        pick = c1.selectbox("Study", names[::-1], key="at_pick")
        if c2.button("Watch", key="at_watch_btn", disabled=running):
            st.session_state["at_watch"] = {"study": pick, "storage": storage_url}
            st.session_state.pop("at_job", None)  # the watched study takes the finished one's place
            st.rerun()


cfg = inputs()
seeding_panel(
    setup,
    "at_note",
    ("Seed the lr range from the range test", "at_seed_rt", seed_from),
    (
        "Seed from a quick range test + memory probe",
        "at_seed_probe",
        "lr: a decade around the steepest descent; batch sizes: powers of two up to the "
        "largest batch that fits in memory (or the training set)",
        seed_by_probe,
    ),
)
result = experiment(
    "at_job", at, setup, cfg, draw, label="Start the study", name=cfg.study if cfg else ""
)
job = st.session_state.get("at_job")
watch_existing(cfg.storage if cfg else None, job is not None and not job.done)
if result is None and job is None and st.session_state.get("at_watch"):
    watch = st.session_state["at_watch"]
    try:
        result = at.study_result(watch["storage"], watch["study"])
    except LrbsError as exc:
        st.error(str(exc))
        st.stop()
    draw_study(result)
if result is not None:
    finished(result)
elif job is None:
    st.info(
        "Set the search space in the sidebar (or seed it above) and start a study; trials "
        "appear here as they finish."
    )
