"""The monitor's growing batch against a fixed batch and against the decay schedule, at equal
samples, over seeds, on MNIST-1D and Fashion-MNIST: a plain hand-written loop (SGD, momentum
0.9, an MLP) and four arms.

- fixed: batch B0 at a constant rate.
- decay: batch B0, the rate x0.1 at 50 % and 75 % of the samples (MultiStepLR on the step).
- monitor: lrbs.monitor drives a GrowingBatchSampler from B0: the noise measured with two
  accumulated micro-batches per step (`mon.micro()`, the unbiased two-batch estimator), the
  batch grown at epoch boundaries to the measured B_simple, capped at N/10 and `--max-batch`,
  the rate rescaled by the linear rule (the noise lr/B kept: fewer steps, not less noise).
- monitor-kept: the same growth, the rate kept constant: "increase the batch instead of
  decaying the learning rate" (Smith et al. 2018), driven by the measurement.
- smith: Smith et al. (2018)'s schedule-driven growth, the batch x10 where `decay` cuts the
  rate, the rate constant (where N/10 caps the batch, the rate takes the rest of the x0.1).

Every arm draws its batches from a GrowingBatchSampler (drop_last) with the seed's order and
stops once it has seen the same number of samples. Rows go to bench/growing.csv (one per arm,
dataset and seed) and a markdown table is printed: the final validation loss and accuracy
(mean ± std over seeds), the optimizer steps, the batch path, and the monitor arm against the
decay arm (lrbs.core.spread.difference: within noise or not).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.growing [--seeds 3] [--datasets mnist1d]
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.growing --grid   # the rates: arm fixed, one seed
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from lrbs.core.data import DataSpec
from lrbs.core.kept import load_data
from lrbs.core.setup import Setup
from lrbs.core.spread import difference, spread
from lrbs.monitor import GrowingBatchSampler, monitor

OUT = Path(__file__).with_name("growing.csv")
ARMS = ("fixed", "decay", "monitor", "monitor-kept", "smith")
MILESTONES = (0.5, 0.75)  # shares of the samples where `decay` cuts and `smith` grows


@dataclass(frozen=True)
class Bench:
    """One dataset's settings: the first batch, the rate (from --grid), the epochs of samples
    every arm sees, the largest batch the monitor may grow to."""

    dataset: str
    batch: int
    lr: float
    epochs: float
    max_batch: int
    hidden: tuple[int, ...]


BENCHES = {
    "mnist1d": Bench(
        dataset="mnist1d", batch=32, lr=0.03, epochs=20, max_batch=512, hidden=(256, 256)
    ),
    "fashion-mnist": Bench(
        dataset="fashion-mnist", batch=128, lr=0.06, epochs=3, max_batch=1024, hidden=(128,)
    ),
}


def mlp(inputs: int, hidden: tuple[int, ...], classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, classes))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + 4096]) for i in range(0, len(x), 4096)])
    model.train()
    loss = float(nn.functional.cross_entropy(logits, y))
    return loss, float((logits.argmax(1) == y).float().mean())


def run_arm(arm: str, b: Bench, data, seed: int, lr: float | None = None) -> dict:
    """Train one arm for b.epochs x N samples; its final validation figures and batch path."""
    lr = b.lr if lr is None else lr
    x, y = data.x_train, data.y_train
    n = len(x)
    budget = int(b.epochs * n)
    cap = n // 10
    torch.manual_seed(seed)
    model = mlp(int(math.prod(x.shape[1:])), b.hidden, data.n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.functional.cross_entropy
    grows = arm.startswith("monitor")
    micro = 2 if grows else 1
    # the monitor's sampler hands out micro-batches: two make a step of B0
    sampler = GrowingBatchSampler(n, b.batch // micro, seed=seed, drop_last=True)
    mon = None
    if grows:
        mon = monitor(
            model,
            opt,
            db=False,
            sampler=sampler,
            n_train=n,
            max_batch=b.max_batch // micro,
        )
        if arm == "monitor-kept":  # called after the monitor's rescaling: undo it
            sampler.on_change(lambda old, new: opt.param_groups[0].update(lr=lr))
    path = [(0, b.batch, lr)]  # (samples, batch, rate) where they change
    milestones = [int(m * budget) for m in MILESTONES]
    seen = steps = 0
    t0 = time.perf_counter()
    while seen < budget:
        batches = iter(sampler)
        while seen < budget:
            idx = [i for _, i in zip(range(micro), batches, strict=False)]
            if len(idx) < micro:
                break  # the epoch's last micro-batch alone: the next epoch
            step_batch = sum(len(i) for i in idx)
            if path[-1][1] != step_batch or path[-1][2] != opt.param_groups[0]["lr"]:
                path.append((seen, step_batch, opt.param_groups[0]["lr"]))
            opt.zero_grad()
            total = 0.0
            for i in idx:
                loss = loss_fn(model(x[i]), y[i]) / micro
                loss.backward()
                if mon is not None:
                    mon.micro()
                total = total + loss.detach()
            opt.step()
            steps += 1
            seen += step_batch
            if mon is not None:
                mon.step(total, batch_size=step_batch)
            if arm in ("decay", "smith") and milestones and seen >= milestones[0]:
                milestones.pop(0)
                if arm == "decay":
                    opt.param_groups[0]["lr"] *= 0.1
                else:  # x10 the batch from the next step; the rate takes what N/10 caps
                    wanted = sampler.batch_size * 10
                    grown = min(wanted, cap)
                    if grown > sampler.batch_size:
                        sampler.grow(grown, now=True)
                    opt.param_groups[0]["lr"] *= grown / wanted
    seconds = time.perf_counter() - t0
    summary = mon.close() if mon is not None else {}
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
    return {
        "dataset": b.dataset,
        "arm": arm,
        "seed": seed,
        "lr0": lr,
        "batch0": b.batch,
        "samples": seen,
        "steps": steps,
        "final_batch": path[-1][1],
        "final_lr": opt.param_groups[0]["lr"],
        "val_loss": val_loss,
        "val_acc": val_acc,
        "b_simple": summary.get("b_simple"),
        "path": " ".join(f"{s}:{bs}@{r:.3g}" for s, bs, r in path),
        "seconds": round(seconds, 1),
    }


def batch_path(rows: list[dict]) -> str:
    """The first seed's path of batches, as 'B0 -> B1 (at 43 % of the samples) -> ...'."""
    r = rows[0]
    parts, last = [], None
    for item in r["path"].split():
        at, rest = item.split(":")
        batch = int(rest.split("@")[0])
        if batch != last:
            share = 100 * int(at) / r["samples"]
            parts.append(f"{batch}" + (f" ({share:.0f} %)" if int(at) else ""))
            last = batch
    return " → ".join(parts)


def table(rows: list[dict]) -> str:
    out = [
        "| dataset | arm | val loss | val acc | steps | batch path (seed 0, % of samples) "
        "| val loss − decay's |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        decay = [r["val_loss"] for r in mine if r["arm"] == "decay"]
        for arm in ARMS:
            part = [r for r in mine if r["arm"] == arm]
            if not part:
                continue
            loss = spread(r["val_loss"] for r in part)
            acc = spread(r["val_acc"] for r in part)
            steps = spread(r["steps"] for r in part)
            vs = (
                difference([r["val_loss"] for r in part], decay).text()
                if arm != "decay" and decay
                else "—"
            )
            out.append(
                f"| {dataset} | {arm} | {loss.mean:.4f} ± {loss.std:.4f} | "
                f"{acc.mean:.4f} ± {acc.std:.4f} | {steps.mean:.0f} | {batch_path(part)} | {vs} |"
            )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description="growing batch vs fixed batch vs decay schedule")
    p.add_argument("--datasets", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=float, help="override every dataset's epochs")
    p.add_argument("--grid", action="store_true", help="arm fixed at rates 0.01-0.3, one seed")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", type=Path, nargs="+", help="print the table of these CSVs, run none")
    a = p.parse_args()
    if a.table:
        rows = [r for path in a.table for r in csv.DictReader(path.open())]
        for r in rows:
            for k in ("val_loss", "val_acc", "steps", "samples"):
                r[k] = float(r[k])
        print(table(rows))
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rows = []
    for name in a.datasets:
        b = BENCHES[name]
        if a.epochs:
            b = replace(b, epochs=a.epochs)
        data = load_data(Setup(DataSpec(name), device="cpu"))
        if a.grid:
            for lr in (0.01, 0.03, 0.1, 0.3):
                r = run_arm("fixed", b, data, 0, lr)
                print(f"{name} lr {lr}: val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}")
            continue
        for seed in range(a.seeds):
            for arm in a.arms:
                r = run_arm(arm, b, data, seed)
                rows.append(r)
                print(
                    f"{name} {arm} seed {seed}: val loss {r['val_loss']:.4f} acc "
                    f"{r['val_acc']:.4f}, {r['steps']} steps, {r['seconds']} s, {r['path']}",
                    flush=True,
                )
    if rows:
        with a.out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print()
        print(table(rows))


if __name__ == "__main__":
    main()
