"""Recommend's rules, pure functions of what the steps measured: the sweep's grid, its loss
table, the confirmed rate and its band; each range-test rule audited against it; the candidate
batches and the one that minimises the time to the target (McCandlish et al. 2018: S(B) = S_min
(1 + B_noise / B)); the rate rescaled to a batch (linear for SGD, square root for Adam) and
capped by the stability measured; the PyTorch snippet of the card. The horizon rule is
`lrbs.methods.horizon`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lrbs.core.loop import OptimSpec
from lrbs.core.setup import Setup
from lrbs.methods.scaling import scaled_lr

SCALING_RULE = {"sgd": "linear", "momentum": "linear", "adam": "sqrt", "adamw": "sqrt"}


def sweep_grid(suggested: list[float], n: int) -> tuple[float, ...]:
    """`n` rates, evenly spaced in log, from half a decade below the lowest suggestion to half
    a decade above the highest (at least a decade in all); 3 significant digits."""
    vals = [v for v in suggested if v and math.isfinite(v) and v > 0]
    if not vals:
        vals = [1e-3, 1e-1]
    lo, hi = min(vals) / math.sqrt(10), min(max(vals) * math.sqrt(10), 1e6)
    grid = sorted({float(f"{v:.3g}") for v in np.geomspace(lo, hi, n)})
    return tuple(grid)


def loss_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per rate, over the seeds: mean and standard deviation of the final validation loss
    (a diverged run counts as infinite), how many seeds ran and how many diverged."""
    cols = ["lr", "mean", "std", "seeds", "diverged"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    d = runs.copy()
    loss = pd.to_numeric(d.val_loss, errors="coerce").astype(float)
    bad = (d.status == "diverged") | ~np.isfinite(loss)
    d["loss"] = loss.where(~bad, np.inf)
    d["bad"] = bad
    g = d.groupby("lr", sort=True)
    out = pd.DataFrame(
        {
            "mean": g.loss.mean(),
            "std": g.loss.std(ddof=1).fillna(0.0),
            "seeds": g.loss.size(),
            "diverged": g.bad.sum().astype(int),
        }
    ).reset_index()
    out.loc[~np.isfinite(out["mean"]), "std"] = np.nan
    return out[cols]


@dataclass(frozen=True)
class Confirmed:
    """The sweep's verdict: the best rate, its loss, the noise between seeds, and the band of
    neighbouring rates whose mean loss is within that noise of the best."""

    lr: float
    loss: float
    noise: float
    band_lo: float
    band_hi: float
    at_edge: bool  # the best is the lowest or highest rate swept

    @property
    def band_width(self) -> float:
        return self.band_hi / self.band_lo


def confirm(table: pd.DataFrame) -> Confirmed | None:
    """The best rate of a `loss_table` (lowest mean) and its band: the unbroken run of rates
    around it whose mean exceeds the best by less than the noise, sqrt(std_best^2 +
    std_rate^2) (zero with a single seed: then the band is the best rate alone)."""
    if table.empty or not np.isfinite(table["mean"]).any():
        return None
    t = table.sort_values("lr", ignore_index=True)
    means, stds = t["mean"].to_numpy(float), t["std"].fillna(0.0).to_numpy(float)
    i = int(np.nanargmin(np.where(np.isfinite(means), means, np.inf)))

    def within(j: int) -> bool:
        return bool(np.isfinite(means[j])) and means[j] - means[i] <= math.hypot(stds[i], stds[j])

    lo = i
    while lo > 0 and within(lo - 1):
        lo -= 1
    hi = i
    while hi < len(t) - 1 and within(hi + 1):
        hi += 1
    return Confirmed(
        lr=float(t.lr[i]),
        loss=float(means[i]),
        noise=float(stds[i]),
        band_lo=float(t.lr[lo]),
        band_hi=float(t.lr[hi]),
        at_edge=len(t) > 1 and i in (0, len(t) - 1),
    )


def loss_at(table: pd.DataFrame, lr: float) -> float:
    """The sweep's mean loss at `lr`, interpolated in log(lr) between the rates swept; NaN
    outside them or next to a diverged rate."""
    t = table.sort_values("lr")
    x, y = np.log(t.lr.to_numpy(float)), t["mean"].to_numpy(float)
    if len(x) == 0 or not (x[0] - 1e-9 <= math.log(lr) <= x[-1] + 1e-9):
        return math.nan
    j = int(np.clip(np.searchsorted(x, math.log(lr)), 1, max(1, len(x) - 1)))
    if len(x) == 1:
        return float(y[0])
    a, b = y[j - 1], y[j]
    if not (np.isfinite(a) and np.isfinite(b)):
        return math.nan
    return float(np.interp(math.log(lr), x[j - 1 : j + 1], [a, b]))


AUDIT_COLUMNS = [
    "rule",
    "title",
    "lr",
    "seed_spread",
    "factor",
    "times_off",
    "in_band",
    "loss",
    "loss_cost",
    "closest",
]


def audit(spread: pd.DataFrame, names: dict[str, str], table: pd.DataFrame, best: Confirmed):
    """Each range-test rule against the confirmed best: its median rate, how far it moves over
    seeds (max/min), its factor off the best (rate / best), how many times off that is either
    way, whether it lies in the band, and the loss the sweep gives at it (interpolated) and
    what that costs over the best. The rule nearest the best (fewest times off) is marked."""
    rows = []
    for _, s in spread.iterrows():
        lr = float(s.median_lr)
        loss = loss_at(table, lr)
        factor = lr / best.lr
        rows.append(
            {
                "rule": names.get(s.suggestion, s.suggestion),
                "title": s.suggestion,
                "lr": lr,
                "seed_spread": float(s.max_over_min),
                "factor": factor,
                "times_off": max(factor, 1 / factor),
                "in_band": bool(best.band_lo * (1 - 1e-9) <= lr <= best.band_hi * (1 + 1e-9)),
                "loss": loss,
                "loss_cost": loss - best.loss if math.isfinite(loss) else math.nan,
            }
        )
    out = pd.DataFrame(rows, columns=AUDIT_COLUMNS[:-1])
    out["closest"] = False
    if not out.empty:
        out.loc[out.times_off.idxmin(), "closest"] = True
    return out


def candidate_batches(base: int, largest: int, n_train: int, max_batch: int | None = None):
    """Powers of two from 16 (or the base batch, if smaller) up to the largest safe batch,
    `max_batch` and half the training set, with the base batch itself."""
    top = min(largest, max_batch or n_train // 2, n_train)
    top = max(top, 1)
    out = {min(base, top)}
    b = 16 if base >= 16 else 1
    while b <= top:
        out.add(b)
        b *= 2
    return tuple(sorted(x for x in out if 1 <= x <= n_train))


def batch_choice(
    batches,
    seconds_per_step,
    b_noise: float,
    base_batch: int,
    base_steps: float,
    shortfall=None,
) -> pd.DataFrame:
    """Per batch B: the steps to the target, S(B) = S_min (1 + B_noise / B) with S_min chosen so
    that the base batch takes `base_steps`, the seconds that costs at the measured seconds
    per step, and the fastest marked `best`. S(B) assumes the rate rescaled to B; where the
    stability cap holds it below the rule's by a factor (`shortfall`: rule / capped, per
    batch), the steps grow by that factor (steps ~ 1 / lr while the rule holds)."""
    b = np.asarray(batches, float)
    sps = np.asarray(seconds_per_step, float)
    noise = max(float(b_noise), 0.0) if math.isfinite(b_noise) else 0.0
    s_min = base_steps / (1 + noise / base_batch)
    steps = s_min * (1 + noise / b)
    if shortfall is not None:
        steps = steps * np.asarray(shortfall, float)
    seconds = steps * sps
    out = pd.DataFrame(
        {
            "batch": b.astype(int),
            "seconds_per_step": sps,
            "samples_per_s": b / sps,
            "steps_to_target": steps,
            "seconds_to_target": seconds,
        }
    )
    out["best"] = False
    ok = np.isfinite(seconds)
    if ok.any():
        out.loc[int(np.argmin(np.where(ok, seconds, np.inf))), "best"] = True
    return out


def optimizer_family(setup: Setup, data, default: str) -> str:
    """The optimizer the runs really use, as a scaling rule knows it: a workload's own
    optimizer() (AdamW, say) decides the rule, not the --optimizer default."""
    if data.task.optimizer is None:
        return default
    opt = data.task.build_optimizer(setup.fresh_model(data).parameters(), OptimSpec(default))
    if isinstance(opt, torch.optim.AdamW):
        return "adamw"
    if isinstance(opt, torch.optim.Adam) or "betas" in opt.defaults:
        return "adam"
    return "momentum" if opt.defaults.get("momentum") else "sgd"


def rescale(lr: float, base_batch: int, batch: int, optimizer: str, b_crit: float) -> float:
    """The rate for `batch`, from `lr` at `base_batch`: linear for SGD (with or without
    momentum) and square root for Adam/AdamW (Malladi et al. 2022), growing only up to the
    critical batch (beyond it a larger batch brings no larger rate)."""
    target = batch
    if batch > base_batch and math.isfinite(b_crit) and b_crit > 0:
        target = min(batch, max(base_batch, b_crit))
    return scaled_lr(lr, base_batch, target, SCALING_RULE[optimizer])


@dataclass(frozen=True)
class Stability:
    """What the pipeline measured about stability, all of it at the base batch: the range
    test's maximum usable rate (median over seeds), the smallest swept rate that diverged in
    any seed, and the largest swept rate below it that trained in every seed. (The pipeline
    measures no sharpness; were it to, 2/lambda would join the caps.)"""

    max_usable: float | None = None
    diverged: float | None = None
    stable: float | None = None


def stability_of(table: pd.DataFrame, max_usable: float | None) -> Stability:
    """The sweep's stability edge from a `loss_table`, beside the range test's limit."""
    ok = max_usable if max_usable and math.isfinite(max_usable) and max_usable > 0 else None
    if table.empty:
        return Stability(ok)
    bad = table[table.diverged > 0]
    if bad.empty:
        return Stability(ok)
    first = float(bad.lr.min())
    below = table[(table.lr < first) & (table.diverged == 0) & np.isfinite(table["mean"])]
    return Stability(ok, first, float(below.lr.max()) if not below.empty else None)


CAP_NAMES = {
    "sweep": "the largest swept rate that trained in every seed",
    "range_test": "the range test's maximum usable rate",
    "swept": "the rate the sweep confirmed",
}


@dataclass(frozen=True, kw_only=True)
class Capped:
    """A rate carried by a rule, and what the stability measured let of it."""

    rule_lr: float  # the rules' rate (batch rescale x horizon carry)
    lr: float  # min(rule_lr, cap)
    cap: float
    caps: dict  # each cap's value at this batch
    capped_by: str | None  # the cap that decided, when it did (a CAP_NAMES key)


def cap_rate(rule_lr: float, swept_lr: float, scale: float, s: Stability) -> Capped:
    """The stability cap on a rate carried from the base batch (where `swept_lr` was confirmed)
    to a batch the batch rule scales by `scale` (1 at the base batch), and to a training length.

    The scaling rules hold only below the stability limit (Goyal et al. 2017 see the linear rule
    break at large rates); the limit is set by the loss's curvature (2/lambda for gradient
    descent), which a larger batch approaches but never passes, and the pipeline measured it at
    the base batch only. So the carried rate may not exceed:
    - "sweep": the largest swept rate that trained in every seed below the smallest that
      diverged, unscaled: no rate above it was seen to train at any batch (none where no swept
      rate diverged);
    - "range_test": the range test's maximum usable rate scaled by the same batch rule (the rule
      moves the range test's limit as it moves the rate: a rescale keeps the rate's distance
      from it; it binds where the sweep confirmed a rate beyond the range test's limit);
    - but the cap never falls below "swept": the confirmed rate (scaled down to a smaller batch),
      which the sweep trained in every seed.
    A rate carried to a longer training only falls (horizon_exponent < 0): the caps bind on a
    rescale to a larger batch."""
    caps = {}
    if s.stable is not None:
        caps["sweep"] = s.stable
    if s.max_usable is not None:
        caps["range_test"] = s.max_usable * scale
    floor = swept_lr * min(1.0, scale)
    low = min(caps.values(), default=math.inf)
    cap = max(low, floor)
    caps["swept"] = floor
    if rule_lr <= cap * (1 + 1e-9):
        return Capped(rule_lr=rule_lr, lr=rule_lr, cap=cap, caps=caps, capped_by=None)
    by = "swept" if floor > low else min((k for k in caps if k != "swept"), key=caps.get)
    return Capped(rule_lr=rule_lr, lr=cap, cap=cap, caps=caps, capped_by=by)


def snippet(card: dict) -> str:
    """PyTorch code using the card's optimizer, rate, batch and schedule."""
    name, lr, batch = card["optimizer"], card["lr"], card["batch"]
    steps, peak = card["expected_steps"], card["schedule"]["peak_lr"]
    if name in ("sgd", "momentum"):
        m = f", momentum={card['momentum']:g}" if name == "momentum" else ""
        opt = f"torch.optim.SGD(model.parameters(), lr={lr:.3g}{m})"
        sched = (
            f"torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr={peak:.3g}, "
            f"total_steps={steps})"
        )
    else:
        cls = "Adam" if name == "adam" else "AdamW"
        warm = card["schedule"]["warmup_steps"]
        opt = f"torch.optim.{cls}(model.parameters(), lr={peak:.3g})"
        sched = (
            "torch.optim.lr_scheduler.SequentialLR(optimizer, [\n"
            f"    torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, total_iters={warm}),\n"
            "    torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, "
            f"T_max={max(1, steps - warm)}),\n], milestones=[{warm}])"
        )
    return (
        "import torch\n\n"
        f"loader = torch.utils.data.DataLoader(train_set, batch_size={batch}, shuffle=True)\n"
        f"optimizer = {opt}\n"
        f"scheduler = {sched}\n"
        f"# {steps} updates: call scheduler.step() after every optimizer.step()\n"
    )
