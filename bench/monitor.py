"""The monitor's cost per step: the same hand-written loop without it, with it (noise meter
on, recording into a run history), and with the sharpness every k steps, taking turns every 10
steps in one process, timed by the process's CPU time (the machine may be busy: wall times are
shown too); medians over rounds and the ratio to the plain loop measured in the same round.
The successive-step noise tap reads one pair of steps every `noise_every` steps (the default,
and every step for comparison); the sharpness is a warm-started power iteration (up to 20
Hessian-vector products) per measurement. The model is a 784-256-10 MLP at batch 128
(Fashion-MNIST's shape) on in-memory data.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.monitor [--steps 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.common import median, ratio
from lrbs.monitor import monitor
from lrbs.monitor.core import NOISE_EVERY


def make_loop(steps: int, batch: int, seed: int = 0, **options):
    """A loop of `steps` SGD steps; with `options`, a monitor (its keyword arguments)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 784, generator=g)
    y = torch.randint(0, 10, (4096,), generator=g)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.functional.cross_entropy
    mon = monitor(model, opt, loss_fn=loss_fn, **options) if options else None

    def run(steps: int = steps) -> None:
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=g)
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            if mon is not None:
                mon.step(loss, batch=(xb, yb))

    return run, mon


def main() -> None:
    p = argparse.ArgumentParser(description="the monitor's overhead per step")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.db"
        setups = {
            "plain loop": {},
            "monitor, noise off (no history)": {"db": False, "noise": False},
            "monitor, noise, a pair every step (noise_every=1, no history)": {
                "db": False,
                "noise_every": 1,
            },
            f"monitor, noise (noise_every={NOISE_EVERY}, no history)": {"db": False},
            "monitor, noise + history": {"db": db},
            "+ sharpness every 100": {"db": db, "sharpness_every": 100},
            "+ sharpness every 20": {"db": db, "sharpness_every": 20},
        }
        loops = {name: make_loop(a.steps, a.batch, **opts) for name, opts in setups.items()}
        cpu, wall = alternate_clocks({k: v[0] for k, v in loops.items()}, a.steps, a.repeats)
        for _, mon in loops.values():
            if mon is not None:
                mon.close()
    print(
        f"{a.steps} steps x {a.repeats} rounds, batch {a.batch}, torch threads "
        f"{torch.get_num_threads()}; CPU time of this process (wall time in brackets: it "
        "counts the other processes on a busy machine)\n"
    )
    print("| loop | ms/step, CPU (wall) | vs plain, CPU (wall): median of per-round ratios |")
    print("|---|---|---|")
    for name in setups:
        ms, ms_wall = (median(t[name]) / a.steps * 1e3 for t in (cpu, wall))
        r, r_wall = (ratio(t, "plain loop", name) for t in (cpu, wall))
        print(f"| {name} | {ms:.3f} ({ms_wall:.3f}) | {r:.3f} ({r_wall:.3f}) |")


def alternate_clocks(
    contenders: dict, steps: int, repeats: int, chunk: int = 10
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """`repeats` rounds of `steps` steps per contender after one warm-up round, the
    contenders taking turns every `chunk` steps (in a rotating order), so a load that comes
    and goes on the machine falls on all of them alike: ({name: CPU seconds of this process
    per round}, {name: wall seconds}). With one torch thread the CPU time is the work done,
    whatever else runs; the wall time is not."""
    names = list(contenders)
    cpu: dict[str, list[float]] = {k: [] for k in names}
    wall: dict[str, list[float]] = {k: [] for k in names}
    for r in range(1 + repeats):
        c_sum, w_sum = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for i in range(steps // chunk):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                c, w = time.process_time(), time.perf_counter()
                contenders[name](chunk)
                c_sum[name] += time.process_time() - c
                w_sum[name] += time.perf_counter() - w
        if r:
            for name in names:
                cpu[name].append(c_sum[name])
                wall[name].append(w_sum[name])
    return cpu, wall


if __name__ == "__main__":
    main()
