"""The one shape of an experiment, and the one way to run it.

An experiment is a module in `lrbs/experiments/` with
- `KIND`: its name, shared by its page, its CLI command and the run history;
- `Config`: a frozen, keyword-only dataclass of `option(...)` fields that checks itself;
- `Result`: a subclass of `Result` below, built from the rows the run streamed, so the run
  history's record rebuilds it exactly (`Result.from_record`);
- `run(setup, config, sink, stop) -> Result`.
`execute` runs one, recording it in the run history as it goes; the page's live job, the CLI
and the API all call it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from functools import cached_property
from types import ModuleType
from typing import Any, Protocol

import pandas as pd

from lrbs.core import threads
from lrbs.core.config import from_dict
from lrbs.core.device import is_out_of_memory, release_memory
from lrbs.core.errors import LrbsError
from lrbs.core.machine import Load, Meter, has_time_budget
from lrbs.core.workload import as_workload_error
from lrbs.runs.sink import Rows, Sink, tee

STOPPED = ("stopped", "interrupted")


@dataclasses.dataclass(frozen=True)
class Result:
    """What an experiment computed: its config, the rows it streamed per channel, how it
    ended. Subclasses derive their tables and headline figures from the rows."""

    config: Any
    rows: Mapping[str, list[dict]]
    status: str = "finished"
    message: str = ""
    machine: Load | None = None  # the machine during the run (what else it was doing)

    def frame(self, channel: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.rows.get(channel, []), columns=columns)

    def summary(self) -> dict:
        """Headline figures: the CLI's --json object and the history's results."""
        return {"status": self.status, "message": self.message}

    def tables(self) -> dict[str, pd.DataFrame]:
        """The CSVs the page offers, the first one being what the CLI's --out writes."""
        return {channel: self.frame(channel) for channel in self.rows}

    def report(self) -> str:
        """What the CLI prints without --json."""
        tables = self.tables()
        first = next(iter(tables.values()), pd.DataFrame())
        return first.to_string(index=False) if not first.empty else self.status

    @classmethod
    def from_record(cls, config: Any, rows: Mapping[str, list[dict]], info: dict) -> Result:
        """Rebuild from the run history: the config object, the stored rows per channel and
        the run's record (status, results)."""
        results = info.get("results") or {}
        machine = results.get("machine")
        return cls(
            config,
            rows,
            info.get("status", "finished"),
            results.get("message", ""),
            Load.from_dict(machine) if isinstance(machine, dict) else None,
        )

    @property
    def busy(self) -> bool:
        """A wall-clock budget spent on a busy machine: its time comparisons do not hold."""
        return self.machine is not None and self.machine.busy

    @cached_property
    def stopped(self) -> bool:
        return self.status in STOPPED


class Experiment(Protocol):
    KIND: str
    Config: type
    Result: type[Result]

    def run(self, setup: Any, config: Any, sink: Sink, stop: threading.Event | None) -> Any: ...


def summary_of(result: Result) -> dict:
    """The result's headline figures and the machine it ran on: the --json object and the
    history's results."""
    out = result.summary()
    if getattr(result, "machine", None) is not None:
        m = result.machine
        out = out | {"machine": m.as_dict(), "busy": m.busy, "busy_note": m.note()}
    return out


def collect(sink: Sink | None) -> tuple[Rows, Sink]:
    """The rows an experiment keeps for its Result, and the sink that also reaches `sink`."""
    rows = Rows()
    return rows, tee(rows, sink)


def config_of(exp: ModuleType | Experiment, stored: dict) -> Any:
    return from_dict(exp.Config, stored["config"])


def setup_of(stored: dict) -> Any:
    from lrbs.core.setup import Setup

    return from_dict(Setup, stored["setup"]) if stored.get("setup") else None


def rebuild(exp: ModuleType | Experiment, info: dict, rows: Mapping[str, list[dict]]) -> Any:
    """An experiment's Result from a run-history record (`RunStore.run`) and its points."""
    return exp.Result.from_record(config_of(exp, info["config"]), rows, info)


def execute(
    exp: ModuleType | Experiment,
    setup: Any,
    config: Any,
    *,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
    recorder: Any = None,
) -> Any:
    """Run `exp` with `config`, reporting to `sink` and, when given a started
    `runs.store.Recorder`, to the run history as it goes; the record is closed with the
    result's status and summary (or "error" / "interrupted" if the run raised). The result
    carries the machine's load meanwhile (`Result.machine`, flagged busy for a time budget)."""
    meter = Meter()
    try:
        with threads.recording() as used:
            result = exp.run(setup, config, tee(sink, recorder), stop)
    except KeyboardInterrupt:
        if recorder is not None:
            recorder.finish("interrupted", {"message": "interrupted"})
        raise
    except (Exception, SystemExit) as exc:  # sys.exit in a user's loss: their line, not an exit
        if is_out_of_memory(exc):  # one clear line, on every device, for every view
            release_memory()
            exc = LrbsError("out of memory: try a smaller batch size or model")
        else:  # raised inside a user's workload: their file and line, their traceback
            exc = as_workload_error(exc, getattr(setup, "workload", None)) or exc
        if recorder is not None:
            detail = getattr(exc, "user_traceback", "")  # the user's own lines, to show
            recorder.finish(
                "error", {"error": str(exc)} | ({"traceback": detail} if detail else {})
            )
        if isinstance(exc, LrbsError):
            raise exc from None
        raise
    if dataclasses.is_dataclass(result) and hasattr(result, "machine"):
        load = meter.finish(threads=max(used, default=None), timed=has_time_budget(config))
        result = dataclasses.replace(result, machine=load)
    if recorder is not None:
        status = result.status
        if stop is not None and stop.is_set() and status == "finished":
            status = "stopped"
        recorder.finish(status, summary_of(result))
    return result
