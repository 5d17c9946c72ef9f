"""The learning-rate range test as an experiment, with its zoom-in second pass. The test
itself (the ramp, the smoothing, the stop rule, the restore) is `lrbs.methods.range_test`; its
suggestion rules are `lrbs.methods.suggestions` (both offered here too, as before).

The experiment "lr-find" (page, `python -m lrbs lr-find`, `run(setup, Config(...))`) runs the
test once per seed and per round (the first, then one per zoom range), streaming every
iteration; its Result rebuilds each test from those rows, and its summary's "suggestions" (the
last round's, the median over seeds) are what other experiments read back from the run history
(`stored_range_test`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.errors import ConfigError
from lrbs.core.kept import load_data
from lrbs.core.optim import SweptOptim
from lrbs.core.setup import Setup
from lrbs.methods.range_test import (  # noqa: F401  (re-exported: lr_finder's public names)
    FOLLOW,
    MODES,
    RangeTestConfig,
    RangeTestResult,
    range_test,
)
from lrbs.methods.suggestions import (  # noqa: F401  (re-exported: lr_finder's public names)
    EMA,
    NO_DESCENT,
    SUGGESTIONS,
    Suggestion,
    SuggestionRule,
    descent_region,
    minimum,
    smooth,
    steepest,
    suggest,
    valley,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.history import stored_range_test  # noqa: F401  (offered here as before)
from lrbs.runs.instruments import data_info, range_tests, round_label  # noqa: F401
from lrbs.runs.sink import Sink
from lrbs.runs.views import (  # noqa: F401  (offered here as before)
    POINT_COLUMNS,
    RangeTestRows,
    band_of,
    spread,
    suggestion_frame,
)


def range_from_selection(selection: dict | None, field: str = "lr") -> tuple[float, float] | None:
    """The (lo, hi) learning-rate range of an Altair interval selection as Streamlit returns
    it ({"param": {"lr": [a, b]}} or {"lr": [a, b]}), or None if there is none."""
    if not selection:
        return None
    values = selection.get(field)
    if values is None:
        for v in selection.values():
            if isinstance(v, dict) and field in v:
                values = v[field]
                break
    if not values or len(values) != 2:
        return None
    lo, hi = sorted(float(v) for v in values)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        return None
    return lo, hi


# ---------------------------------------------------------------------------- the experiment

KIND = "lr-find"


@dataclass(frozen=True, kw_only=True)
class Config:
    """The range test, repeated over `seeds` seeds (the setup's seed, +1, ...), then once more
    per `zoom` range: a finer exponential test of that range (twice the first round's points
    per decade), from the same initial weights."""

    lr_min: float = option(1e-7, help="the first rate of the ramp", label="minimum learning rate")
    lr_max: float = option(10.0, help="the last rate of the ramp", label="maximum learning rate")
    iterations: int = option(100, help="steps of the first round")
    ramp: str = option("exp", choices=MODES, help="exponential or linear ramp")
    batch_size: int = option(64, help="batch size")
    optim: SweptOptim = option(factory=SweptOptim, help="the optimizer (the ramp sets its rate)")
    beta: float = option(0.98, help="smoothing (EMA); 0: none", label="smoothing beta")
    debias: bool = option(True, help="bias-corrected smoothing (no: torch-lr-finder's style)")
    stop_factor: float | None = option(
        4.0, help="stop when the smoothed loss passes k x its best; 0: never", label="stop factor"
    )
    follow: str = option(
        "train",
        choices=FOLLOW,
        help="the loss followed: each step's training batch, or the whole validation set "
        "after each step (torch-lr-finder's val_loader: slower, less noisy)",
    )
    seeds: int = option(1, low=1, high=32, help="repeat with this many seeds")
    zoom: tuple[tuple[float, float], ...] = option(
        (), help="a finer round over [LO, HI] after the first; repeatable"
    )

    def __post_init__(self) -> None:
        check(self)
        if self.stop_factor == 0:
            object.__setattr__(self, "stop_factor", None)
        object.__setattr__(self, "zoom", tuple((float(lo), float(hi)) for lo, hi in self.zoom))
        self.rounds()  # every round's checks: the first's settings, each zoom range

    def base(self) -> RangeTestConfig:
        """The first round's test (seed 0: each run sets its own)."""
        return RangeTestConfig(
            lr_min=self.lr_min,
            lr_max=self.lr_max,
            iterations=self.iterations,
            mode=self.ramp,
            batch_size=self.batch_size,
            optimizer=self.optim.name,
            momentum=self.optim.momentum,
            beta=self.beta,
            debias=self.debias,
            stop_factor=self.stop_factor,
            weight_decay=self.optim.weight_decay,
            follow=self.follow,
        )

    def rounds(self) -> list[RangeTestConfig]:
        """The test of each round: the first, then one per zoom range."""
        base = self.base()
        out = [base]
        for lo, hi in self.zoom:
            try:
                out.append(base.zoom(lo, hi))
            except ConfigError as exc:
                raise ConfigError(f"zoom range {lo:g} to {hi:g}: {exc}") from None
        return out

    def zoomed(self, lo: float, hi: float) -> Config:
        """These settings with one more zoom round, over [lo, hi]."""
        return replace(self, zoom=(*self.zoom, (lo, hi)))


def seconds_text(seconds: float) -> str:
    """A duration as a person reads it: 2 significant digits below 10 s (a range test of a
    small model takes a few hundredths of a second; "0.0 s" reads as nothing measured)."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    return f"{seconds:.0f} s"


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Every round x seed: one "points" row per iteration as it goes, and a "tests" row as
    each test ends (its status, message and time). A user stop ends it after the test under
    way, which keeps what it computed."""
    rows, sink = collect(sink)
    stopped = range_tests(setup, load_data(setup), config.rounds(), config.seeds, sink, stop)
    return Result(config, rows.rows, "stopped" if stopped else "finished")


@dataclass(frozen=True)
class Result(RangeTestRows, experiment.Result):
    """Every round's test of each seed (`rounds`, `latest`, `points`, the suggestions: see
    `lrbs.runs.views.RangeTestRows`), rebuilt from the streamed rows."""

    def round_configs(self) -> list[RangeTestConfig]:
        return self.config.rounds()

    def curve(self) -> pd.DataFrame:
        """The curve: lr, loss and smoothed loss per iteration, every round and seed."""
        return self.points()

    def chart(self):
        """The page's chart of the finished test (Altair): curves, suggestions, seed band."""
        from lrbs.charts import range_test_chart

        return range_test_chart(self.points(), self.suggestion_frame(), band=self.band())

    def zoom_default(self) -> tuple[float, float]:
        """A zoom range to start from: a tenth of the steepest descent to twice the maximum
        usable rate, rounded."""
        found = self.suggestions()
        lo = found.get("steep", 1e-2) / 10
        hi = found.get("max_usable", 1.0) * 2
        return float(f"{lo:.2g}"), float(f"{hi:.2g}")

    def summary(self) -> dict:
        latest = self.latest
        out = {
            "status": self.status,
            "message": self.message,
            **(self.rows.get("info") or [{"optimizer": self.config.optim.name}])[0],
            "rounds": [
                r.headline() | {"round": r.round, "seed": r.config.seed}
                for results in self.rounds
                for r in results
            ],
        }
        if latest:
            best = np.array([r.best for r in latest])
            out.update(
                iterations=len(latest[0].lrs),
                elapsed=sum(r.elapsed for results in self.rounds for r in results),
                lr_at_min=float(np.median(best[:, 0])),
                min_smoothed_loss=float(np.median(best[:, 1])),
            )
        if len(latest) > 1:
            out["spread"] = self.spread().to_dict(orient="records")
        out["suggestions"] = self.suggestions()
        out["final_round_suggestions"] = out["suggestions"]
        if latest and not out["suggestions"]:
            out["no_suggestion"] = NO_DESCENT
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"points": self.points()}

    def report(self) -> str:
        lines = []
        for results in self.rounds:
            for r in results:
                lr, loss = r.best
                lines.append(
                    f"{round_label(r.round)} seed {r.config.seed}: {r.status}, {len(r.lrs)} "
                    f"iterations in {seconds_text(r.elapsed)}, lowest smoothed loss {loss:.4g} "
                    f"at lr {lr:.3g}"
                )
                lines += [f"  {s.title:<18} {s.lr:<10.3g} {s.meaning}" for s in r.suggestions]
        return "\n".join(lines) if lines else self.status
