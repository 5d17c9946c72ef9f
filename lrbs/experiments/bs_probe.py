"""The largest batch that fits in memory: double the batch until a training step no longer
fits, then binary-search the boundary. On a GPU real steps are tried (out-of-memory caught and
memory released); on the CPU the memory a step needs is measured against a cap."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.device import is_out_of_memory, release_memory
from lrbs.core.errors import ConfigError, positive_int
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.stream import StreamData
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink

log = logging.getLogger(__name__)

KIND = "bs-probe"
MARGIN = 0.9  # keep 10 % for fragmentation and other tensors
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}  # buffers per parameter


@dataclass(frozen=True, kw_only=True)
class Config:
    cap_mib: float | None = option(
        None, low=1e-6, label="memory cap", help="memory cap in MiB (on the CPU; default: none)"
    )
    optim_states: int = option(
        1, low=0, high=8, help="optimizer buffers per parameter: SGD 0, momentum 1, Adam 2"
    )

    target_batch: int | None = option(
        None,
        low=1,
        help="a batch to reach: the largest micro-batch that fits and the gradient "
        "accumulation steps it needs",
    )

    def __post_init__(self) -> None:
        check(self)

    @property
    def cap_bytes(self) -> int | None:
        return int(self.cap_mib * 2**20) if self.cap_mib else None


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


def make_fits(
    model: nn.Module,
    data: TensorData | StreamData,
    cap_bytes: int | None = None,
    optim_states: int = 1,
) -> Callable[[int], bool]:
    """fits(B): on a GPU, a real training step at batch B (out-of-memory caught, memory
    released); on the CPU, the measured step memory against `cap_bytes`."""
    device = data.device
    # BatchNorm cannot train on one sample; a batch of 2 needs at least batch 1's memory
    smallest = (
        2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1
    )

    def fits(batch: int) -> bool:
        idx = torch.arange(max(batch, smallest), device=device) % data.n_train
        x, y = data.take(idx)
        try:
            with data.compute.autocast(device):
                need = step_memory_bytes(model, x, y, optim_states, data.task.loss)
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


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """The search, one "tried" row {batch, fits} per batch tried, as it goes."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    n = data.n_train
    sink.emit("info", {"n_train": n, "device": data.device.type})
    if config.cap_bytes is None and data.device.type == "cpu":
        log.warning("no memory cap on the CPU: the probe stops at the training set size")
    if config.target_batch is not None and config.target_batch > n:
        raise ConfigError(
            f"target batch {config.target_batch} is larger than the training set ({n})"
        )
    fits = make_fits(setup.fresh_model(data), data, config.cap_bytes, config.optim_states)
    total = expected_tries(n)

    def logged(b: int) -> bool:
        ok = fits(b)
        sink.emit("tried", {"batch": b, "fits": bool(ok)})
        sink.progress(min(0.99, len(rows.get("tried")) / total), f"B={b}")
        return ok

    r = largest_batch(logged, n, stop=stop)
    sink.progress(1.0, "done")
    return Result(config, rows.rows, "stopped" if r.stopped else "finished")


@dataclass(frozen=True)
class Result(experiment.Result):
    def tried(self) -> pd.DataFrame:
        t = self.frame("tried", ["batch", "fits"])
        return t.astype({"batch": int, "fits": bool})

    @property
    def n_train(self) -> int | None:
        n = (self.rows.get("info") or [{}])[0].get("n_train")
        return int(n) if n is not None else None

    @property
    def largest(self) -> int:
        t = self.tried()
        return int(t[t.fits].batch.max()) if t.fits.any() else 0

    @property
    def memory_limited(self) -> bool:
        return bool((~self.tried().fits).any())

    @property
    def safe(self) -> int:
        return safe_batch(self.largest, self.memory_limited)

    def verdict(self) -> str:
        """What was found, in words (markdown)."""
        largest, safe = self.largest, self.safe
        if largest == 0:
            return "The probe stopped before it tried a batch."
        if self.memory_limited:
            return (
                f"Largest batch that fits: **{largest:,}** (limited by memory). With a 10 % "
                f"margin, rounded down to a power of two: **{safe:,}**."
            ) + self.accumulation_text()
        n = self.n_train
        upper = (self.rows.get("info") or [{}])[0].get("upper")
        if upper is not None and n is not None and int(upper) < n:
            return (
                f"Largest batch that fits: at least **{largest:,}**, the largest batch "
                f"considered (of {n:,} training samples), so **{safe:,}** is safe as it is."
            ) + self.accumulation_text()
        limit = f"the training set size ({n:,})" if n else "the training set size"
        return (
            f"Largest batch that fits: **{largest:,}** (limited by {limit}, not by memory): "
            f"the whole training set fits, so **{safe:,}** is safe as it is."
        ) + self.accumulation_text()

    def accumulation_text(self) -> str:
        acc = self.accumulation()
        if acc is None:
            return ""
        micro, steps = acc
        if steps == 1:
            return f" The target batch {self.config.target_batch:,} fits as it is."
        return (
            f" To train at batch {self.config.target_batch:,}: micro-batches of **{micro:,}**, "
            f"**{steps}** accumulation steps (--accumulate {steps})."
        )

    def accumulation(self) -> tuple[int, int] | None:
        """(micro-batch, accumulation steps) reaching the config's target batch: the fewest
        steps whose equal micro-batches fit in the safe batch; None without a target."""
        target = self.config.target_batch
        if target is None or self.safe < 1:
            return None
        steps = math.ceil(target / self.safe)
        return math.ceil(target / steps), steps

    def summary(self) -> dict:
        out = {
            "status": self.status,
            "largest": self.largest,
            "safe": self.safe,
            "memory_limited": self.memory_limited,
            "tried": len(self.tried()),
        }
        acc = self.accumulation()
        if acc is not None:
            out.update(target_batch=self.config.target_batch, micro_batch=acc[0], accumulate=acc[1])
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"tried": self.tried()}

    def report(self) -> str:
        out = self.summary()
        limit = "memory" if out["memory_limited"] else "training set size"
        return (
            f"largest batch that fits: {out['largest']} (safe: {out['safe']}); "
            f"{limit} was the limit"
        )
