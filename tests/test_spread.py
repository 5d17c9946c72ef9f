"""lrbs.core.spread against hand computations."""

import math

import pandas as pd
import pytest

from lrbs.core.spread import ONE_SEED, difference, spread
from lrbs.core.spread import band as band_of


def test_spread_is_the_mean_and_the_sample_std_of_the_finite_values():
    s = spread([1.0, 2.0, 4.0, None, math.nan, math.inf])
    # mean 7/3; deviations -4/3, -1/3, 5/3; squares 16/9 + 1/9 + 25/9 = 42/9; / (3 - 1)
    assert s.n == 3
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(42 / 18))
    assert s.text(".2f") == "2.33 ± 1.53 (3 seeds)"
    assert spread([0.5]).text(".1f") == "0.5" and math.isnan(spread([0.5]).std)


def test_a_gap_inside_twice_its_standard_error_is_within_noise():
    a, b = [1.0, 1.2], [1.1, 1.3]  # std of each: sqrt(0.02) = 0.1414
    d = difference(a, b)
    # delta -0.1; noise 2 * sqrt(0.02/2 + 0.02/2) = 2 * 0.1414 = 0.2828
    assert d.delta == pytest.approx(-0.1)
    assert d.noise == pytest.approx(2 * math.sqrt(0.02))
    assert d.within_noise is True and "within noise" in d.text()
    far = difference([1.0, 1.01], [2.0, 2.01])
    assert far.within_noise is False and "beyond the noise" in far.text()


def test_one_seed_cannot_be_judged():
    d = difference([1.0], [1.5, 1.6])
    assert d.within_noise is None
    assert ONE_SEED in d.text()


def test_band_per_group():
    frame = pd.DataFrame({"g": ["a", "a", "b"], "x": [1, 1, 1], "y": [1.0, 3.0, 5.0]})
    out = band_of(frame, ["g", "x"], "y").set_index("g")
    assert out.loc["a", "mean"] == 2.0 and out.loc["a", "std"] == pytest.approx(math.sqrt(2))
    assert out.loc["a", "lo"] == pytest.approx(2 - math.sqrt(2))
    assert out.loc["b", "std"] == 0.0 and out.loc["b", "n"] == 1
