"""Workload files: every experiment runs on one, bad files are one clear message naming the
file (and line), and the app's folder listing lets nothing outside it in."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from support import ROOT

from lrbs.cli import main
from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget, OptimSpec
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.workload import (
    WorkloadError,
    check_listed,
    is_listed,
    list_workloads,
    load_workload,
    workload_folder,
)
from lrbs.experiments import (
    autotune,
    bs_probe,
    bs_scaling_check,
    bs_schedule,
    bs_sweep,
    lr_batch_map,
    lr_finder,
    noise_scale,
    recommend,
    registry,
    schedules,
    sharpness,
    sweeps,
    train,
)
from lrbs.runs.experiment import execute

CLASSIFY = str(ROOT / "tests" / "workloads" / "classify.py")
REGRESS = str(ROOT / "tests" / "workloads" / "regress.py")

# every experiment that trains, with a budget of a few steps
TINY = {
    "train": (train, lambda: train.Config(batch_size=32, budget=Budget(steps=6))),
    "lr-find": (lr_finder, lambda: lr_finder.Config(iterations=12, batch_size=32)),
    "lr-sweep": (
        sweeps,
        lambda: sweeps.Config(lrs=(0.01, 0.1), budget=Budget(steps=4), batch_size=32),
    ),
    "bs-sweep": (
        bs_sweep,
        lambda: bs_sweep.Config(batch_sizes=(16, 32), budget=Budget(steps=4)),
    ),
    "bs-scaling-check": (
        bs_scaling_check,
        lambda: bs_scaling_check.Config(base_batch=16, k_max=2, epochs=0.2),
    ),
    "bs-probe": (bs_probe, lambda: bs_probe.Config(cap_mib=0.05, target_batch=300)),
    "bs-schedule": (
        bs_schedule,
        lambda: bs_schedule.Config(
            regimes=("decay", "grow"), epochs=2, milestones=(1,), batch_size=32
        ),
    ),
    "schedules": (
        schedules,
        lambda: schedules.Config(schedules=("constant", "cosine"), epochs=1, batch_size=64),
    ),
    "noise-scale": (
        noise_scale,
        lambda: noise_scale.Config(batch_small=8, batch_big=64, steps=10, every=5),
    ),
    "sharpness": (
        sharpness,
        lambda: sharpness.Config(lrs=(0.05,), subset=64, steps=4, every=2, iterations=3),
    ),
    "lr-batch-map": (
        lr_batch_map,
        lambda: lr_batch_map.Config(
            batch_sizes=(16, 32), rates=3, steps=4, seeds=1, noise_steps=10
        ),
    ),
    "recommend": (
        recommend,
        lambda: recommend.Config(rates=3, seeds=1, sweep_steps=10, batch_size=16),
    ),
}


def test_the_table_covers_every_training_experiment():
    no_setup = {k for k, e in registry().items() if not getattr(e, "USES_SETUP", True)}
    assert set(TINY) | {"autotune"} | no_setup == set(registry())


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("path", [CLASSIFY, REGRESS], ids=["classify", "regress"])
def test_every_experiment_runs_on_a_workload(kind, path):
    exp, make = TINY[kind]
    config = make()  # regress.py's own optimizer (two groups) replaces the config's
    result = execute(exp, Setup(workload=path), config)
    assert result.status in ("finished", "stopped"), (kind, result.message)
    summary = result.summary()
    json.dumps(summary, default=str)  # the CLI's --json
    assert result.tables()


def test_autotune_runs_on_a_workload(tmp_path):
    config = autotune.Config(
        trials=1, workers=1, seconds=0.3, storage=str(tmp_path / "j.journal"), study="wl"
    )
    result = execute(autotune, Setup(workload=CLASSIFY), config)
    assert sum(result.summary()["trials"].values()) == 1


def test_a_regression_trains_end_to_end_without_accuracy():
    result = execute(
        train,
        Setup(workload=REGRESS),
        train.Config(batch_size=32, budget=Budget(epochs=3), optim=OptimSpec("sgd", 0.01)),
    )
    s = result.summary()
    assert s["status"] == "finished" and s["val_acc"] is None
    events = result.events()
    evals = events[events.kind == "eval"]
    assert evals.val_acc.isna().all() and evals.val_loss.notna().all()
    assert evals.val_loss.iloc[-1] < evals.val_loss.iloc[0]  # it learns


def test_a_workload_excludes_the_built_in_data_and_model(capsys):
    assert main(["train", "--workload", CLASSIFY, "--dataset", "digits", "--no-store"]) == 2
    assert "brings its own data and model" in capsys.readouterr().err
    from lrbs.core.models import ModelSpec

    with pytest.raises(ConfigError, match="its own data and model"):
        Setup(workload=CLASSIFY, model=ModelSpec(name="cnn"))
    Setup(workload=CLASSIFY, seed=3)  # --seed is shared with the data's: allowed


def test_the_run_history_stores_the_workload_path(tmp_path, capsys):
    db = tmp_path / "runs.db"
    code = main(["train", "--workload", CLASSIFY, "--steps", "3", "--db", str(db), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from lrbs.runs.store import RunStore

    with RunStore(db) as store:
        info = store.run(out["run_id"])
    assert info["config"]["setup"]["workload"] == CLASSIFY
    assert info["dataset"] == CLASSIFY


def test_the_cli_finds_a_rate_on_a_workload_file():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrbs",
            "lr-find",
            "--workload",
            CLASSIFY,
            "--iterations",
            "30",
            "--batch-size",
            "32",
            "--json",
            "--no-store",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["suggestions"] and all(v > 0 for v in figures["suggestions"].values())


# ------------------------------------------------------------------------------- bad input


def write(tmp_path, text: str, name: str = "wl.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


GOOD_DATA = """
import torch
from torch import nn

def data():
    x = torch.randn(64, 4)
    y = torch.randint(0, 2, (64,))
    return (x, y), (x[:16], y[:16])
"""


def run_train(path) -> None:
    execute(train, Setup(workload=str(path)), train.Config(batch_size=16, budget=Budget(steps=2)))


def test_a_file_without_model_is_refused(tmp_path):
    p = write(tmp_path, GOOD_DATA)
    with pytest.raises(WorkloadError, match=r"wl\.py defines no model\(\)"):
        load_workload(p)


@pytest.mark.parametrize(
    "body, message",
    [
        ("def data():\n    return 3\n", r"data\(\) in wl\.py must return \(train, val\), got int"),
        (
            "def data():\n    return ('a', 'b')\n",
            "the training data must be a torch Dataset, a DataLoader or an",
        ),
        (
            "def data():\n    import torch\n    return (torch.zeros(4, 2), torch.zeros(3)), None\n",
            "x has 4 rows and y 3",
        ),
    ],
)
def test_data_of_the_wrong_shape_is_refused(tmp_path, body, message):
    p = write(tmp_path, "from torch import nn\ndef model():\n    return nn.Linear(2, 2)\n" + body)
    with pytest.raises(WorkloadError, match=message):
        run_train(p)


def test_a_loss_that_is_not_a_scalar_is_refused(tmp_path):
    p = write(
        tmp_path,
        GOOD_DATA
        + """
def model():
    return nn.Linear(4, 2)

def loss():
    return lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")
""",
    )
    with pytest.raises(WorkloadError, match=r"must return a scalar .* got \(2,\)"):
        run_train(p)


def test_a_model_that_is_not_a_module_is_refused(tmp_path):
    p = write(tmp_path, GOOD_DATA + "\ndef model():\n    return 'a model'\n")
    with pytest.raises(WorkloadError, match=r"model\(\) in wl\.py must be a torch nn\.Module"):
        run_train(p)


BROKEN_FORWARD = (
    GOOD_DATA
    + """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        raise RuntimeError("my bug")
        return self.fc(x)

def model():
    return Net()
"""
)


def test_an_error_inside_the_file_names_its_line(tmp_path):
    p = write(tmp_path, BROKEN_FORWARD)
    with pytest.raises(WorkloadError) as info:
        run_train(p)
    line = BROKEN_FORWARD.splitlines().index('        raise RuntimeError("my bug")') + 1
    assert f"wl.py, line {line}: RuntimeError: my bug" in str(info.value)
    tb = info.value.user_traceback
    assert str(p) in tb and f"line {line}" in tb and "lrbs" not in tb.replace(str(tmp_path), "")


def test_an_error_while_training_names_its_line(tmp_path):
    """Raised at the 3rd step (not in the first check): still the user's file and line."""
    body = (
        GOOD_DATA
        + """
calls = [0]

def model():
    return nn.Linear(4, 2)

def loss():
    def fn(out, y):
        calls[0] += 1
        if calls[0] > 3:
            raise ValueError("bad batch")
        return nn.functional.cross_entropy(out, y)
    return fn
"""
    )
    p = write(tmp_path, body)
    with pytest.raises(WorkloadError, match=r"wl\.py, line \d+: ValueError: bad batch"):
        run_train(p)


def test_import_and_syntax_errors_name_the_line(tmp_path):
    p = write(tmp_path, "x = 1\nimport no_such_module_here\n")
    with pytest.raises(WorkloadError, match=r"wl\.py, line 2: ModuleNotFoundError"):
        load_workload(p)
    p = write(tmp_path, "def model(:\n    pass\n", "syn.py")
    with pytest.raises(WorkloadError, match=r"syn\.py, line 1: SyntaxError"):
        load_workload(p)


def test_the_cli_prints_one_line_and_only_the_users_traceback(tmp_path):
    p = write(tmp_path, BROKEN_FORWARD)
    proc = subprocess.run(
        [sys.executable, "-m", "lrbs", "train", "--workload", str(p), "--steps", "2", "--no-store"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "wl.py, line" in lines[0]
    assert "Traceback" not in proc.stderr
    files = [ln for ln in lines if ln.strip().startswith("File ")]
    assert files and all(str(p) in ln for ln in files)  # never lrbs's own frames


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("missing.py", None, "no such file"),
        ("folder.py", "dir", "is a folder"),
        ("notes.txt", "file", "not a Python file"),
    ],
)
def test_paths_that_are_not_workload_files(tmp_path, name, make, message):
    p = tmp_path / name
    if make == "dir":
        p.mkdir()
    elif make == "file":
        p.write_text("model = 1")
    with pytest.raises(WorkloadError, match=message):
        load_workload(p)
    code = main(["train", "--workload", str(p), "--no-store"])
    assert code == 2


def test_the_folder_listing_admits_nothing_outside_it(tmp_path, monkeypatch):
    folder = tmp_path / "workloads"
    folder.mkdir()
    (folder / "a.py").write_text(GOOD_DATA)
    (folder / "_helper.py").write_text("")
    (folder / "notes.txt").write_text("")
    outside = write(tmp_path, GOOD_DATA, "outside.py")
    (folder / "link.py").symlink_to(outside)
    monkeypatch.setenv("LRBS_WORKLOADS", str(folder))
    assert workload_folder() == folder.resolve()
    listed = list_workloads(workload_folder())
    assert [p.name for p in listed] == ["a.py"]  # not the link leading out
    assert is_listed(folder / "a.py", folder)
    assert not is_listed(folder / "link.py", folder)
    assert not is_listed(folder / ".." / "outside2.py", folder)
    with pytest.raises(WorkloadError, match="not one of the files"):
        check_listed(tmp_path / "elsewhere.py", folder)
    with pytest.raises(WorkloadError, match="not one of the files"):
        check_listed(folder / ".." / "workloads" / ".." / "x.py", folder)
    monkeypatch.delenv("LRBS_WORKLOADS")
    assert workload_folder() is None
    with pytest.raises(WorkloadError, match="LRBS_WORKLOADS"):
        check_listed(folder / "a.py", None)


def test_load_tensors_of_a_workload_in_memory_and_streamed():
    data = load_tensors(Setup(workload=CLASSIFY))
    assert type(data).__name__ == "TensorData" and data.task.name == "classification"
    from lrbs.core.task import Compute

    streamed = load_tensors(Setup(workload=REGRESS, compute=Compute(data_path="stream")))
    assert type(streamed).__name__ == "StreamData" and streamed.task.metric is None
    assert os.path.basename(str(streamed.workload)) == "regress.py"


def test_the_compute_flags_reach_the_loop(capsys):
    """--precision, --accumulate, --data-path: every command has them (from Setup.compute)."""
    args = ["train", "--workload", REGRESS, "--steps", "4", "--batch-size", "32", "--lr", "0.01"]
    flags = ["--precision", "bf16", "--accumulate", "2", "--data-path", "stream", "--no-store"]
    assert main([*args, *flags, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 4 and out["samples"] == 128
    assert main([*args, "--precision", "fp8", "--no-store"]) == 2
    assert "fp8" in capsys.readouterr().err
