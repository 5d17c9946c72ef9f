import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support import ROOT

from lrbs.core.loop import Budget, OptimSpec, TrainConfig
from lrbs.runs import store as store_mod
from lrbs.runs.store import Recorder, RunStore, StoreError, config_key, jsonable

KINDS = [
    "gd1d",
    "train",
    "lr-find",
    "lr-sweep",
    "bs-sweep",
    "bs-scaling-check",
    "bs-probe",
    "bs-schedule",
    "noise-scale",
    "schedules",
    "autotune",
]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "runs.db"


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_of_every_kind(db, kind):
    config = {
        "train": TrainConfig(batch_size=32, budget=Budget(epochs=2), optim=OptimSpec("adam", 1e-3)),
        "kind": kind,
        "nan": float("nan"),
    }
    rec = Recorder(db, kind, config, {"dataset": "digits", "model": "mlp", "seed": 3})
    run_id = rec.start()
    rows = [{"step": i, "loss": 1.0 / (i + 1), "lr": 0.1, "kind": "train"} for i in range(450)]
    for r in rows:
        rec.emit("events", r)
    rec.emit("runs", {"lr": 0.1, "status": "finished"})
    rec.finish("diverged", {"b_simple": 123.4, "inf": float("inf")})
    s = RunStore(db)
    info = s.run(run_id)
    assert info["kind"] == kind and info["status"] == "diverged" and info["seed"] == 3
    assert info["config"]["train"]["optim"]["name"] == "adam"
    assert info["config"]["nan"] is None and info["results"]["inf"] is None
    pts = s.points(run_id, "events")
    assert pts.step.tolist() == list(range(450)) and pts.loss.iloc[9] == pytest.approx(0.1)
    assert set(s.channels(run_id)) == {"events", "runs"}
    assert s.find(kind, jsonable(config))[0]["id"] == run_id
    assert s.runs(kind=kind).id.tolist() == [run_id]


def test_config_key_ignores_key_order_and_tuple_vs_list():
    assert config_key({"a": (1, 2), "b": 1}) == config_key({"b": 1, "a": [1, 2]})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_rename_annotate_delete_export(db):
    s = RunStore(db)
    a = s.start_run("train", {"x": 1})
    b = s.start_run("train", {"x": 2})
    s.add_points(a, "events", [{"step": 1, "kind": "train"}])
    s.add_points(b, "events", [{"step": 1}, {"step": 2}])
    s.update(a, name="baseline", note="first try")
    assert s.run(a)["name"] == "baseline" and s.run(a)["note"] == "first try"
    exported = s.export([a, b])
    assert exported.history_id.tolist() == [a, b, b] and exported.history_name[0] == "baseline"
    assert list(exported.columns[:4]) == ["history_id", "history_kind", "history_name", "channel"]
    assert exported.kind[0] == "train"  # the point's own column, untouched
    assert s.delete([a]) == 1
    assert s.runs().id.tolist() == [b] and s.points(a).empty
    with pytest.raises(StoreError, match="there is no run"):
        s.run(a)


def test_a_killed_writer_leaves_what_it_had_written(db):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from lrbs.runs.store import Recorder
        rec = Recorder({str(db)!r}, "train", {{"x": 1}}, every_rows=50, every_seconds=60)
        rec.start()
        for i in range(100000):
            rec.emit("events", {{"step": i}})
            if i == 260:
                print("ready", flush=True)
            time.sleep(0.001 if i > 260 else 0)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    s = RunStore(db)
    runs = s.runs()
    assert runs.status.tolist() == ["interrupted"]  # never finished, its process is gone
    pts = s.points(int(runs.id[0]))
    assert len(pts) >= 250 and len(pts) % 50 == 0  # whole batches, nothing half-written
    assert pts.step.tolist() == list(range(len(pts)))


def test_two_writers_at_once_lose_nothing(db):
    RunStore(db).close()  # create it first

    def write(tag: str):
        rec = Recorder(db, "train", {"tag": tag}, every_rows=7, every_seconds=0)
        rec.start()
        for i in range(300):
            rec.emit("events", {"step": i, "tag": tag})
        rec.finish("finished", {"tag": tag})

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = RunStore(db)
    runs = s.runs()
    assert len(runs) == 3 and set(runs.status) == {"finished"}
    for run_id in runs.id:
        pts = s.points(int(run_id))
        assert pts.step.tolist() == list(range(300)) and pts.tag.nunique() == 1


def test_two_processes_at_once_lose_nothing(db):
    RunStore(db).close()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from lrbs.runs.store import Recorder
        rec = Recorder({str(db)!r}, "train", {{"p": sys.argv[1]}}, every_rows=5, every_seconds=0)
        rec.start()
        for i in range(400):
            rec.emit("events", {{"step": i}})
        rec.finish("finished", {{}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)]) for k in range(2)]
    assert all(p.wait(120) == 0 for p in procs)
    s = RunStore(db)
    assert [len(s.points(int(i))) for i in s.runs().id] == [400, 400]


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(db):
    db.write_bytes(b"my thesis, draft 7\n" * 10)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not an lrbs run history .not a SQLite file"):
        RunStore(db)
    assert db.read_bytes() == before


def test_a_foreign_sqlite_file_is_refused_and_left_alone(db):
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        RunStore(db)
    assert db.read_bytes() == before


def test_a_corrupt_store_gives_a_clear_message(db):
    RunStore(db).close()
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # smash the schema page
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="not a usable lrbs run history|another program"):
        s = RunStore(db)
        s.runs()


def test_a_newer_schema_is_refused(db):
    RunStore(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer lrbs"):
        RunStore(db)


def test_migrations_lift_old_files_forward(db, monkeypatch):
    s = RunStore(db)
    run_id = s.start_run("train", {"x": 1})
    s.add_points(run_id, "events", [{"step": 1}])
    s.close()
    nxt = store_mod.SCHEMA_VERSION + 1
    tags = "ALTER TABLE runs ADD COLUMN tags TEXT NOT NULL DEFAULT ''"
    lifted = {**store_mod.MIGRATIONS, nxt: [tags]}
    monkeypatch.setattr(store_mod, "MIGRATIONS", lifted)
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", nxt)
    s = RunStore(db)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == nxt
    assert s.run(run_id)["tags"] == ""
    assert s.points(run_id).step.tolist() == [1]


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        RunStore(tmp_path)


def test_json_of_results_is_plain(db):
    import numpy as np

    assert jsonable({"a": np.float32(1.5), "b": (1, 2), "c": float("nan")}) == {
        "a": 1.5,
        "b": [1, 2],
        "c": None,
    }
    assert json.dumps(jsonable(Budget(seconds=5)))


def test_a_schema_1_file_gains_host_and_pid_and_keeps_its_runs(db):
    import sqlite3

    con = sqlite3.connect(db)
    for statement in store_mod.MIGRATIONS[1]:
        con.execute(statement)
    con.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    con.execute("PRAGMA user_version = 1")
    con.execute(
        "INSERT INTO runs (kind, config, config_key, started) VALUES ('train', '{}', 'k', 1)"
    )
    con.commit()
    con.close()
    s = RunStore(db)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    runs = s.runs()
    assert runs.status.tolist() == ["running"]  # no pid to check: left as it was
    new = s.start_run("train", {"x": 2})
    info = s.run(new)
    assert info["pid"] == os.getpid() and info["host"] == store_mod.HOST
    assert s.runs().set_index("id").loc[new, "status"] == "running"  # this process is alive


@pytest.mark.parametrize("action", ["list", "show 1", "export 1 --out x.csv", "delete 1"])
def test_history_refuses_an_unusable_db_in_one_line(action, tmp_path, capsys, monkeypatch):
    from lrbs.cli import main

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    plain = tmp_path / "plain"
    plain.write_text("not a folder")
    locked = tmp_path / "locked.db"
    RunStore(locked).close()
    for db, says in (
        (plain / "x.db", "is a file, not a folder"),
        (plain / "a" / "b" / "x.db", "is a file, not a folder"),
        (folder, "is a folder"),
        (Path("/etc/passwd"), "not an lrbs run history"),
        (Path("/dev/null"), "not a plain file"),
        (locked, "no permission to write"),
    ):
        if db == locked:  # root may write anywhere: the permission is what os.access says
            monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked)
        code = main(["history", *action.split(), "--db", str(db)])
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err, (db, err)
        assert len(err.strip().splitlines()) == 1
    assert plain.read_text() == "not a folder" and not (tmp_path / "x.csv").exists()
