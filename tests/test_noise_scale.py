import math

import numpy as np
import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError
from lrbs.core.models import ModelSpec, build_model
from lrbs.experiments import noise_scale as ns


def test_unbiased_estimators_recover_a_known_mean_and_covariance():
    """Per-example gradients g = G + xi with xi ~ N(0, Sigma): the mean gradient of a batch of
    B has E|G_B|^2 = |G|^2 + tr(Sigma)/B. Average the estimators over many batch pairs."""
    rng = np.random.default_rng(0)
    dim = 20
    G = rng.normal(size=dim) * 0.3
    scales = rng.uniform(0.5, 2.0, size=dim)  # Sigma = diag(scales^2)
    b_s, b_b = 8, 128
    est = []
    for _ in range(4000):
        gs = G + (rng.normal(size=(b_s, dim)) * scales).mean(0)
        gb = G + (rng.normal(size=(b_b, dim)) * scales).mean(0)
        est.append(ns.unbiased(gs @ gs, gb @ gb, b_s, b_b))
    g2, trace = np.mean(est, axis=0)
    assert g2 == pytest.approx(G @ G, rel=0.05)
    assert trace == pytest.approx((scales**2).sum(), rel=0.05)
    assert trace / g2 == pytest.approx((scales**2).sum() / (G @ G), rel=0.08)


def test_grad_sq_norm_matches_autograd_and_leaves_no_gradients():
    data = blobs()
    m = build_model(ModelSpec("mlp", hidden=(8,)), (6,), 3, 0)
    x, y = data.x_train[:50], data.y_train[:50]
    got = ns.grad_sq_norm(m, x, y)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(m(x), y), list(m.parameters()))
    assert got == pytest.approx(sum(float(g.pow(2).sum()) for g in grads), rel=1e-5)
    assert all(p.grad is None for p in m.parameters())


def exact_b_simple(model, data):
    """tr(Sigma)/|G|^2 from every per-example gradient of the training set."""
    per = []
    for i in range(data.n_train):
        loss = torch.nn.functional.cross_entropy(
            model(data.x_train[i : i + 1]), data.y_train[i : i + 1]
        )
        g = torch.autograd.grad(loss, list(model.parameters()))
        per.append(torch.cat([t.flatten() for t in g]))
    per = torch.stack(per).double()
    mean = per.mean(0)
    trace = ((per - mean) ** 2).sum(1).mean()
    return float(trace / mean.pow(2).sum())


def test_meter_recovers_b_simple_at_fixed_weights():
    data = blobs(n=240, features=6, classes=3, seed=3)
    model = build_model(ModelSpec("mlp", hidden=(8,)), (6,), 3, 1)
    expected = exact_b_simple(model, data)
    # a negligible learning rate keeps the weights fixed, so every measurement samples the
    # same gradient distribution; 300 measurements averaged
    cfg = ns.NoiseScaleConfig(
        batch_small=4, batch_big=64, every=1, beta=0.995, batch=16, lr=1e-12, steps=300
    )
    result = ns.measure(model, data, cfg)
    assert len(result.rows) == 300
    assert result.rows.g2_avg.iloc[-1] > 0
    assert result.b_simple == pytest.approx(expected, rel=0.25)
    assert 0 < result.overhead < 1


def test_measurement_interval_and_headline():
    data = blobs()
    model = build_model(ModelSpec("mlp", hidden=(8,)), (6,), 3, 0)
    r = ns.measure(model, data, ns.NoiseScaleConfig(8, 64, every=7, batch=16, steps=70))
    steps = r.rows.step.tolist()
    assert all(b - a >= 7 for a, b in zip(steps, steps[1:], strict=False))
    assert len(steps) >= 7
    h = r.headline()
    assert h["steps"] == 70 and h["measurements"] == len(steps)
    assert h["b_simple_q25"] <= h["b_simple_q75"]


def test_fit_recovers_s_min_and_e_min():
    s_min, e_min = 200.0, 40_000.0
    batches = np.array([16, 64, 256, 1024, 4096])
    steps = s_min * (1 + (e_min / s_min) / batches)  # S = S_min (1 + B_noise / B)
    fit = ns.fit_tradeoff(batches, steps)
    assert fit.s_min == pytest.approx(s_min) and fit.e_min == pytest.approx(e_min)
    assert fit.b_crit == pytest.approx(200.0)
    examples = steps * batches
    lhs = (steps / fit.s_min - 1) * (examples / fit.e_min - 1)
    np.testing.assert_allclose(lhs, 1.0)


def test_fit_needs_two_points_and_a_sensible_shape():
    with pytest.raises(ConfigError, match="at least two"):
        ns.fit_tradeoff([16, 64], [100, math.nan])
    with pytest.raises(ConfigError, match="non-positive"):
        ns.fit_tradeoff([16, 64, 256], [100, 200, 400])  # more steps for bigger batches


def test_optimal_lr_curve():
    lr = ns.optimal_lr(np.array([1, 100, 10_000]), b_noise=100, lr_max=1.0)
    assert lr.tolist() == pytest.approx([1 / 101, 0.5, 1 / 1.01])
    assert ns.smith_le_noise(0.1, 1000, 10, momentum=0.5) == pytest.approx(20.0)


def test_steps_to_target_on_blobs():
    data = blobs()
    cfg = ns.CheckConfig(
        batches=(8, 32), target_loss=0.5, max_steps=500, base_batch=16, lr=0.1, b_noise=50
    )
    table = ns.steps_to_target(
        lambda: build_model(ModelSpec("mlp", hidden=(8,)), (6,), 3, 0), data, cfg
    )
    assert list(table.batch) == [8, 32] and set(table.status) == {"reached"}
    assert (table.examples == table.steps * table.batch).all()
    assert cfg.lr_for(16) == pytest.approx(0.1)  # anchored at the base batch


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_small=64, batch_big=64), "must be smaller than the big batch"),
        (dict(batch_small=128, batch_big=64), "must be smaller than the big batch"),
        (dict(every=0), "measurement interval k must be at least 1"),
        (dict(batch_small=0), "small batch must be at least 1"),
        (dict(beta=1.0), "beta"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ns.NoiseScaleConfig(**kwargs)


def test_big_batch_larger_than_data():
    with pytest.raises(ConfigError, match="big batch .* larger than the training set"):
        ns.NoiseScaleConfig(batch_big=1000).check_data(240)
