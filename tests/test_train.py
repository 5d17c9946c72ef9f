import copy
import math
import threading

import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, evaluate, train
from lrbs.core.models import ModelSpec, build_model


def model_for(data, seed=0, name="mlp", hidden=(16,)):
    return build_model(ModelSpec(name, hidden=hidden), data.input_shape, data.n_classes, seed)


def cfg(**kw):
    base = dict(batch_size=32, budget=Budget(steps=20), optim=OptimSpec("sgd", 0.1), log_every=5)
    base.update(kw)
    return TrainConfig(**base)


def train_losses(result):
    return [e.loss for e in result.events if e.kind == "train"]


def test_steps_budget_is_exact(data):
    r = train(model_for(data), data, cfg(budget=Budget(steps=13)))
    assert r.status == "finished"
    assert r.steps == 13
    # 240 samples: 7 full batches and one of 16 per epoch, then 5 more full batches
    assert r.samples == 7 * 32 + 16 + 5 * 32


def test_epochs_budget_counts_partial_last_batch(data):
    # 240 samples, batch 50: 5 updates per epoch (the last of 40), so 2 epochs = 10 updates
    r = train(model_for(data), data, cfg(batch_size=50, budget=Budget(epochs=2)))
    assert r.steps == 10
    assert r.epochs == pytest.approx(2.0)
    assert r.samples == 480
    evals = [e for e in r.events if e.kind == "eval"]
    assert [e.step for e in evals] == [5, 10]


def test_fractional_epoch_and_samples_budgets(data):
    r = train(model_for(data), data, cfg(batch_size=40, budget=Budget(epochs=0.5)))
    assert r.steps == 3 and r.epochs == pytest.approx(0.5)
    r = train(model_for(data), data, cfg(batch_size=40, budget=Budget(samples=200)))
    assert r.samples == 200 and r.steps == 5


def test_seconds_budget_stops_the_run(data):
    r = train(model_for(data), data, cfg(batch_size=8, budget=Budget(seconds=0.3)))
    assert r.status == "finished"
    assert r.elapsed >= 0.3
    assert r.steps > 10


def test_first_limit_reached_wins(data):
    r = train(model_for(data), data, cfg(budget=Budget(steps=4, epochs=100)))
    assert r.steps == 4


def test_stop_signal_keeps_what_was_computed(data):
    stop = threading.Event()
    seen = []

    def on_event(e):
        seen.append(e)
        if e.kind == "train" and e.step >= 5:
            stop.set()

    r = train(model_for(data), data, cfg(budget=Budget(steps=1000)), on_event=on_event, stop=stop)
    assert r.status == "stopped"
    assert r.steps == 5
    assert [e.step for e in r.events if e.kind == "train"] == [5]
    assert seen[: len(r.events)] == list(r.events)
    assert r.val_loss is not None  # evaluated at the stop


def test_huge_learning_rate_is_marked_diverged(data):
    r = train(model_for(data), data, cfg(optim=OptimSpec("sgd", 1e4), budget=Budget(steps=200)))
    assert r.status == "diverged"
    assert r.steps < 200
    assert "loss" in r.message


def test_nan_loss_is_diverged_not_an_exception(data):
    bad = blobs()
    bad.x_train[5, 0] = float("nan")
    r = train(model_for(bad), bad, cfg(batch_size=240, budget=Budget(steps=5), log_every=1))
    assert r.status == "diverged" and "nan" in r.message
    assert math.isnan(r.final_loss)


def test_same_seed_same_curve_different_seed_different(data):
    spec = dict(name="mlp", hidden=(16,))
    runs = [
        train(model_for(data, seed=s, **spec), data, cfg(seed=s, budget=Budget(epochs=3)))
        for s in (7, 7, 8)
    ]
    assert train_losses(runs[0]) == train_losses(runs[1])
    assert train_losses(runs[0]) != train_losses(runs[2])


def test_dropout_is_seeded_per_run():
    data = blobs(features=10)
    spec = ModelSpec("bottleneck", dropout=0.5)
    a, b = (
        train(build_model(spec, data.input_shape, 3, 1), data, cfg(seed=1, log_every=1))
        for _ in range(2)
    )
    assert train_losses(a) == train_losses(b)


def test_a_users_own_torch_dropout_is_seeded_per_run_and_the_callers_rng_kept():
    """A model built from plain torch (nn.Dropout draws from torch's global RNG, not the
    run's generator), its weights the same each time, the rest of the process drawing from the
    global RNG between runs: the same seed trains the same curve, another seed another, and
    the caller's global RNG is where it was."""
    data = blobs(features=10)
    torch.manual_seed(0)
    users = torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 3)
    )
    runs = []
    for s in (1, 1, 2):
        runs.append(train(copy.deepcopy(users), data, cfg(seed=s, log_every=1)))
        torch.rand(5)
    assert train_losses(runs[0]) == train_losses(runs[1])
    assert train_losses(runs[0]) != train_losses(runs[2])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(copy.deepcopy(users), data, cfg(seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_same_seed_gives_bit_equal_initial_weights(data):
    a, b = model_for(data, seed=3), model_for(data, seed=3)
    c = model_for(data, seed=4)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_lr_changes_mid_run_through_a_torch_scheduler(data):
    def sched(opt):
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10], gamma=0.1)

    r = train(model_for(data), data, cfg(log_every=1), lr_scheduler=sched)
    lrs = {e.step: e.lr for e in r.events if e.kind == "train"}
    # events carry the rate each update used: the scheduler steps after update 10
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[11] == pytest.approx(0.01)
    assert lrs[20] == pytest.approx(0.01)


def test_batch_size_changes_mid_run(data):
    # 10 per batch in epoch 0 (24 updates), 60 after (4 per epoch): 2 epochs = 28 updates
    r = train(
        model_for(data),
        data,
        cfg(batch_size=10, budget=Budget(epochs=2), log_every=1),
        batch_size_at=lambda p: 10 if p.epoch < 1 else 60,
    )
    assert r.steps == 24 + 4
    sizes = [e.batch_size for e in r.events if e.kind == "train"]
    assert sizes[:24] == [10] * 24 and sizes[24:] == [60] * 4


def test_evaluate_matches_a_direct_computation(data):
    m = model_for(data)
    loss, acc = evaluate(m, data.x_val, data.y_val, chunk=7)
    with torch.no_grad():
        out = m(data.x_val)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(out, data.y_val).item(), 1e-5)
    assert acc == pytest.approx((out.argmax(1) == data.y_val).float().mean().item())


def test_training_learns_and_reports_gap(data):
    r = train(model_for(data), data, cfg(budget=Budget(epochs=10)))
    assert r.val_acc > 0.9
    assert r.gap == pytest.approx(r.val_loss - r.train_eval_loss)


def test_out_of_memory_is_caught(data):
    m = model_for(data)
    calls = {"n": 0}

    def explode(module, inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    m.register_forward_pre_hook(explode)
    r = train(m, data, cfg(log_every=1))
    assert r.status == "oom"
    assert "batch size 32" in r.message
    assert r.steps == 2


def test_other_errors_are_not_swallowed(data):
    m = model_for(data)
    m.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("shape bug")))
    with pytest.raises(RuntimeError, match="shape bug"):
        train(m, data, cfg())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch size must be at least 1"),
        (dict(batch_size=-5), "batch size must be at least 1"),
        (dict(log_every=0), "log interval"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cfg(**kwargs)


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), 1e9])
def test_bad_learning_rates(lr):
    with pytest.raises(ConfigError, match="learning rate"):
        OptimSpec("sgd", lr)


@pytest.mark.parametrize(
    "budget", [dict(), dict(steps=0), dict(epochs=-1), dict(seconds=float("nan")), dict(steps=2.5)]
)
def test_bad_budgets(budget):
    with pytest.raises(ConfigError):
        Budget(**budget)


def test_batch_larger_than_data(data):
    with pytest.raises(ConfigError, match="larger than the training set"):
        train(model_for(data), data, cfg(batch_size=241))


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_every_optimizer_trains(name, data):
    lr = 0.01 if name.startswith("adam") else 0.1
    r = train(model_for(data), data, cfg(optim=OptimSpec(name, lr), budget=Budget(epochs=5)))
    assert r.status == "finished" and r.val_acc > 0.8
