"""2. The LR range test against torch-lr-finder (installed for the benchmark only): same model,
data, iterations, range and batch; time ratio and both suggestions side by side."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import alternate, median, ratio
from bench.loop import minimal_loop
from lrbs.core.data import DataSpec, TensorData, load
from lrbs.core.models import ModelSpec, build_model
from lrbs.experiments.lr_finder import RangeTestConfig, range_test


def torch_lr_finder_test(model, data: TensorData, batch: int, iters: int):
    from torch_lr_finder import LRFinder

    opt = torch.optim.SGD(model.parameters(), lr=1e-7)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True)
    finder = LRFinder(model, opt, nn.CrossEntropyLoss(), device="cpu")
    finder.range_test(loader, end_lr=10, num_iter=iters, step_mode="exp")
    history = dict(finder.history)
    finder.reset()
    return history


def steepest_as_torch_lr_finder(history: dict, skip_start: int = 10, skip_end: int = 5) -> float:
    """torch-lr-finder's plot() suggestion: the steepest gradient of its loss list."""
    lrs = np.array(history["lr"][skip_start:-skip_end])
    losses = np.array(history["loss"][skip_start:-skip_end])
    return float(lrs[np.gradient(losses).argmin()])


def run(datasets=("fashion-mnist", "mnist1d"), iters: int = 100, repeats: int = 5) -> list[dict]:
    rows = []
    for name in datasets:
        arrays = load(DataSpec(name))
        data = TensorData.from_arrays(arrays, "cpu")

        def fresh():
            return build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)

        cfg = RangeTestConfig(1e-7, 10, iters, batch_size=64)
        out = {}
        done = len(range_test(fresh(), data, cfg).lrs)  # iterations before its stop rule
        times = alternate(
            {
                "lrbs": lambda: out.__setitem__("lrbs", range_test(fresh(), data, cfg)),
                "torch-lr-finder": lambda: out.__setitem__(
                    "tlf", torch_lr_finder_test(fresh(), data, 64, iters)
                ),
                # the floor: the same number of bare training steps, nothing recorded
                "floor": lambda: minimal_loop(fresh(), data, 64, done, 1e-3, 0),
            },
            repeats=repeats,
        )
        ours = out["lrbs"]
        rows.append(
            {
                "dataset": name,
                "iterations": iters,
                "lrbs_s": median(times["lrbs"]),
                "torch_lr_finder_s": median(times["torch-lr-finder"]),
                "time_ratio": 1 / ratio(times, "lrbs", "torch-lr-finder"),
                "lrbs_iterations": len(ours.lrs),
                "tlf_iterations": len(out["tlf"]["lr"]),
                "floor_ratio": 1 / ratio(times, "floor", "torch-lr-finder"),
                # a rule with no answer (no real descent) is NaN in the table
                **{
                    f"lrbs_{col}": getattr(ours.suggestion(name), "lr", float("nan"))
                    for col, name in (
                        ("steep", "steep"),
                        ("valley", "valley"),
                        ("min_div10", "minimum"),
                    )
                },
                "tlf_steepest": steepest_as_torch_lr_finder(out["tlf"]),
            }
        )
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
