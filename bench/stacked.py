"""5b. K learning rates at once (lrbs.core.stacked, torch.func vmap) against K sequential runs
of the training loop: same model, data, batch size and steps."""

from __future__ import annotations

from bench.common import alternate, median, ratio
from lrbs.core.data import DataSpec, TensorData, load
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.stacked import train_stacked


def run(
    dataset: str = "mnist1d",
    device: str = "cpu",
    steps: int = 300,
    repeats: int = 5,
    ks: tuple[int, ...] = (2, 4, 8),
    batch: int = 128,
) -> list[dict]:
    arrays = load(DataSpec(dataset))
    data = TensorData.from_arrays(arrays, device)
    cfg = TrainConfig(
        batch_size=batch,
        budget=Budget(steps=steps),
        optim=OptimSpec("sgd", 0.05),
        log_every=10,
        eval_each_epoch=False,
        eval_at_end=False,
    )

    def fresh():
        model = build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)
        return model.to(data.x_train.device)

    def sequential(lrs):
        for lr in lrs:
            train(fresh(), data, TrainConfig(**{**cfg.__dict__, "optim": OptimSpec("sgd", lr)}))

    rows = []
    for k in ks:
        lrs = [0.01 * 1.5**i for i in range(k)]
        times = alternate(
            {
                "one": lambda: sequential(lrs[:1]),
                "stacked": lambda lrs=lrs: train_stacked(fresh, data, cfg, lrs),
                "sequential": lambda lrs=lrs: sequential(lrs),
            },
            repeats=repeats,
        )
        rows.append(
            {
                "dataset": dataset,
                "device": device,
                "k": k,
                "one_s": median(times["one"]),
                "stacked_s": median(times["stacked"]),
                "sequential_s": median(times["sequential"]),
                "stacked_vs_one": 1 / ratio(times, "stacked", "one"),
                "speedup_vs_sequential": ratio(times, "stacked", "sequential"),
            }
        )
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
