"""1. Training-loop throughput: lrbs's loop against a minimal hand-written loop and the usual
DataLoader loop, same model, data, batch sizes and steps, events on."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bench.common import alternate, median, ratio
from lrbs.core.data import DataSpec, TensorData, load
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec, build_model


def minimal_loop(
    model,
    data: TensorData,
    batch: int,
    steps: int,
    lr: float,
    seed: int,
    read_every: int = 0,
    scheduler=None,
) -> None:
    """What a careful user writes by hand: tensors in memory, index slicing, nothing else.
    For the ablation in bench/profile.py it can also read the loss every `read_every` steps
    (summed on the device, as lrbs does) and step a scheduler."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = scheduler(opt) if scheduler else None
    g = torch.Generator().manual_seed(seed)
    n = data.n_train
    perm, pos = torch.randperm(n, generator=g), 0
    acc, k = torch.zeros(()), 0
    for _ in range(steps):
        if pos >= n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + batch]
        pos += batch
        loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if read_every:
            acc.add_(loss.detach())
            k += 1
            if k == read_every:
                acc.item()
                acc.zero_()
                k = 0


def dataloader_loop(
    model, data: TensorData | Dataset, batch: int, steps: int, lr: float, seed: int
) -> None:
    """The usual tutorial loop: a Dataset (TensorDataset of the data) + DataLoader(shuffle)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    dataset = data if isinstance(data, Dataset) else TensorDataset(data.x_train, data.y_train)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    done = 0
    while done < steps:
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return


def run(dataset: str = "fashion-mnist", steps: int = 300, repeats: int = 5) -> list[dict]:
    arrays = load(DataSpec(dataset))
    data = TensorData.from_arrays(arrays, "cpu")
    rows = []
    for batch in (32, 128, 1024, "full"):
        b = data.n_train if batch == "full" else batch
        if batch == "full":  # at least ~0.5 s of work where a full-batch step is cheap
            n_steps = min(100, max(10, 600_000 // data.n_train))
        else:
            n_steps = max(10, steps // (4 if b >= 1024 else 1))
        cfg = TrainConfig(
            batch_size=b,
            budget=Budget(steps=n_steps),
            optim=OptimSpec("sgd", 0.05),
            log_every=10,
            eval_each_epoch=False,
            eval_at_end=False,
        )

        def fresh():
            return build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)

        events = []
        times = alternate(
            {
                "lrbs": lambda: train(fresh(), data, cfg, on_event=events.append),
                "minimal": lambda: minimal_loop(fresh(), data, b, n_steps, 0.05, 0),
                "dataloader": lambda: dataloader_loop(fresh(), data, b, n_steps, 0.05, 0),
            },
            repeats=repeats,
        )
        rows.append(
            {
                "batch": batch,
                "steps": n_steps,
                "lrbs_s": median(times["lrbs"]),
                "minimal_s": median(times["minimal"]),
                "dataloader_s": median(times["dataloader"]),
                "vs_minimal": ratio(times, "lrbs", "minimal"),
                "vs_dataloader": ratio(times, "lrbs", "dataloader"),
            }
        )
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
