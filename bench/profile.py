"""Where the time goes, by ablation: from a bare hand loop, add one thing lrbs does at a time and
time each variant side by side (alternating, medians), per step. Used for the targets that are
not met (loop vs minimal, range test vs torch-lr-finder)."""

from __future__ import annotations

import torch

from bench.common import alternate, median
from bench.loop import minimal_loop
from lrbs.core.data import DataSpec, TensorData, load
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec, build_model
from lrbs.experiments.lr_finder import RangeTestConfig, range_test


def hand_loop(model, data, batch, steps, **kw) -> None:
    minimal_loop(model, data, batch, steps, 0.05, 0, **kw)


def run(repeats: int = 7) -> list[dict]:
    arrays = load(DataSpec("mnist1d"))
    data = TensorData.from_arrays(arrays, "cpu")

    def fresh():
        return build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)

    steps, batch = 600, 32
    events = TrainConfig(
        batch_size=batch,
        budget=Budget(steps=steps),
        log_every=10,
        optim=OptimSpec("sgd", 0.05),
        eval_each_epoch=False,
        eval_at_end=False,
    )
    silent = TrainConfig(**{**events.__dict__, "log_every": 10**6})
    loop = {
        "bare hand loop": lambda: hand_loop(fresh(), data, batch, steps),
        "+ loss read every 10 steps": lambda: hand_loop(fresh(), data, batch, steps, read_every=10),
        "lrbs train, no events": lambda: train(fresh(), data, silent),
        "lrbs train, events every 10 steps": lambda: train(fresh(), data, events),
    }
    t = alternate(loop, repeats=repeats)
    rows = [
        {
            "case": f"loop (MNIST-1D, batch {batch})",
            "variant": k,
            "us_per_step": median(v) / steps * 1e6,
        }
        for k, v in t.items()
    ]

    iters = 100
    rt = RangeTestConfig(1e-7, 10, iters, batch_size=64, stop_factor=None)

    def ramp(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: rt.lr_at(i) / rt.lr_min)

    finder = {
        "bare hand loop": lambda: hand_loop(fresh(), data, 64, iters),
        "+ LambdaLR ramp": lambda: hand_loop(fresh(), data, 64, iters, scheduler=ramp),
        "+ loss read every step": lambda: hand_loop(
            fresh(), data, 64, iters, read_every=1, scheduler=ramp
        ),
        "lrbs range_test (smoothing, stop rule, state restore)": lambda: range_test(
            fresh(), data, rt
        ),
    }
    try:
        from bench.finder import torch_lr_finder_test

        finder["torch-lr-finder"] = lambda: torch_lr_finder_test(fresh(), data, 64, iters)
    except ImportError:  # pragma: no cover - bench/requirements.txt installs it
        pass
    t = alternate(finder, repeats=repeats)
    rows += [
        {
            "case": "range test (MNIST-1D, batch 64, 100 its)",
            "variant": k,
            "us_per_step": median(v) / iters * 1e6,
        }
        for k, v in t.items()
    ]
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['case']:<42} {r['variant']:<55} {r['us_per_step']:8.1f} µs/step")
