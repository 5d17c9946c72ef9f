"""The notebook API: the user's objects in, the experiments' results out, through the same
engine path as the CLI (same numbers), with the user's model, optimizer and RNG untouched."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from support import ROOT
from torch import nn

import lrbs
from lrbs.core.errors import ConfigError
from lrbs.core.setup import Setup
from lrbs.core.workload import WorkloadError
from lrbs.experiments import lr_finder
from lrbs.runs.experiment import execute

CLASSIFY = str(ROOT / "tests" / "workloads" / "classify.py")


def blobs(n: int = 300):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 2
    y = torch.randint(0, 3, (n,), generator=g)
    return centres[y] + torch.randn(n, 8, generator=g), y


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_import_lrbs_stays_light():
    code = "import sys, lrbs; print('torch' in sys.modules, 'lrbs.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert callable(lrbs.find_lr) and "find_lr" in lrbs.__all__


def test_find_lr_restores_the_model_the_optimizer_and_the_rng():
    x, y = blobs()
    model = net()
    params = list(model.parameters())
    opt = torch.optim.SGD(
        [{"params": params[:4], "lr": 0.1}, {"params": params[4:], "lr": 0.01}], momentum=0.9
    )
    model(x).sum().backward()
    opt.step()  # some momentum state, and BatchNorm statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {k: v["momentum_buffer"].clone() for k, v in opt.state_dict()["state"].items()}
    rng = torch.random.get_rng_state()
    found = lrbs.find_lr(
        model, (x, y), optimizer=opt, val=(x[:64], y[:64]), iterations=25, batch_size=32
    )
    assert found.status == "finished" and found.suggestions()
    curve = found.curve()
    assert list(curve.columns) == ["round", "seed", "iteration", "lr", "loss", "smoothed"]
    assert len(curve) > 5
    assert type(found.chart()).__name__ == "LayerChart"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    now = opt.state_dict()
    assert [g["lr"] for g in now["param_groups"]] == [0.1, 0.01]
    for k, v in now["state"].items():
        assert torch.equal(v["momentum_buffer"], opt_state[k])
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_the_api_and_the_cli_path_give_the_same_curve():
    """A workload file through the API and through execute (as the CLI runs it)."""
    a = lrbs.find_lr(CLASSIFY, iterations=20, batch_size=32)
    config = lr_finder.Config(iterations=20, batch_size=32)
    b = execute(lr_finder, Setup(workload=CLASSIFY), config)
    np.testing.assert_array_equal(a.curve().loss, b.points().loss)
    assert a.suggestions() == b.suggestions()


def test_objects_and_their_file_give_the_same_curve():
    """The file's model and data handed over as objects: the same numbers."""
    from lrbs.core.workload import load_workload

    wl = load_workload(CLASSIFY)
    torch.manual_seed(0)
    model = wl.model()
    train, val = wl.data()
    a = lrbs.find_lr(model, train, val=val, iterations=20, batch_size=32)
    b = lrbs.find_lr(CLASSIFY, iterations=20, batch_size=32)
    np.testing.assert_allclose(a.curve().loss, b.curve().loss, rtol=1e-6)


def test_the_other_experiments_take_objects():
    x, y = blobs()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    probe = lrbs.probe_batch(model, (x, y), cap_mib=0.02, target_batch=256)
    assert probe.summary()["accumulate"] >= 1
    noise = lrbs.noise_scale(model, (x, y), batch_small=8, batch_big=64, steps=8, every=4)
    assert noise.rows["rows"]
    sweep = lrbs.batch_sweep(model, (x, y), batch_sizes=(16, 32), steps=4, lr=0.05)
    assert len(sweep.table()) == 2
    sched = lrbs.compare_schedules(
        model, (x, y), schedules=("constant", "cosine"), epochs=1, batch_size=64
    )
    assert sched.status == "finished"


def test_a_regression_through_the_api_has_no_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(4, 1)
    r = lrbs.batch_sweep(
        model, (x, y), loss=nn.functional.mse_loss, batch_sizes=(16,), steps=5, lr=0.01
    )
    assert r.table().val_acc.isna().all()


def test_bad_api_input_is_one_clear_message():
    x, y = blobs()
    with pytest.raises(WorkloadError, match="must be a torch nn.Module"):
        lrbs.find_lr(object(), (x, y))
    with pytest.raises(ConfigError, match="give the file alone"):
        lrbs.find_lr(CLASSIFY, (x, y))
    with pytest.raises(ConfigError, match="has no setting colour"):
        lrbs.find_lr(net(), (x, y), colour="red")
    with pytest.raises(WorkloadError, match="x has 300 rows and y 3"):
        lrbs.find_lr(net(), (x, y[:3]))


def test_recommend_end_to_end_finds_one_over_lambda_on_a_quadratic():
    """A linear model y = w x with x = +-1 under MSE: the loss in w is a quadratic of
    curvature lambda = 2 (the same in every minibatch), so one step at lr = 1/lambda = 0.5
    lands on the optimum and a short equal-budget sweep is won near 0.5."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (512, 1), generator=g).float() * 2 - 1
    y = 3.0 * x + 1e-4 * torch.randn(512, 1, generator=g)
    model = nn.Linear(1, 1, bias=False)
    result = lrbs.recommend(
        model,
        (x[:384], y[:384]),
        val=(x[384:], y[384:]),
        loss=nn.functional.mse_loss,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        sweep_steps=10,
        seeds=2,
        rates=7,
        batch_size=32,
        train_epochs=None,  # the oracle is the best rate of the sweep's own length
    )
    card = result.summary()
    assert 0.5 / 1.5 <= card["lr"] <= 0.5 * 1.5, card


def test_find_lr_takes_a_dataloader_and_its_batch_size():
    from torch.utils.data import DataLoader, TensorDataset

    x, y = blobs()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    found = lrbs.find_lr(net(), loader, iterations=10, data_path="stream")
    assert found.config.batch_size == 16 and found.summary()["data_path"] == "stream"


def test_recommend_rescales_by_the_rule_of_the_users_own_optimizer():
    """A user's AdamW, not the --optimizer default (SGD), decides the scaling rule and the
    snippet: square root, and torch.optim.AdamW."""
    x, y = blobs(400)
    model = net()
    card = lrbs.recommend(
        model,
        (x[:320], y[:320]),
        val=(x[320:], y[320:]),
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
        sweep_steps=10,
        seeds=1,
        rates=3,
        batch_size=16,
    ).summary()
    assert card["optimizer"] == "adamw" and card["rule"] == "sqrt", card
    assert "AdamW" in card.get("snippet", "AdamW")
