"""Side-by-side timing: alternate the contenders, repeat, report medians and ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternate(contenders: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1):
    """Run each contender in turn, `repeats` rounds (after `warmup` untimed ones); return
    {name: [seconds, ...]}."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(warmup + repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            if r >= warmup:
                times[name].append(dt)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time(b)/time(a) measured in the same round: > 1 means a is faster."""
    return statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))
