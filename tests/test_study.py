"""lrbs.methods.study: the Optuna storage, studies made or joined by their settings, trials
that survive a lost connection, and the worker processes (shared by auto-tune and the map)."""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path

import optuna
import pytest

from lrbs.core.errors import ConfigError
from lrbs.methods import study as studies

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def storage(tmp_path):
    return studies.open_storage(str(tmp_path / "s.journal"))


def test_a_study_is_joined_with_its_settings_and_refused_with_others(storage):
    sampler = optuna.samplers.RandomSampler(seed=0)
    made = studies.create_or_join(storage, "s", "k", {"a": 1}, sampler=sampler)
    joined = studies.create_or_join(storage, "s", "k", {"a": 1}, sampler=sampler)
    assert joined._study_id == made._study_id
    with pytest.raises(ConfigError, match="already exists with other settings"):
        studies.create_or_join(storage, "s", "k", {"a": 2}, sampler=sampler)
    with pytest.raises(ConfigError, match="already exists with other settings"):
        studies.create_or_join(storage, "s", "other-kind", {"a": 1}, sampler=sampler)
    with pytest.raises(ConfigError, match="needs a name"):
        studies.create_or_join(storage, " ", "k", {"a": 1}, sampler=sampler)
    assert studies.study_attr(storage, "s", "k") == {"a": 1}
    assert studies.study_attr(storage, "absent", "k") is None
    assert studies.study_names(storage) == ["s"]


def test_a_study_whose_maker_stored_no_settings_is_adopted(storage, monkeypatch):
    optuna.create_study(storage=storage, study_name="bare")
    monkeypatch.setattr(studies, "JOIN_WAIT_SECONDS", 0.0)  # no wait for its maker
    study = studies.create_or_join(storage, "bare", "k", {"a": 1}, sampler=None)
    assert study.user_attrs == {"k": {"a": 1}}


def test_optimize_counts_finished_trials_and_stops_between_trials(storage):
    study = optuna.create_study(storage=storage, study_name="o")
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if trial.number == 1:
            raise KeyError("caught: a failed trial, not a finished one")
        return trial.suggest_float("x", 0, 1)

    assert studies.optimize(study, objective, 4, catch=(KeyError,)) == 4
    assert calls == [0, 1, 2, 3]
    stop = threading.Event()

    def stopping(trial):
        stop.set()
        return 0.0

    assert studies.optimize(study, stopping, 5, stop=stop) == 1  # the stop ends the loop


def _lost_in_storage():
    """The error Optuna raises when the database dropped its connection mid-query."""
    from sqlalchemy.exc import OperationalError

    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    try:
        try:
            raise lost
        except OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("commit failed") from exc
    except optuna.exceptions.StorageInternalError as outer:
        return outer, lost


def test_a_lost_connection_is_told_from_other_errors():
    outer, lost = _lost_in_storage()
    assert studies._connection_lost(outer) is lost
    assert studies._connection_lost(lost) is None  # not through the storage: not ours to retry
    assert studies._connection_lost(ValueError("x")) is None


def test_a_url_is_shown_without_its_password():
    assert (
        studies.safe_url("postgresql://lrbs:secret@db:5432/x") == "postgresql://lrbs:***@db:5432/x"
    )
    assert studies.safe_url("/tmp/a.journal") == "/tmp/a.journal"


def test_split_trials_and_the_workers_warning():
    assert studies.split_trials(7, 3) == [3, 2, 2]
    assert sum(studies.split_trials(5, 9)) == 5 and len(studies.split_trials(5, 9)) == 5
    assert studies.workers_warning(2, 2) is None
    assert "take turns" in studies.workers_warning(3, 2)


def _workers(tmp_path, *codes: str) -> studies.Workers:
    import subprocess

    procs, logs = [], []
    for i, code in enumerate(codes):
        path = tmp_path / f"w{i}.log"
        with open(path, "w") as fh:
            procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=fh))
        logs.append(path)
    return studies.Workers(procs, logs)


def test_supervise_polls_until_the_workers_end_and_says_a_failure(tmp_path):
    polls = []
    ok = _workers(tmp_path, "pass", "pass")
    assert ok.supervise(lambda: polls.append(1)) is False
    assert polls and not ok.running
    bad = _workers(tmp_path, "print('half done'); print('cannot reach the database'); exit(3)")
    with pytest.raises(ConfigError, match="a worker failed: cannot reach the database"):
        bad.supervise(lambda: None)


def test_supervise_reads_again_after_a_read_the_database_restart_cut(tmp_path):
    reads = []

    def poll():
        reads.append(1)
        if len(reads) == 1:
            raise _lost_in_storage()[0]

    w = _workers(tmp_path, "import time; time.sleep(2.5)")
    assert w.supervise(poll) is False and len(reads) >= 2

    def broken():
        raise ValueError("not a lost connection")

    with pytest.raises(ValueError):
        _workers(tmp_path, "pass").supervise(broken)


def test_supervise_stops_the_workers_once_asked(tmp_path):
    stop = threading.Event()
    stop.set()
    w = _workers(tmp_path, "import time; time.sleep(60)")
    assert w.supervise(lambda: None, stop) is True  # SIGTERM: stopped, not failed
    assert w.procs[0].returncode == -15


def test_workers_run_this_lrbs_from_any_folder():
    path = studies._worker_env()["PYTHONPATH"].split(":")[0]
    assert (Path(path) / "lrbs" / "methods" / "study.py").is_file()


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_nothing_outside_the_cli_imports_it_and_the_studies_stand_alone():
    lrbs = ROOT / "lrbs"
    for path in lrbs.rglob("*.py"):
        if path.parent.name != "cli" and path.name != "__main__.py":
            cli = {m for m in _imports(path) if m == "lrbs.cli" or m.startswith("lrbs.cli.")}
            assert not cli, f"{path.relative_to(ROOT)} imports {cli}"
    study = _imports(lrbs / "methods" / "study.py")
    assert not {m for m in study if m.startswith(("lrbs.experiments", "lrbs.runs.sink", "pages"))}
    assert "lrbs.core.setup" not in study
    at = set().union(*map(_imports, (lrbs / "experiments" / "autotune").glob("*.py")))
    lbm = set().union(*map(_imports, (lrbs / "experiments" / "lr_batch_map").glob("*.py")))
    assert not any("lr_batch_map" in m for m in at)
    assert not any("autotune" in m for m in lbm)
