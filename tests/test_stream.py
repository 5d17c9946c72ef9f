"""The loop's other paths: data streamed from a Dataset, gradient accumulation, mixed precision,
parameter groups through the range test, the validation-loss range test, the probe's
accumulation, and stacked sweeps falling back to plain runs."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from support import ROOT, blobs
from torch import nn
from torch.optim import optimizer as step_hooks
from torch.utils.data import Dataset, TensorDataset

from lrbs.core.data import TensorData
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.setup import Setup
from lrbs.core.stream import Gathered, StreamData, build_data
from lrbs.core.task import CLASSIFICATION, Compute, default_task
from lrbs.experiments import bs_probe, lr_finder, noise_scale, sweeps
from lrbs.experiments.lr_finder import RangeTestConfig, range_test
from lrbs.runs.experiment import execute

REGRESS = str(ROOT / "tests" / "workloads" / "regress.py")


class NpyPairs(Dataset):
    """Samples read from .npy files on disk, one at a time (memory-mapped)."""

    def __init__(self, folder, part: str) -> None:
        self.x = np.load(folder / f"x_{part}.npy", mmap_mode="r")
        self.y = np.load(folder / f"y_{part}.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(int(self.y[i]))


@pytest.fixture
def on_disk(tmp_path):
    d = blobs(n=320, n_val=64)
    for part, x, y in (("train", d.x_train, d.y_train), ("val", d.x_val, d.y_val)):
        np.save(tmp_path / f"x_{part}.npy", x.numpy())
        np.save(tmp_path / f"y_{part}.npy", y.numpy())
    return d, tmp_path


def streamed(folder, workers: int = 0, compute: Compute | None = None) -> StreamData:
    return StreamData(
        train=NpyPairs(folder, "train"),
        val=NpyPairs(folder, "val"),
        device=torch.device("cpu"),
        compute=compute or Compute(),
        input_shape=(6,),
        n_classes=3,
        workers=workers,
    )


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def cfg(**kw) -> TrainConfig:
    base = {
        "batch_size": 32,
        "budget": Budget(epochs=2),
        "optim": OptimSpec("momentum", 0.05),
        "log_every": 3,
    }
    return TrainConfig(**(base | kw))


def curve(result) -> list[tuple]:
    return [(e.kind, e.step, e.loss, e.val_loss, e.val_acc) for e in result.events]


def test_a_streamed_dataset_gives_the_same_curve_for_one_seed(on_disk):
    _, folder = on_disk
    a = train(mlp(), streamed(folder), cfg())
    b = train(mlp(), streamed(folder, workers=1), cfg())  # a worker process reads it
    assert a.status == b.status == "finished" and a.steps == 20
    assert curve(a) == curve(b)
    c = train(mlp(), streamed(folder), cfg(seed=1))
    assert curve(c) != curve(a)


def test_a_streamed_tensor_dataset_is_gathered_a_batch_at_a_time_with_the_same_curve(on_disk):
    """A TensorDataset streams by one index per batch (`Gathered`); the curve is the one of the
    same samples read and stacked one at a time, workers or not, batch schedule or not."""
    memory, folder = on_disk
    tensors = StreamData(
        train=TensorDataset(memory.x_train, memory.y_train),
        val=TensorDataset(memory.x_val, memory.y_val),
        device=torch.device("cpu"),
        input_shape=(6,),
        n_classes=3,
    )
    loader = tensors.loader(tensors.train, [[3, 1, 2]])
    assert isinstance(loader.dataset, Gathered)
    x, y = next(iter(loader))
    assert torch.equal(x, memory.x_train[[3, 1, 2]]) and torch.equal(y, memory.y_train[[3, 1, 2]])

    def grow(p):
        return 16 if p.step < 5 else 48

    one_at_a_time = train(mlp(), streamed(folder), cfg(), batch_size_at=grow)
    gathered = train(mlp(), tensors, cfg(), batch_size_at=grow)
    in_a_worker = train(mlp(), replace(tensors, workers=1), cfg(), batch_size_at=grow)
    assert curve(gathered) == curve(one_at_a_time) == curve(in_a_worker)


def test_streamed_and_in_memory_agree_with_a_batch_schedule(on_disk):
    """One order on both paths, whatever the batch of each step (a growing batch)."""
    memory, folder = on_disk

    def grow(p):
        return 16 if p.step < 5 else 48

    a = train(mlp(), memory, cfg(), batch_size_at=grow)
    b = train(mlp(), streamed(folder), cfg(), batch_size_at=grow)
    assert [e.batch_size for e in a.events] == [e.batch_size for e in b.events]
    for x, y in zip(curve(a), curve(b), strict=True):
        assert x[:2] == y[:2]
        np.testing.assert_allclose(
            [v for v in x[2:] if v is not None], [v for v in y[2:] if v is not None], rtol=1e-5
        )


def test_the_range_test_on_a_streamed_loader_equals_the_in_memory_one(on_disk):
    memory, folder = on_disk
    rt = RangeTestConfig(iterations=40, batch_size=32, lr_max=5.0)
    a = range_test(mlp(), memory, rt)
    b = range_test(mlp(), streamed(folder), rt)
    np.testing.assert_allclose(a.lrs, b.lrs)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5, atol=1e-6)
    assert {s.name: s.lr for s in a.suggestions} == pytest.approx(
        {s.name: s.lr for s in b.suggestions}
    )


def test_build_data_chooses_memory_or_stream_by_size(on_disk, monkeypatch):
    memory, folder = on_disk
    parts = (NpyPairs(folder, "train"), NpyPairs(folder, "val"))

    def build(path: str):
        return build_data(
            *parts,
            device=torch.device("cpu"),
            compute=Compute(data_path=path),
            task_of=lambda y: default_task(y, None, None),
        )

    small = build("auto")
    assert isinstance(small, TensorData) and torch.equal(small.x_train, memory.x_train)
    assert isinstance(build("stream"), StreamData)
    import lrbs.core.stream as stream

    monkeypatch.setattr(stream, "MEMORY_CAP_BYTES", 1000)  # "does not fit"
    assert isinstance(build("auto"), StreamData)
    assert isinstance(build("memory"), TensorData)


def test_accumulating_4_x_16_equals_batch_64_against_a_hand_written_loop():
    d = blobs(n=640, n_val=64)
    steps, lr = 6, 0.2

    def linear():
        torch.manual_seed(3)
        return nn.Linear(6, 3)

    # the oracle: plain torch, the loop's order (the scoring subset is drawn first)
    oracle = linear()
    opt = torch.optim.SGD(oracle.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    torch.randperm(640, generator=gen)
    perm = torch.randperm(640, generator=gen)
    for i in range(steps):
        idx = perm[i * 64 : (i + 1) * 64]
        opt.zero_grad()
        nn.functional.cross_entropy(oracle(d.x_train[idx]), d.y_train[idx]).backward()
        opt.step()
    tc = TrainConfig(batch_size=64, budget=Budget(steps=steps), optim=OptimSpec("sgd", lr))
    plain, accumulated = linear(), linear()
    train(plain, d, tc)
    r = train(accumulated, replace(d, compute=Compute(accumulate=4)), tc)
    assert r.steps == steps and r.samples == steps * 64
    for p, q, o in zip(
        plain.parameters(), accumulated.parameters(), oracle.parameters(), strict=True
    ):
        torch.testing.assert_close(p, o, rtol=0, atol=1e-6)
        torch.testing.assert_close(q, o, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_the_cpu(precision):
    d = replace(blobs(), compute=Compute(precision=precision, accumulate=2))
    r = train(mlp(), d, cfg(budget=Budget(steps=12), optim=OptimSpec("sgd", 0.1)))
    assert r.status == "finished" and np.isfinite(r.final_loss) and np.isfinite(r.val_loss)
    assert r.val_acc is not None and r.val_loss < 1.1  # it learns (chance: ln 3)


def group_rates(run) -> list[list[float]]:
    """The rate of every parameter group at every optimizer step `run()` takes."""
    seen: list[list[float]] = []

    def hook(opt, args, kwargs):
        seen.append([g["lr"] for g in opt.param_groups])

    handle = step_hooks.register_optimizer_step_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_a_two_group_optimizer_keeps_its_ratio_through_the_range_test():
    d = blobs()
    model = mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD([{"params": params[:2], "lr": 1.0}, {"params": params[2:], "lr": 0.1}])
    rt = RangeTestConfig(iterations=20, lr_min=1e-4, lr_max=1.0, stop_factor=None)
    seen = group_rates(lambda: range_test(model, d, rt, optimizer=opt))
    assert len(seen) == 20
    first = [s[0] for s in seen]
    np.testing.assert_allclose(first, rt.lrs(), rtol=1e-9)
    np.testing.assert_allclose([s[1] / s[0] for s in seen], 0.1, rtol=1e-9)
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.1]  # restored


def test_a_workload_optimizer_keeps_its_ratio_through_the_range_test():
    """regress.py's optimizer puts the head at a tenth of the body's rate."""
    config = lr_finder.Config(iterations=15, batch_size=32, lr_max=0.1, stop_factor=0)
    seen = group_rates(lambda: execute(lr_finder, Setup(workload=REGRESS), config))
    assert len(seen) == 15
    np.testing.assert_allclose([s[1] / s[0] for s in seen], 0.1, rtol=1e-9)
    np.testing.assert_allclose([s[0] for s in seen], config.base().lrs(), rtol=1e-9)


def test_the_range_test_can_follow_the_validation_loss():
    d = blobs()
    rt = RangeTestConfig(iterations=15, lr_max=1.0, stop_factor=None)
    val = range_test(mlp(), d, replace(rt, follow="val"))
    tr = range_test(mlp(), d, rt)
    np.testing.assert_allclose(val.lrs, tr.lrs)
    # the oracle: the validation loss after each of the same steps
    model, losses = mlp(), []
    from lrbs.core.loop import evaluate

    def hook(opt, args, kwargs):
        losses.append(evaluate(model, d.x_val, d.y_val)[0])

    handle = step_hooks.register_optimizer_step_post_hook(hook)
    try:
        range_test(model, d, rt)
    finally:
        handle.remove()
    np.testing.assert_allclose(val.losses, losses, rtol=1e-5)


def test_the_probe_reports_the_accumulation_for_a_target_batch():
    setup = Setup(workload=str(ROOT / "tests" / "workloads" / "classify.py"))
    r = execute(bs_probe, setup, bs_probe.Config(cap_mib=0.02, target_batch=400))
    s = r.summary()
    assert s["memory_limited"] and s["safe"] < 400
    assert s["micro_batch"] * s["accumulate"] >= 400
    assert s["micro_batch"] <= s["safe"]
    assert (s["accumulate"] - 1) * s["safe"] < 400  # the fewest steps
    assert f"--accumulate {s['accumulate']}" in r.verdict()


def test_the_noise_meter_works_on_streamed_data():
    setup = Setup(workload=REGRESS, compute=Compute(data_path="stream"))
    config = noise_scale.Config(batch_small=8, batch_big=64, steps=12, every=4)
    r = execute(noise_scale, setup, config)
    rows = r.rows["rows"]
    assert len(rows) >= 2 and all(np.isfinite(x["g2"]) for x in rows)


def test_a_stacked_sweep_on_a_workload_runs_one_rate_at_a_time_and_says_so():
    setup = Setup(workload=REGRESS)
    config = sweeps.Config(lrs=(0.001, 0.01), budget=Budget(steps=3), stacked="yes")
    r = execute(sweeps, setup, config)
    assert "not stacked" in r.message and len(r.rows["runs"]) == 2


def test_the_default_task_is_classification_only_for_integer_targets():
    assert default_task(torch.tensor([0, 1]), None, None) == CLASSIFICATION
    reg = default_task(torch.tensor([[0.5]]), nn.functional.mse_loss, None)
    assert reg.metric is None and reg.name == "regression"


def test_a_dataloader_brings_its_dataset_collate_and_workers_and_an_iterable_is_refused(on_disk):
    from torch.utils.data import DataLoader, IterableDataset

    from lrbs.core.errors import ConfigError
    from lrbs.core.stream import as_dataset

    _, folder = on_disk
    ds = NpyPairs(folder, "train")

    def collate(batch):
        xs, ys = zip(*batch, strict=True)
        return torch.stack(xs) * 2, torch.stack(ys)

    got, got_collate, workers = as_dataset(DataLoader(ds, collate_fn=collate, num_workers=2), "t")
    assert got is ds and got_collate is collate and workers == 2
    data = build_data(
        DataLoader(ds, collate_fn=collate),
        DataLoader(NpyPairs(folder, "val"), collate_fn=collate),
        device=torch.device("cpu"),
        compute=Compute(data_path="stream"),
        task_of=lambda y: default_task(y, None, None),
    )
    x, _ = data.take(torch.tensor([0, 1]))
    torch.testing.assert_close(x, torch.stack([ds[0][0], ds[1][0]]) * 2)

    class Endless(IterableDataset):
        def __iter__(self):
            yield torch.zeros(2), torch.tensor(0)

    with pytest.raises(ConfigError, match="IterableDataset"):
        as_dataset(Endless(), "the training data")


@pytest.mark.parametrize("name", ["cosine", "clr", "onecycle"])
def test_a_two_group_optimizer_keeps_its_ratio_through_the_schedules(name):
    from lrbs.experiments import schedules

    model = mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD([{"params": params[:2], "lr": 0.5}, {"params": params[2:], "lr": 0.05}])
    cfg = schedules.Config(schedules=(name,), epochs=2)
    sched = schedules.build_scheduler(name, cfg, opt, spe=10)
    for _ in range(19):
        opt.step()
        sched.step()
        a, b = (g["lr"] for g in opt.param_groups)
        assert b / a == pytest.approx(0.1)


def test_hypergradient_descent_keeps_the_groups_ratio():
    from lrbs.experiments.schedules import Hypergradient

    d = blobs()
    model = mlp()
    params = list(model.parameters())
    opt = torch.optim.SGD([{"params": params[:2], "lr": 0.2}, {"params": params[2:], "lr": 0.02}])
    Hypergradient(opt, beta=0.01)
    rates = []
    for i in range(8):
        idx = torch.arange(i * 16, (i + 1) * 16)
        opt.zero_grad()
        nn.functional.cross_entropy(model(d.x_train[idx]), d.y_train[idx]).backward()
        opt.step()
        rates.append([g["lr"] for g in opt.param_groups])
    assert rates[-1][0] != 0.2  # the rate moved
    np.testing.assert_allclose([b / a for a, b in rates], 0.1, rtol=1e-9)
