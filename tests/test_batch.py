import math

import numpy as np
import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget
from lrbs.core.models import ModelSpec, build_model
from lrbs.experiments import batch as bs


def make(seed):
    return build_model(ModelSpec("mlp", hidden=(16,)), (6,), 3, seed)


@pytest.mark.parametrize("rule, expected", [("fixed", 0.1), ("linear", 0.4), ("sqrt", 0.2)])
def test_scaling_rules(rule, expected):
    assert bs.scaled_lr(0.1, 32, 128, rule) == pytest.approx(expected)


def test_warmup_ramps_linearly_then_holds():
    model = make(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.4)
    sched = bs.warmup(0.4, 0.1, epochs=2, steps_per_epoch=5)(opt)
    seen = []
    for _ in range(14):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 + 0.3 * min(1, i / 10) for i in range(14)]
    np.testing.assert_allclose(seen, expected)


def test_warmup_is_applied_in_the_sweep():
    cfg = bs.BatchSweepConfig(
        (16, 64), Budget(epochs=2), lr=0.05, rule="linear", warmup_epochs=1, log_every=1
    )
    runs = bs.batch_sweep(make, blobs(), cfg)
    small, big = runs
    assert {e.lr for e in small.result.events if e.kind == "train"} == {0.05}
    lrs = [e.lr for e in big.result.events if e.kind == "train"]
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.2)
    assert lrs == sorted(lrs)


def test_noise_scale():
    assert bs.noise_scale(0.1, 60000, 128) == pytest.approx(0.1 * 60000 / 128)
    assert bs.noise_scale(0.1, 60000, 128, momentum=0.9) == pytest.approx(60000 / 128)


def test_full_means_the_whole_training_set():
    assert bs.resolve_batches((64, "full", 8), 240) == (8, 64, 240)


@pytest.mark.parametrize(
    "values, message",
    [
        ((0,), "at least 1"),
        ((-8,), "at least 1"),
        ((500,), "larger than the training set"),
        ((64, 64), "repeat 64"),
        ((64, "full", 240), "repeat 240"),
        ((2.5,), "whole number"),
        (("big",), "not a number"),
        ((), "empty"),
    ],
)
def test_bad_batch_lists(values, message):
    with pytest.raises(ConfigError, match=message):
        bs.resolve_batches(values, 240)


def test_bad_budget_and_scaled_rate():
    with pytest.raises(ConfigError, match="budget"):
        bs.BatchSweepConfig(budget=Budget(seconds=0))
    cfg = bs.BatchSweepConfig((1, 240), lr=1e4, rule="linear")
    with pytest.raises(ConfigError, match="absurdly large"):
        cfg.plan(240)


def test_every_batch_starts_from_the_same_weights_and_budget():
    starts = []

    def recording(seed):
        m = make(seed)
        starts.append([p.detach().clone() for p in m.parameters()])
        return m

    cfg = bs.BatchSweepConfig((16, 32, "full"), Budget(steps=7))
    runs = bs.batch_sweep(recording, blobs(), cfg)
    assert [r.batch for r in runs] == [16, 32, 240]
    assert {r.result.steps for r in runs} == {7}
    for other in starts[1:]:
        assert all(torch.equal(a, b) for a, b in zip(starts[0], other, strict=True))


def test_epoch_budget_counts_updates_per_batch():
    cfg = bs.BatchSweepConfig((16, 50, "full"), Budget(epochs=2))
    runs = bs.batch_sweep(make, blobs(), cfg)
    assert [r.result.steps for r in runs] == [2 * 15, 2 * 5, 2]
    assert all(r.result.epochs == pytest.approx(2) for r in runs)


def test_repeats_and_table():
    cfg = bs.BatchSweepConfig((16, 64), Budget(steps=10), repeats=3)
    runs = bs.batch_sweep(make, blobs(), cfg)
    assert [(r.batch, r.seed) for r in runs] == [
        (16, 0),
        (16, 1),
        (16, 2),
        (64, 0),
        (64, 1),
        (64, 2),
    ]
    rows = [bs.run_row(r, 240) for r in runs]
    table = bs.sweep_table(rows)
    assert list(table.batch) == [16, 64] and set(table.repeats) == {3}
    assert "val_loss_std" in table
    first = [r for r in rows if r["batch"] == 16]
    assert table.val_loss[0] == pytest.approx(np.mean([r["val_loss"] for r in first]))
    assert table.gap[0] == pytest.approx(np.mean([r["val_loss"] - r["train_loss"] for r in first]))
    assert table.noise_scale[0] == pytest.approx(0.1 * 240 / 16)


def test_scaling_check_plan_and_agreement():
    cfg = bs.ScalingCheckConfig(base_batch=8, base_lr=0.01, k_max=3, epochs=1)
    plan = cfg.plan(240)
    assert [(r, k, b) for r, k, b, _ in plan][:3] == [
        ("linear", 1, 8),
        ("linear", 2, 16),
        ("linear", 3, 24),
    ]
    assert [lr for r, _, _, lr in plan if r == "linear"] == pytest.approx([0.01, 0.02, 0.03])
    assert {lr for r, _, _, lr in plan if r == "fixed"} == {0.01}
    curves = bs.scaling_check(make, blobs(), cfg)
    assert set(curves.rule) == {"linear", "fixed"} and set(curves.k) == {1, 2, 3}
    agree = bs.agreement(curves).set_index("rule")
    manual = curves[(curves.rule == "fixed") & (curves.epoch == 1)].val_loss
    assert agree.loc["fixed", "mean_spread"] == pytest.approx(manual.max() - manual.min())


def test_agreement_on_made_up_curves():
    curves = pd.DataFrame(
        {
            "rule": ["linear"] * 4 + ["fixed"] * 4,
            "k": [1, 2, 1, 2] * 2,
            "epoch": [1, 1, 2, 2] * 2,
            "val_loss": [1.0, 1.1, 0.5, 0.5, 1.0, 1.5, 0.5, 0.9],
        }
    )
    a = bs.agreement(curves).set_index("rule")
    assert a.loc["linear", "mean_spread"] == pytest.approx(0.05)
    assert a.loc["fixed", "mean_spread"] == pytest.approx(0.45)


def test_scaling_check_bad_input():
    with pytest.raises(ConfigError, match="K must be at least 2"):
        bs.ScalingCheckConfig(k_max=1)
    with pytest.raises(ConfigError, match="larger than the training set"):
        bs.ScalingCheckConfig(base_batch=100, k_max=3).plan(240)


def test_probe_finds_the_boundary_exactly():
    limit = 1000
    r = bs.largest_batch(lambda b: b <= limit, upper=10**6)
    assert r.largest == limit and r.hit_limit
    assert r.safe == 512  # a power of two at or below 90 % of 1000
    # doubling then bisection: about log2 twice, not a linear scan
    assert len(r.tried) <= 2 * math.ceil(math.log2(limit)) + 2
    r = bs.largest_batch(lambda b: True, upper=240)
    assert (r.largest, r.safe, r.hit_limit) == (240, 240, False)


def test_probe_with_a_faked_out_of_memory_error():
    data = blobs()
    model = make(0)

    def oom_above_100(module, inputs):
        if inputs[0].shape[0] > 100:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    model.register_forward_pre_hook(oom_above_100)
    r = bs.largest_batch(bs.make_fits(model, data), upper=data.n_train)
    assert r.largest == 100 and r.hit_limit
    assert all(p.grad is None for p in model.parameters())


def test_probe_on_the_cpu_with_a_cap():
    data = blobs()
    model = make(0)
    need = {b: bs.step_memory_bytes(model, data.x_train[:b], data.y_train[:b]) for b in (10, 20)}
    assert need[20] > need[10]  # activations grow with the batch
    per_sample = need[20] - need[10]
    cap = need[10] + 5 * per_sample // 10  # fits 15, not 16
    r = bs.largest_batch(bs.make_fits(model, data, cap_bytes=cap), upper=data.n_train)
    assert r.largest == 15


def test_step_memory_counts_saved_activations():
    model = torch.nn.Sequential(torch.nn.Linear(10, 50), torch.nn.ReLU(), torch.nn.Linear(50, 3))
    x, y = torch.randn(8, 10), torch.zeros(8, dtype=torch.long)
    small = bs.step_memory_bytes(model, x, y, optim_states=0)
    big = bs.step_memory_bytes(model, torch.randn(16, 10), torch.zeros(16, dtype=torch.long), 0)
    params = sum(p.numel() for p in model.parameters()) * 4
    assert small > 2 * params
    # doubling the batch adds at least the extra input and hidden activations
    assert big - small >= 8 * (10 + 50) * 4


def test_classes_per_batch():
    counts = np.array([900, 90, 10])
    table = bs.classes_per_batch(counts, 100, ["a", "b", "c"])
    assert table.expected_per_batch.tolist() == pytest.approx([90, 9, 1])
    assert table.share.sum() == pytest.approx(1)
    assert "1 samples per batch" in bs.smallest_class_warning(counts, 100)
    assert bs.smallest_class_warning(counts, 1000) is None
