"""The largest batch that fits in memory, as an experiment: the memory probe of
`lrbs.methods.memory` on the setup's model and data, each batch tried streamed as it goes."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.errors import ConfigError
from lrbs.core.setup import Setup, load_tensors
from lrbs.methods.memory import (  # noqa: F401  (offered here as before)
    MARGIN,
    OPTIMIZER_STATES,
    ProbeResult,
    expected_tries,
    largest_batch,
    make_fits,
    optimizer_states,
    safe_batch,
    step_memory_bytes,
)
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.instruments import probe_batches
from lrbs.runs.sink import Sink
from lrbs.runs.views import ProbeRows

log = logging.getLogger(__name__)

KIND = "bs-probe"


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
    r = probe_batches(fits, n, sink, stop)
    sink.progress(1.0, "done")
    return Result(config, rows.rows, "stopped" if r.stopped else "finished")


@dataclass(frozen=True)
class Result(ProbeRows, experiment.Result):
    """The batches tried, the largest that fits and the verdict (`lrbs.runs.views.ProbeRows`);
    the accumulation that reaches the config's target batch."""

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
