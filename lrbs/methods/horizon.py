"""The horizon rule: the best constant learning rate depends on how long one trains, and a
rate confirmed over a short sweep is carried to a longer training by lr ~ t^exponent.

lr* ~ t^(-1/2) (HORIZON_EXPONENT) is the constant step that is best for a horizon of t noisy
steps (the minimax rate of stochastic gradient descent on convex losses); on the models here the
best constant rate measured t^-0.60 to t^-0.66 between a sweep's length and 4-13x longer
(bench/RESULTS.md, section 8). The evidence inside a sweep is the best rate at each of its
checkpoints (`checkpoint_bests`), the slope through them (`measured_exponent`). Plain numbers
and frames: no model, no loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

HORIZON_EXPONENT = -0.5


def refined_best(lrs, losses) -> float:
    """The rate of lowest loss, refined between the grid's rates: the vertex of the parabola
    through the lowest point and its two neighbours in log(lr), kept between those neighbours
    (the grid's best itself at an edge, or where the three do not curve upwards)."""
    lrs = np.asarray(lrs, float)
    x, y = np.log(lrs), np.asarray(losses, float)
    y = np.where(np.isfinite(y), y, np.inf)
    i = int(np.argmin(y))
    if not np.isfinite(y[i]) or i in (0, len(x) - 1) or not np.isfinite(y[[i - 1, i + 1]]).all():
        return float(lrs[i])
    a, b, _ = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    if a <= 0:
        return float(lrs[i])
    return float(np.exp(np.clip(-b / (2 * a), x[i - 1], x[i + 1])))


def horizon_exponent(measured: float | None) -> float:
    """The exponent a rate is carried by: the square-root rule's, or the one measured over the
    sweep's own checkpoints where the best rate fell faster than that (down to -1, rate x
    updates constant: the regime where a longer training overfits unless its rate falls in
    proportion, and which a longer training only goes deeper into). A shallower measured fall
    is no evidence that the rate holds: early on, stability caps the best rate."""
    if measured is None or not math.isfinite(measured):
        return HORIZON_EXPONENT
    return float(max(-1.0, min(HORIZON_EXPONENT, measured)))


def carried_from(swept: int, planned: int, epoch: float | None = None) -> float:
    """Where a carry starts: the sweep's length, or one epoch where the sweep was shorter (never
    past the planned length). Within the first epoch the best constant rate barely moves: on
    Fashion-MNIST it measured 0.0155 at 100 updates and 0.0141 at 1,200 (an epoch is 938), then
    0.0064 at 9,600 (bench/horizon.py); carried from 100 updates by the square-root rule it came
    out 4x too low, from one epoch 1.3x."""
    if epoch is None or not epoch > 0:
        return float(swept)
    return float(max(swept, min(epoch, planned)))


def carry_factor(swept: float, planned: int, exponent: float = HORIZON_EXPONENT) -> float:
    """What a rate confirmed over `swept` updates is multiplied by for a training of `planned`:
    (planned / swept)^exponent."""
    return float((planned / swept) ** exponent)


def checkpoint_bests(curves: pd.DataFrame, swept: int) -> pd.DataFrame:
    """The evidence for the horizon rule from every run's checkpoints (columns lr, step,
    val_loss, one row per seed and checkpoint): at each checkpoint from a quarter of the sweep
    on (past the first transient), the refined best rate of the mean loss over seeds (a rate
    that diverged, or has no score there, counts as infinite)."""
    points = []
    if not curves.empty:
        d = curves[curves.step >= swept / 4].copy()
        d["val_loss"] = pd.to_numeric(d.val_loss, errors="coerce").astype(float)
        lrs = np.sort(curves.lr.unique())
        for step, part in d.groupby("step"):
            mean = part.groupby("lr").val_loss.mean().reindex(lrs)
            mean = mean.where(np.isfinite(mean), np.inf)
            if np.isfinite(mean).any():
                points.append({"step": int(step), "lr": refined_best(lrs, mean.to_numpy())})
    return pd.DataFrame(points, columns=["step", "lr"])


def measured_exponent(points: pd.DataFrame) -> float | None:
    """The slope of log(best rate) on log(updates) over the checkpoints (None with fewer than
    three): how the best rate moved inside the sweep, shown beside the rule."""
    if len(points) < 3 or points.step.nunique() < 3:
        return None
    return float(np.polyfit(np.log(points.step), np.log(points.lr), 1)[0])
