"""Gradient descent in 1-D

icon: :material/show_chart:

Every learning-rate question starts here. Watch gradient descent step down a 1-D loss with a
rate that is too small (it crawls), one that is good (it lands), and one that is too large (it
overshoots further each step and diverges). On a quadratic the boundary is exact: GD converges
if and only if lr < 2 / curvature.
"""

import streamlit as st

from lrbs import charts
from lrbs.core.errors import LrbsError
from lrbs.experiments import gd1d
from pages.common.live import csv_download
from pages.common.state import check_url, default, page_start, within

page_start()

st.title("Gradient descent on a 1-D loss")
st.markdown(
    "Each step moves against the slope: **x ← x − lr · f′(x)**. A small learning rate crawls, "
    "a good one lands in a few steps, and a too-large one overshoots the minimum by more than "
    "it started from, so every step lands further away and the loss grows without bound."
)

LOSS_TITLES = {
    "quadratic": "Quadratic (adjustable curvature)",
    "two-minima": "Non-convex: two minima",
    "steep-flat": "Steep on one side, flat on the other",
}
for key, value in {
    "gd_loss": "quadratic",
    "gd_curvature": 2.0,
    "gd_start": 3.0,
    "gd_steps": 20,
    "gd_lr1": 0.1,
    "gd_lr2": 0.5,
    "gd_lr3": 1.1,
    "gd_momentum": 0.0,
}.items():
    default(key, value)
within("gd_curvature", 0.1, 10.0)
within("gd_momentum", 0.0, 0.95)

with st.sidebar:
    st.subheader("The loss")
    loss_name = st.selectbox("Loss", gd1d.LOSSES, key="gd_loss", format_func=LOSS_TITLES.get)
    curvature = 2.0
    if loss_name == "quadratic":
        curvature = st.slider("Curvature c", 0.1, 10.0, step=0.1, key="gd_curvature")
    start = st.number_input("Start point x₀", -10.0, 10.0, step=0.5, key="gd_start")
    steps = st.number_input("Steps", min_value=1, max_value=500, step=1, key="gd_steps")
    st.subheader("Learning rates")
    st.caption("Up to three, drawn side by side; leave one empty to draw fewer.")
    lrs = [
        st.number_input(
            label, value=None, step=0.01, format="%.4f", key=key, placeholder="empty: not drawn"
        )
        for label, key in (
            ("Learning rate 1", "gd_lr1"),
            ("Learning rate 2", "gd_lr2"),
            ("Learning rate 3", "gd_lr3"),
        )
    ]
    momentum = st.slider(
        "Heavy-ball momentum β",
        0.0,
        0.95,
        step=0.05,
        key="gd_momentum",
        help="x ← x − lr·f′(x) + β·(x − x_prev). 0 is plain gradient descent.",
    )

check_url()
lrs = [float(v) for v in lrs if v is not None]
try:
    cfg = gd1d.Config(
        loss=loss_name,
        curvature=curvature,
        start=float(start),
        steps=int(steps),
        lrs=tuple(lrs),
        momentum=momentum,
    )
except LrbsError as exc:
    st.error(str(exc))
    st.stop()

loss = gd1d.make_loss(cfg.loss, cfg.curvature)
result = gd1d.run(None, cfg)
paths = result.paths()
info = result.summary()
limit = info["stability_limit"]

if cfg.loss == "quadratic":
    fastest = (
        f"fastest at lr = 1/c = **{info['best_lr']:.4g}** (one step to the minimum)"
        if cfg.momentum == 0
        else f"with momentum β = {cfg.momentum:g} the limit is (2 + 2β)/c"
    )
    st.info(
        f"On {loss.title}, gradient descent converges **if and only if lr < "
        f"{'(2 + 2β)' if cfg.momentum else '2'}/c = {limit:.4g}**; {fastest}. "
        "Between 1/c and the limit it overshoots and oscillates but still closes in."
    )
else:
    st.info(
        f"{loss.title} has curvature f″ = {loss.curvature_at_min:.3g} at its lowest minimum, so "
        f"near it GD is stable for lr < {limit:.3g} (the quadratic rule applied locally); far "
        "from the minimum the slope changes and so does the safe step."
    )
st.altair_chart(
    charts.stability_chart(
        [p.lr for p in paths], [p.status for p in paths], limit, info["best_lr"]
    ),
    width="stretch",
)

frame = result.tables()["paths"]
lo, hi = loss.view
if cfg.loss == "quadratic":
    half = max(abs(cfg.start) * 1.3, 1.0)
    lo, hi = -half, half
else:
    lo, hi = min(lo, cfg.start - 0.3), max(hi, cfg.start + 0.3)
curve = gd1d.curve_frame(loss, lo, hi)
cols = st.columns(len(paths))
for col, path in zip(cols, paths, strict=True):
    with col:
        verdict = {
            "converged": ":green[converged]",
            "converging": ":blue[converging]",
            "oscillating": ":orange[oscillating]",
            "diverged": ":red[diverged]",
        }[path.status]
        st.markdown(f"**lr = {path.lr:g}**: {verdict} · {path.lr / limit:.2f} × the limit")
        part = frame[frame.lr == path.lr]
        st.altair_chart(charts.gd_path_chart(curve, part, loss.minima), width="stretch")
        outside = int(((part.x < lo) | (part.x > hi)).sum())
        if path.escaped_at is not None:
            st.caption(f"Left for good at step {path.escaped_at}: |x| passed {gd1d.ESCAPE:g}.")
        elif outside:
            st.caption(
                f"{outside} step(s) land outside the picture: red triangles at its edge, "
                "labelled with where they really are."
            )
        st.caption(f"final loss {path.final_loss:.4g} after {len(path.x) - 1} steps")

f_min = float(min(loss.f(m) for m in loss.minima))
st.altair_chart(charts.gd_loss_chart(frame, f_min), width="stretch")
csv_download(st, "Download the paths (CSV)", frame, "gd1d_paths.csv", "gd_csv")
