"""Every experiment command, driven by one table: a run stopped by Ctrl-C or killed keeps its
points in the run history, and an --out that cannot be written is refused before training."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from support import ROOT

from lrbs.cli import main
from lrbs.experiments import registry
from lrbs.runs.store import RunStore

SMALL = ["--dataset", "mnist1d", "--dataset-size", "2000"]
# long enough that a signal after the first points lands mid-run
LONG: dict[str, list[str]] = {
    "train": [*SMALL, "--epochs", "500"],
    "lr-find": [*SMALL, "--iterations", "100000", "--stop-factor", "1000", "--lr-max", "0.01"],
    "lr-sweep": [*SMALL, "--lr", "0.01", "0.1", "--seconds", "60"],
    "bs-sweep": [*SMALL, "--batch-sizes", "32", "64", "--seconds", "60"],
    "bs-scaling-check": [*SMALL, "--epochs", "200"],
    "bs-probe": [*SMALL, "--hidden", "4096", "4096"],  # big steps: each try takes a while
    "bs-schedule": [*SMALL, "--epochs", "300"],
    "schedules": [*SMALL, "--epochs", "300", "--schedules", "constant", "cosine"],
    "noise-scale": [*SMALL, "--steps", "200000"],
    "sharpness": [*SMALL, "--steps", "100000", "--subset", "500"],
    "lr-batch-map": [*SMALL, "--noise-steps", "200000", "--steps", "10", "--rates", "3"],
    "recommend": [*SMALL, "--budget", "thorough", "--sweep-steps", "100000"],
    "autotune": ["run", *SMALL, "--trials", "40", "--workers", "1", "--seconds-per-trial", "4"],
}
QUICK = {"gd1d": []}  # no training: nothing to interrupt


def test_the_table_covers_every_experiment():
    assert set(LONG) | set(QUICK) == set(registry())


def command(kind: str) -> list[str]:
    return [kind, *LONG.get(kind, QUICK.get(kind, []))]


@pytest.mark.parametrize("kind", sorted(set(LONG) | set(QUICK)))
def test_an_unwritable_out_is_refused_before_training(kind, tmp_path, capsys):
    db = tmp_path / "runs.db"
    for out, message in ((tmp_path / "missing" / "x.csv", "does not exist"), (tmp_path, "folder")):
        code = main([*command(kind), "--out", str(out), "--db", str(db)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    if db.exists():
        with RunStore(db) as store:
            assert store.runs().empty, "a refused command must not start a run"


def points_of(db, kind: str) -> int:
    try:
        con = sqlite3.connect(db, timeout=5)
        row = con.execute(
            "SELECT count(*) FROM points p JOIN runs r ON r.id = p.run_id WHERE r.kind = ?",
            (kind,),
        ).fetchone()
        con.close()
        return row[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("kind", sorted(LONG))
def test_ctrl_c_and_sigkill_keep_the_points(kind, tmp_path):
    """Two copies at once: one gets SIGINT, the other SIGKILL, once each has written
    points. The stopped one ends "stopped", the killed one is "interrupted"; both keep
    their points."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    procs = {}
    for sig in (signal.SIGINT, signal.SIGKILL):
        db = tmp_path / f"{sig.name}.db"
        cmd = [sys.executable, "-m", "lrbs", *command(kind), "--db", str(db), "--json"]
        procs[sig] = (
            db,
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
        )
    deadline = time.time() + 90
    pending = dict(procs)
    while pending and time.time() < deadline:
        for sig, (db, proc) in list(pending.items()):
            assert proc.poll() is None, (
                f"{kind} ended before it was signalled: " + (proc.stderr.read()[-500:])
            )
            if points_of(db, kind) > 0:
                proc.send_signal(sig)
                del pending[sig]
        time.sleep(0.2)
    assert not pending, f"{kind} wrote no point within 90 s"
    for sig, (db, proc) in procs.items():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{kind} did not end within 60 s of {sig.name}")
        err = proc.stderr.read()
        assert "Traceback" not in err, err[-800:]
        with RunStore(db) as store:
            runs = store.runs(kind=kind)
            assert len(runs) >= 1, f"{kind}: no run in the history after {sig.name}"
            run = runs.iloc[-1]
            assert run.points > 0
            expected = "stopped" if sig == signal.SIGINT else "interrupted"
            assert run.status == expected, (sig.name, run.status, err[-300:])
