"""The memory probe: the largest batch whose training step fits. Double the batch until a step
no longer fits, then binary-search the boundary. On a GPU real steps are tried (out-of-memory
caught and memory released); on the CPU the memory a step needs is measured against a cap.

It works on a plain model, a loss and a way to draw a batch of B samples (`batch_fits`);
`make_fits` draws them from lrbs's data. `optimizer_states` is the one count of the buffers an
optimizer keeps per parameter that every memory estimate uses."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lrbs.core.data import TensorData
from lrbs.core.device import is_out_of_memory, release_memory
from lrbs.core.errors import ConfigError, positive_int
from lrbs.core.loop import OptimSpec
from lrbs.core.stream import StreamData

MARGIN = 0.9  # keep 10 % for fragmentation and other tensors
# buffers per parameter, by lrbs's optimizer names: plain SGD keeps none, momentum its velocity,
# Adam and AdamW their two moments
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
UNKNOWN_STATES = 2  # an optimizer of a workload's own: counted as Adam, the common worst case


def optimizer_states(optimizer: str | OptimSpec | torch.optim.Optimizer) -> int:
    """Buffers the optimizer keeps per parameter: an lrbs name ("sgd" 0, "momentum" 1, "adam"
    and "adamw" 2), an OptimSpec (momentum 0 keeps no buffer) or a torch optimizer (SGD: 1 with
    momentum, else 0; Adam/AdamW: 2, 3 with amsgrad; any other: 2)."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZER_STATES:
            raise ConfigError(
                f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZER_STATES)}"
            )
        return OPTIMIZER_STATES[optimizer]
    if isinstance(optimizer, OptimSpec):
        if optimizer.name == "momentum" and optimizer.momentum == 0:
            return 0
        return OPTIMIZER_STATES[optimizer.name]
    groups = optimizer.param_groups
    if isinstance(optimizer, torch.optim.SGD):
        return int(any(g.get("momentum", 0) for g in groups))
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return 2 + int(any(g.get("amsgrad", False) for g in groups))
    return UNKNOWN_STATES


def step_memory_bytes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optim_states: int = 1,
    loss_fn=nn.functional.cross_entropy,
):
    """Memory one training step needs at this batch: the tensors autograd saves for the
    backward pass (measured), the batch itself, and parameters, gradients and `optim_states`
    optimizer buffers per parameter."""
    saved = 0

    def pack(t: torch.Tensor):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    batch = x.numel() * x.element_size() + y.numel() * y.element_size()
    return saved + batch + params * (2 + optim_states)


def batch_fits(
    model: nn.Module,
    batch_of: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn=nn.functional.cross_entropy,
    cap_bytes: int | None = None,
    optim_states: int = 1,
    device: torch.device | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Callable[[int], bool]:
    """fits(B) for a plain model: a training step on `batch_of(B)` (out-of-memory caught and
    memory on `device` released: False), and where `cap_bytes` is given, the step's measured
    memory (`step_memory_bytes`) against it."""
    # BatchNorm cannot train on one sample; a batch of 2 needs at least batch 1's memory
    smallest = (
        2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1
    )

    def fits(batch: int) -> bool:
        x, y = batch_of(max(batch, smallest))
        try:
            with autocast():
                need = step_memory_bytes(model, x, y, optim_states, loss_fn)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc
            release_memory(device)
            return False
        finally:
            model.zero_grad(set_to_none=True)
        return cap_bytes is None or need <= cap_bytes

    return fits


def make_fits(
    model: nn.Module,
    data: TensorData | StreamData,
    cap_bytes: int | None = None,
    optim_states: int = 1,
) -> Callable[[int], bool]:
    """fits(B) on lrbs's data: the first B training samples (repeated past the set's end), the
    data's loss and precision (see `batch_fits`)."""
    device = data.device

    def batch_of(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return data.take(torch.arange(batch, device=device) % data.n_train)

    return batch_fits(
        model,
        batch_of,
        loss_fn=data.task.loss,
        cap_bytes=cap_bytes,
        optim_states=optim_states,
        device=device,
        autocast=lambda: data.compute.autocast(device),
    )


def safe_batch(largest: int, memory_limited: bool) -> int:
    """Memory-limited: the largest power of two at or below 90 % of the largest batch that
    fitted (a margin for fragmentation and other tensors). Otherwise the largest itself, which
    is the training set size and need not be a power of two."""
    if not memory_limited:
        return largest
    return 2 ** int(math.floor(math.log2(max(1, int(largest * MARGIN)))))


@dataclass(frozen=True)
class ProbeResult:
    largest: int  # the largest batch that fitted (0: none was tried)
    safe: int  # see safe_batch
    hit_limit: bool  # stopped by memory (True) or by the upper bound (False)
    tried: tuple[tuple[int, bool], ...]
    stopped: bool = False  # a user stop ended the search early


class _Stopped(Exception):
    pass


def largest_batch(
    fits: Callable[[int], bool],
    upper: int,
    start: int = 1,
    stop: threading.Event | None = None,
) -> ProbeResult:
    """Double the batch until it no longer fits (or passes `upper`), then binary-search the
    boundary. A set `stop` ends the search with what was found so far."""
    positive_int("upper bound", upper)
    tried: list[tuple[int, bool]] = []

    def test(b: int) -> bool:
        if stop is not None and stop.is_set():
            raise _Stopped
        ok = fits(b)
        tried.append((b, ok))
        return ok

    good, bad, stopped = 0, None, False
    try:
        if not test(start):
            raise ConfigError(f"even a batch of {start} does not fit in memory")
        good = start
        while bad is None:
            nxt = min(good * 2, upper)
            if nxt == good:
                break
            if test(nxt):
                good = nxt
            else:
                bad = nxt
        while bad is not None and bad - good > 1:
            mid = (good + bad) // 2
            if test(mid):
                good = mid
            else:
                bad = mid
    except _Stopped:
        stopped = True
    limited = bad is not None
    return ProbeResult(
        largest=good,
        safe=safe_batch(good, limited),
        hit_limit=limited,
        tried=tuple(tried),
        stopped=stopped,
    )


def expected_tries(upper: int) -> int:
    """About how many batches the search tries: doubling, then bisecting, up to `upper`."""
    return 2 * max(1, math.ceil(math.log2(max(2, upper)))) + 1
