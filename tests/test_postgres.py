"""The many-machine path for real: one PostgreSQL server (tests/pg_support.py), a study made by
one process and joined by workers in other processes that know only its name and URL, the
README's commands exactly; then faults: a worker killed mid-trial, the database restarted
mid-study, a wrong password, an unreachable host, two studies of one name at once, the database
gone for good.

Each process is `python -m lrbs ...` as a user types it. Trials are one or two seconds on
scikit-learn's digits. LRBS_HEARTBEAT_SECONDS=1 (a dead worker's trial is failed 4 s after its
last heartbeat instead of 2 minutes) and LRBS_STORAGE_RETRY_SECONDS keep the waits short."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.setup import Setup
from lrbs.experiments import autotune as at

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["--dataset", "digits", "--seconds-per-trial", "1"]  # the README's flags, small
DIGITS = Setup(DataSpec("digits"))


class Lrbs:
    """`python -m lrbs ARGS` in a process of its own, its output in files (no pipe to fill)."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None) -> None:
        self.args = args
        tag = f"{args[1]}-{time.monotonic_ns()}"
        self.out_path, self.err_path = tmp / f"{tag}.out", tmp / f"{tag}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lrbs", *args], cwd=ROOT, stdout=out, stderr=err, env=env
            )

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{' '.join(self.args)} did not end in {timeout} s") from None

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def err_lines(self) -> list[str]:  # without progress-bar redraws
        return [ln for ln in self.err.replace("\r", "\n").splitlines() if ln.strip()]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The environment of every process of a test: its own run history, short heartbeats, one
    torch thread each (2 cores are shared by every process)."""
    e = {
        "LRBS_DB": str(tmp_path / "runs.db"),
        "LRBS_HEARTBEAT_SECONDS": "1",
        "LRBS_STORAGE_RETRY_SECONDS": "30",
        "OMP_NUM_THREADS": "1",
    }
    for k, v in e.items():
        monkeypatch.setenv(k, v)  # this process too (its own storage handles)
    return dict(os.environ)


def run(tmp, env, url, study, trials, workers=2, extra=STUDY) -> Lrbs:
    """The README's first command: create the study and run its first trials here."""
    return Lrbs(
        tmp,
        "autotune",
        "run",
        "--study",
        study,
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--storage",
        url,
        *extra,
        env=env,
    )


def worker(tmp, env, url, study, trials) -> Lrbs:
    """The README's second command: join with more trials, given the name and the URL only."""
    return Lrbs(
        tmp,
        "autotune",
        "worker",
        "--study",
        study,
        "--trials",
        str(trials),
        "--storage",
        url,
        env=env,
    )


def make_study(url, name, seconds=1.0):
    """A study as `autotune run --dataset digits --seconds-per-trial S` makes it, made here,
    for the tests of workers alone (one process fewer on a shared machine)."""
    at.create_study(storage(url), name, DIGITS, at.Config(seconds=seconds))


def wait_for(what, timeout=60.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what.__doc__ or what}")


@functools.cache
def storage(url):
    """One storage (one connection pool) per URL in this process, however often it polls."""
    return at.open_storage(url)


def study_exists(url, name) -> bool:
    try:
        return name in at.study_names(storage(url))
    except Exception:
        return False


def trials_of(url, name):
    """Trials as the database holds them: (number, state, value), one row per row there."""
    import psycopg  # here: without it, the `pg` fixture skips these tests loudly

    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT t.number, t.state::text, v.value FROM trials t "
            "JOIN studies s USING (study_id) LEFT JOIN trial_values v USING (trial_id) "
            "WHERE s.study_name = %s ORDER BY t.number",
            (name,),
        ).fetchall()


def states(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, state, _ in rows:
        out[state] = out.get(state, 0) + 1
    return out


def assert_each_once(rows, n):
    numbers = [r[0] for r in rows]
    assert numbers == list(range(n)), f"trial numbers {numbers}, expected 0..{n - 1} once each"


def one_clear_line(p: Lrbs, *needles: str) -> str:
    lines = p.err_lines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{p.err}"
    assert lines[0].startswith("error: ") and "Traceback" not in p.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ the recipe


def test_a_study_made_by_one_process_is_joined_by_workers_elsewhere(pg, tmp_path, env):
    url = pg.url()
    maker = run(tmp_path, env, url, "shared", 4, workers=2)
    wait_for(lambda: study_exists(url, "shared"))
    joiner = worker(tmp_path, env, url, "shared", 3)
    for p in (maker, joiner):
        assert p.wait() == 0, p.err
    assert "ran 3 trial(s) of study 'shared'" in joiner.out
    rows = trials_of(url, "shared")
    assert_each_once(rows, 4 + 3)  # 2 worker processes started by `run` + the joiner
    assert set(states(rows)) <= {"COMPLETE", "PRUNED"}, states(rows)
    assert all(v is not None for _, s, v in rows if s == "COMPLETE")
    study = at.load_study(storage(url), "shared")[0]
    print(at.trials_frame(study)[["trial", "state", "seconds", "epochs"]].to_string())
    assert study.best_value == min(v for _, s, v in rows if s == "COMPLETE")


def test_a_worker_killed_mid_trial_is_failed_by_the_next_one(pg, tmp_path, env):
    url = pg.url()
    make_study(url, "lost", seconds=2.0)
    victim = worker(tmp_path, env, url, "lost", 3)

    def running():
        """the victim's trial running"""
        return [r[0] for r in trials_of(url, "lost") if r[1] == "RUNNING"]

    (mid,) = wait_for(running, 90, 0.1)
    time.sleep(0.5)
    victim.proc.send_signal(signal.SIGKILL)  # a lost machine: no goodbye, no last write
    assert victim.wait(10) == -signal.SIGKILL
    killed = time.monotonic()
    assert running() == [mid]  # left "running": nobody will finish it
    # the next worker to start a trial fails it, once its heartbeat is 4 beats old
    time.sleep(max(0.0, killed + 4.5 - time.monotonic()))
    rescuer = worker(tmp_path, env, url, "lost", 1)
    assert rescuer.wait() == 0, rescuer.err
    rows = trials_of(url, "lost")
    assert_each_once(rows, mid + 2)  # what the victim finished, its lost one, the rescuer's
    assert [r[0] for r in rows if r[1] == "FAIL"] == [mid]
    assert set(states(rows)) <= {"COMPLETE", "PRUNED", "FAIL"}
    assert states(rows).get("RUNNING", 0) == 0  # no trial left running for ever


def test_the_database_restarted_mid_study_loses_no_finished_trial(pg, tmp_path, env):
    url = pg.url()
    env = dict(env, LRBS_HEARTBEAT_SECONDS="2")  # 8 s of grace: more than the outage lasts
    maker = run(tmp_path, env, url, "restart", 4, workers=2)

    def finished_and_running():
        """a finished trial and a running one"""
        s = states(trials_of(url, "restart")) if study_exists(url, "restart") else {}
        return s.get("COMPLETE", 0) + s.get("PRUNED", 0) >= 1 and s.get("RUNNING", 0) >= 1

    wait_for(finished_and_running, 120, 0.1)
    before = {r[0]: r for r in trials_of(url, "restart") if r[1] in ("COMPLETE", "PRUNED")}
    pg.stop("fast")  # every connection dropped, mid-trial
    time.sleep(1.5)
    pg.start()
    code = maker.wait()
    logs = [p.read_text() for p in sorted((tmp_path / "autotune-logs").iterdir())]
    # every process waited for the database and went on (a trial cut short by the restart is
    # failed and counts as one of its worker's), or said in one line why it could not
    assert code == 0 or (code == 2 and maker.err_lines()[-1].startswith("error: ")), maker.err
    after = {r[0]: r for r in trials_of(url, "restart")}
    assert all(after[n] == r for n, r in before.items()), "a finished trial changed or was lost"
    rows = list(after.values())
    cut = [n for n, state, _ in rows if state == "FAIL"]
    print(
        f"database restarted: `autotune run` exit {code}; {len(before)} finished before, "
        f"kept; trials {states(rows)}; cut short {cut}"
    )
    if code:
        print(maker.err[-3000:], *logs, sep="\n-----\n")
    if code == 0:
        # each trial once; an outage that hits a worker between two trials may cost it that
        # trial's slot (3 trials made instead of 4, seen once): no finished trial is lost
        assert len(before) < len(rows) <= 4, states(rows)
        assert_each_once(rows, len(rows))
        assert set(states(rows)) <= {"COMPLETE", "PRUNED", "FAIL", "RUNNING"}, states(rows)
        assert all("reachable again" in log for log in logs if "retrying" in log), logs
        said = sum(log.count("now back: going on") for log in logs)  # one a loss, in trial or not
        # A trial the server started (WAITING -> RUNNING committed) while the connection died
        # before the worker heard of it belongs to no worker: Optuna's ask() raised, so no
        # worker can fail it. It stays "running"; only an outage can leave one.
        orphans = [n for n, state, _ in rows if state == "RUNNING"]
        assert len(cut) + len(orphans) <= said, logs


# ------------------------------------------------------------------ clear refusals


def test_a_wrong_password_or_an_unreachable_host_is_one_clear_line(pg, tmp_path, env, capsys):
    from pg_support import free_port

    from lrbs.cli import main

    # in a process of its own, as a user meets it: exit status 2, one line, no traceback
    p = worker(tmp_path, env, pg.url(password="not-it"), "x", 1)
    closed = f"postgresql://lrbs:{pg.password}@127.0.0.1:{free_port()}/lrbs"
    cases = [  # the same path for the others, here (no process to spare on a shared machine)
        ("run", closed, "Connection refused"),
        (
            "worker",
            "postgresql://lrbs:secret@no-such-host.invalid/lrbs",
            "failed to resolve host 'no-such-host.invalid'",
        ),
        ("worker", pg.url(database="nope"), 'database "nope" does not exist'),
    ]
    for action, url, says in cases:
        args = ["--dataset", "digits"] if action == "run" else []
        code = main(["autotune", action, "--study", "x", "--trials", "1", "--storage", url, *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("error: cannot open the study storage") and says in err[0]
        assert pg.password not in err[0] and "secret" not in err[0]
    assert p.wait(60) == 2, p.err
    line = one_clear_line(p, "cannot open the study storage", "password authentication failed")
    assert "not-it" not in line and pg.password not in line


def test_two_studies_of_one_name_at_once(pg, tmp_path, env):
    """Two `autotune run --study twin` at once, with other settings: the first to create the
    name owns it and runs its trial; the other is refused in one line, whichever came first.
    (With the same settings the second joins it: its trials are added.)"""
    url = pg.url()
    settings = [["--dataset", "digits", "--seconds-per-trial", s] for s in ("1", "2")]
    procs = [run(tmp_path, env, url, "twin", 1, workers=1, extra=x) for x in settings]
    codes = [p.wait() for p in procs]
    stored = at.load_study(storage(url), "twin")[2].seconds
    winner = [float(x[-1]) for x in settings].index(stored)
    assert codes[winner] == 0, procs[winner].err
    assert codes[1 - winner] == 2, procs[1 - winner].err
    one_clear_line(procs[1 - winner], "a study named 'twin' already exists with other settings")
    rows = trials_of(url, "twin")
    assert_each_once(rows, 1)  # the winner's trial, recorded once
    assert set(states(rows)) <= {"COMPLETE", "PRUNED"}


def test_one_name_claimed_at_the_same_moment_in_threads(pg):
    """The race itself, many times over in threads: whoever creates the name first, the same
    settings share one study and other settings are refused; never two studies, never
    settings overwritten."""
    url = pg.url()
    # the schema first: the race under test is the study's name, not Optuna making its tables
    # (`autotune run` opens the storage before any worker starts; alone on a fresh server this
    # test otherwise raced three threads to create them)
    at.open_storage(url)
    for k in range(5):
        name, gate, outcomes = f"race{k}", threading.Barrier(3), {}

        def claim(i, seconds, name=name, gate=gate, outcomes=outcomes):
            storage = at.open_storage(url)
            gate.wait()
            try:
                at.create_study(storage, name, DIGITS, at.Config(seconds=seconds))
                outcomes[i] = seconds
            except ConfigError as exc:
                outcomes[i] = str(exc)

        threads = [threading.Thread(target=claim, args=a) for a in ((0, 1.0), (1, 1.0), (2, 2.0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stored = at.load_study(storage(url), name)[2].seconds
        assert at.study_names(storage(url)).count(name) == 1
        for i, seconds in ((0, 1.0), (1, 1.0), (2, 2.0)):
            if seconds == stored:
                assert outcomes[i] == seconds
            else:
                assert "already exists with other settings" in outcomes[i]


# ------------------------------------------------------------------ the database gone


def test_the_database_gone_for_good(pg, tmp_path, env, capsys):
    """A worker says so in one line (after retrying), what finished is kept; the run history,
    a local SQLite file, goes on recording."""
    from lrbs.cli import main
    from lrbs.runs.store import RunStore

    url = pg.url()
    env = dict(env, LRBS_STORAGE_RETRY_SECONDS="2")
    make_study(url, "gone")
    lonely = worker(tmp_path, env, url, "gone", 50)
    wait_for(lambda: states(trials_of(url, "gone")).get("COMPLETE", 0) >= 1, 90, 0.1)
    pg.stop("fast")
    try:
        # a local run meanwhile (here: no process to spare), in the history as ever
        assert main(["train", "--dataset", "digits", "--seconds", "1", "--json"]) == 0
        run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
        assert lonely.wait(60) == 2, lonely.err
        last = lonely.err_lines()[-1]
        assert last.startswith("error: lost the study storage postgresql://lrbs:***@"), last
        assert "finished trial(s), which it keeps" in last and pg.password not in lonely.err
    finally:
        pg.start()
    with RunStore(tmp_path / "runs.db") as store:
        assert store.run(run_id)["status"] == "finished"
    rows = trials_of(url, "gone")
    kept = [r for r in rows if r[1] in ("COMPLETE", "PRUNED")]
    n_done = int(last.split(" after ")[1].split()[0])
    # a trial whose result was being written as the server went may be stored or not: the
    # worker says "perhaps N more" for those
    maybe = re.search(r"perhaps (\d+) more", last)
    n_more = int(maybe.group(1)) if maybe else 0
    assert n_done <= len(kept) <= n_done + n_more and len(kept) >= 1  # none lost
    print(f"database gone: {n_done} finished trial(s) kept; the worker's last line: {last}")
