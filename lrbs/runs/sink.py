"""Where an experiment reports as it goes: rows on named channels, and its progress.

Every experiment's `run(setup, config, sink, stop)` writes to one `Sink`; the page's live job,
the run history's recorder, the CLI's progress bar and the API's in-memory rows are all sinks,
so one experiment serves every view. Channels by convention: "events" (the training loop's
points), "runs" (one row as each run of a series ends), and experiment-specific ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Sink:
    """Accepts everything and keeps nothing; subclasses keep what they need."""

    def emit(self, channel: str, row: dict) -> None:
        pass

    def progress(self, fraction: float, text: str = "") -> None:
        pass


class Rows(Sink):
    """Keeps every row per channel in memory (the API's sink; an experiment's Result is built
    from the same rows the history stores)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {}
        self.fraction = 0.0
        self._lock = threading.Lock()

    def emit(self, channel: str, row: dict) -> None:
        with self._lock:
            self.rows.setdefault(channel, []).append(row)

    def progress(self, fraction: float, text: str = "") -> None:
        self.fraction = max(0.0, min(1.0, float(fraction)))

    def get(self, channel: str) -> list[dict]:
        with self._lock:
            return list(self.rows.get(channel, []))


class Tee(Sink):
    """Every row and every progress report to each of several sinks, in order."""

    def __init__(self, *sinks: Sink | None) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def emit(self, channel: str, row: dict) -> None:
        for s in self.sinks:
            s.emit(channel, row)

    def progress(self, fraction: float, text: str = "") -> None:
        for s in self.sinks:
            s.progress(fraction, text)


def tee(*sinks: Sink | None) -> Sink:
    live = [s for s in sinks if s is not None]
    return live[0] if len(live) == 1 else Tee(*live)


def rows_of(sinks: Iterable[Sink]) -> Rows | None:
    return next((s for s in sinks if isinstance(s, Rows)), None)
