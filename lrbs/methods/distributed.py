"""lrbs's measurements on every rank of a DistributedDataParallel job (torchrun).

`lrbs.find_lr(ddp_model, loader, ...)` called on every rank lands in `find_lr` here: the range
test on the DDP model itself and the user's loader (a DistributedSampler's: each rank its own
shard), the ranks stepping in lockstep as DDP makes them. The loss the test follows is each
step's loss averaged over the ranks, so the smoothing, the stop rule (a NaN on one rank is a
NaN in the mean) and the suggestions are decided on the same numbers on every rank: every rank
stops at the same step and returns the same suggestions, and no rank is left waiting in an
all-reduce. The weights, the optimizer's state and the RNGs are restored on every rank.

`largest_batch` is the memory probe on every rank: each tried batch counts as fitting only
where it fits on every rank (an all-reduce of the minimum), so every rank tries the same
batches and returns the same largest one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lrbs.core.errors import ConfigError, require
from lrbs.core.optim import SweptOptim
from lrbs.methods.memory import ProbeResult
from lrbs.methods.memory import largest_batch as local_largest_batch
from lrbs.methods.range_test import torch_range_test

# lr_finder.Config's settings that mean the same on the DDP path
TEST_SETTINGS = ("ramp", "beta", "debias", "stop_factor")
IGNORED = ("seed", "device")  # the loader's order and the model's device are the user's


def is_ddp(model: Any) -> bool:
    return isinstance(model, DistributedDataParallel)


def distributed() -> bool:
    """Whether torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where a small collective's tensor lives: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: list[float]) -> list[float]:
    """Each value averaged over the ranks (a NaN on any rank gives NaN: a divergence anywhere
    is one everywhere)."""
    if not values or not distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def shared_value(value: float | None, op: str = "max") -> float | None:
    """One number every rank agrees on: the max (or "min") over the ranks of those that have
    one (None where no rank has)."""
    if not distributed():
        return value
    none = -math.inf if op == "max" else math.inf
    t = torch.tensor([none if value is None else float(value)], dtype=torch.float64)
    reduce = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.MIN
    t = t.to(collective_device())
    dist.all_reduce(t, op=reduce)
    out = float(t.item())
    return None if math.isinf(out) else out


def applies(model: Any) -> bool:
    """Whether lrbs's calls on this model take the distributed path: a DDP model."""
    return is_ddp(model)


def all_min(value: int) -> int:
    """The smallest of every rank's `value`."""
    if not distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def mean_loss(value: float) -> float:
    """This step's loss averaged over the ranks (every rank's batch together)."""
    return mean_over_ranks([value])[0]


def _optim_name(opt: torch.optim.Optimizer) -> str:
    if isinstance(opt, torch.optim.SGD):
        return "momentum" if opt.param_groups[0].get("momentum", 0) else "sgd"
    if isinstance(opt, torch.optim.AdamW):
        return "adamw"
    return "adam" if isinstance(opt, torch.optim.Adam) else "sgd"


def _pairs(train: Iterable, device: torch.device) -> Iterable:
    """The loader's batches as (x, y) on the model's device (SAMPLE_CONVENTION)."""
    from lrbs.core.stream import pick_of

    class Pairs:
        def __init__(self) -> None:
            self.pick = None
            self.epoch = 0

        def __iter__(self):
            sampler = getattr(train, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler: a new shuffle per pass
                sampler.set_epoch(self.epoch)
            self.epoch += 1
            for batch in train:
                if self.pick is None:
                    self.pick = pick_of(batch, "the training data")
                x, y = self.pick(batch)
                yield x.to(device), y.to(device)

    return Pairs()


def find_lr(
    model: nn.Module,
    train: Iterable,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val: Any = None,
    metric: Any = None,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    iterations: int = 100,
    batch_size: int | None = None,
    follow: str = "train",
    store: bool | str = False,
    **settings: Any,
):
    """The range test of `lrbs.find_lr` on a DDP model, called on every rank (see the module's
    note). `train`: this rank's batches, a DataLoader with a DistributedSampler as a rule (the
    loader's own batch size and order are used); `optimizer`: the one that trains `model`
    (default SGD with momentum 0.9), restored afterwards. Settings: `ramp`, `beta`, `debias`,
    `stop_factor`. Returns lr_finder.Result, the same on every rank."""
    from lrbs.experiments import lr_finder

    require(applies(model), "the distributed range test needs a DistributedDataParallel model")
    unknown = sorted(set(settings) - set(TEST_SETTINGS) - set(IGNORED))
    if unknown:
        raise ConfigError(
            f"find_lr on a DDP model does not take {', '.join(unknown)}; it takes lr_min, "
            f"lr_max, iterations, {', '.join(TEST_SETTINGS)}"
        )
    if follow != "train" or val is not None:
        raise ConfigError(
            "find_lr on a DDP model follows the training loss (averaged over the ranks): give "
            "no val and follow='train'"
        )
    if store:
        raise ConfigError(
            "find_lr on a DDP model is not recorded in the run history: call it without store "
            "(the monitor, lrbs.monitor, records a DDP run from rank 0)"
        )
    require(metric is None, "find_lr on a DDP model takes no metric (it follows the loss)")
    if not isinstance(train, Iterable) or isinstance(train, tuple | list | torch.Tensor):
        raise ConfigError(
            "find_lr on a DDP model takes this rank's DataLoader (with a DistributedSampler), "
            f"got {type(train).__name__}"
        )
    loader_batch = getattr(train, "batch_size", None)
    if batch_size is not None and loader_batch is not None and batch_size != loader_batch:
        raise ConfigError(
            f"find_lr on a DDP model trains at the loader's batch ({loader_batch} per rank), "
            f"not batch_size={batch_size}"
        )
    length = len(train) if hasattr(train, "__len__") else None
    if length is not None:
        shortest, longest = all_min(length), -all_min(-length)
        if shortest != longest:  # the ranks would part ways when one runs out
            raise ConfigError(
                f"the ranks' loaders hold {shortest} to {longest} batches: give every rank as "
                "many (a DistributedSampler does)"
            )
    device = next(model.parameters()).device
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr_min, momentum=0.9)
    loss_fn = loss or nn.functional.cross_entropy
    config = lr_finder.Config(
        lr_min=lr_min,
        lr_max=lr_max,
        iterations=iterations,
        batch_size=loader_batch or batch_size or 64,
        optim=SweptOptim(_optim_name(opt)),
        **{k: v for k, v in settings.items() if k in TEST_SETTINGS},
    )
    test = config.base()
    world = dist.get_world_size() if distributed() else 1
    t0 = time.perf_counter()
    history = torch_range_test(
        model,
        opt,
        loss_fn,
        _pairs(train, device),
        lr_min=test.lr_min,
        lr_max=test.lr_max,
        iterations=test.iterations,
        mode=test.mode,
        beta=test.beta,
        debias=test.debias,
        stop_factor=test.stop_factor,
        reduce=mean_loss,
    )
    elapsed = time.perf_counter() - t0
    points = [
        {"round": 0, "seed": 0, "iteration": i, "lr": lr, "loss": x, "smoothed": s}
        for i, (lr, x, s) in enumerate(
            zip(history.lrs, history.losses, history.smoothed, strict=True)
        )
    ]
    rows = {
        "points": points,
        "tests": [
            {
                "round": 0,
                "seed": 0,
                "status": history.status,
                "message": history.message,
                "elapsed": elapsed,
            }
        ],
        "info": [
            {
                "optimizer": type(opt).__name__,
                "world": world,
                "batch_per_rank": config.batch_size,
                "batch": config.batch_size * world,
            }
        ],
    }
    # the suggestions are rebuilt from these rows: the same on every rank
    return lr_finder.Result(config, rows, "finished", history.message)


def agreed(fits: Callable[[int], bool]) -> Callable[[int], bool]:
    """fits(B) on every rank: True only where B fits on all of them."""
    return lambda batch: bool(all_min(int(bool(fits(batch)))))


def largest_batch(
    fits: Callable[[int], bool],
    upper: int,
    start: int = 1,
    stop: threading.Event | None = None,
) -> ProbeResult:
    """`lrbs.methods.memory.largest_batch` on every rank of a job: the largest batch that fits
    on every rank (the ranks search together; call it on each). `upper` and `start` must be
    the same on every rank; a `stop` set on one rank is not seen by the others."""
    upper = all_min(upper)
    return local_largest_batch(agreed(fits), upper, start, stop)
