import numpy as np
import pytest

from lrbs.core.errors import ConfigError
from lrbs.experiments import gd1d


@pytest.mark.parametrize("c", [0.5, 2.0, 7.0])
def test_quadratic_converges_just_under_the_limit_and_diverges_just_over(c):
    loss = gd1d.make_loss("quadratic", c)
    limit = gd1d.stability_limit(c)
    assert limit == pytest.approx(2 / c)
    under = gd1d.descend(loss, 3.0, 0.98 * limit, 400)
    over = gd1d.descend(loss, 3.0, 1.02 * limit, 400)
    assert under.status in ("converged", "converging") and abs(under.x[-1]) < 3.0
    assert over.status == "diverged" and abs(over.x[-1]) > 3.0


def test_quadratic_path_matches_the_closed_form():
    # x_t = x_0 * (1 - lr*c)^t
    c, lr, x0 = 2.0, 0.3, 3.0
    p = gd1d.descend(gd1d.make_loss("quadratic", c), x0, lr, 15)
    np.testing.assert_allclose(p.x, x0 * (1 - lr * c) ** np.arange(16), rtol=1e-12)
    np.testing.assert_allclose(p.loss, c / 2 * p.x**2)


def test_best_rate_lands_in_one_step():
    c = 4.0
    p = gd1d.descend(gd1d.make_loss("quadratic", c), 3.0, gd1d.best_lr(c), 5)
    assert p.x[1] == 0 and p.status == "converged"


def test_exactly_at_the_limit_it_oscillates_forever():
    p = gd1d.descend(gd1d.make_loss("quadratic", 2.0), 3.0, 1.0, 20)
    assert p.status == "oscillating"
    np.testing.assert_allclose(np.abs(p.x), 3.0)


@pytest.mark.parametrize("beta", [0.3, 0.8])
def test_momentum_limit(beta):
    c = 2.0
    limit = gd1d.stability_limit(c, beta)
    assert limit == pytest.approx((2 + 2 * beta) / c)
    loss = gd1d.make_loss("quadratic", c)
    assert gd1d.descend(loss, 3.0, 0.97 * limit, 3000, beta).status in ("converged", "converging")
    assert gd1d.descend(loss, 3.0, 1.03 * limit, 3000, beta).status == "diverged"
    # beyond the plain-GD limit yet stable thanks to momentum
    assert gd1d.descend(loss, 3.0, 1.2 / c * 2 * 0.9, 3000, beta).status != "diverged"


def test_two_minima_are_stationary_points_and_the_global_one_is_first():
    loss = gd1d.make_loss("two-minima")
    for m in loss.minima:
        assert loss.df(np.float64(m)) == pytest.approx(0, abs=1e-9)
    assert loss.f(np.float64(loss.minima[0])) < loss.f(np.float64(loss.minima[1]))
    # f''(m) = 3m^2 - 2
    assert loss.curvature_at_min == pytest.approx(3 * loss.minima[0] ** 2 - 2)


def test_start_decides_which_minimum_on_the_non_convex_loss():
    loss = gd1d.make_loss("two-minima")
    right = gd1d.descend(loss, 2.0, 0.05, 300)
    left = gd1d.descend(loss, -2.0, 0.05, 300)
    assert right.x[-1] == pytest.approx(loss.minima[1], abs=1e-3)
    assert left.x[-1] == pytest.approx(loss.minima[0], abs=1e-3)


def test_steep_side_punishes_a_rate_the_flat_side_tolerates():
    loss = gd1d.make_loss("steep-flat")
    flat = gd1d.descend(loss, -3.0, 1.0, 200)
    steep = gd1d.descend(loss, 3.0, 1.0, 200)
    assert flat.status in ("converged", "converging")
    assert np.all(np.abs(np.diff(flat.x)) <= 1.0)  # slope never steeper than 1 there
    assert steep.x[1] == pytest.approx(3.0 - (np.exp(3.0) - 1))  # thrown far past the minimum
    assert abs(steep.x[1]) > 5 * abs(steep.x[0])


def test_escaped_path_stops_and_is_marked():
    p = gd1d.descend(gd1d.make_loss("quadratic", 2.0), 3.0, 5.0, 100)
    assert p.status == "diverged" and p.escaped_at is not None
    assert len(p.x) == p.escaped_at + 1 and abs(p.x[-1]) > gd1d.ESCAPE


def test_frame_and_summary():
    cfg = gd1d.Config(lrs=(0.9, 1.0, 1.1), steps=20)
    paths = gd1d.descend_all(cfg)
    df = gd1d.paths_frame(paths)
    assert list(df.columns) == ["lr", "step", "x", "loss", "status"]
    assert len(df) == 3 * 21
    s = gd1d.summary(cfg, paths)
    assert s["stability_limit"] == 1.0
    assert [r["status"] for r in s["runs"]] == ["converging", "oscillating", "diverged"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lrs=(0.1, -1.0)), "learning rate must be greater than 0"),
        (dict(lrs=(float("nan"),)), "learning rate must be a finite number"),
        (dict(lrs=()), "at least one learning rate"),
        (dict(lrs=(0.1, 0.1)), "repeat"),
        (dict(steps=0), "steps must be at least 1"),
        (dict(curvature=0.0), "curvature must be greater than 0"),
        (dict(loss="cubic"), "unknown 1-D loss"),
        (dict(momentum=1.0), "momentum"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        gd1d.Config(**kwargs)
