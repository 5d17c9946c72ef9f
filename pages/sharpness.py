"""The edge of stability

icon: :material/landscape:

The 1-D rule lr < 2/c holds on a real network through the sharpness, the top eigenvalue of the
loss Hessian. Under full-batch gradient descent the sharpness rises while training goes on
until it reaches 2/lr, then hovers there while the loss keeps falling: the edge of stability.
Measure it, and read off the largest stable rate at initialisation, 2/λ_max.
"""

import streamlit as st

from lrbs.charts import sharpness as charts
from lrbs.core.errors import LrbsError
from lrbs.experiments import sharpness as sh
from lrbs.experiments.sweeps import SweptOptim
from pages.common import chosen
from pages.common.job import experiment
from pages.common.live import csv_download, events_frame, live_chart, results_table, show_error
from pages.common.range_test import latest_range_test
from pages.common.sidebar import optimizer_inputs, parse_floats, require_setup
from pages.common.state import default, page_start

page_start()

st.title("The edge of stability")
st.markdown(
    "On the quadratic c/2·x², gradient descent converges if and only if **lr < 2/c**. A network "
    "has no single curvature, but near any point its loss is a quadratic whose steepest "
    "direction has curvature **λ_max**, the top eigenvalue of the loss Hessian (the "
    "*sharpness*). Cohen et al. (2021): under full-batch GD the sharpness rises as training "
    "goes on (*progressive sharpening*) until it reaches **2/lr**, then hovers there while the "
    "loss keeps falling, not monotonically: the *edge of stability*. With momentum β the "
    "limit is (2 + 2β)/lr; for Adam the preconditioned sharpness settles near 38/lr "
    "(Cohen et al. 2022). Above 2/λ_max at the start, the loss may spike early and the "
    "curvature drop until the step fits (the *catapult*, Lewkowycz et al. 2020)."
)

setup, arrays = require_setup()
N = arrays.n_train


def inputs() -> sh.Config | None:
    chosen.seed(
        "sh_lrs",
        "lr",
        ", ".join(f"{lr:g}" for lr in sh.DEFAULT_LRS),
        lambda c: f"{c / 2:.3g}, {c:.3g}, {2 * c:.3g}",
    )
    for key, value in {
        "sh_subset": min(2000, N),
        "sh_batch": 0,
        "sh_steps": 300,
        "sh_every": 10,
        "sh_iterations": 20,
    }.items():
        default(key, value)
    with st.sidebar:
        st.subheader("Sharpness")
        lrs = st.text_input("Learning rates", key="sh_lrs", help="comma-separated")
        if chosen.note("lr"):
            chosen.caption(("lr", "sh_lrs"))
            st.caption("The rates: half, once and twice it, unless changed.")
        opt, momentum = optimizer_inputs("sh")
        subset = st.number_input(
            "Training samples (subset)", min_value=0, step=500, key="sh_subset"
        )
        batch = st.number_input("Batch size (0 = full batch)", min_value=0, step=64, key="sh_batch")
        steps = st.number_input("Steps", min_value=0, step=100, key="sh_steps")
        every = st.number_input("Measure every k steps", min_value=0, step=5, key="sh_every")
        iterations = st.number_input(
            "Power-iteration steps", min_value=0, step=5, key="sh_iterations"
        )
    if subset > N:
        st.caption(f"The training set has {N:,} samples: the subset is capped to {N:,}.")
    try:
        return sh.Config(
            lrs=parse_floats(lrs, "learning rates"),
            optim=SweptOptim(opt, momentum=momentum),
            subset=int(subset),
            batch_size=int(batch) or None,
            steps=int(steps),
            every=int(every),
            iterations=int(iterations),
            seed=setup.seed,
        )
    except LrbsError as exc:
        st.error(str(exc))
        return None


def draw(snap, running: bool) -> None:
    rows = snap.table("sharpness")
    if running:
        st.progress(snap.progress, text=f"Training and measuring: {len(rows)} measurements")
    if rows.empty:
        show_error(snap)
        return
    live_chart(st, charts.sharpness_chart(rows), running)
    runs = list(dict.fromkeys(rows.run))
    live_chart(st, charts.loss_chart(events_frame(snap), runs), running)
    show_error(snap)


cfg = inputs()
result = experiment("sh_job", sh, setup, cfg, draw, label="Train and measure")
if result is None:
    if "sh_job" not in st.session_state:
        st.info("Choose the rates and press the button: each trains from one initialisation.")
    st.stop()

summary = result.summary()
if result.stopped:
    st.warning("Stopped: what was measured before the stop is shown.")

st.subheader("The largest stable rate at initialisation")
lam0, limit0 = summary["lambda0"], summary["max_stable_lr"]
if limit0 is None:
    st.warning("No sharpness was measured at initialisation.")
else:
    momentum = result.config.optim.name == "momentum"
    beta = result.config.optim.momentum
    lines = [
        f"- **The 1-D page's law**, lr < 2/c, with c = λ_max(θ₀) = {lam0:.4g}: "
        f"**2/λ_max = {limit0:.4g}**"
        + (
            f" (with momentum β = {beta:g}: (2 + 2β)/λ_max = "
            f"{summary['max_stable_lr_momentum']:.4g})"
            if momentum
            else ""
        )
    ]
    found = latest_range_test(setup)
    if found is not None:
        sugg, source = found
        lines.append(
            f"- **The range test's maximum usable rate** ({source}): "
            f"{sugg['max_usable']:.4g}, {sugg['max_usable'] / limit0:.2f} × 2/λ_max"
        )
    else:
        lines.append(
            "- The range test's maximum usable rate: none in the history for this dataset and "
            "model (run one on the learning-rate page to compare)."
        )
    lines.append("- **Training itself**: the rates below, each labelled with what happened to it.")
    st.markdown("The same number, measured three ways:\n\n" + "\n".join(lines))

table = result.table()
results_table(
    table,
    {
        "settled_ratio": st.column_config.NumberColumn("settled / limit", format="%.2f"),
        "sharpness_init": st.column_config.NumberColumn("λ_max at init", format="%.4g"),
        "sharpness_settled": st.column_config.NumberColumn("λ_max settled", format="%.4g"),
        "max_loss_spike": st.column_config.NumberColumn("max loss / initial", format="%.2f"),
    },
)
for row in table.itertuples():
    what = row.labels or "none of the above"
    ratio = "n/a" if row.settled_ratio is None else f"{row.settled_ratio:.2f}"
    st.markdown(
        f"**lr = {row.lr:g}** (limit {row.limit:.4g}): {what}; the sharpness settled at "
        f"{ratio} × the limit over the last quarter."
    )

rows = result.measurements()
if not rows.empty:  # the sharpness and the loss are drawn above, by the job's view
    st.altair_chart(charts.ratio_chart(rows, sh.EDGE_BAND), width="stretch")
cost = result.cost()
if cost["measure_share"] is not None:
    st.caption(
        f"Measuring cost {cost['measure_seconds']:.1f} s, "
        f"{100 * cost['measure_share']:.0f} % of training and measuring "
        f"({result.config.iterations} Hessian-vector products at most per measurement)."
    )
for note in result.notes():
    st.caption(note)
c1, c2 = st.columns(2)
csv_download(c1, "Download the measurements (CSV)", rows, "sharpness.csv", "sh_csv")
csv_download(c2, "Download the table (CSV)", table, "sharpness_table.csv", "sh_csv_t")
