"""The methods driven over an lrbs Setup, streaming their rows to a sink: the range test over
rounds and seeds (`range_tests`), the memory probe (`probe_batches`) and the noise meter's
measuring run (`measure_noise`). The experiments lr-find, bs-probe and noise-scale run them
alone; recommend and lr-batch-map run them as steps of their own. The rows they emit are read
back by `lrbs.runs.views`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from lrbs.core.data import TensorData
from lrbs.core.loop import RunResult
from lrbs.core.setup import Setup
from lrbs.core.stream import StreamData
from lrbs.methods import noise
from lrbs.methods.memory import ProbeResult, expected_tries, largest_batch
from lrbs.methods.range_test import RangeTestConfig, range_test
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink


def round_label(r: int) -> str:
    """How a round is named to a person, on every page and in the CLI: counted from 1, the
    first over the whole range, each later one a zoom (the stored `round` column counts from
    0)."""
    return "round 1 (the whole range)" if r == 0 else f"round {r + 1} (zoom {r})"


def data_info(data: TensorData | StreamData, optimizer: str) -> dict:
    """What the test ran on: the optimizer (a workload's own, or the config's), the task (its
    loss) and the data path (memory or streamed)."""
    return {
        "optimizer": "the workload's optimizer()" if data.task.optimizer else optimizer,
        "task": data.task.name,
        "data_path": "stream" if isinstance(data, StreamData) else "memory",
    }


def range_tests(
    setup: Setup,
    data: TensorData | StreamData,
    rounds: list[RangeTestConfig],
    seeds: int,
    sink: Sink,
    stop: threading.Event | None = None,
) -> bool:
    """Every round x seed (the setup's seed, +1, ...), each on the setup's fresh model for that
    seed: one "points" row per iteration as it goes, a "tests" row as each test ends (its
    status, message and time), an "info" row at the end (`data_info`). A user stop ends it
    after the test under way, which keeps what it computed. Returns whether it was stopped."""
    total = sum(c.iterations for c in rounds) * seeds
    done = 0
    stopped = False
    for r_no, round_cfg in enumerate(rounds):
        for k in range(seeds):
            seed = setup.seed + k
            text = f"{round_label(r_no)}, seed {seed}"

            def on_point(p: dict, done: int = done, text: str = text) -> None:
                sink.emit("points", p)
                sink.progress((done + p["iteration"] + 1) / total, text)

            r = range_test(
                setup.fresh_model(data, seed),
                data,
                replace(round_cfg, seed=seed),
                on_point=on_point,
                stop=stop,
                round=r_no,
            )
            sink.emit(
                "tests",
                {
                    "round": r_no,
                    "seed": seed,
                    "status": r.status,
                    "message": r.message,
                    "elapsed": r.elapsed,
                },
            )
            done += round_cfg.iterations
            stopped = r.status == "stopped" or (stop is not None and stop.is_set())
            if stopped:
                break
        if stopped:
            break
    sink.emit("info", data_info(data, rounds[0].optimizer))
    return stopped


def probe_batches(
    fits: Callable[[int], bool],
    upper: int,
    sink: Sink,
    stop: threading.Event | None = None,
) -> ProbeResult:
    """The memory probe's search up to `upper` (`largest_batch`), one "tried" row {batch,
    fits} per batch tried, as it goes."""
    total = expected_tries(upper)
    tried = 0

    def logged(b: int) -> bool:
        nonlocal tried
        ok = bool(fits(b))
        tried += 1
        sink.emit("tried", {"batch": b, "fits": ok})
        sink.progress(min(0.99, tried / total), f"B={b}")
        return ok

    return largest_batch(logged, upper, stop=stop)


class Part(Sink):
    """Every row to `sink`; progress reported as the share [start, start + share] of the
    whole (one stage of a longer run)."""

    def __init__(self, sink: Sink, start: float, share: float) -> None:
        self.sink, self.start, self.share = sink, start, share

    def emit(self, channel: str, row: dict) -> None:
        self.sink.emit(channel, row)

    def progress(self, fraction: float, text: str = "") -> None:
        self.sink.progress(self.start + self.share * fraction, text)


def measure_noise(
    setup: Setup,
    data: TensorData,
    config: noise.Config,
    sink: Sink,
    stop: threading.Event | None = None,
    *,
    share: float = 1.0,
) -> RunResult:
    """The noise meter's measuring run (`lrbs.methods.noise`): the setup's fresh model trained
    at `config.batch_size` for `config.steps`, B_simple measured every `config.every` steps:
    one "rows" row per measurement, the loop's "events", and one "runs" row (phase "measure")
    as it ends. Its progress is the first `share` of the whole. A ConfigError before any
    training where a batch is larger than the training set."""
    config.check_data(data.n_train)
    meter = noise.periodic_meter(
        setup.fresh_model(data), data, config, lambda r: sink.emit("rows", r)
    )
    columns = {
        "phase": "measure",
        "n_train": data.n_train,
        "dataset": setup.data_name,
        "model": setup.model_name,
    }
    plan = Planned(
        meter.model, noise.measure_train_config(config), {"stop_rule": meter.observe}, columns
    )
    ran = run_series([noise.MEASURE], lambda _: plan, data, Part(sink, 0.0, share), stop)
    return ran[noise.MEASURE]
