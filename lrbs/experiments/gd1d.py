"""Gradient descent on a 1-D loss: the picture behind every learning-rate question.

Pure numpy. A path is x_{t+1} = x_t - lr * f'(x_t) + beta * (x_t - x_{t-1}) (heavy-ball momentum
when beta > 0). On the quadratic f = c/2 x^2 plain GD converges iff 0 < lr < 2/c, fastest at
lr = 1/c; with momentum iff 0 < lr*c < 2 + 2*beta.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink

ESCAPE = 1e6  # |x| beyond this: the path has left for good
PATH_COLUMNS = ["lr", "step", "x", "loss", "status"]
LOSSES = ("quadratic", "two-minima", "steep-flat")


@dataclass(frozen=True)
class Loss1D:
    name: str
    title: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]
    minima: tuple[float, ...]  # where f is minimal (global first)
    curvature_at_min: float  # f'' at the global minimum: sets the local stability limit
    view: tuple[float, float]  # x range worth drawing


def make_loss(name: str, curvature: float = 2.0) -> Loss1D:
    """The three losses of the page. `curvature` scales the quadratic; others have fixed shapes."""
    if name == "quadratic":
        c = positive_number("curvature", curvature)
        return Loss1D(
            name="quadratic",
            title=f"f(x) = ½·c·x² with c = {c:g}",
            f=lambda x: 0.5 * c * x**2,
            df=lambda x: c * x,
            minima=(0.0,),
            curvature_at_min=c,
            view=(-4.0, 4.0),
        )
    if name == "two-minima":
        # x^4/4 - x^2 + 0.3x: a deep minimum on the left, a shallow one on the right
        roots = [r.real for r in np.roots([1, 0, -2, 0.3]) if abs(r.imag) < 1e-12]
        f = lambda x: x**4 / 4 - x**2 + 0.3 * x  # noqa: E731
        minima = sorted((r for r in roots if 3 * r**2 - 2 > 0), key=f)
        return Loss1D(
            name="two-minima",
            title="f(x) = x⁴/4 − x² + 0.3x",
            f=f,
            df=lambda x: x**3 - 2 * x + 0.3,
            minima=tuple(float(m) for m in minima),
            curvature_at_min=float(3 * minima[0] ** 2 - 2),
            view=(-2.6, 2.6),
        )
    if name == "steep-flat":
        # exp(x) - x - 1: exponentially steep for x > 0, a gentle slope of -1 for x < 0
        return Loss1D(
            name="steep-flat",
            title="f(x) = eˣ − x − 1",
            f=lambda x: np.exp(np.minimum(x, 700)) - x - 1,
            df=lambda x: np.exp(np.minimum(x, 700)) - 1,
            minima=(0.0,),
            curvature_at_min=1.0,
            view=(-4.0, 3.0),
        )
    raise ConfigError(f"unknown 1-D loss {name!r}; choose quadratic, two-minima or steep-flat")


KIND = "gd1d"
USES_SETUP = False  # no data, no model: the loss is a formula


@dataclass(frozen=True, kw_only=True)
class Config:
    loss: str = option("quadratic", help="the 1-D loss: " + ", ".join(LOSSES))
    curvature: float = option(2.0, help="curvature c of the quadratic")
    start: float = option(3.0, help="start point x0")
    steps: int = option(20, low=1, high=10000, help="gradient steps")
    lrs: tuple[float, ...] = option(
        (0.1, 0.5, 1.1), flag="--lr", label="learning rate", help="learning rates"
    )
    momentum: float = option(0.0, help="heavy-ball momentum beta")

    def __post_init__(self) -> None:
        check(self)
        make_loss(self.loss, self.curvature)
        positive_int("steps", self.steps)
        require(len(self.lrs) >= 1, "give at least one learning rate")
        for lr in self.lrs:
            positive_number("learning rate", lr)
        require(len(set(self.lrs)) == len(self.lrs), "the learning rates repeat a value")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class GDPath:
    lr: float
    x: np.ndarray  # x_0 .. x_T (shorter if the path escaped)
    loss: np.ndarray
    status: str  # "converged", "converging", "oscillating" or "diverged"
    final_loss: float
    escaped_at: int | None  # first step that left |x| <= ESCAPE


def stability_limit(curvature: float, momentum: float = 0.0) -> float:
    """Largest learning rate for which GD (heavy ball) converges on c/2 x^2."""
    return (2 + 2 * momentum) / curvature


def best_lr(curvature: float) -> float:
    """Plain GD on c/2 x^2 lands on the minimum in one step at lr = 1/c."""
    return 1 / curvature


def descend(loss: Loss1D, start: float, lr: float, steps: int, momentum: float = 0.0) -> GDPath:
    xs = [float(start)]
    prev = float(start)
    escaped_at = None
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            x = xs[-1]
            nxt = x - lr * float(loss.df(np.float64(x))) + momentum * (x - prev)
            prev = x
            xs.append(nxt)
            if not math.isfinite(nxt) or abs(nxt) > ESCAPE:
                escaped_at = t + 1
                break
        x = np.array(xs)
        f = loss.f(x)
    return GDPath(
        lr=lr,
        x=x,
        loss=f,
        status=_status(loss, x, f, escaped_at),
        final_loss=float(f[-1]),
        escaped_at=escaped_at,
    )


def _status(loss: Loss1D, x: np.ndarray, f: np.ndarray, escaped_at: int | None) -> str:
    """converged (at a minimum), converging (still closing in), oscillating (bouncing at a
    steady distance) or diverged (flying off)."""
    if escaped_at is not None or not np.isfinite(f[-1]):
        return "diverged"
    m = min(loss.minima, key=lambda m: abs(x[-1] - m))
    err = np.abs(x - m)
    if err[-1] < 1e-4:
        return "converged"
    k = min(4, (len(x) - 1) // 2)
    if k == 0:
        return "converging"
    # compare the largest distance of the last k steps with the k before: robust to bouncing
    ratio = err[-k:].max() / max(err[-2 * k : -k].max(), 1e-300)
    if ratio > 1.01 and f[-1] > f[0]:
        return "diverged"
    if ratio < 0.99:
        return "converging"
    return "oscillating"


def descend_all(cfg: Config) -> list[GDPath]:
    loss = make_loss(cfg.loss, cfg.curvature)
    return [descend(loss, cfg.start, lr, cfg.steps, cfg.momentum) for lr in cfg.lrs]


def run(setup: None, config: Config, sink: Sink | None = None, stop=None) -> Result:
    """Every rate's path, streamed as one "paths" row per (lr, step)."""
    rows, sink = collect(sink)
    paths = descend_all(config)
    for i, path in enumerate(paths):
        for row in paths_frame([path]).to_dict("records"):
            sink.emit("paths", row)
        sink.progress((i + 1) / len(paths), f"lr={path.lr:g}")
    return Result(config, rows.rows)


@dataclass(frozen=True)
class Result(experiment.Result):
    def paths(self) -> list[GDPath]:
        loss = make_loss(self.config.loss, self.config.curvature)
        return [
            descend(loss, self.config.start, lr, self.config.steps, self.config.momentum)
            for lr in self.config.lrs
        ]  # exact and cheap: recomputed, not parsed back

    def summary(self) -> dict:
        return summary(self.config, self.paths())

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"paths": self.frame("paths", PATH_COLUMNS)}

    def report(self) -> str:
        out = self.summary()
        lines = [f"{self.config.loss}: stability limit lr < {out['stability_limit']:.4g}"]
        lines += [
            f"  lr={r['lr']:<8g} {r['status']:<12} final loss {r['final_loss']:.4g}"
            for r in out["runs"]
        ]
        return "\n".join(lines)


def paths_frame(paths: list[GDPath]) -> pd.DataFrame:
    """One row per (lr, step): the CSV the page offers."""
    rows = [
        {"lr": p.lr, "step": t, "x": float(x), "loss": float(f), "status": p.status}
        for p in paths
        for t, (x, f) in enumerate(zip(p.x, p.loss, strict=True))
    ]
    return pd.DataFrame(rows, columns=PATH_COLUMNS)


def curve_frame(loss: Loss1D, lo: float, hi: float, n: int = 400) -> pd.DataFrame:
    x = np.linspace(lo, hi, n)
    return pd.DataFrame({"x": x, "loss": loss.f(x)})


def summary(cfg: Config, paths: list[GDPath]) -> dict:
    """Headline figures: per lr the final loss and status; the stability limit."""
    loss = make_loss(cfg.loss, cfg.curvature)
    limit = stability_limit(loss.curvature_at_min, cfg.momentum)
    return {
        "loss": cfg.loss,
        "curvature": loss.curvature_at_min,
        "momentum": cfg.momentum,
        "stability_limit": limit,
        "limit_is_exact": cfg.loss == "quadratic",
        "best_lr": best_lr(loss.curvature_at_min) if cfg.momentum == 0 else None,
        "runs": [
            {
                "lr": p.lr,
                "final_loss": p.final_loss,
                "status": p.status,
                "steps": len(p.x) - 1,
                "lr_over_limit": p.lr / limit,
            }
            for p in paths
        ],
    }
