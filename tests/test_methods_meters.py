"""The noise and sharpness meters of lrbs.methods, driven from hand-written torch loops (no lrbs
loop), against independent oracles: per-sample gradients (torch.func) and Gaussian moments for
the noise meter, torch.linalg.eigvalsh of a quadratic's Hessian for the sharpness meter, and
the divergence of gradient descent itself for the stability limits."""

import itertools
import math

import pytest
import torch
from torch import nn

from lrbs.core.errors import ConfigError, LrbsError
from lrbs.core.loop import OptimSpec
from lrbs.methods import noise, sharpness
from lrbs.methods.noise import NoiseMeter
from lrbs.methods.sharpness import SharpnessMeter


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def linear(d: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, 1, bias=False).double()


def per_sample_oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) of the dataset (x, y) at the weights now, from every per-sample
    gradient: G their mean, Sigma their covariance (divisor N: batches drawn with
    replacement)."""
    params = list(model.parameters())
    rows = []
    for xi, yi in zip(x, y, strict=True):
        grads = torch.autograd.grad(half_mse(model(xi[None]), yi[None]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    g = torch.stack(rows)
    mean = g.mean(0)
    return float(mean @ mean), float(((g - mean) ** 2).sum(1).mean())


def mean_and_se(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(len(t)))


def test_noise_meter_in_a_hand_written_loop_matches_per_sample_gradients():
    gen = torch.Generator().manual_seed(0)
    n, d = 4, 3
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = y + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    model = linear(d)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    meter = NoiseMeter(model, half_mse, beta=0.5)

    def draw(b: int):
        idx = torch.randint(0, n, (b,), generator=gen)
        return x[idx], y[idx]

    readings = []
    for step in range(1, 31):  # a plain SGD loop, measuring every 10 steps
        xb, yb = draw(2)
        opt.zero_grad()
        half_mse(model(xb), yb).backward()
        opt.step()
        if step % 10 == 0:
            readings.append(meter.measure(draw(2), draw(3)))
            assert all(p.grad is None for p in model.parameters())  # no gradients left behind
    assert meter.average.n == 3
    assert math.isfinite(readings[-1].b_simple)

    # The estimators' expectation, exactly: over every batch drawn with replacement (all n^b
    # index tuples, equally likely), small and big independent. The estimates are linear in
    # the two squared norms, so pairing the lists cyclically (each small batch as often as
    # every other, each big one once) averages to that expectation. It is the dataset's
    # exact |G|^2 and tr(Sigma) at the weights the loop reached.
    def every_batch(b: int):
        return [(x[list(i)], y[list(i)]) for i in itertools.product(range(n), repeat=b)]

    small, big = every_batch(2), every_batch(3)
    draws = [meter.measure(small[i % len(small)], big[i]) for i in range(len(big))]
    g2_true, trace_true = per_sample_oracle(model, x, y)
    assert sum(r.g2 for r in draws) / len(draws) == pytest.approx(g2_true, rel=1e-9)
    assert sum(r.trace for r in draws) / len(draws) == pytest.approx(trace_true, rel=1e-9)
    assert g2_true > 0.01 and trace_true > 0.1  # neither a trivial zero


def test_noise_meter_on_gaussian_regression_matches_the_closed_form():
    """x ~ N(0, I_d), y = w*.x + eps, eps ~ N(0, s^2); per-sample gradient (w.x - y) x. With
    delta = w - w*: G = delta and tr(Sigma) = (d + 1)|delta|^2 + d s^2 (Isserlis). Fresh
    samples at each draw: the mean estimate over many draws within 4 standard errors."""
    d, s = 32, 1.0
    gen = torch.Generator().manual_seed(1)
    w_star = torch.randn(d, generator=gen, dtype=torch.float64)
    delta = torch.randn(d, generator=gen, dtype=torch.float64) * 0.1  # near w*: noisy gradients
    model = linear(d)
    with torch.no_grad():
        model.weight[0] = w_star + delta
    g2_true = float(delta @ delta)
    trace_true = (d + 1) * g2_true + d * s**2

    def fresh(b: int):
        xb = torch.randn(b, d, generator=gen, dtype=torch.float64)
        return xb, xb @ w_star + s * torch.randn(b, generator=gen, dtype=torch.float64)

    meter = NoiseMeter(model, half_mse)
    draws = [meter.measure(fresh(32), fresh(512)) for _ in range(800)]
    g2, g2_se = mean_and_se([r.g2 for r in draws])
    trace, trace_se = mean_and_se([r.trace for r in draws])
    assert abs(g2 - g2_true) < 4 * g2_se and g2_se < 0.05 * g2_true
    assert abs(trace - trace_true) < 4 * trace_se and trace_se < 0.025 * trace_true


def test_the_meter_leaves_training_as_it_was():
    def train(measure: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
        y = x.sum(1)
        model = linear(3, seed=2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        meter = NoiseMeter(model, half_mse)
        for _ in range(10):
            if measure:
                meter.measure((x[:4], y[:4]), (x[:32], y[:32]))
            opt.zero_grad()
            half_mse(model(x[:16]), y[:16]).backward()
            opt.step()
        return model.weight.detach().clone()

    assert torch.equal(train(True), train(False))


def test_averages_are_debiased_emas():
    avg = noise.NoiseAverage(beta=0.8)
    assert avg.update(2.0, 10.0) == pytest.approx((2.0, 10.0))  # the first is itself
    g2, trace = avg.update(4.0, 20.0)
    assert g2 == pytest.approx((0.8 * 0.2 * 2 + 0.2 * 4) / (1 - 0.8**2))
    assert trace == pytest.approx((0.8 * 0.2 * 10 + 0.2 * 20) / (1 - 0.8**2))
    r = noise.NoiseReading(g2=1.0, trace=8.0, g2_avg=2.0, trace_avg=10.0, seconds=0.0)
    assert r.b_simple == 5.0 and r.b_simple_raw == 8.0


def test_the_noise_runs_settings_have_one_home():
    cfg = noise.sized_config(240, 512, OptimSpec("sgd", 0.1), steps=150, seed=3)
    assert (cfg.batch_small, cfg.batch_big, cfg.batch_size, cfg.every) == (32, 240, 240, 10)
    assert noise.noise_sizes(20) == (20, 5)
    tc = noise.measure_train_config(cfg)
    assert (tc.batch_size, tc.budget.steps, tc.log_every, tc.seed) == (240, 150, 10, 3)
    assert tc.eval_each_epoch and tc.min_eval_seconds == 0.5
    quiet = noise.measure_train_config(cfg, evaluate=False)
    assert not quiet.eval_each_epoch and not quiet.eval_at_end


# ---------------------------------------------------------------------------- sharpness


class LeastSquares(nn.Module):
    """w -> X w: with half_mse its loss is the quadratic w.Hw/2 - ..., H = X^T X / n."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def quadratic(seed: int = 0, n: int = 40, d: int = 5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(2.0, 0.3, d)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    return LeastSquares(d), x, y, x.T @ x / n


def test_sharpness_meter_in_a_hand_written_loop_is_the_hessians_top_eigenvalue():
    model, x, y, hessian = quadratic()
    top = float(torch.linalg.eigvalsh(hessian).max())
    lr = 0.5 / top
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    meter = SharpnessMeter(model, half_mse, iterations=200, tol=1e-12)
    seen = []
    for step in range(20):
        if step % 5 == 0:
            r = meter.measure(x, y)
            seen.append(r.sharpness)
            assert not r.preconditioned and r.iterations <= 200
            with torch.no_grad():
                assert r.loss == pytest.approx(float(half_mse(model(x), y)))
        opt.zero_grad()
        half_mse(model(x), y).backward()
        opt.step()
    assert seen == pytest.approx([top] * 4, rel=1e-8)  # a quadratic: the same everywhere
    assert seen[0] / sharpness.gd_limit(lr) == pytest.approx(0.25)
    assert model.training  # measured in eval mode, handed back as it was


def test_adams_preconditioned_sharpness_is_that_of_d_h_d():
    model, x, y, hessian = quadratic(seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    meter = SharpnessMeter(model, half_mse, iterations=300, optimizer=opt, tol=1e-12)
    assert not meter.measure(x, y).preconditioned  # Adam has not stepped yet
    for _ in range(5):
        opt.zero_grad()
        half_mse(model(x), y).backward()
        opt.step()
    state = opt.state[model.w]
    t = float(state["step"])
    v_hat = state["exp_avg_sq"] / (1 - 0.999**t)
    p = (1 - 0.9**t) * (v_hat.sqrt() + 1e-8)  # Adam's step is P^-1 times the momentum
    d = torch.diag(p.rsqrt())
    got = meter.measure(x, y)
    assert got.preconditioned
    assert got.sharpness == pytest.approx(float(torch.linalg.eigvalsh(d @ hessian @ d).max()))


def test_limits_by_formula():
    assert sharpness.gd_limit(0.1) == pytest.approx(20.0)
    assert sharpness.momentum_limit(0.1, 0.9) == pytest.approx(38.0)
    assert sharpness.adam_limit(0.01) == pytest.approx(3800.0)
    assert sharpness.adam_limit(0.01, beta1=0.5) == pytest.approx(600.0)
    assert sharpness.stability_limit(0.1, OptimSpec("momentum", 0.1, 0.5)) == pytest.approx(30)
    assert sharpness.stability_limit(0.01, OptimSpec("adamw", 0.01)) == pytest.approx(3800)
    assert sharpness.stability_limit(0.1, OptimSpec("sgd", 0.1)) == pytest.approx(20)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_the_limits_are_where_gradient_descent_diverges(beta):
    """Heavy-ball GD on the quadratic at a sharpness 5 % below its limit converges, 5 % above
    it diverges: the limit is a property of the dynamics, not only of the formula."""
    model, x, y, hessian = quadratic(seed=4)
    top = SharpnessMeter(model, half_mse, iterations=300, tol=1e-12).measure(x, y).sharpness

    def final_distance(factor: float) -> float:
        lr = factor * (2 + 2 * beta) / top  # sharpness / momentum_limit(lr) = factor
        assert top / sharpness.momentum_limit(lr, beta) == pytest.approx(factor)
        m = LeastSquares(len(model.w))
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=beta)
        for _ in range(500):
            opt.zero_grad()
            half_mse(m(x), y).backward()
            opt.step()
        w_best = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
        return float((m.w.detach() - w_best).norm())

    assert final_distance(0.95) < 1e-3
    assert final_distance(1.05) > 1e3


# ---------------------------------------------------------------------------- bad input


def frozen() -> nn.Module:
    m = nn.Linear(3, 2)
    m.requires_grad_(False)
    return m


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: NoiseMeter(frozen()), "no trainable parameters"),
        (lambda: NoiseMeter("a model"), "torch.nn.Module"),
        (lambda: NoiseMeter(nn.Linear(3, 2), beta=1.0), "beta"),
        (lambda: SharpnessMeter(frozen()), "no trainable parameters"),
        (lambda: SharpnessMeter(nn.Linear(3, 2), iterations=0), "power-iteration steps"),
        (lambda: sharpness.gd_limit(0.0), "learning rate"),
        (lambda: sharpness.momentum_limit(0.1, 1.0), "momentum"),
        (lambda: noise.Config(batch_small=64, batch_big=32), "smaller than the big batch"),
    ],
)
def test_bad_input_gives_one_clear_error(make, says):
    with pytest.raises(ConfigError, match=says):
        make()


def test_bad_batches_give_one_clear_error():
    meter = NoiseMeter(nn.Linear(3, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(LrbsError, match="smaller than the big batch"):
        meter.measure((x, y), (x[:4], y[:4]))
    with pytest.raises(LrbsError, match="pair"):
        meter.measure(x, (x, y))
    with pytest.raises(LrbsError, match="8 inputs but 4 targets"):
        meter.measure((x[:2], y[:2]), (x, y[:4]))
