"""How many torch threads a CPU run trains with.

torch's OpenMP team spin-waits at every barrier for its slowest thread. Beside other busy
processes one of its threads is descheduled and every step waits for it: on 2 cores beside 2
busy processes, MNIST-1D at batch 32 made 9 % of its idle updates with torch's default threads
and 66 % with one. So a run takes at most the cores that neither other processes nor this
process's other runs are using, and among those the count that timed fastest for its model and
batch (small models are often fastest on one thread even on an idle machine).

The policy ("auto", a number, or "torch": leave torch's setting) is the process's
(`set_policy`, LRBS_THREADS) or, inside `using(...)`, the calling thread's. The loop applies it
for each run and puts torch's setting back afterwards.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from lrbs.core import machine
from lrbs.core.errors import ConfigError

log = logging.getLogger(__name__)

Policy = int | str  # "auto", "torch" or a number of threads
SLOW_STEP = 0.05  # seconds: a step this slow on one thread is compute-bound; use every core
TIMING_SECONDS = 0.02  # per thread count and round
LOAD_WINDOW = 0.1  # seconds: the shortest window the other processes' load is measured over


def parse_policy(value: object) -> Policy:
    text = str(value).strip().lower()
    if text in ("auto", "torch"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(f"threads must be 'auto', 'torch' or a whole number >= 1, got {value!r}")


_process_policy: Policy = parse_policy(os.environ.get("LRBS_THREADS", "auto") or "auto")
_local = threading.local()
_lock = threading.Lock()
_cache: dict[tuple, int] = {}  # (model, batch, ..., free cores) -> the threads chosen
_active: dict[int, int] = {}  # id of a run training now in this process -> its threads
_last: list[Any] = [None, 0.0]  # the last CPU sample and the other load measured up to it


def set_policy(value: object) -> None:
    """The policy of this process's runs (a CLI flag, a notebook)."""
    global _process_policy
    _process_policy = parse_policy(value)


def policy() -> Policy:
    return getattr(_local, "policy", None) or _process_policy


@contextmanager
def using(value: object) -> Iterator[None]:
    """This thread's runs follow `value` (a page's worker thread, a test)."""
    before = getattr(_local, "policy", None)
    _local.policy = parse_policy(value)
    try:
        yield
    finally:
        _local.policy = before


def other_load(window: float = LOAD_WINDOW, stale: float = 2.0) -> float:
    """Cores' worth of CPU that other processes use now: measured since the last call when
    that was between `window` and `stale` seconds ago (the last run of a sweep), the last
    value when sooner, else over a fresh `window`."""
    with _lock:
        last, value = _last
        now = machine.sample()
        age = now.wall - last.wall if last is not None else math.inf
        if age < window:
            return value
        if age > stale:
            time.sleep(window)
            last, now = now, machine.sample()
        measured = machine.other_cores(last, now)
        _last[:] = [now, measured if measured is not None else 0.0]
        return _last[1]


def free_cores(limit: int, other: float, in_process: int = 0) -> int:
    """Cores left for a run: `limit` less those others keep busy (rounded) and less the
    threads of this process's other runs; at least one."""
    return max(1, min(limit, machine.cores() - round(other) - in_process))


def pick_threads(
    step: Callable[[], object],
    max_threads: int,
    *,
    seconds: float = TIMING_SECONDS,
    rounds: int = 2,
    slow: float = SLOW_STEP,
) -> tuple[int, dict[int, float]]:
    """Time `step` (one update) at 1..max_threads threads, alternating, in `rounds` rounds of
    about `seconds` each; returns the fewest threads within 10 % of the fastest, and the
    seconds per step of each count. A step slower than `slow` on one thread is compute-bound:
    it gets every thread without further timing. torch's setting is put back."""
    before = torch.get_num_threads()
    times: dict[int, float] = {}
    try:
        for r in range(rounds):
            for t in range(1, max_threads + 1):
                torch.set_num_threads(t)
                step()  # a new team size starts its threads; not timed
                n, t0 = 0, time.perf_counter()
                while n < 2 or (time.perf_counter() - t0 < seconds and n < 200):
                    step()
                    n += 1
                    if r == 0 and t == 1 and n == 1 and time.perf_counter() - t0 > slow:
                        return max_threads, {1: time.perf_counter() - t0}
                took = (time.perf_counter() - t0) / n
                times[t] = min(times.get(t, took), took)
    finally:
        torch.set_num_threads(before)
    best = min(times.values())
    return min(t for t, s in times.items() if s <= 1.1 * best), times


def _signature(model: torch.nn.Module, data: Any, batch: int, optim: Any) -> tuple:
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    return (type(model).__qualname__, shapes, getattr(optim, "name", ""), batch, str(data.compute))


def _timing_step(model: torch.nn.Module, data: Any, batch: int, optim: Any) -> Callable[[], object]:
    """One update of a copy of the model on the first `batch` training samples, so timing
    leaves the run's model, optimizer and generators untouched."""
    from lrbs.core.loop import make_step

    twin = copy.deepcopy(model)
    for m in twin.modules():  # a private generator for lrbs's Dropout, not the run's
        if getattr(m, "generator", None) is not None:
            m.generator = torch.Generator().manual_seed(0)
    opt = data.task.build_optimizer(twin.parameters(), optim)
    x, y = data.take(torch.arange(min(batch, data.n_train)))
    step = make_step(twin, opt, data)
    return lambda: step(x, y)


def choose(model: torch.nn.Module, data: Any, batch: int, optim: Any) -> int:
    """Threads for a CPU run of `model` at `batch` now (the "auto" policy)."""
    limit = torch.get_num_threads()
    if limit == 1 or machine.cores() == 1:
        return 1
    with _lock:
        in_process = sum(_active.values())
    free = free_cores(limit, other_load(), in_process)
    if free == 1:
        return 1
    key = (*_signature(model, data, batch, optim), free)
    if key not in _cache:
        try:
            with torch.random.fork_rng(devices=[]):  # torch's own Dropout draws from it
                chosen, times = pick_threads(_timing_step(model, data, batch, optim), free)
        except Exception as exc:  # a model that cannot be copied: every free core
            log.info("threads not timed (%s); using %d", exc, free)
            chosen, times = free, {}
        _cache[key] = chosen
        log.info("threads for %s at batch %d: %s -> %d", key[0], batch, times, chosen)
    return _cache[key]


@dataclass
class Applied:
    """The threads a run trains with; `restore()` puts torch's setting back."""

    threads: int
    previous: int
    _key: int = field(default=0, repr=False)

    def restore(self) -> None:
        with _lock:
            _active.pop(self._key, None)
        if self.previous != torch.get_num_threads():
            torch.set_num_threads(self.previous)


_used = threading.local()  # the threads of the runs on this thread, for its record


def for_run(model: torch.nn.Module, data: Any, batch: int, optim: Any) -> Applied:
    """Apply the policy for one run (the loop calls this; GPU runs are left as they are)."""
    previous = torch.get_num_threads()
    rule = policy()
    if data.device.type != "cpu" or rule == "torch":
        threads = previous
    elif rule == "auto":
        threads = choose(model, data, batch, optim)
    else:
        threads = int(rule)
    if threads != previous:
        torch.set_num_threads(threads)
    applied = Applied(threads, previous)
    applied._key = id(applied)
    with _lock:
        _active[applied._key] = threads
    record = getattr(_used, "threads", None)
    if record is not None:
        record.append(threads)
    return applied


@contextmanager
def recording() -> Iterator[list[int]]:
    """The threads of every run this thread trains inside the block, in order."""
    before = getattr(_used, "threads", None)
    _used.threads = []
    try:
        yield _used.threads
    finally:
        _used.threads = before
