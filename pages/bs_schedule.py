"""Batch-size scheduling

icon: :material/trending_up:

Don't decay the learning rate, increase the batch size (Smith et al. 2017): decay, growing
batches, a hybrid and seed 004's on-plateau recipe side by side from the same weights, with the
lr, batch and noise scale each one used, and the updates it cost.
"""

import streamlit as st

from lrbs import charts
from lrbs.charts.schedules import per_epoch_chart
from lrbs.core.errors import LrbsError
from lrbs.core.loop import OptimSpec
from lrbs.experiments import bs_schedule as bss
from pages.common import chosen
from pages.common.job import finished
from pages.common.live import downloads, live_chart, results_table, show_error
from pages.common.sidebar import optimizer_inputs, parse_ints, require_setup
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


def inputs() -> bss.Config | None:
    chosen.seed("bq_lr", "lr", 0.1)
    chosen.seed("bq_batch", "batch", 128)
    for key, value in {
        "bq_regimes": list(bss.REGIMES),
        "bq_epochs": 15,
        "bq_milestones": "5, 10",
        "bq_factor": 5.0,
        "bq_patience": 2,
        "bq_hybrid": 1,
        "bq_repeats": 1,
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
        chosen.caption(("lr", "bq_lr"), ("batch", "bq_batch"))
        opt, momentum = optimizer_inputs("bq", "momentum")
        repeats = st.number_input(
            "Repeats (seeds per regime)",
            min_value=1,
            max_value=10,
            key="bq_repeats",
            help="The paper's claim is judged only over repeats: with one seed the verdict "
            "cannot tell a difference from the noise.",
        )
        with st.expander("Hybrid and plateau"):
            hybrid = st.number_input(
                "Hybrid: milestones that grow the batch", min_value=0, key="bq_hybrid"
            )
            patience = st.number_input("Plateau: patience (epochs)", min_value=0, key="bq_patience")
    try:
        ms = parse_ints(milestones, "milestones (whole epochs)")
        cfg = bss.Config(
            regimes=tuple(regimes),
            epochs=int(epochs),
            milestones=ms,
            factor=float(factor),
            optim=OptimSpec(name=opt, lr=float(lr), momentum=momentum),
            batch_size=int(batch),
            hybrid_grow=int(hybrid),
            patience=int(patience),
            seed=setup.seed,
            repeats=int(repeats),
        )
        cfg.fits(N)
        return cfg
    except LrbsError as exc:
        st.error(str(exc))
        return None


def draw(snap, running: bool) -> None:
    done = snap.rows.get("runs", [])
    if running:
        st.progress(snap.progress, text=f"{len(done)} regimes done")
    live = bss.Result(cfg or bss.Config(), snap.rows)
    events = live.events()
    if events.empty:
        show_error(snap)
        return
    x = st.session_state.get("bq_x", "epoch")
    domain = [r for r in bss.REGIMES if r in set(events.run_id)]
    evals = events[events.kind == "eval"]
    val = charts.repeats_chart(evals, x, "val_loss", "Validation loss", domain=domain)
    train_rows = events[events.kind == "train"]
    train = charts.repeats_chart(train_rows, x, "loss", "Training loss", domain=domain)
    c1, c2 = st.columns(2)
    live_chart(c1, val, running)
    live_chart(c2, train, running)
    epochs = live.per_epoch_shown()
    domain = [r for r in bss.REGIMES if r in set(epochs.run_id)]
    # one per row, full width: three side by side were too small to read
    live_chart(st, per_epoch_chart(epochs, "lr", "Learning rate", domain), running)
    live_chart(st, per_epoch_chart(epochs, "batch_size", "Batch size", domain), running)
    noise = per_epoch_chart(epochs, "noise_scale", "Noise scale g = lr/(1−m)·N/B", domain)
    live_chart(st, noise, running)
    show_error(snap)


cfg = inputs()
if cfg is not None:
    with st.expander("The plan: lr, batch and noise scale per epoch (before training)"):
        st.dataframe(
            bss.plan(cfg, N).drop(columns="start"), hide_index=True, width="stretch", height=240
        )
        st.caption(
            "'plateau' is not planned: it reacts to the validation loss as it trains. "
            f"Its batch may grow up to N/10 = {N // 10:,}."
        )
    if cap := cfg.plateau_cap(N):
        st.warning(cap)

result = finished(
    "bq_job",
    bss,
    setup,
    cfg,
    draw,
    label="Train the regimes",
    x_key="bq_x",
    hint="Pick the regimes in the sidebar and train them; curves stream in as they go.",
)

table = result.table()
results_table(
    table,
    {
        "val_loss_vs_decay": st.column_config.NumberColumn("Δ val loss vs decay", format="%+.4f"),
        "updates_vs_decay": st.column_config.NumberColumn("updates vs decay", format="%.2f×"),
        "val_loss_std": st.column_config.NumberColumn("val loss std", format="%.4f"),
    },
)
st.markdown(f"**Verdict.** {result.verdict()}")
for note in result.notes():
    st.caption(note)
downloads("bs_schedule", "bq", result.events(), table)
