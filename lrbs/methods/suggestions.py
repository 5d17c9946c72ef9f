"""The LR range test's suggestion rules: pure functions of a swept curve (rates, smoothed
losses) that return an index or None, and the moving average that smooths the curve. They know
nothing of lrbs's loop, so a curve from any finder (or a rule of one's own, with the same
`pick(lrs, losses)` signature) goes through `suggest`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class EMA:
    """Exponential moving average, one value at a time. Debiased (fastai): avg_i / (1 -
    beta^(i+1)), so early values are not dragged towards 0. Not debiased (torch-lr-finder):
    starts at the first value."""

    def __init__(self, beta: float, debias: bool = True) -> None:
        self.beta, self.debias = beta, debias
        self.avg, self.n = 0.0, 0

    def __call__(self, x: float) -> float:
        self.n += 1
        if not self.debias:
            self.avg = x if self.n == 1 else self.beta * self.avg + (1 - self.beta) * x
            return self.avg
        self.avg = self.beta * self.avg + (1 - self.beta) * x
        return self.avg / (1 - self.beta**self.n)


def smooth(losses: np.ndarray, beta: float, debias: bool = True) -> np.ndarray:
    ema = EMA(beta, debias)
    return np.array([ema(x) for x in losses], dtype=float)


# ---------------------------------------------------------------------------- suggestions
# Each takes (lrs, smoothed losses) over the trimmed curve and returns an index or None.
#
# A short or noisy sweep has a flat head whose smoothed loss still wanders: a debiased average
# of its first few losses moves by a large share of their noise at each step (the first 10 %
# skipped is not enough for it to settle), and np.gradient's one-sided edge differences add to
# that; against a gentle descent these wiggles are the steepest "falls" of the curve. So the
# rules about the descent first locate it from the curve itself (`descent_region`), and with
# no real descent they say nothing.

NO_DESCENT = (
    "no suggestion: the smoothed loss never fell clearly below its level at the start of the "
    "sweep (by twice its noise there), so no rule has an answer; run more iterations, a larger "
    "batch (less noise) or a wider range"
)
HEAD_SHARE = 1 / 3  # the head: the first third of the curve; its first half is still settling
REAL = 2.0  # a descent is real when it falls this many noise levels below the head


def descent_region(lrs: np.ndarray, losses: np.ndarray) -> tuple[int, int] | None:
    """(start, bottom): where the loss really falls, or None. The head is the curve's first
    third; its level the median of its second half (the first is the average settling), its
    noise the larger of that half's range and the largest rise of the curve from there to the
    bottom (a flat noisy curve wanders up as far as it wanders down). bottom is the lowest point
    past the head, real when it lies REAL x the noise below the level; start the last point
    before it not yet one noise level below the level."""
    b = np.asarray(losses, float)
    k = max(4, round(HEAD_SHARE * len(b)))
    if len(b) < k + 3:
        return None
    bottom = k + int(np.argmin(b[k:]))
    settled = b[k // 2 : bottom + 1]
    level = float(np.median(settled[: k - k // 2]))
    rise = float(np.max(settled - np.minimum.accumulate(settled)))
    noise = max(float(np.ptp(settled[: k - k // 2])), rise, 1e-9 * abs(level))
    if b[bottom] >= level - REAL * noise:
        return None
    start = int(np.flatnonzero(b[:bottom] >= level - noise)[-1])
    return start, bottom


def _slopes(lrs: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """d loss / d ln(lr): against log(lr), as fastai does (slopes against plain lr are
    dominated by the right end of an exponential sweep)."""
    return np.gradient(losses, np.log(lrs))


def steepest(lrs: np.ndarray, losses: np.ndarray) -> int | None:
    """The steepest fall per decade within the descent region."""
    region = descent_region(lrs, losses)
    if region is None:
        return None
    s, e = region
    return s + int(np.argmin(_slopes(lrs[s : e + 1], losses[s : e + 1])))


def minimum(lrs: np.ndarray, losses: np.ndarray) -> int | None:
    """The lowest smoothed loss, where the curve has a real descent down to it (else it is the
    noise's lowest point). Its rate / 10 is the suggestion (see SUGGESTIONS)."""
    region = descent_region(lrs, losses)
    return None if region is None else region[1]


def valley(lrs: np.ndarray, losses: np.ndarray, slack: float = 0.002) -> int | None:
    """Half-way along the main descent: within the descent region, the unbroken run of falling
    loss with the largest drop (a rise smaller than `slack` x the region's range does not break
    a run), without its flat head and tail (where it has fallen less than 5 % of its drop)."""
    region = descent_region(lrs, losses)
    if region is None:
        return None
    s0, e0 = region
    losses = np.asarray(losses[s0 : e0 + 1], float)
    n = len(losses)
    tol = slack * float(np.ptp(losses))
    best, start = None, 0
    for i in range(1, n + 1):
        if i == n or losses[i] > losses[i - 1] + tol:
            end = i - 1
            if end > start and (
                best is None or losses[start] - losses[end] > losses[best[0]] - losses[best[1]]
            ):
                best = (start, end)
            start = i
    if best is None:
        return None
    s, e = best
    e = s + int(np.argmin(losses[s : e + 1]))  # small rises within the slack may follow it
    drop = losses[s] - losses[e]
    part = losses[s : e + 1]
    head = s + int(np.argmax(part < losses[s] - 0.05 * drop))
    tail = s + int(len(part) - 1 - np.argmax(part[::-1] > losses[e] + 0.05 * drop))
    return s0 + (head + max(head, tail)) // 2


@dataclass(frozen=True)
class SuggestionRule:
    name: str
    title: str
    meaning: str
    pick: Callable[[np.ndarray, np.ndarray], int | None]
    scale: float = 1.0  # the suggested rate is lrs[index] * scale
    # a rule about the descent: its answer counts only within `descent_region` (none without a
    # real descent); a rule of one's own can call descent_region to look only there
    descent_only: bool = False


SUGGESTIONS = (
    SuggestionRule(
        "steep",
        "Steepest descent",
        "where the smoothed loss falls fastest per decade: a safe, fast start",
        steepest,
        descent_only=True,
    ),
    SuggestionRule(
        "minimum",
        "Minimum ÷ 10",
        "a tenth of the rate at the lowest loss: the classic conservative pick",
        minimum,
        scale=0.1,
    ),
    SuggestionRule(
        "valley",
        "Valley",
        "half-way down the main stretch of falling loss (after fastai's valley)",
        valley,
        descent_only=True,
    ),
    SuggestionRule(
        "max_usable",
        "Maximum usable",
        "the lowest point: beyond it the loss turns ragged and diverges; an upper "
        "bound, e.g. for cyclical or one-cycle schedules",
        minimum,
    ),
)


@dataclass(frozen=True)
class Suggestion:
    name: str
    title: str
    meaning: str
    lr: float
    loss: float  # smoothed loss at the point the rule picked


def suggest(
    lrs: np.ndarray,
    smoothed: np.ndarray,
    rules: tuple[SuggestionRule, ...] = SUGGESTIONS,
    skip_start: float = 0.1,
    skip_end: int = 5,
) -> list[Suggestion]:
    """Apply each rule to the curve without its first ~10 % (the average is still settling)
    and its last few points (the blow-up). A rule that has no answer is left out."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    keep = np.isfinite(smoothed)
    lrs, smoothed = lrs[keep], smoothed[keep]
    lo = int(len(lrs) * skip_start)
    hi = len(lrs) - skip_end if len(lrs) - skip_end - lo >= 5 else len(lrs)
    a, b = lrs[lo:hi], smoothed[lo:hi]
    region = descent_region(a, b)
    out = []
    for rule in rules:
        i = rule.pick(a, b) if len(a) else None
        if (
            rule.descent_only
            and i is not None
            and (region is None or not region[0] <= i <= region[1])
        ):
            i = None
        if i is not None:
            out.append(
                Suggestion(
                    name=rule.name,
                    title=rule.title,
                    meaning=rule.meaning,
                    lr=float(a[i] * rule.scale),
                    loss=float(b[i]),
                )
            )
    return out
