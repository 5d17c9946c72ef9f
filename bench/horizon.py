"""The horizon rule, measured: how well a rate confirmed over a short sweep, carried to a longer
training by recommend's rule (lr x (t / t0)^-1/2, or the sweep's own steeper fall), matches the
best constant rate measured at that longer length.

`python -m bench.horizon` trains a grid of constant rates for the longest length on each dataset
x optimizer family, scores every run at checkpoints (a constant-rate run scored at step t is a
run of length t), and for each pair of lengths t0 < t reports: the measured best at t0 and t,
the rule's rate at t, how many times off it is, and what it costs in validation loss against the
best at t, next to keeping the swept rate (no carry). Rows in bench/horizon.csv; a markdown
table on stdout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lrbs.core.data import DataSpec, availability
from lrbs.core.kept import load_data
from lrbs.core.loop import Budget
from lrbs.core.setup import Setup
from lrbs.experiments import recommend, sweeps
from lrbs.experiments.sweeps import SweptOptim
from lrbs.methods import horizon

HERE = Path(__file__).resolve().parent
# 11 rates, x2 apart, spanning three decades around where these models train
GRIDS = {
    "momentum": tuple(float(f"{v:.3g}") for v in np.geomspace(1e-3, 1.0, 11)),
    "adam": tuple(float(f"{v:.3g}") for v in np.geomspace(1e-4, 1e-1, 11)),
}
# the longest training per dataset (updates at batch 64) and the checkpoints scored
LONGEST = {"mnist1d": 2400, "digits": 1200, "covertype-synthetic": 4800, "fashion-mnist": 9600}


def swept(longest: int) -> tuple[int, int]:
    """The sweep lengths a rate is carried from: 1/16 and 1/8 of the longest training (on the
    checkpoints, of which the shorter sweep holds recommend's LAW_POINTS)."""
    every = checkpoint_every(longest)
    return LAW * every, 2 * LAW * every


def checkpoint_every(longest: int) -> int:
    return longest // (16 * LAW)


BATCH = 64
LAW = recommend.LAW_POINTS


def curves(name: str, opt: str, seeds: int, longest: int) -> pd.DataFrame:
    """Validation loss of every rate and seed at every checkpoint (columns seed, lr, step,
    val_loss)."""
    out = []
    every = checkpoint_every(longest)
    for seed in range(seeds):
        cfg = sweeps.Config(
            lrs=GRIDS[opt],
            budget=Budget(steps=longest),
            batch_size=BATCH,
            optim=SweptOptim(opt),
            seed=seed,
            eval_every=every,
        )
        r = sweeps.run(Setup(DataSpec(name)), cfg)
        events = r.frame("events")
        ev = events[(events.kind == "eval") & (events.step % every == 0)].copy()
        ev["seed"] = seed
        out.append(ev[["seed", "lr", "step", "val_loss"]])
    return pd.concat(out, ignore_index=True)


def best_at(c: pd.DataFrame, step: int) -> tuple[float, pd.Series]:
    """The refined best rate at `step` (mean over seeds) and the mean loss per rate there."""
    at = c[c.step == step]
    lrs = np.sort(c.lr.unique())
    mean = at.groupby("lr").val_loss.mean().reindex(lrs)
    mean = mean.where(np.isfinite(mean), np.inf)
    return recommend.refined_best(lrs, mean.to_numpy()), mean


def loss_of(mean: pd.Series, lr: float) -> float:
    """The loss at `lr`, interpolated in log(lr) between the grid's rates (finite ones)."""
    m = mean[np.isfinite(mean)]
    return float(np.interp(np.log(lr), np.log(m.index.to_numpy()), m.to_numpy()))


def noise_at(c: pd.DataFrame, step: int, lr: float) -> float:
    """The seeds' spread of the loss at the grid rate nearest `lr` (max - min)."""
    at = c[c.step == step]
    near = at.lr.unique()[np.argmin(np.abs(np.log(at.lr.unique()) - np.log(lr)))]
    v = at[at.lr == near].val_loss
    return float(v.max() - v.min())


def table(c: pd.DataFrame, name: str, opt: str, longest: int) -> list[dict]:
    rows = []
    steps = sorted(c.step.unique())
    epoch = load_data(Setup(DataSpec(name))).n_train / BATCH  # updates of one epoch
    # the swept lengths, and on a set whose epoch is longer than those, shorter sweeps too (a
    # quick budget on a busy machine sweeps 100 updates)
    short = [s for s in (steps[0], 2 * steps[0]) if s < min(swept(longest)) and s < epoch]
    for t0 in (*short, *swept(longest)):
        b0, _ = best_at(c, t0)
        # the sweep's own checkpoints (a quarter on), as recommend scores them
        inside = c[(c.step <= t0)]
        exponent = recommend.horizon_exponent(
            recommend.measured_exponent(recommend.checkpoint_bests(inside, t0))
        )
        for t in (s for s in steps if s in {2 * t0, 4 * t0, 8 * t0, 16 * t0, 32 * t0, 64 * t0}):
            bt, mean = best_at(c, t)
            start = horizon.carried_from(t0, t, epoch)
            carried = b0 * recommend.carry_factor(start, t, exponent)
            best_loss = float(mean[np.isfinite(mean)].min())
            rows.append(
                {
                    "dataset": name,
                    "optimizer": opt,
                    "swept": t0,
                    "planned": int(t),
                    "best_swept": b0,
                    "best_planned": bt,
                    "measured_exponent": float(np.log(bt / b0) / np.log(t / t0)),
                    "rule_exponent": exponent,
                    "rule_lr": carried,
                    "rule_from": start,
                    "rule_times_off": float(max(carried / bt, bt / carried)),
                    "rule_loss_cost": loss_of(mean, carried) - best_loss,
                    "kept_times_off": float(max(b0 / bt, bt / b0)),
                    "kept_loss_cost": loss_of(mean, b0) - best_loss,
                    "noise": noise_at(c, t, bt),
                    "best_loss": best_loss,
                }
            )
    return rows


def markdown(df: pd.DataFrame) -> str:
    lines = [
        "| data | optimizer | swept → planned | best swept → best planned | measured exponent "
        "| rule's rate (× off) | rule's loss cost | kept rate (× off) | kept's loss cost "
        "| seeds' spread |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.dataset} | {r.optimizer} | {r.swept} → {r.planned:,} | {r.best_swept:.3g} → "
            f"{r.best_planned:.3g} | {r.measured_exponent:+.2f} | {r.rule_lr:.3g} "
            f"({r.rule_times_off:.2f}) | {r.rule_loss_cost:.4f} | {r.best_swept:.3g} "
            f"({r.kept_times_off:.2f}) | {r.kept_loss_cost:.4f} | {r.noise:.4f} |"
        )
    return "\n".join(lines)


def summary(df: pd.DataFrame) -> str:
    within = lambda col: (df[col] <= np.maximum(df.noise, 1e-9)).sum()  # noqa: E731
    return (
        f"{len(df)} (swept, planned) pairs over {df.groupby(['dataset', 'optimizer']).ngroups} "
        f"dataset x optimizer: the rule's rate median {df.rule_times_off.median():.2f}x off "
        f"(worst {df.rule_times_off.max():.2f}x), within the seeds' spread of the best loss in "
        f"{within('rule_loss_cost')}/{len(df)}; keeping the swept rate median "
        f"{df.kept_times_off.median():.2f}x off (worst {df.kept_times_off.max():.2f}x), within "
        f"the spread in {within('kept_loss_cost')}/{len(df)}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(LONGEST))
    p.add_argument("--optimizers", nargs="+", default=list(GRIDS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument(
        "--from-curves", action="store_true", help="rebuild the table from the saved curves"
    )
    a = p.parse_args()
    here, rows, out = availability(), [], HERE / "horizon.csv"
    for name in a.datasets:
        if not here.get(name):
            print(f"{name}: not on this machine, skipped", flush=True)
            continue
        for opt in a.optimizers:
            t = time.perf_counter()
            saved = HERE / f"horizon_curves_{name}_{opt}.csv"
            if a.from_curves:
                if not saved.exists():
                    continue
                c = pd.read_csv(saved)
            else:
                c = curves(name, opt, a.seeds, LONGEST[name])
                c.to_csv(saved, index=False)
            rows += table(c, name, opt, LONGEST[name])
            print(f"{name} {opt}: {time.perf_counter() - t:.0f} s", flush=True)
            pd.DataFrame(rows).to_csv(out, index=False)
    df = pd.DataFrame(rows)
    print(markdown(df))
    print(summary(df))


if __name__ == "__main__":
    main()
