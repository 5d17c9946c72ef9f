"""The fits of the learning-rate x batch-size map, as pure functions of tables (no training).

- `lr_grid`: a log-spaced grid of rates for one batch size, centred where the scaling rules
  point from a base rate at a base batch.
- `ridge`: the best rate per batch (interpolated on the log grid) and the band of rates whose
  loss is within noise of the best, the noise taken from the spread over seeds.
- `fit_alpha`: the exponent alpha of lr_opt ~ B^alpha over the batches where a power law
  holds (from the smallest batch up to where the ridge bends away), with an interval.
- `fit_eps_opt`: McCandlish et al.'s eps_opt(B) = eps_max / (1 + B_noise / B) on the ridge.
- `fit_steps`: steps-to-target S(B) = S_min (1 + B_noise / B), so B_crit = B_noise there, and
  the three regimes of Shallue et al. 2019 around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrbs.core.errors import require
from lrbs.methods.noise import fit_tradeoff

RULE_ALPHAS = {"linear": 1.0, "sqrt": 0.5}
CENTRES = ("between", "linear", "sqrt", "fixed")
NOISE_SIGMAS = 2.0  # "within noise": a difference inside 2 standard errors of the difference
REGIMES = ("perfect scaling", "diminishing returns", "maximal data parallelism")


def centre_lr(base_lr: float, base_batch: int, batch: int, centre: str) -> float:
    """Where the rules point at `batch`: linear (x k), sqrt (x sqrt k), fixed, or between
    (the geometric mean of linear and sqrt, x k^0.75), so one grid covers both rules."""
    k = batch / base_batch
    alpha = {"linear": 1.0, "sqrt": 0.5, "fixed": 0.0, "between": 0.75}[centre]
    return base_lr * k**alpha


def lr_grid(
    base_lr: float, base_batch: int, batch: int, *, centre: str, rates: int, decades: float
) -> tuple[float, ...]:
    """`rates` log-spaced rates spanning `decades` around the rules' centre for `batch`."""
    mid = centre_lr(base_lr, base_batch, batch, centre)
    exps = np.linspace(-decades / 2, decades / 2, rates)
    return tuple(float(f"{mid * 10**e:.4g}") for e in exps)


def power_batches(lo: int, hi: int) -> tuple[int, ...]:
    """Powers of two from the first at or above `lo` to the last at or below `hi`."""
    out, b = [], 1
    while b <= hi:
        if b >= lo:
            out.append(b)
        b *= 2
    return tuple(out)


# ------------------------------------------------------------------ the ridge


def _vertex(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """The minimum of the parabola through the best point and its two neighbours (log rate),
    kept within half a grid step of the best (nearer a neighbour, that neighbour would have
    been the best); the grid point itself at an edge or on a flat/odd shape."""
    if i == 0 or i == len(x) - 1 or not np.all(np.isfinite(y[i - 1 : i + 2])):
        return float(x[i])
    a, b, _ = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    if a <= 0:
        return float(x[i])
    return float(np.clip(-b / (2 * a), (x[i - 1] + x[i]) / 2, (x[i] + x[i + 1]) / 2))


def ridge(cells: pd.DataFrame) -> pd.DataFrame:
    """Per batch, from cells with columns batch, lr, seed, loss (NaN: diverged): the best grid
    rate (lowest mean loss over seeds), `lr_opt` interpolated on the log grid, the band
    [band_lo, band_hi] of neighbouring rates whose mean loss is within noise of the best
    (NOISE_SIGMAS standard errors of the difference), widened half-way to the next rate (the
    grid's resolution: one seed has no spread, so its band is that alone), and `edge`
    ("low"/"high") when the best is at the grid's end."""
    out = []
    for batch, g in cells.groupby("batch", sort=True):
        stats = (
            g.assign(loss=g.loss.astype(float))
            .groupby("lr", sort=True)
            .loss.agg(mean="mean", std="std", n="count", size="size")
            .reset_index()
        )
        # a diverged seed makes the rate unusable: its mean is +inf
        mean = np.where(stats["n"] < stats["size"], np.inf, stats["mean"].to_numpy(float))
        finite = np.isfinite(mean)
        if not finite.any():
            out.append({"batch": int(batch), "status": "all diverged"})
            continue
        i = int(np.nanargmin(np.where(finite, mean, np.inf)))
        x = np.log10(stats.lr.to_numpy(float))
        sem = (stats["std"].fillna(0.0) / np.sqrt(stats["n"].clip(lower=1))).to_numpy(float)
        tol = NOISE_SIGMAS * np.sqrt(sem[i] ** 2 + sem**2)
        within = finite & (mean - mean[i] <= tol)
        lo = hi = i
        while lo > 0 and within[lo - 1]:
            lo -= 1
        while hi < len(x) - 1 and within[hi + 1]:
            hi += 1
        edge = "low" if i == 0 else "high" if i == len(x) - 1 else ""
        # the band reaches half-way to the first rate outside it: the grid's resolution
        band_lo = x[lo] if lo == 0 else (x[lo - 1] + x[lo]) / 2
        band_hi = x[hi] if hi == len(x) - 1 else (x[hi] + x[hi + 1]) / 2
        out.append(
            {
                "batch": int(batch),
                "status": "ok",
                "lr_best": float(stats.lr[i]),
                "lr_opt": float(10 ** _vertex(x, mean, i)),
                "loss_best": float(mean[i]),
                "loss_sem": float(sem[i]),
                "band_lo": float(10**band_lo),
                "band_hi": float(10**band_hi),
                "edge": edge,
                "seeds": int(stats["size"].max()),
                "grid_step": float(np.median(np.diff(x))) if len(x) > 1 else math.nan,
            }
        )
    cols = ["batch", "status", "lr_best", "lr_opt", "loss_best", "loss_sem", "band_lo"]
    cols += ["band_hi", "edge", "seeds", "grid_step"]
    return pd.DataFrame(out, columns=cols)


# ------------------------------------------------------------------ alpha


@dataclass(frozen=True)
class AlphaFit:
    alpha: float
    lo: float  # the interval (NaN when there is none: two points, say)
    hi: float
    method: str  # how the interval was found
    b_first: int  # the batches the power law was fitted over
    b_last: int
    points: int
    intercept: float  # log10 lr_opt at B = 1
    bend: int | None  # the first batch past the power law (None: it holds to the end)

    def lr_at(self, batch) -> np.ndarray:
        return 10 ** (self.intercept + self.alpha * np.log10(np.asarray(batch, float)))

    def nearest_rule(self) -> str:
        """Which rule's alpha lies in the interval, or the nearer one in words."""
        inside = [r for r, a in RULE_ALPHAS.items() if self.lo <= a <= self.hi]
        if inside:
            return (
                " and ".join(f"{r} ({RULE_ALPHAS[r]:g})" for r in inside) + " within the interval"
            )
        if not math.isfinite(self.lo):
            near = min(RULE_ALPHAS, key=lambda r: abs(RULE_ALPHAS[r] - self.alpha))
            return f"nearest to {near} ({RULE_ALPHAS[near]:g}); no interval"
        return "neither linear (1) nor square-root (0.5) within the interval"


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), y - (slope * x + intercept)


def power_range(r: pd.DataFrame) -> int:
    """How many of the ridge's usable batches, from the smallest, follow one power law: the
    longest run (at least 2) whose line's residuals each stay within that batch's own
    uncertainty (half its band, or half a grid step, in log10 rate)."""
    x = np.log10(r.batch.to_numpy(float))
    y = np.log10(r.lr_opt.to_numpy(float))
    half = np.maximum(
        np.log10(r.band_hi.to_numpy(float) / r.band_lo.to_numpy(float)) / 2,
        r.grid_step.to_numpy(float) / 2,
    )
    n = min(2, len(x))
    for j in range(3, len(x) + 1):
        _, _, res = _line(x[:j], y[:j])
        if np.all(np.abs(res) <= half[:j] + 1e-9):
            n = j
        else:
            break
    return n


def usable(r: pd.DataFrame) -> pd.DataFrame:
    """Ridge points a fit can use: a best rate inside its grid (not at an edge)."""
    return r[(r.status == "ok") & (r.edge == "")].reset_index(drop=True)


def fit_alpha(r: pd.DataFrame, n_points: int | None = None) -> AlphaFit | None:
    """The power law lr_opt = c B^alpha over the first `n_points` usable batches (default:
    `power_range`), with the slope's 95 % regression interval (t distribution)."""
    from scipy import stats

    ok = usable(r)
    if len(ok) < 2:
        return None
    n = n_points if n_points is not None else power_range(ok)
    part = ok.iloc[:n]
    x = np.log10(part.batch.to_numpy(float))
    y = np.log10(part.lr_opt.to_numpy(float))
    alpha, intercept, _ = _line(x, y)
    lo = hi = math.nan
    if n > 2:
        fit = stats.linregress(x, y)
        t = stats.t.ppf(0.975, n - 2)
        lo, hi = alpha - t * fit.stderr, alpha + t * fit.stderr
    bend = int(ok.batch.iloc[n]) if n < len(ok) else None
    return AlphaFit(
        alpha=alpha,
        lo=float(lo),
        hi=float(hi),
        method="regression 95 %",
        b_first=int(part.batch.iloc[0]),
        b_last=int(part.batch.iloc[-1]),
        points=n,
        intercept=intercept,
        bend=bend,
    )


def bootstrap_alpha(
    cells: pd.DataFrame, fit: AlphaFit, draws: int = 200, seed: int = 0
) -> tuple[float, float] | None:
    """A 95 % percentile interval for alpha by resampling the seeds (with replacement): each
    draw finds each batch's best rate again from the resampled seeds' mean losses and refits
    over the same batches. None with fewer than two seeds."""
    seeds = np.sort(cells.seed.unique())
    if len(seeds) < 2:
        return None
    part = cells[(cells.batch >= fit.b_first) & (cells.batch <= fit.b_last)]
    grids = []  # per batch: log10 B, log10 rates, losses [rates, seeds] (NaN: diverged)
    for b, g in part.groupby("batch", sort=True):
        table = g.pivot_table(index="lr", columns="seed", values="loss", dropna=False)
        table = table.reindex(columns=seeds)
        grids.append((math.log10(b), np.log10(table.index.to_numpy(float)), table.to_numpy(float)))
    rng = np.random.default_rng(seed)
    alphas = []
    for _ in range(draws):
        pick = rng.integers(0, len(seeds), len(seeds))
        xs, ys = [], []
        for lb, x, losses in grids:
            sample = losses[:, pick]
            mean = np.where(np.isnan(sample).any(1), np.inf, sample.mean(1))
            if not np.isfinite(mean).any():
                continue
            i = int(np.argmin(mean))
            if 0 < i < len(x) - 1:
                xs.append(lb)
                ys.append(_vertex(x, mean, i))
        if len(xs) >= 2:
            alphas.append(_line(np.array(xs), np.array(ys))[0])
    if len(alphas) < draws // 2:
        return None
    return float(np.percentile(alphas, 2.5)), float(np.percentile(alphas, 97.5))


# ------------------------------------------------------------------ eps_opt(B)


@dataclass(frozen=True)
class EpsFit:
    eps_max: float
    b_noise: float
    note: str = ""  # said when the fit is at a bound (B_noise beyond the batches tried)

    def lr_at(self, batch) -> np.ndarray:
        return self.eps_max / (1 + self.b_noise / np.asarray(batch, float))


def fit_eps_opt(batches, lrs) -> EpsFit | None:
    """Least squares in log rate of eps_opt(B) = eps_max / (1 + B_noise / B); None with fewer
    than three points."""
    from scipy.optimize import curve_fit

    b = np.asarray(batches, float)
    y = np.log(np.asarray(lrs, float))
    keep = np.isfinite(y)
    b, y = b[keep], y[keep]
    if len(b) < 3:
        return None
    lo_b, hi_b = math.log(b.min() / 100), math.log(b.max() * 100)

    def model(bb, log_eps, log_bn):
        return log_eps - np.log1p(np.exp(log_bn) / bb)

    p0 = (float(y.max()) + 0.5, float(np.log(np.median(b))))
    try:
        (log_eps, log_bn), _ = curve_fit(
            model, b, y, p0=p0, bounds=([-50, lo_b], [50, hi_b]), maxfev=5000
        )
    except (RuntimeError, ValueError):
        return None
    note = ""
    if log_bn >= hi_b - 1e-3:
        note = "the ridge still rises at the largest batch: B_noise lies beyond the batches tried"
    elif log_bn <= lo_b + 1e-3:
        note = "the ridge is flat from the smallest batch: B_noise lies below the batches tried"
    return EpsFit(float(math.exp(log_eps)), float(math.exp(log_bn)), note)


# ------------------------------------------------------------------ steps to target


def steps_to_target(steps, losses, target: float) -> float:
    """The first recorded step whose (smoothed) loss is at or below `target`; NaN if none."""
    s = np.asarray(steps, float)
    v = np.asarray(losses, float)
    hit = np.nonzero(np.isfinite(v) & (v <= target))[0]
    return float(s[hit[0]]) if len(hit) else math.nan


@dataclass(frozen=True)
class StepsFit:
    s_min: float
    b_crit: float  # = B_noise of S = S_min (1 + B_noise / B)

    def steps_at(self, batch) -> np.ndarray:
        return self.s_min * (1 + self.b_crit / np.asarray(batch, float))


def fit_steps(batches, steps) -> StepsFit:
    """S = S_min (1 + B_noise/B), i.e. S = S_min + E_min/B, least squares in 1/B (the noise
    meter's fit); B_crit = E_min / S_min. A ConfigError saying why when it cannot be fitted."""
    fit = fit_tradeoff(batches, steps)
    return StepsFit(fit.s_min, fit.b_crit)


def regime(batch: float, b_crit: float) -> str:
    """Shallue et al.'s three regimes around B_crit: below B_crit/4 doubling the batch halves
    the steps to within 20 %; above 4 B_crit the steps are within 25 % of S_min."""
    require(b_crit > 0, "B_crit must be positive")
    if batch <= b_crit / 4:
        return REGIMES[0]
    if batch >= 4 * b_crit:
        return REGIMES[2]
    return REGIMES[1]


def agreement(a: float, b: float) -> str:
    """'agree within a factor of 2' or 'differ by a factor of k'."""
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return "cannot be compared"
    ratio = max(a / b, b / a)
    return "agree within a factor of 2" if ratio <= 2 else f"differ by a factor of {ratio:.1f}"
