"""One rank of tests/test_ddp.py's 2-process torchrun job (gloo, CPU): the monitor with the DDP
noise tap against the two-batch NoiseMeter on the same samples, find_lr on every rank (one
rank's loss running away first, then one rank's loss turning NaN first) and the memory probe.
Writes what it saw to OUT/rank<r>.json; the test compares the ranks.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT DB
"""

import copy
import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lrbs  # noqa: E402
from lrbs.methods import distributed  # noqa: E402
from lrbs.methods.noise import NoiseAverage, NoiseMeter, b_simple, unbiased  # noqa: E402
from lrbs.methods.range_test import torch_range_test  # noqa: E402
from lrbs.monitor.ddp import DDPNoiseTap  # noqa: E402

mse = nn.functional.mse_loss
LOCAL = 16  # each rank's batch
STEPS = 40


class Spy:
    """Passes a tap's readings on and keeps them (as floats)."""

    def __init__(self, tap) -> None:
        self.tap, self.readings = tap, []

    def bind(self, monitor) -> None:
        self.tap.bind(monitor)

    def observe(self, model):
        r = self.tap.observe(model)
        self.readings.append(None if r is None else tuple(float(v) for v in r))
        return r


def regression(n: int, d: int = 5):
    g = torch.Generator().manual_seed(0)  # the same set on every rank
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, 1, generator=g, dtype=torch.float64)
    return x, x @ w + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)


def exact(model: nn.Module, x, y) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) over the whole set, from the per-sample gradients 2 r (x, 1)."""
    r = (x @ model.weight.detach().T + model.bias.detach() - y).squeeze(1)
    per = 2 * r[:, None] * torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    mean = per.mean(0)
    return float(mean @ mean), float(((per - mean) ** 2).sum(1).mean())


def monitor_check(rank: int, world: int, db: str) -> dict:
    x, y = regression(LOCAL * world * STEPS)
    torch.manual_seed(0)
    net = nn.Linear(5, 1).double()
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.bias.zero_()
    model = DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    oracle = copy.deepcopy(net)
    mon = lrbs.monitor(model, opt, name="ddp test", db=db, every=5)
    auto = type(mon._taps[0]).__name__
    spy = Spy(mon._taps[0])
    mon._taps[0] = spy
    expected, start = [], None
    for t in range(STEPS):
        union = slice(t * LOCAL * world, (t + 1) * LOCAL * world)
        own = slice(union.start + rank * LOCAL, union.start + (rank + 1) * LOCAL)
        # the two-batch estimator at these weights: this rank's batch small, the union big
        oracle.load_state_dict(net.state_dict())
        r = NoiseMeter(oracle, mse, beta=0.0).measure((x[own], y[own]), (x[union], y[union]))
        expected.append(distributed.mean_over_ranks([r.g2, r.trace]))
        if t == 0:
            start = exact(net, x, y)
        opt.zero_grad()
        loss = mse(model(x[own]), y[own])
        loss.backward()
        opt.step()
        mon.step(loss, batch_size=LOCAL)
    out = mon.close()
    errors = []
    for (small, b_s, big, b_b), (g2, trace) in zip(spy.readings, expected, strict=True):
        got = unbiased(small, big, b_s, b_b)
        errors.append(max(abs(got[0] - g2) / abs(g2), abs(got[1] - trace) / abs(trace)))
    average = NoiseAverage(0.95)
    for g2, trace in expected:
        avg = average.update(g2, trace)
    got_first = unbiased(*(spy.readings[0][i] for i in (0, 2)), LOCAL, LOCAL * world)
    return {
        "auto_tap": auto,
        "sizes": [spy.readings[0][1], spy.readings[0][3]],
        "max_rel_error": max(errors),
        "summary": {k: v for k, v in out.items() if k != "rank"},
        "rank": out["rank"],
        "oracle_b_simple": b_simple(*avg),
        "first_step": {
            "ddp_b_simple": b_simple(*got_first),
            "two_batch_b_simple": b_simple(*expected[0]),
            "exact_b_simple": b_simple(*start),
        },
        "mean_raw": {
            "ddp": sum(b_simple(*unbiased(s, g, bs, bb)) for s, bs, g, bb in spy.readings) / STEPS,
            "two_batch": sum(b_simple(*e) for e in expected) / STEPS,
        },
    }


def classification(rank: int, scale: float):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long()
    return TensorDataset(x * scale, y)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))


def state_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if isinstance(a[k], dict):
            if not state_equal(a[k], b[k]):
                return False
        elif isinstance(a[k], torch.Tensor):
            if not torch.equal(a[k], b[k]):
                return False
        elif isinstance(a[k], list):
            if len(a[k]) != len(b[k]) or not all(
                state_equal(u, v) if isinstance(u, dict) else u == v
                for u, v in zip(a[k], b[k], strict=True)
            ):
                return False
        elif a[k] != b[k]:
            return False
    return True


class NaNAfter:
    """Cross-entropy that turns NaN from its `after`-th call on (on one rank)."""

    def __init__(self, after: int | None) -> None:
        self.after, self.calls = after, 0

    def __call__(self, out, y):
        self.calls += 1
        loss = nn.functional.cross_entropy(out, y)
        return loss * math.nan if self.after is not None and self.calls > self.after else loss


def find_lr_check(rank: int, world: int, scale: float, loss_fn) -> dict:
    data = classification(rank, scale)
    loader = DataLoader(
        data, batch_size=32, sampler=DistributedSampler(data, world, rank, seed=0), drop_last=True
    )
    model = DistributedDataParallel(mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for xb, yb in list(loader)[:2]:  # the optimizer has state to restore
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.state_dict())
    rng = torch.random.get_rng_state()
    found = lrbs.find_lr(
        model, loader, optimizer=opt, loss=loss_fn, lr_min=1e-4, lr_max=100.0, iterations=60
    )
    restored = {
        "weights_restored": state_equal(weights, model.state_dict()),
        "optimizer_restored": state_equal(state, opt.state_dict()),
        "rng_restored": bool(torch.equal(rng, torch.random.get_rng_state())),
    }
    # the same test decided on this rank's loss alone: where it would have stopped
    alone = torch_range_test(
        copy.deepcopy(model.module),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        nn.functional.cross_entropy,
        list(loader),
        lr_min=1e-4,
        lr_max=100.0,
        iterations=60,
    )
    test = found.latest[0]
    return {
        "suggestions": found.suggestions(),
        "status": test.status,
        "message": test.message,
        "iterations": len(test.lrs),
        "losses": [float(v) for v in test.losses],
        "alone_iterations": len(alone.lrs),
        **restored,
        "summary_suggestions": found.summary()["suggestions"],
    }


def main() -> None:
    out_dir, db = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {"monitor": monitor_check(rank, world, db)}
    # one rank's inputs 30 x larger: its own loss runs away at a lower rate than the other's
    result["find_lr"] = find_lr_check(rank, world, 30.0 if rank == 1 else 1.0, None)
    # one rank's loss NaN from the 15th step of the test on (after the 2 warm-up steps)
    nan = NaNAfter(15 if rank == 1 else None)
    result["find_lr_nan"] = find_lr_check(rank, world, 1.0, nan)
    fits = distributed.largest_batch(lambda b: b <= (64 if rank == 0 else 40), 256)
    result["probe"] = {"largest": fits.largest, "tried": [list(t) for t in fits.tried]}
    try:
        DDPNoiseTap(nn.Linear(2, 1))
    except lrbs.core.errors.ConfigError as exc:
        result["bad_tap"] = str(exc)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, default=str))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
