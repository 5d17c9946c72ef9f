"""Answers with their uncertainty: the spread of a figure over seeds, and whether a difference
between two settings is inside it.

Every experiment that compares runs can repeat each one over seeds (seed, seed+1, ...). A
figure is then its mean and its standard deviation over the repeats (`Spread`), and two
settings differ only when the gap between their means is larger than the noise of that gap:
twice its standard error, sqrt(s_a²/n_a + s_b²/n_b) (about a 95 % interval for normal noise).
With one seed on either side nothing can be judged, and the verdicts say so (`ONE_SEED`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

ONE_SEED = "one seed: run repeats to judge"
Z = 2.0  # a difference within Z standard errors is "within noise"


@dataclass(frozen=True)
class Spread:
    """A figure over seeds: its mean, its sample standard deviation (NaN for one seed), and
    how many finite values it has."""

    mean: float
    std: float
    n: int

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

    def text(self, fmt: str = ".4f") -> str:
        """'0.4123 ± 0.0051 (3 seeds)', or the bare value for one seed."""
        if self.n < 2:
            return format(self.mean, fmt)
        return f"{self.mean:{fmt}} ± {self.std:{fmt}} ({self.n} seeds)"


def spread(values: Iterable[float | None]) -> Spread:
    """Mean and standard deviation (ddof 1) of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return Spread(math.nan, math.nan, 0)
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return Spread(mean, std, len(xs))


@dataclass(frozen=True)
class Difference:
    """Mean of a minus mean of b, and the noise of that gap (Z standard errors)."""

    delta: float
    noise: float
    a: Spread
    b: Spread

    @property
    def judged(self) -> bool:
        return self.a.n > 1 and self.b.n > 1

    @property
    def within_noise(self) -> bool | None:
        """True / False, or None when a side has one seed (nothing to judge it by)."""
        if not self.judged or math.isnan(self.delta):
            return None
        return abs(self.delta) <= self.noise

    def text(self, fmt: str = ".4f") -> str:
        """'+0.0030 ± 0.0120: within noise', '-0.0500 ± 0.0100: beyond the noise' or
        '+0.0030 (one seed: run repeats to judge)'."""
        if not self.judged:
            return f"{self.delta:+{fmt}} ({ONE_SEED})"
        what = "within noise" if self.within_noise else "beyond the noise"
        return f"{self.delta:+{fmt}} ± {self.noise:{fmt}}: {what}"


def difference(a: Iterable[float | None], b: Iterable[float | None]) -> Difference:
    sa, sb = spread(a), spread(b)
    judged = sa.n > 1 and sb.n > 1
    noise = Z * math.sqrt(sa.std**2 / sa.n + sb.std**2 / sb.n) if judged else math.nan
    return Difference(sa.mean - sb.mean, noise, sa, sb)


def band(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Per group of `by`: the mean of `value`, its standard deviation over the rows (the
    seeds), lo = mean - std and hi = mean + std (a chart's band), and n."""
    if frame.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "lo", "hi", "n"])
    g = frame.groupby(by, sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["lo"], out["hi"] = out["mean"] - out["std"], out["mean"] + out["std"]
    return out
