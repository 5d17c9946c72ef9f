"""A catalogue of bad input. Each case goes through the engine API (a ConfigError with a clear
message), the CLI (exit status 2, one line on stderr, no traceback) and, where a widget lets a
user type it, the page (an st.error, no exception)."""

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_pages import open_page

from lrbs.cli import main
from lrbs.core import data as data_mod
from lrbs.core.data import DataSpec, load, read_csv_dataset
from lrbs.core.device import pick_device
from lrbs.core.errors import ConfigError, LrbsError
from lrbs.core.loop import Budget, OptimSpec, TrainConfig
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup
from lrbs.experiments import autotune, bs_probe, gd1d, noise_scale, scaling, sweeps
from lrbs.experiments import bs_schedule as bss
from lrbs.experiments import schedules as sch
from lrbs.experiments.lr_finder import Config as RangeTest
from lrbs.experiments.sweeps import Config as LRSweep

NAN, INF = math.nan, math.inf


@dataclass
class Case:
    name: str
    message: str
    api: object  # a callable that must raise; gets the CSV folder
    cli: list[str] | None = None
    page: tuple | None = None  # (page file, [(widget kind, key, value), ...])
    csv: str | bytes | None = None  # file content for the case
    extra: dict = field(default_factory=dict)


def csv_case(name, content, message, target="y"):
    return Case(
        name,
        message,
        lambda p: read_csv_dataset(str(p), target),
        cli=["train", "--dataset", "csv", "--csv", "{csv}", "--target", target, "--steps", "1"],
        page=("pages/home.py", [("csv", None, target)]),
        csv=content,
    )


CASES = [
    Case(
        "lr zero",
        "learning rate must be greater than 0",
        lambda p: OptimSpec("sgd", 0.0),
        ["train", "--dataset", "digits", "--lr", "0", "--steps", "1"],
        ("pages/gd1d.py", [("number", "gd_lr1", 0.0)]),
    ),
    Case(
        "lr negative",
        "learning rate must be greater than 0",
        lambda p: OptimSpec("sgd", -0.1),
        ["train", "--dataset", "digits", "--lr", "-0.1", "--steps", "1"],
        ("pages/gd1d.py", [("number", "gd_lr2", -0.5)]),
    ),
    Case(
        "lr NaN",
        "must be a finite number",
        lambda p: OptimSpec("sgd", NAN),
        ["gd1d", "--lr", "nan"],
        ("pages/lr.py", [("mode", None, 1), ("text", "sw_grid", "nan")]),
    ),
    Case(
        "lr infinite",
        "must be a finite number",
        lambda p: OptimSpec("sgd", INF),
        ["lr-sweep", "--lr", "inf", "--steps", "1"],
        ("pages/lr.py", [("mode", None, 1), ("text", "sw_grid", "0.1, inf")]),
    ),
    Case(
        "lr absurd",
        "absurdly large",
        lambda p: OptimSpec("sgd", 1e9),
        ["train", "--dataset", "digits", "--lr", "1e9", "--steps", "1"],
        ("pages/batch.py", [("number", "bs_lr", 1e9)]),
    ),
    Case(
        "range min >= max",
        "must be below",
        lambda p: RangeTest(lr_min=1.0, lr_max=0.1),
        ["lr-find", "--lr-min", "1", "--lr-max", "0.1"],
        ("pages/lr.py", [("number", "rt_min", 100.0)]),
    ),
    Case(
        "range min == max",
        "must be below",
        lambda p: RangeTest(lr_min=0.1, lr_max=0.1),
        ["lr-find", "--lr-min", "0.1", "--lr-max", "0.1"],
        ("pages/lr.py", [("number", "rt_max", 1e-7)]),
    ),
    Case(
        "range min zero",
        "minimum learning rate must be greater than 0",
        lambda p: RangeTest(lr_min=0.0, lr_max=1.0),
        ["lr-find", "--lr-min", "0"],
        ("pages/lr.py", [("number", "rt_min", 0.0)]),
    ),
    Case(
        "range max NaN",
        "maximum learning rate must be a finite number",
        lambda p: RangeTest(lr_min=1e-7, lr_max=NAN),
        ["lr-find", "--lr-max", "nan"],
    ),
    Case(
        "zero iterations",
        "iterations must be at least 1",
        lambda p: RangeTest(iterations=0),
        ["lr-find", "--iterations", "0"],
        ("pages/lr.py", [("number", "rt_iters", 0)]),
    ),
    Case(
        "range zoom reversed",
        "must be below",
        lambda p: RangeTest(zoom=((1.0, 0.1),)),
        ["lr-find", "--zoom", "1", "0.1"],
    ),
    Case(
        "range seeds zero",
        "seeds must be at least 1",
        lambda p: RangeTest(seeds=0),
        ["lr-find", "--seeds", "0"],
    ),
    Case(
        "range stop factor 1",
        "stop factor must be above 1",
        lambda p: RangeTest(stop_factor=1.0),
        ["lr-find", "--stop-factor", "1"],
        ("pages/lr.py", [("number", "rt_stop", 1.0)]),
    ),
    Case(
        "stacked sweep on a time budget",
        "steps, epochs or samples",
        lambda p: LRSweep(budget=Budget(seconds=1), stacked="yes"),
        ["lr-sweep", "--seconds", "1", "--stacked", "yes"],
    ),
    Case(
        "batch zero",
        "at least 1",
        lambda p: TrainConfig(batch_size=0),
        ["train", "--dataset", "digits", "--batch-size", "0", "--steps", "1"],
        ("pages/batch.py", [("text", "bs_grid", "0, 64")]),
    ),
    Case(
        "batch negative",
        "at least 1",
        lambda p: scaling.resolve_batches((-8,), 100),
        ["bs-sweep", "--batch-sizes", "-8", "--steps", "1"],
        ("pages/batch.py", [("text", "bs_grid", "-8")]),
    ),
    Case(
        "batch larger than the data",
        "larger than the training set",
        lambda p: scaling.resolve_batches((99999,), 4000),
        ["bs-sweep", "--batch-sizes", "99999", "--steps", "1"],
        ("pages/batch.py", [("text", "bs_grid", "64, 99999")]),
    ),
    Case(
        "budget zero seconds",
        "seconds budget must be greater than 0",
        lambda p: Budget(seconds=0),
        ["lr-sweep", "--seconds", "0"],
        ("pages/lr.py", [("mode", None, 1), ("number", "sw_budget", 0.0)]),
    ),
    Case(
        "budget negative epochs",
        "epochs budget must be greater than 0",
        lambda p: Budget(epochs=-1),
        ["train", "--dataset", "digits", "--epochs", "-1"],
        ("pages/batch.py", [("radio", "bs_budget_kind", "epochs"), ("number", "bs_budget", 0.0)]),
    ),
    Case(
        "budget zero steps",
        "steps budget",
        lambda p: Budget(steps=0),
        ["train", "--dataset", "digits", "--steps", "0"],
    ),
    Case(
        "empty lr grid",
        "grid is empty",
        lambda p: LRSweep(lrs=()),
        None,
        ("pages/lr.py", [("mode", None, 1), ("text", "sw_grid", " ")]),
    ),
    Case(
        "duplicate lrs",
        "repeats 0.1",
        lambda p: LRSweep(lrs=(0.1, 0.1)),
        ["lr-sweep", "--lr", "0.1", "0.1", "--steps", "1"],
        ("pages/lr.py", [("mode", None, 1), ("text", "sw_grid", "0.1, 0.01, 0.1")]),
    ),
    Case(
        "duplicate batches",
        "repeat 64",
        lambda p: scaling.resolve_batches((64, 64), 4000),
        ["bs-sweep", "--batch-sizes", "64", "64", "--steps", "1"],
        ("pages/batch.py", [("text", "bs_grid", "64, 64")]),
    ),
    Case(
        "empty batch list",
        "empty",
        lambda p: scaling.resolve_batches((), 4000),
        None,
        ("pages/batch.py", [("text", "bs_grid", "")]),
    ),
    Case(
        "unknown dataset",
        "unknown dataset 'imagenet'",
        lambda p: DataSpec("imagenet"),
        ["train", "--dataset", "imagenet", "--steps", "1"],
    ),
    Case(
        "unknown model",
        "unknown model 'resnet'",
        lambda p: ModelSpec("resnet"),
        ["train", "--model", "resnet", "--steps", "1"],
    ),
    Case(
        "hidden layers not numbers",
        "whole numbers",
        lambda p: ModelSpec(hidden=(0,)),
        None,
        ("pages/home.py", [("text", "s_hidden", "256, wide")]),
    ),
    Case(
        "cuda without a GPU",
        "no CUDA GPU",
        lambda p: pick_device("cuda"),
        ["train", "--device", "cuda", "--steps", "1"],
    ),
    csv_case("CSV empty", "", "empty"),
    csv_case("CSV not a CSV", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x00\x00", "not a text CSV"),
    csv_case("CSV non-numeric", "a,b,y\nq,w,1\nr,t,2\n", "no numeric feature columns"),
    csv_case("CSV missing values", "a,b,y\n1,,1\n2,3,2\n", "missing values in: b"),
    csv_case("CSV one class", "a,b,y\n1,2,1\n2,3,1\n", "single class"),
    Case(
        "CSV target absent",
        "target column 'label' is not in the CSV",
        lambda p: read_csv_dataset(str(p), "label"),
        ["train", "--dataset", "csv", "--csv", "{csv}", "--target", "label", "--steps", "1"],
        csv="a,b,y\n1,2,1\n2,3,0\n",
    ),
    Case(
        "CSV over the size limit",
        "MB limit",
        lambda p: read_csv_dataset(str(p), "y"),
        ["train", "--dataset", "csv", "--csv", "{csv}", "--target", "y", "--steps", "1"],
        csv="a,y\n" + "1,0\n2,1\n" * 200,
        extra={"limit_mb": 0.001},
    ),
    Case(
        "milestones out of order",
        "increasing order",
        lambda p: bss.Config(milestones=(10, 5)),
        ["bs-schedule", "--milestones", "10", "5"],
        ("pages/bs_schedule.py", [("text", "bq_milestones", "10, 5")]),
    ),
    Case(
        "milestone past the end",
        "outside the run",
        lambda p: bss.Config(epochs=15, milestones=(5, 20)),
        ["bs-schedule", "--milestones", "5", "20"],
        ("pages/bs_schedule.py", [("text", "bq_milestones", "5, 20")]),
    ),
    Case(
        "factor 1",
        "factor must be above 1",
        lambda p: bss.Config(factor=1.0),
        ["bs-schedule", "--factor", "1"],
        ("pages/bs_schedule.py", [("number", "bq_factor", 1.0)]),
    ),
    Case(
        "factor below 1",
        "factor must be above 1",
        lambda p: bss.Config(factor=0.2),
        ["bs-schedule", "--factor", "0.2"],
        ("pages/bs_schedule.py", [("number", "bq_factor", 0.2)]),
    ),
    Case(
        "patience zero",
        "patience must be at least 1",
        lambda p: bss.Config(patience=0),
        ["bs-schedule", "--patience", "0"],
        ("pages/bs_schedule.py", [("number", "bq_patience", 0)]),
    ),
    Case(
        "schedule zero epochs",
        "epochs must be at least 1",
        lambda p: bss.Config(epochs=0),
        ["bs-schedule", "--epochs", "0"],
        ("pages/bs_schedule.py", [("number", "bq_epochs", 0)]),
    ),
    Case(
        "noise small >= big",
        "must be smaller than the big batch",
        lambda p: noise_scale.Config(batch_small=64, batch_big=32),
        ["noise-scale", "--batch-small", "64", "--batch-big", "32"],
        ("pages/noise.py", [("number", "ns_small", 1000)]),
    ),
    Case(
        "noise k zero",
        "measurement interval k must be at least 1",
        lambda p: noise_scale.Config(every=0),
        ["noise-scale", "--every", "0"],
        ("pages/noise.py", [("number", "ns_every", 0)]),
    ),
    Case(
        "schedule base >= max",
        "must be below the upper bound",
        lambda p: sch.Config(base_lr=1.0, max_lr=0.5),
        ["schedules", "--base-lr", "1", "--max-lr", "0.5"],
        ("pages/schedules.py", [("number", "ls_base", 2.0)]),
    ),
    Case(
        "schedule base == max",
        "must be below the upper bound",
        lambda p: sch.Config(base_lr=0.5, max_lr=0.5),
        ["schedules", "--base-lr", "0.5", "--max-lr", "0.5"],
        ("pages/schedules.py", [("number", "ls_max", 0.1)]),
    ),
    Case(
        "CLR step size zero",
        "the cycle step size",
        lambda p: sch.Config(cycle_epochs=0),
        ["schedules", "--cycle-epochs", "0"],
        ("pages/schedules.py", [("number", "ls_cycle", 0.0)]),
    ),
    Case(
        "HD beta negative",
        "beta must be >= 0",
        lambda p: sch.Config(hd_beta=-1e-3),
        ["schedules", "--beta=-1e-3"],
        ("pages/schedules.py", [("text", "ls_beta", "-1e-3")]),
    ),
    Case(
        "HD beta not a number",
        "beta must be a finite number",
        lambda p: sch.Config(hd_beta=NAN),
        ["schedules", "--beta", "nan"],
        ("pages/schedules.py", [("text", "ls_beta", "fast")]),
    ),
    Case(
        "GD zero steps",
        "steps must be at least 1",
        lambda p: gd1d.Config(steps=0),
        ["gd1d", "--steps", "0"],
    ),
    Case(
        "memory cap zero",
        "memory cap must be at least",
        lambda p: bs_probe.Config(cap_mib=0),
        ["bs-probe", "--cap-mib", "0"],
    ),
    Case(
        "memory cap NaN",
        "must be a finite number",
        lambda p: bs_probe.Config(cap_mib=NAN),
        ["bs-probe", "--cap-mib", "nan"],
    ),
    Case(
        "dataset size too small",
        "dataset size must be a whole number of at least 20",
        lambda p: DataSpec("mnist1d", size=5),
        ["train", "--dataset-size", "5", "--steps", "1"],
    ),
    Case(
        "dataset size NaN",
        "dataset size must be a whole number",
        lambda p: DataSpec("mnist1d", size=NAN),
        None,  # the CLI's --dataset-size takes whole numbers only (argparse says so)
    ),
    Case(
        "repeats zero",
        "repeats must be at least 1",
        lambda p: LRSweep(repeats=0),
        ["lr-sweep", "--repeats", "0", "--steps", "1"],
    ),
    Case(
        "repeats above 10",
        "repeats must be at most 10",
        lambda p: sch.Config(repeats=11),
        ["schedules", "--repeats", "11"],
    ),
    Case(
        "workers above 32",
        "workers must be at most 32",
        lambda p: autotune.Config(workers=64),
        ["autotune", "run", "--workers", "64"],
        ("pages/autotune.py", [("number", "at_workers", 64)]),
    ),
    Case(
        "data folder missing",
        "MNIST files not found",
        lambda p: load(DataSpec("mnist", root=str(p.parent / "no-such-folder"))),
        ["train", "--dataset", "mnist", "--data-root", "/no/such/folder", "--steps", "1"],
        extra={"error": LrbsError},
    ),
    Case(
        "data folder is a file",
        "MNIST files not found",
        lambda p: load(DataSpec("mnist", root=str(p))),
        ["train", "--dataset", "mnist", "--data-root", "{csv}", "--steps", "1"],
        extra={"error": LrbsError},
    ),
    Case(
        "model too large for memory",
        "GiB, more than the",
        lambda p: build_model(ModelSpec(hidden=(200_000, 200_000)), (40,), 10),
        ["train", "--hidden", "200000", "200000", "--steps", "1"],
        ("pages/home.py", [("text", "s_hidden", "200000, 200000")]),
        extra={"error": LrbsError},
    ),
    Case(
        "sweep batch larger than the data",
        "larger than the training set",
        lambda p: sweeps.run(Setup(data=DataSpec("digits")), LRSweep(batch_size=99999)),
        ["lr-sweep", "--dataset", "digits", "--batch-size", "99999", "--steps", "1"],
        ("pages/lr.py", [("mode", None, 1), ("number", "sw_batch", 99999)]),
    ),
    Case(
        "GD curvature zero",
        "curvature must be greater than 0",
        lambda p: gd1d.Config(curvature=0),
        ["gd1d", "--curvature", "0"],
    ),
]


@pytest.fixture
def csv_file(tmp_path):
    def make(case: Case) -> Path:
        p = tmp_path / "data.csv"
        content = case.csv if case.csv is not None else "a,y\n1,0\n2,1\n"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    return make


def test_the_catalogue_is_big_enough():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_api(case, csv_file, monkeypatch):
    if "limit_mb" in case.extra:
        monkeypatch.setattr(data_mod, "MAX_CSV_MB", case.extra["limit_mb"])
    error = case.extra.get("error", ConfigError)
    with pytest.raises(error, match=case.message.replace("(", r"\(")):
        case.api(csv_file(case))


@pytest.mark.parametrize("case", [c for c in CASES if c.cli], ids=lambda c: c.name)
def test_cli(case, csv_file, capsys, monkeypatch):
    if "limit_mb" in case.extra:
        monkeypatch.setattr(data_mod, "MAX_CSV_MB", case.extra["limit_mb"])
    path = csv_file(case)
    code = main([a.replace("{csv}", str(path)) for a in case.cli])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and case.message.split(" '")[0] in err
    assert "Traceback" not in err


MODES = {"pages/lr.py": ("lr_mode", ["Range test", "Sweep at a fixed budget"])}


@pytest.mark.parametrize("case", [c for c in CASES if c.page], ids=lambda c: c.name)
def test_page(case, csv_file):
    path, actions = case.page
    at = open_page(path)
    for kind, key, value in actions:
        if kind == "mode":
            mode_key, labels = MODES[path]
            at.radio(key=mode_key).set_value(labels[value])
        elif kind == "number":
            at.number_input(key=key).set_value(value)
        elif kind == "text":
            at.text_input(key=key).set_value(value)
        elif kind == "radio":
            at.radio(key=key).set_value(value)
        elif kind == "csv":
            at.session_state["csv_path"] = str(csv_file(case))
            at.selectbox(key="s_dataset").set_value("csv")
        at.run()
        if kind == "csv" and not at.error:
            at.selectbox(key="s_target").set_value(value).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(case.message in e for e in errors), errors


def test_a_model_that_diverges_at_once_is_a_result(capsys):
    """Not an error: the CLI succeeds and reports 'diverged'; the API returns it as status."""
    import json

    code = main(["train", "--dataset", "digits", "--lr", "1e5", "--steps", "50", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["status"] == "diverged" and figures["message"]
    arrays = load(DataSpec("digits"))
    assert arrays.n_train > 0
