"""The monitor under DistributedDataParallel: the noise scale from DDP's own all-reduce, and
the numbers every rank agrees on.

Under DDP each step has two batch sizes already (McCandlish et al. 2018, appendix A.1): each
rank's gradient, over its local batch b, and the all-reduced one, over the N b samples of the
N ranks. `DDPNoiseTap` registers a communication hook on the DDP model that, per bucket, takes
the local gradient's squared norm, then averages the bucket over the ranks exactly as DDP's
default hook does and takes the averaged one's squared norm. At `observe` the local squared
norms are averaged over the ranks (one all-reduce of a scalar), an estimate of E|G_b|^2; with
|G_Nb|^2 that is the two-batch estimator with no extra forward or backward. Gradient
accumulation with `no_sync()` is covered too: the hook sees the accumulated local gradient.
Every rank gets the same reading.

    model = DistributedDataParallel(net)
    mon = lrbs.monitor(model, opt)      # uses DDPNoiseTap by itself on a DDP model
    ...
    mon.step(loss, batch_size=len(x))   # this rank's batch; the monitor counts N x it

DDP takes one communication hook per model: a model that has one of its own gets the
successive-step estimator instead (with a warning).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from lrbs.core.errors import ConfigError, positive_int
from lrbs.methods.distributed import (  # noqa: F401 (the monitor's names for them)
    collective_device,
    distributed,
    is_ddp,
    mean_over_ranks,
    shared_value,
)

HOOK_ATTR = "_lrbs_norm_hook"  # the hook kept on the DDP model: one per model, however many taps


def _square(t: torch.Tensor) -> torch.Tensor:
    t = t if t.dtype in (torch.float32, torch.float64) else t.float()
    return torch.dot(t, t)


class NormHook:
    """The state of `norm_hook`, DDP's default all-reduce hook (`allreduce_hook`: divide by
    the world, all-reduce) that keeps each bucket's squared norm before and after, per
    backward. DDP reduces the buckets in
    index order and waits for all of them before the backward returns, so bucket 0 starts a
    new step's record."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.local: dict[int, torch.Tensor] = {}
        self.reduced: dict[int, torch.Tensor] = {}

    def take(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The last backward's (local, reduced) squared norms, summed over the buckets; None
        where no backward has run since the last take."""
        local, reduced = self.local, self.reduced
        self.local, self.reduced = {}, {}
        if not local or len(local) != len(reduced):
            return None
        return torch.stack(list(local.values())).sum(), torch.stack(list(reduced.values())).sum()


# DDP's hook: a plain function (DDP reads its name and its annotations, these being strings
# under this module's `from __future__ import annotations`, so none), its state a NormHook
def norm_hook(state, bucket):  # noqa: ANN001, ANN201
    i = bucket.index()
    if i == 0:
        state.local, state.reduced = {}, {}
    state.local[i] = _square(bucket.buffer())

    def done(fut):  # noqa: ANN001, ANN202
        value = fut.value()
        t = value[0] if isinstance(value, list) else value
        state.reduced[i] = _square(t)
        return t

    return default_hooks.allreduce_hook(state.group, bucket).then(done)


class DDPNoiseTap:
    """B_simple's two batch sizes from DDP's all-reduce (see the module's note): small = one
    rank's batch, its squared norm averaged over the ranks; big = all ranks' batch. In a
    monitor the batch is the monitor's (this rank's batch x the world); alone, give
    `batch_size`, one rank's batch."""

    def __init__(self, model: nn.Module, batch_size: int | None = None) -> None:
        if not is_ddp(model):
            raise ConfigError(
                f"DDPNoiseTap needs a DistributedDataParallel model, got {type(model).__name__}"
            )
        hook = getattr(model, HOOK_ATTR, None)
        if hook is None:
            hook = NormHook(model.process_group)
            try:
                model.register_comm_hook(hook, norm_hook)
            except RuntimeError as exc:
                raise ConfigError(
                    "this DDP model has a communication hook of its own already (DDP takes "
                    f"one): lrbs cannot read the noise scale from its all-reduce ({exc})"
                ) from None
            setattr(model, HOOK_ATTR, hook)
        self.hook = hook
        self.group = model.process_group
        self.world = dist.get_world_size(self.group)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size)
        self.monitor: Any = None

    def bind(self, monitor: Any) -> None:
        self.monitor = monitor

    def observe(self, model: nn.Module) -> tuple[Any, float, Any, float] | None:
        norms = self.hook.take()
        if self.monitor is not None:
            big = self.monitor.batch_size  # the monitor's batch: every rank's together
        else:
            big = None if self.batch_size is None else self.batch_size * self.world
        if norms is None or big is None:
            return None
        local, reduced = norms
        dist.all_reduce(local, group=self.group)
        return local / self.world, big / self.world, reduced, big
