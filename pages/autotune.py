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
from lrbs.experiments import autotune as at
from pages.common import chosen, quick_jobs
from pages.common.autotune_inputs import inputs, probe_runs, seed_from, use_probe
from pages.common.job import experiment
from pages.common.live import csv_download, result_columns, show_error
from pages.common.range_test import seeding_panel
from pages.common.sidebar import OPTIMIZER_TITLES, require_setup
from pages.common.state import page_start

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


quick_jobs.take("at_seed_probe_job", "at_note", use_probe)  # before the widgets
cfg = inputs(setup, N)
seeding_panel(
    setup,
    "at_note",
    ("Seed the lr range from the range test", "at_seed_rt", seed_from),
    (
        "Seed from a quick range test + memory probe",
        "at_seed_probe",
        "lr: a decade around the steepest descent; batch sizes: powers of two up to the "
        "largest batch that fits in memory (or the training set)",
        lambda: probe_runs(N),
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
