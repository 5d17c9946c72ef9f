"""K rates at once (torch.func) against K runs of the training loop: the same curves."""

import math
from dataclasses import replace

import numpy as np
import pytest

from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.stacked import stackable, train_stacked
from lrbs.experiments import sweeps

SETUP = Setup(DataSpec("digits"))


@pytest.fixture(scope="module")
def data():
    return load_tensors(SETUP)


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "adamw"])
def test_stacked_equals_separate_runs(data, opt):
    lrs = [0.003, 0.03, 0.3] if opt in ("sgd", "momentum") else [1e-4, 1e-3, 1e-2]
    cfg = TrainConfig(
        batch_size=64,
        budget=Budget(epochs=2),
        log_every=5,
        seed=3,
        optim=OptimSpec(opt, 1.0, weight_decay=1e-3),
    )
    stacked = train_stacked(lambda: SETUP.fresh_model(data), data, cfg, lrs)
    for lr, s in zip(lrs, stacked, strict=True):
        alone = train(
            SETUP.fresh_model(data),
            data,
            TrainConfig(**{**cfg.__dict__, "optim": OptimSpec(opt, lr, weight_decay=1e-3)}),
        )
        a = [(e.kind, e.step, e.loss, e.val_loss) for e in alone.events]
        b = [(e.kind, e.step, e.loss, e.val_loss) for e in s.events]
        assert [x[:2] for x in a] == [x[:2] for x in b]
        for (_, _, la, va), (_, _, lb, vb) in zip(a, b, strict=True):
            assert (la is None) == (lb is None) and (va is None) == (vb is None)
            if la is not None:
                assert lb == pytest.approx(la, rel=1e-4, abs=1e-5)
            if va is not None:
                assert vb == pytest.approx(va, rel=1e-4, abs=1e-5)
        assert s.status == alone.status == "finished"
        assert {e.lr for e in s.events} == {lr}


def test_a_diverging_rate_ends_alone(data):
    cfg = TrainConfig(batch_size=64, budget=Budget(steps=60), log_every=5)
    res = train_stacked(lambda: SETUP.fresh_model(data), data, cfg, [0.05, 1e4])
    ok, bad = res
    alone = train(
        SETUP.fresh_model(data),
        data,
        TrainConfig(**{**cfg.__dict__, "optim": OptimSpec("sgd", 1e4)}),
    )
    assert bad.status == alone.status == "diverged" and bad.message
    assert bad.steps == alone.steps < 60
    assert ok.status == "finished" and ok.steps == 60
    assert all(math.isfinite(e.loss) for e in ok.events if e.kind == "train")


def test_sweep_vectorized_matches_the_sequential_sweep(data):
    cfg = sweeps.Config(lrs=(0.01, 0.1, 1.0), budget=Budget(epochs=1), batch_size=32)
    seq = sweeps.run(SETUP, replace(cfg, stacked="no"))
    vec = sweeps.run(SETUP, replace(cfg, stacked="yes"))
    a, b = seq.table(), vec.table()
    assert list(a.lr) == list(b.lr) and list(a.status) == list(b.status)
    assert np.allclose(a.val_loss, b.val_loss, rtol=1e-4)
    # the same rows on the sink: every point, then a "runs" row per rate
    assert [r["run"] for r in vec.rows["runs"]] == [r["run"] for r in seq.rows["runs"]]
    assert set(vec.curves().run_id) == set(seq.curves().run_id) == {"lr=0.01", "lr=0.1", "lr=1"}
    assert len(vec.curves()) == len(seq.curves())


def test_what_cannot_be_stacked_says_why(data):
    cnn = Setup(DataSpec("digits"), ModelSpec("cnn"))
    assert "Dropout" in stackable(cnn.fresh_model(data))
    assert stackable(SETUP.fresh_model(data)) is None
    cfg = TrainConfig(budget=Budget(seconds=1))
    with pytest.raises(ConfigError, match="steps, epochs or samples"):
        train_stacked(lambda: SETUP.fresh_model(data), data, cfg, [0.1])
    with pytest.raises(ConfigError, match="cannot be stacked"):
        train_stacked(
            lambda: cnn.fresh_model(data), data, TrainConfig(budget=Budget(steps=1)), [0.1]
        )


def test_cli_stacked_sweep(capsys):
    import json

    from lrbs.cli import main

    args = ["lr-sweep", "--dataset", "digits", "--lr", "0.01", "0.1", "--epochs", "1", "--json"]
    assert main([*args, "--stacked", "yes"]) == 0
    stacked = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*args, "--stacked", "no"]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for a, b in zip(stacked["runs"], alone["runs"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert main([*args[:-3], "--seconds", "1", "--stacked", "yes"]) == 2
    assert "steps, epochs or samples" in capsys.readouterr().err
