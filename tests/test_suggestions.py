"""The range test's suggestions on small, noisy curves: every rule answers inside the part of
the curve where the loss really falls, or not at all, never in the flat, noisy head.

The curves here are not lrbs's: synthetic ones drawn from a known loss (so the true descent is
known), and the small tasks of torch-lr-finder's own test suite rebuilt from their description
(an 8-4-1 MLP on XOR with MSE at batch 8; an 8-D regression with BatchNorm and dropout), checked
against torch-lr-finder's documented pick and by training at the suggested rate."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import lrbs
from lrbs.experiments.lr_finder import (
    SuggestionRule,
    descent_region,
    minimum,
    steepest,
    suggest,
    valley,
)

ITERATIONS = 100
LRS = np.logspace(-7, 1, ITERATIONS)
DESCENT_AT, WIDTH, DROP = 1e-2, 0.5, 0.5  # a fall of half the loss, over about two decades


def debiased_ema(x, beta=0.98):
    avg, out = 0.0, []
    for i, v in enumerate(x):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def true_loss(lrs, drop=DROP):
    """1 on a flat head, a sigmoid fall of `drop` (in ln lr) at DESCENT_AT, blowing up past 1."""
    z = (np.log(lrs) - np.log(DESCENT_AT)) / WIDTH
    return (1 - drop / (1 + np.exp(-z))) * (1 + lrs**2)


def noisy_curve(noise, seed, drop=DROP):
    rng = np.random.default_rng(seed)
    raw = true_loss(LRS, drop) * (1 + noise * rng.standard_normal(ITERATIONS))
    return debiased_ema(raw)


# where the noiseless loss has fallen 1 % of its drop: before it, the head is flat
DESCENT_START = DESCENT_AT * np.exp(WIDTH * np.log(0.01 / 0.99))
# the lowest point of the noiseless curve as lrbs sees it (smoothed, without the last 5 points)
BOTTOM = LRS[int(np.argmin(debiased_ema(true_loss(LRS))[:-5]))]


@pytest.mark.parametrize("noise", [0.02, 0.05, 0.1, 0.2])
@pytest.mark.parametrize("seed", range(5))
def test_every_rule_answers_inside_the_descent_never_in_the_noisy_head(noise, seed):
    found = {s.name: s.lr for s in suggest(LRS, noisy_curve(noise, seed))}
    if noise <= 0.1:  # the fall is 5 x the raw noise or more: it is found
        assert set(found) == {"steep", "minimum", "valley", "max_usable"}
    for name in ("steep", "valley"):
        if name in found:
            assert DESCENT_START <= found[name] <= BOTTOM, (name, found[name])
    if "max_usable" in found:  # the lowest point: near the true one, well past the head
        assert BOTTOM / 3 <= found["max_usable"] <= BOTTOM * 3
        assert found["minimum"] == pytest.approx(found["max_usable"] / 10)


@pytest.mark.parametrize("seed", range(5))
def test_flat_noise_has_no_descent_to_suggest(seed):
    rng = np.random.default_rng(seed)
    for noise in (0.05, 0.2):
        raw = (1 + LRS**2) * (1 + noise * rng.standard_normal(ITERATIONS))
        assert suggest(LRS, debiased_ema(raw)) == []


def test_a_rising_curve_has_no_descent_to_suggest():
    rising = 1 + np.log(LRS / LRS[0]) / 10
    rng = np.random.default_rng(0)
    assert suggest(LRS, rising) == []
    assert suggest(LRS, debiased_ema(rising * (1 + 0.1 * rng.standard_normal(ITERATIONS)))) == []
    for rule in (steepest, valley, minimum):
        assert rule(LRS, rising) is None


def test_the_debiased_average_of_a_noisy_head_is_what_fooled_the_plain_steepest_pick():
    """The mechanism of the bug: past the first 10 %, the debiased average of a flat head's
    first losses still moves by a large share of their noise at each step, so on a gentle
    descent (here 15 % of the loss, against 20 % batch noise) the plain steepest slope over the
    curve up to its lowest point lies in the head. The rules read the real descent instead."""
    fooled = 0
    for seed in range(10):
        smoothed = noisy_curve(0.2, seed, drop=0.15)
        a, b = LRS[10:-5], smoothed[10:-5]
        bottom = max(3, int(np.argmin(b)) + 1)
        plain = a[int(np.argmin(np.gradient(b[:bottom], np.log(a[:bottom]))))]
        fooled += plain < DESCENT_START
        found = {s.name: s.lr for s in suggest(LRS, smoothed)}
        for name in ("steep", "valley"):
            assert found.get(name, DESCENT_START) >= DESCENT_START
    assert fooled >= 5  # the plain pick lands in the head on most seeds


def test_a_descent_rule_of_ones_own_answers_only_within_the_descent():
    smoothed = noisy_curve(0.05, 0)
    first = SuggestionRule("first", "First", "the first point", lambda a, b: 0, descent_only=True)
    anywhere = SuggestionRule("any", "Any", "the first point", lambda a, b: 0)
    assert [s.name for s in suggest(LRS, smoothed, rules=(first, anywhere))] == ["any"]
    start, bottom = descent_region(LRS[10:-5], smoothed[10:-5])
    inside = SuggestionRule("in", "In", "its start", lambda a, b: start, descent_only=True)
    (s,) = suggest(LRS, smoothed, rules=(inside,))
    assert s.lr == LRS[10 + start] and DESCENT_START <= s.lr <= BOTTOM


# ---------------------------------------------------------------------------- small tasks
# torch-lr-finder's test tasks, rebuilt here from their description


class Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def xor_task(seed):
    """XOR of the first two of 8 binary inputs (the others are distractors), an 8-4-1 MLP."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (128, 8), generator=g).float()
    y = (x[:, :1] != x[:, 1:2]).float()
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1)), Pairs(x, y), 8


def regression_task(seed):
    """A noisy linear target of 8 inputs, an MLP with BatchNorm and dropout."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) / 8**0.5 + 0.1 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1)
    )
    return model, Pairs(x, y), 32


def tlf_steepest(lrs, losses, skip_start=10, skip_end=5):
    """torch-lr-finder's documented pick: the lowest np.gradient of its (not debiased, factor
    0.05) smoothed loss over the curve without its ends."""
    avg, smoothed = None, []
    for x in losses:
        avg = x if avg is None else 0.05 * x + 0.95 * avg
        smoothed.append(avg)
    kept = np.array(smoothed)[skip_start:-skip_end]
    return float(lrs[skip_start:-skip_end][np.argmin(np.gradient(kept))])


def train_loss(task, seed, lr, steps=300):
    model, data, batch = task(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(data), (batch,), generator=g)
        loss = nn.functional.mse_loss(model(data.x[i]), data.y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return nn.functional.mse_loss(model(data.x), data.y).item()


@pytest.mark.parametrize("task, seed", [(xor_task, 0), (xor_task, 2), (regression_task, 0)])
def test_steep_and_valley_are_where_the_loss_of_a_small_task_falls(task, seed):
    model, data, batch = task(seed)
    found = lrbs.find_lr(
        model,
        data,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-5),
        loss=nn.functional.mse_loss,
        batch_size=batch,
        iterations=ITERATIONS,
        seed=seed,
    )
    curve = found.curve()
    lrs, smoothed = curve.lr.to_numpy(), curve.smoothed.to_numpy()
    rates = found.suggestions()
    head = np.median(smoothed[(lrs > 1e-6) & (lrs < 1e-4)])  # flat: nothing learns there
    for name in ("steep", "valley", "max_usable"):
        at = smoothed[np.argmin(np.abs(np.log(lrs / rates[name])))]
        assert at < head, (name, rates[name])
    oracle = tlf_steepest(lrs, curve.loss.to_numpy())
    assert abs(np.log10(rates["steep"] / oracle)) <= 1, (rates["steep"], oracle)
    # training at the steepest-descent rate learns; at the head's rate it does not
    assert train_loss(task, seed, rates["steep"]) < 0.8 * train_loss(task, seed, 1e-6)
