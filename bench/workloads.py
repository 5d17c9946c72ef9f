"""8. Your own workload (issue 17): lrbs on a user's DataLoader, model and optimizer.

(a) The range test through the notebook API (`lrbs.find_lr(model, loader, optimizer=...)`)
against torch-lr-finder's on the same DataLoader, fresh model and optimizer (SGD with
momentum 0.9), 1e-7 to 10 over 100 iterations, both stopping at 5x their best loss. lrbs is
timed as a user pays for it, API and all, held in memory (`data_path="auto"`: a DataLoader of
tensors fits) and streamed through the DataLoader (`data_path="stream"`).
(b) lrbs's training loop on the streamed path against a minimal hand-written DataLoader loop
(`for x, y in loader: zero_grad, backward, step`), same data, batch sizes and steps.

    python -m bench.workloads          # print the rows
    python -m bench.workloads --append # and add this section to bench/RESULTS.md
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bench.common import alternate, median, ratio
from bench.finder import steepest_as_torch_lr_finder
from bench.loop import dataloader_loop
from lrbs.core.data import DataSpec, TensorData, load
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.stream import StreamData

BATCH, LR_MIN, LR_MAX, STOP = 64, 1e-7, 10.0, 5.0


def fresh(arrays):
    model = build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)
    return model, torch.optim.SGD(model.parameters(), lr=LR_MIN, momentum=0.9)


class Samples(Dataset):
    """A map-style dataset read one sample at a time (as from files): no batched indexing."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def loader_of(data: TensorData, seed: int = 0) -> DataLoader:
    return DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def lrbs_range_test(arrays, data: TensorData, iters: int, data_path: str, seed: int = 0):
    import lrbs

    model, opt = fresh(arrays)
    return lrbs.find_lr(
        model,
        loader_of(data, seed),
        seed=seed,
        optimizer=opt,
        loss=nn.CrossEntropyLoss(),
        lr_min=LR_MIN,
        lr_max=LR_MAX,
        iterations=iters,
        batch_size=BATCH,
        stop_factor=STOP,
        data_path=data_path,
        device="cpu",
    )


def torch_lr_finder_test(arrays, data: TensorData, iters: int, seed: int = 0) -> dict:
    from torch_lr_finder import LRFinder

    model, opt = fresh(arrays)
    finder = LRFinder(model, opt, nn.CrossEntropyLoss(), device="cpu")
    finder.range_test(loader_of(data, seed), end_lr=LR_MAX, num_iter=iters, diverge_th=STOP)
    history = dict(finder.history)
    finder.reset()
    return history


def spread(xs: list[float]) -> float:
    """How many times apart the highest and the lowest of these rates are."""
    return max(xs) / min(xs)


def range_tests(
    datasets=("fashion-mnist", "mnist1d"), iters: int = 100, repeats: int = 5, seeds: int = 5
):
    """Times side by side (seed 0); suggestions over `seeds` data orders and initial
    batches: the steepest-descent pick of one curve moves with its noise, so each tool's median
    over seeds is compared, beside how far apart each tool's own picks lie."""
    rows = []
    for name in datasets:
        arrays = load(DataSpec(name))
        data = TensorData.from_arrays(arrays, "cpu")
        out: dict = {}
        times = alternate(
            {
                "memory": lambda: out.__setitem__(
                    "memory", lrbs_range_test(arrays, data, iters, "auto")
                ),
                "stream": lambda: out.__setitem__(
                    "stream", lrbs_range_test(arrays, data, iters, "stream")
                ),
                "tlf": lambda: out.__setitem__("tlf", torch_lr_finder_test(arrays, data, iters)),
            },
            repeats=repeats,
        )
        ours = [
            lrbs_range_test(arrays, data, iters, "stream", seed)
            .suggestions()
            .get("steep", math.nan)
            for seed in range(seeds)
        ]
        theirs = [
            steepest_as_torch_lr_finder(torch_lr_finder_test(arrays, data, iters, seed))
            for seed in range(seeds)
        ]
        ours_m, theirs_m = median(ours), median(theirs)
        rows.append(
            {
                "dataset": name,
                "lrbs_memory_s": median(times["memory"]),
                "lrbs_stream_s": median(times["stream"]),
                "tlf_s": median(times["tlf"]),
                "memory_ratio": 1 / ratio(times, "memory", "tlf"),
                "stream_ratio": 1 / ratio(times, "stream", "tlf"),
                "lrbs_iterations": int(out["stream"].summary()["iterations"]),
                "tlf_iterations": len(out["tlf"]["lr"]),
                "lrbs_steep": ours_m,
                "lrbs_spread": spread(ours),
                "tlf_steepest": theirs_m,
                "tlf_spread": spread(theirs),
                "suggestion_ratio": max(ours_m, theirs_m) / min(ours_m, theirs_m),
                "same_in_memory": all(
                    math.isclose(v, out["memory"].suggestions()[k], rel_tol=1e-6)
                    for k, v in out["stream"].suggestions().items()
                ),
            }
        )
    return rows


def stream_loop(datasets=("fashion-mnist", "mnist1d"), steps: int = 600, repeats: int = 9):
    rows = []
    for name in datasets:
        arrays = load(DataSpec(name))
        data = TensorData.from_arrays(arrays, "cpu")
        for kind, batch in [
            (k, b) for k in ("TensorDataset", "per sample") for b in (32, 128, 1024)
        ]:
            of = TensorDataset if kind == "TensorDataset" else Samples
            streamed = StreamData(
                train=of(data.x_train, data.y_train),
                val=of(data.x_val, data.y_val),
                device=torch.device("cpu"),
                input_shape=data.input_shape,
                n_classes=data.n_classes,
                name=name,
            )
            n_steps = max(10, steps // (4 if batch >= 1024 else 1))
            cfg = TrainConfig(
                batch_size=batch,
                budget=Budget(steps=n_steps),
                optim=OptimSpec("sgd", 0.05),
                log_every=10,
                eval_each_epoch=False,
                eval_at_end=False,
            )

            def model():
                return build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)

            def hand():
                return dataloader_loop(model(), streamed.train, batch, n_steps, 0.05, 0)

            # the hand loop a second time: what a ratio of two identical loops reads here
            times = alternate(
                {"lrbs": lambda: train(model(), streamed, cfg), "hand": hand, "again": hand},
                repeats=repeats,
            )
            rows.append(
                {
                    "dataset": name,
                    "kind": kind,
                    "batch": batch,
                    "steps": n_steps,
                    "lrbs_stream_s": median(times["lrbs"]),
                    "hand_s": median(times["hand"]),
                    "throughput_ratio": ratio(times, "lrbs", "hand"),
                    "floor_ratio": ratio(times, "again", "hand"),
                }
            )
    return rows


def section(repeats: int = 5, stamp: bool = False) -> list[str]:
    """The RESULTS.md section: both tables, their targets and verdicts."""
    from bench.run import table, verdict

    rt = range_tests(repeats=repeats)
    sl = stream_loop(repeats=repeats + 4)  # a per-sample step is noisy on a shared machine
    worst_time = max(max(r["memory_ratio"], r["stream_ratio"]) for r in rt)
    worst_sugg = max(r["suggestion_ratio"] for r in rt)
    worst_loop = min(r["throughput_ratio"] for r in sl)
    floor_lo = min(r["floor_ratio"] for r in sl)
    floor_hi = max(r["floor_ratio"] for r in sl)
    when = (
        f" (`python -m bench.workloads`, run {dt.datetime.now():%Y-%m-%d %H:%M} on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, CPU)"
        if stamp
        else ""
    )
    return [
        "## 9. Your own workload through a DataLoader",
        "",
        f"Issue 17's targets, each pair timed side by side{when}. (a) The range test on a "
        "user's DataLoader (TensorDataset, batch 64, shuffled), fresh MLP and "
        "`torch.optim.SGD(momentum=0.9)`, 1e-7 to 10 over 100 iterations, both stopping at 5x "
        "their best loss: lrbs through the notebook API (`lrbs.find_lr(model, loader, "
        "optimizer=opt, loss=...)`, everything a user pays for: the copy of the model, the "
        "data's checks, the run) held in memory (`data_path='auto'`) and streamed through the "
        "DataLoader (`'stream'`), against torch-lr-finder's `range_test`. Time ratio < 1 means "
        "lrbs is faster. Suggestions, over 5 seeds (the loader's shuffle, lrbs's seed): the "
        "median of lrbs's steepest descent (streamed) against the median of torch-lr-finder's "
        "plot suggestion (steepest gradient); '×apart' is how far apart each tool's own five "
        "picks lie, the noise a single run's pick carries; 'same' says whether the in-memory "
        "run suggested exactly the streamed run's rates.",
        "",
        table(
            rt,
            {
                "dataset": "data",
                "lrbs_memory_s": "lrbs memory s",
                "lrbs_stream_s": "lrbs stream s",
                "tlf_s": "torch-lr-finder s",
                "memory_ratio": "memory / tlf",
                "stream_ratio": "stream / tlf",
                "lrbs_iterations": "lrbs its",
                "tlf_iterations": "tlf its",
                "lrbs_steep": "lrbs steep (median)",
                "lrbs_spread": "lrbs ×apart",
                "tlf_steepest": "tlf steepest (median)",
                "tlf_spread": "tlf ×apart",
                "suggestion_ratio": "suggestion ratio",
                "same_in_memory": "same",
            },
        ),
        "",
        f"Target time ≤ 1.0×: {verdict(worst_time <= 1.0)} (worst {worst_time:.2f}). Target "
        f"suggestion within 1.5×: {verdict(worst_sugg <= 1.5)} (worst {worst_sugg:.2f}).",
        "",
        "(b) lrbs's loop on the streamed path (`StreamData`: its DataLoader reads the seeded "
        "permutation a batch at a time) against a minimal hand-written DataLoader loop "
        "(`DataLoader(dataset, batch_size, shuffle=True)`, zero_grad/backward/step); MLP, SGD, "
        "same dataset, steps and batch, lrbs recording its events every 10 steps. Two datasets: "
        "a `TensorDataset`, which lrbs gathers with one index per batch (the hand loop indexes "
        "and stacks sample by sample, as the DataLoader does), and a dataset read one sample at "
        "a time (as from files), where both pay per sample. Ratio > 1 means lrbs is faster; "
        "'hand vs itself' times the hand loop twice in each round, the noise of a ratio here.",
        "",
        table(
            sl,
            {
                "dataset": "data",
                "kind": "Dataset",
                "batch": "batch",
                "steps": "steps",
                "lrbs_stream_s": "lrbs streamed s",
                "hand_s": "hand DataLoader s",
                "throughput_ratio": "throughput ratio",
                "floor_ratio": "hand vs itself",
            },
        ),
        "",
        f"Target ≥ 0.95×: {verdict(worst_loop >= 0.95)} (worst {worst_loop:.3f}). The same "
        f"hand loop timed against itself read {floor_lo:.3f} to {floor_hi:.3f}: the "
        "resolution of one ratio on this machine.",
    ]


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    text = "\n".join(section(repeats=3 if "--quick" in sys.argv else 5, stamp=True))
    print(text)
    if "--append" in sys.argv:
        from bench.run import OUT

        OUT.write_text(OUT.read_text().rstrip("\n") + "\n\n" + text + "\n")
        print(f"appended to {OUT}")
