"""What else the machine is doing while lrbs trains: the CPU other processes take on the cores
lrbs may use, so that a wall-clock comparison made beside them is flagged as such.

Read from Linux's /proc (per-core busy time, and the CPU time of this process and its
children); elsewhere the readings are None and nothing is flagged.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_SHARE = 0.5  # busy: others took more than half a core per core lrbs left free
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _busy_seconds() -> float | None:
    """CPU seconds spent busy on this process's cores since boot, by every process."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else ()
    total = 0
    for line in lines:
        name, *values = line.split()
        if name in mine:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, values[:8])
            total += user + nice + system + irq + softirq + steal
    return total / _TICK


def _own_seconds() -> float:
    """CPU seconds of this process and its descendants (a run's own worker processes are not
    'other' load); those already reaped count through their parent's children times."""
    try:
        procs: dict[int, tuple[int, int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    fields = (d / "stat").read_text().rpartition(")")[2].split()
                except OSError:  # ended meanwhile
                    continue
                ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
                procs[int(d.name)] = (int(fields[1]), ticks)
    except OSError:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    tree, total = {os.getpid()}, 0
    changed = True
    while changed:  # descendants: parents before children is not guaranteed by pid order
        changed = False
        for pid, (ppid, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    for pid in tree:
        total += procs.get(pid, (0, 0))[1]
    return total / _TICK


@dataclass(frozen=True)
class CpuSample:
    wall: float  # time.monotonic()
    busy: float | None  # busy CPU seconds on our cores, all processes
    own: float  # CPU seconds of this process and its descendants


def sample() -> CpuSample:
    return CpuSample(time.monotonic(), _busy_seconds(), _own_seconds())


def other_cores(start: CpuSample, end: CpuSample) -> float | None:
    """How many cores' worth of CPU other processes used between two samples."""
    wall = end.wall - start.wall
    if start.busy is None or end.busy is None or wall <= 0:
        return None
    return max(0.0, (end.busy - start.busy - (end.own - start.own)) / wall)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass(frozen=True)
class Load:
    """The machine during a run: its cores, the torch threads lrbs trained with, and the cores'
    worth of CPU other processes used meanwhile (mean over the run)."""

    cores: int
    threads: int | None
    other_cpu: float | None
    load_start: float | None  # 1-minute load average at the start and at the end
    load_end: float | None
    seconds: float
    timed: bool  # the run had a wall-clock budget

    @property
    def free_cores(self) -> int:
        return max(1, self.cores - (self.threads or self.cores))

    @property
    def busy(self) -> bool:
        """A wall-clock budget spent while other processes took more than half a core per core
        lrbs left free (at least half a core)."""
        return bool(
            self.timed
            and self.other_cpu is not None
            and self.other_cpu > BUSY_SHARE * self.free_cores
        )

    def note(self) -> str:
        if not self.busy:
            return ""
        return (
            f"The machine was busy: other processes used {self.other_cpu:.1f} of its "
            f"{self.cores} cores while this run trained with {self.threads} thread"
            f"{'s' * (self.threads != 1)}, so its wall-clock budget bought fewer updates than "
            "on an idle machine; compare its updates, epochs or samples, or rerun it idle."
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Load:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SPIN = (
    "import os, sys, time\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "print(os.getpid(), flush=True)\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


def spin(n: int, seconds: float = 60.0) -> list[int]:
    """Start `n` processes that keep a core busy for `seconds` (at most) and return their
    pids: another program's load, for benchmarks and tests. They are detached (not this
    process's descendants, whose CPU counts as its own); end them with `unspin`."""
    import subprocess
    import sys

    pids = []
    for _ in range(n):
        p = subprocess.Popen(
            [sys.executable, "-c", SPIN, str(seconds)], stdout=subprocess.PIPE, text=True
        )
        pids.append(int(p.stdout.readline()))
        p.wait()
        p.stdout.close()
    return pids


def unspin(pids: list[int]) -> None:
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


class Meter:
    """Samples the machine at a run's start and at its end."""

    def __init__(self) -> None:
        self.start, self.load_start = sample(), load_average()

    def finish(self, *, threads: int | None, timed: bool) -> Load:
        end = sample()
        return Load(
            cores=cores(),
            threads=threads,
            other_cpu=other_cores(self.start, end),
            load_start=self.load_start,
            load_end=load_average(),
            seconds=end.wall - self.start.wall,
            timed=timed,
        )


def has_time_budget(config: object) -> bool:
    """Whether a config (or a dataclass inside it, such as its Budget) sets `seconds`."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return False
    for f in dataclasses.fields(config):
        value = getattr(config, f.name, None)
        if f.name == "seconds" and isinstance(value, int | float) and value > 0:
            return True
        if has_time_budget(value):
            return True
    return False
