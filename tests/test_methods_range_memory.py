"""The methods of lrbs.methods.range_test, memory and scaling, driven from hand-written torch
objects (no Setup, no lrbs loop), and the single homes of the rules they hold."""

import math

import pytest
import torch
from torch import nn

from lrbs.core.errors import ConfigError
from lrbs.core.loop import OptimSpec
from lrbs.core.optim import SweptOptim, optim_at
from lrbs.methods.memory import largest_batch, optimizer_states
from lrbs.methods.range_test import lr_range_around, torch_range_test
from lrbs.methods.scaling import resolve_batches, scaled_lr


def problem(n_batches: int = 8, batch: int = 16):
    """A small classifier with dropout (so the RNG matters) and a fixed list of batches."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_batches * batch, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    return model, batches


def cloned(state: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def test_the_range_test_restores_model_optimizer_and_rng_bit_for_bit_and_ramps_exponentially():
    model, batches = problem()
    # a head at a tenth of the body's rate, and momentum buffers from two real steps
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters()},
            {"params": model[3].parameters(), "lr": 0.01},
        ],
        lr=0.1,
        momentum=0.9,
    )
    for x, y in batches[:2]:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    weights = cloned(model.state_dict())
    opt_state = opt.state_dict()
    buffers = {i: s["momentum_buffer"].clone() for i, s in opt_state["state"].items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
    rng = torch.random.get_rng_state()
    seen: list[list[float]] = []

    def loss_fn(out, target):
        seen.append([g["lr"] for g in opt.param_groups])
        return nn.functional.cross_entropy(out, target)

    lr_min, lr_max, n = 1e-4, 1.0, 20
    h = torch_range_test(
        model, opt, loss_fn, batches, lr_min=lr_min, lr_max=lr_max, iterations=n, stop_factor=None
    )

    assert h.status == "finished" and len(h.lrs) == n  # 8 batches, cycled
    # the exponential ramp, the last step exactly at lr_max; the head keeps its tenth
    expected = [lr_min * (lr_max / lr_min) ** (i / (n - 1)) for i in range(n)]
    assert list(h.lrs) == pytest.approx(expected, rel=1e-12)
    assert h.lrs[-1] == lr_max
    assert [s[1] / s[0] for s in seen] == pytest.approx([0.1] * n)
    assert len(h.losses) == len(h.smoothed) == n
    # everything as it was, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = opt.state_dict()
    for i, s in after["state"].items():
        assert torch.equal(s["momentum_buffer"], buffers[i])
    assert [{k: v for k, v in g.items() if k != "params"} for g in after["param_groups"]] == groups
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert not model.training


def test_the_range_test_takes_a_factory_and_follows_a_validation_loss():
    model, batches = problem()
    weights = cloned(model.state_dict())
    x_val, y_val = batches[-1]
    modes = []

    def val_loss(m: nn.Module) -> float:
        modes.append(m.training)
        m.eval()
        with torch.no_grad():
            return nn.functional.cross_entropy(m(x_val), y_val).item()

    h = torch_range_test(
        model,
        lambda params: torch.optim.SGD(params, lr=1.0),
        nn.functional.cross_entropy,
        iter(batches[:6]),  # one pass only: the test ends when it runs out
        lr_min=1e-4,
        lr_max=1e-3,
        iterations=10,
        stop_factor=None,
        val_loss=val_loss,
    )
    assert h.status == "finished" and h.message == "the batches ran out after 6 iterations"
    assert len(h.lrs) == 6 and modes == [True] * 6  # each step trained in train mode
    with torch.no_grad():
        model.eval()
        first = nn.functional.cross_entropy(model(x_val), y_val).item()
    assert h.losses[0] != first  # a loss after a step, not the untrained one
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k])
    with pytest.raises(ConfigError, match="at least 5 iterations"):
        torch_range_test(model, torch.optim.SGD(model.parameters(), lr=1), None, [], iterations=3)


def test_a_loss_that_blows_up_ends_the_test_as_diverged():
    model, batches = problem()
    steps = []

    def exploding(out, y):
        steps.append(1)
        return nn.functional.cross_entropy(out, y) * (1e6 if len(steps) > 10 else 1.0)

    h = torch_range_test(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        exploding,
        batches,
        lr_min=1e-5,
        lr_max=1e-4,
        iterations=40,
        beta=0.0,
    )
    assert h.status == "diverged" and len(h.lrs) == 11
    assert h.message.startswith("smoothed loss passed 4 x its best")


def test_the_optimizer_state_count_is_what_torch_keeps():
    """The count a memory estimate uses, against the buffers torch actually allocates."""
    model = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])

    def buffers(opt) -> int:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        state = opt.state[model.weight]
        return sum(
            isinstance(v, torch.Tensor) and v.shape == model.weight.shape for v in state.values()
        )

    for name, opt in [
        ("sgd", torch.optim.SGD(model.parameters(), lr=0.1)),
        ("momentum", torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)),
        ("adam", torch.optim.Adam(model.parameters())),
        ("adamw", torch.optim.AdamW(model.parameters())),
    ]:
        assert optimizer_states(opt) == buffers(opt) == optimizer_states(name), name
    assert optimizer_states(OptimSpec("momentum", 0.1, momentum=0.0)) == 0
    assert optimizer_states(OptimSpec("sgd", 0.1, momentum=0.9)) == 0  # plain sgd ignores it
    assert optimizer_states(torch.optim.Adam(model.parameters(), amsgrad=True)) == 3
    with pytest.raises(ConfigError, match="unknown optimizer"):
        optimizer_states("lion")


def test_the_probe_finds_the_boundary_of_any_fits():
    r = largest_batch(lambda b: b <= 300, upper=10_000)
    assert r.largest == 300 and r.hit_limit and r.safe == 256
    assert largest_batch(lambda b: True, upper=100).largest == 100


def test_one_home_for_the_rules():
    assert optim_at(SweptOptim("momentum", momentum=0.8), 0.3) == OptimSpec("momentum", 0.3, 0.8)
    with pytest.raises(ConfigError):
        optim_at(SweptOptim(), 1e9)
    lo, hi = lr_range_around(0.01)
    assert lo == pytest.approx(0.01 / math.sqrt(10)) and hi == pytest.approx(0.01 * math.sqrt(10))
    assert lr_range_around(0.01, digits=3) == (0.00316, 0.0316)
    assert scaled_lr(0.1, 32, 128, "sqrt") == pytest.approx(0.2)
    assert resolve_batches((64, "full"), 100) == (64, 100)


def test_the_history_reads_the_range_tests_kind():
    from lrbs.experiments import lr_finder
    from lrbs.runs.history import RANGE_TEST_KIND

    assert lr_finder.KIND == RANGE_TEST_KIND
