"""Views of the rows a method's run streamed (`lrbs.runs.instruments`, the noise meter's "rows"
and "runs"), shared by the experiment that runs the method alone and by recommend, which runs
it as one step of its pipeline (under its own channel prefix). Each view is a mixin over
`self.rows` (a channel -> rows mapping): `RangeTestRows`, `ProbeRows`, `NoiseRows`; the
frozen dataclasses `RangeView`, `ProbeView` and `NoiseView` hold just the rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from lrbs.core.errors import require
from lrbs.methods.memory import safe_batch
from lrbs.methods.noise import ROW_COLUMNS, last_quarter
from lrbs.methods.range_test import RangeTestConfig, RangeTestResult
from lrbs.methods.suggestions import suggest

POINT_COLUMNS = ["round", "seed", "iteration", "lr", "loss", "smoothed"]


class Rows:
    rows: Any

    def frame(self, channel: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.rows.get(channel, []), columns=columns)


# ---------------------------------------------------------------------------- the range test


def spread(results: list[RangeTestResult]) -> pd.DataFrame:
    """Across seeds: per suggestion, the median rate and how far it moves (max/min ratio)."""
    rows = []
    names = {s.name: s.title for r in results for s in r.suggestions}
    for name, title in names.items():
        vals = np.array([s.lr for r in results for s in r.suggestions if s.name == name])
        rows.append(
            {
                "suggestion": title,
                "median_lr": float(np.median(vals)),
                "min_lr": float(vals.min()),
                "max_lr": float(vals.max()),
                "max_over_min": float(vals.max() / vals.min()),
                "seeds": len(vals),
            }
        )
    return pd.DataFrame(rows)


def suggestion_frame(results: list[RangeTestResult]) -> pd.DataFrame:
    """The suggestions of one round: per rule its name, title, meaning, and rate (with several
    seeds, the median rate), with a label for the chart."""
    table = spread(results)
    columns = ["name", "title", "lr", "meaning", "label"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    meaning = {s.title: (s.name, s.meaning) for r in results for s in r.suggestions}
    return pd.DataFrame(
        {
            "name": [meaning[t][0] for t in table.suggestion],
            "title": table.suggestion,
            "lr": table.median_lr,
            "meaning": [meaning[t][1] for t in table.suggestion],
            "label": [
                f"{t} {v:.2g}" for t, v in zip(table.suggestion, table.median_lr, strict=True)
            ],
        },
        columns=columns,
    )


def band_of(results: list[RangeTestResult]) -> pd.DataFrame | None:
    """Across the seeds of one round: per iteration the lowest and highest smoothed loss, where
    every seed got that far; None for a single seed."""
    if len(results) < 2:
        return None
    d = pd.concat([r.frame() for r in results])
    g = d.groupby("iteration").agg(
        lr=("lr", "first"), lo=("smoothed", "min"), hi=("smoothed", "max"), n=("seed", "count")
    )
    return g[g.n == len(results)].reset_index()


class RangeTestRows(Rows):
    """The range tests of `lrbs.runs.instruments.range_tests` from their "points" and "tests"
    rows; `round_configs()` gives each round's test."""

    def round_configs(self) -> list[RangeTestConfig]:
        raise NotImplementedError

    @cached_property
    def rounds(self) -> list[list[RangeTestResult]]:
        """Per round, the test of each seed, rebuilt from the streamed rows: the same curves,
        statuses and suggestions the run computed."""
        configs = self.round_configs()
        points = self.points()
        tests = {(int(t["round"]), int(t["seed"])): t for t in self.rows.get("tests", [])}
        out: list[list[RangeTestResult]] = []
        for (r_no, seed), part in points.groupby(["round", "seed"], sort=True):
            key = (int(r_no), int(seed))
            meta = tests.get(key, {"status": "stopped", "message": "", "elapsed": 0.0})
            part = part.sort_values("iteration")
            lrs, smoothed = part.lr.to_numpy(float), part.smoothed.to_numpy(float)
            result = RangeTestResult(
                config=replace(configs[key[0]], seed=key[1]),
                lrs=lrs,
                losses=part.loss.to_numpy(float),
                smoothed=smoothed,
                status=meta["status"],
                message=meta["message"] or "",
                suggestions=tuple(suggest(lrs, smoothed)),
                elapsed=float(meta["elapsed"] or 0.0),
                round=key[0],
            )
            while len(out) <= key[0]:
                out.append([])
            out[key[0]].append(result)
        return [r for r in out if r]

    @property
    def latest(self) -> list[RangeTestResult]:
        """The last round's tests, one per seed ([] before any point)."""
        return self.rounds[-1] if self.rounds else []

    def points(self) -> pd.DataFrame:
        """Every iteration of every round and seed: the CSV the page offers."""
        points = self.frame("points", POINT_COLUMNS)
        if points.empty:
            return points
        # whole numbers, also when read back from the history (where they may come as floats)
        return points.astype({"round": int, "seed": int, "iteration": int})

    def suggestion_frame(self) -> pd.DataFrame:
        """The last round's suggestions (the median over seeds)."""
        return suggestion_frame(self.latest)

    def suggestions(self) -> dict[str, float]:
        frame = self.suggestion_frame()
        return dict(zip(frame.name, frame.lr.astype(float), strict=True))

    def band(self) -> pd.DataFrame | None:
        return band_of(self.latest)

    def spread(self) -> pd.DataFrame:
        return spread(self.latest)


@dataclass(frozen=True)
class RangeView(RangeTestRows):
    """One round of range tests (`test`, each seed's run of it) read from its rows."""

    test: RangeTestConfig
    rows: dict = field(default_factory=dict)

    def round_configs(self) -> list[RangeTestConfig]:
        return [self.test]


# ---------------------------------------------------------------------------- the memory probe


class ProbeRows(Rows):
    """The memory probe from its "tried" rows and its "info" row (n_train, upper)."""

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

    def accumulation_text(self) -> str:
        """What follows the verdict (a target batch's accumulation, where one was asked)."""
        return ""

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


@dataclass(frozen=True)
class ProbeView(ProbeRows):
    rows: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- the noise meter

CRITICAL_QUANTITIES = ("b_simple", "b_crit", "b_noise")
WHY_THEY_DIFFER = (
    "The pages' critical batches differ by design: B_simple grows as the loss falls (the mean "
    "gradient shrinks faster than its noise), so the Noise page's B_simple, measured at the end "
    "of a long run at your batch, exceeds the one the LR × batch map and Recommend measure "
    "after a short run; the map's B_crit is fitted from the updates each batch needed to reach "
    "a target loss, an average over that whole stretch of training, and its B_noise from the "
    "best rate per batch; McCandlish et al. find them to agree only up to a small factor."
)


def critical_batch_note(
    value: float,
    quantity: str,
    n_train: int | None,
    *,
    steps: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    loss: float | None = None,
    target: float | None = None,
    why: bool = True,
) -> str:
    """The one explanation of a critical-batch number every page shows beside it: what it is
    and at which point of training (`quantity` "b_simple", "b_crit" or "b_noise", with the
    context its page knows), why the pages' numbers differ (WHY_THEY_DIFFER), and what a value
    above the training set means. `why=False` leaves out WHY_THEY_DIFFER (said once a page)."""
    require(quantity in CRITICAL_QUANTITIES, f"unknown critical-batch quantity {quantity!r}")
    if value is None or not math.isfinite(value) or value <= 0:
        names = {"b_simple": "B_simple", "b_crit": "B_crit", "b_noise": "B_noise"}
        return f"No {names[quantity]} here." + (f" {WHY_THEY_DIFFER}" if why else "")
    if quantity == "b_simple":
        what = f"B_simple = tr(Σ)/|G|² = {value:,.0f} is the gradient noise scale measured "
        what += f"after {steps:,} training steps" if steps is not None else "late in its run"
        at = [f"batch {batch:,}" if batch is not None else "", f"lr {lr:.3g}" if lr else ""]
        if any(at):
            what += " at " + ", ".join(a for a in at if a)
        what += f" (training loss {loss:.3g} then)." if loss is not None else "."
    elif quantity == "b_crit":
        to = f"training loss {target:.3g}" if target is not None else "the target loss"
        what = (
            f"B_crit = E_min/S_min = {value:,.0f} is fitted from the updates S each batch size "
            f"needed to reach {to} (S = S_min (1 + B_crit/B)): below it a doubled batch nearly "
            "halves the updates, above it the extra samples are wasted."
        )
    else:
        what = (
            f"B_noise = {value:,.0f} is fitted to the best rate per batch, "
            "ε_opt(B) = ε_max / (1 + B_noise/B): the batch where the best rate stops growing."
        )
    text = f"{what} {WHY_THEY_DIFFER}" if why else what
    if n_train is not None and value > n_train:
        text += (
            f" It is above the training set (N = {n_train:,}): no batch can be that large, so "
            "even full-batch training is still in the noise-dominated regime, where a larger "
            "batch would still buy nearly proportionally fewer updates; the number itself is "
            "an extrapolation past any batch you can form and not reliable beyond saying "
            f"'at least N': use the largest batch that fits, capped at N = {n_train:,}."
        )
    return text


class NoiseRows(Rows):
    """The noise meter's measuring run from its "rows" (one per measurement) and "runs" (the
    measuring run's row has phase "measure"); `config` is the noise run's settings, where
    known (None where another experiment holds the rows)."""

    config: Any

    def measurements(self) -> pd.DataFrame:
        return self.frame("rows", ROW_COLUMNS)

    def _runs(self, phase: str) -> list[dict]:
        return [r for r in self.rows.get("runs", []) if r.get("phase") == phase]

    @cached_property
    def measuring_run(self) -> dict:
        found = self._runs("measure")
        return found[0] if found else {}

    @property
    def measuring_status(self) -> str:
        return self.measuring_run.get("status") or "stopped"

    @property
    def diverged(self) -> bool:
        return self.measuring_status == "diverged"

    @cached_property
    def b_simple(self) -> float:
        """The last averaged estimate."""
        tail = last_quarter(self.measurements().b_simple.tolist())
        return tail[-1] if tail else math.nan

    @cached_property
    def spread(self) -> tuple[float, float]:
        """25th-75th percentile of B_simple over the last quarter of the measurements."""
        tail = pd.Series(last_quarter(self.measurements().b_simple.tolist()), dtype=float)
        if tail.empty:
            return (math.nan, math.nan)
        return (float(tail.quantile(0.25)), float(tail.quantile(0.75)))

    @property
    def n_train(self) -> int | None:
        n = self.measuring_run.get("n_train")
        return int(n) if n is not None and n == n else None

    @property
    def overhead(self) -> float:
        """Measuring time / (training + measuring) time (the meter ran inside the loop's
        clock)."""
        m = self.measurements()
        total = self.measuring_run.get("seconds") or 0.0
        if m.empty or not total or total != total:
            return 0.0
        return float(m.measure_seconds.iloc[-1]) / total

    def critical_note(self) -> str:
        """What this B_simple is, why other pages' critical batches differ, and what a value
        above the training set means (critical_batch_note)."""
        m = self.measurements().dropna(subset=["b_simple"])
        cfg = self.config
        return critical_batch_note(
            self.b_simple,
            "b_simple",
            self.n_train,
            steps=int(m.step.iloc[-1]) if not m.empty else None,
            batch=cfg.batch_size if cfg is not None else None,
            lr=cfg.optim.lr if cfg is not None else None,
            loss=float(m.loss.iloc[-1]) if not m.empty else None,
        )


@dataclass(frozen=True)
class NoiseView(NoiseRows):
    rows: dict = field(default_factory=dict)
    config: Any = None
