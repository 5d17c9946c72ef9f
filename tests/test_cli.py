import json
import subprocess
import sys

import pandas as pd
import pytest
from support import ROOT

from lrbs.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_gd1d_json_and_csv(capsys, tmp_path):
    path = tmp_path / "paths.csv"
    code, out, _ = run_cli(
        capsys,
        "gd1d",
        "--loss",
        "quadratic",
        "--curvature",
        "2",
        "--lr",
        "0.9",
        "1.0",
        "1.1",
        "--steps",
        "20",
        "--out",
        str(path),
        "--json",
    )
    assert code == 0
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["stability_limit"] == 1.0
    assert [r["status"] for r in figures["runs"]] == ["converging", "oscillating", "diverged"]
    df = pd.read_csv(path)
    assert len(df) == 63 and set(df.lr) == {0.9, 1.0, 1.1}


def test_train_writes_the_event_csv(capsys, tmp_path):
    path = tmp_path / "run.csv"
    code, out, err = run_cli(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--model",
        "logreg",
        "--steps",
        "30",
        "--batch-size",
        "64",
        "--out",
        str(path),
        "--json",
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["status"] == "finished" and figures["steps"] == 30
    keys = {"dataset", "model", "device", "steps", "epochs", "samples", "elapsed", "final_loss"}
    keys |= {"val_loss", "val_acc", "train_eval_loss", "peak_memory", "message", "gap", "run_id"}
    assert keys <= set(figures)
    assert (figures["dataset"], figures["model"]) == ("digits", "logreg")
    df = pd.read_csv(path)
    assert {"step", "epoch", "samples", "elapsed", "lr", "batch_size", "loss", "val_loss"} <= set(
        df.columns
    )
    assert df[df.kind == "train"].step.max() == 30


@pytest.mark.parametrize(
    "args, message",
    [
        (["gd1d", "--lr", "0"], "learning rate must be greater than 0"),
        (["gd1d", "--lr", "nan"], "finite"),
        (["gd1d", "--steps", "0"], "steps must be at least 1"),
        (["train", "--dataset", "imagenet", "--steps", "1"], "unknown dataset 'imagenet'"),
        (["train", "--model", "resnet", "--steps", "1"], "unknown model"),
        (["train", "--dataset", "digits", "--lr", "-1", "--steps", "1"], "learning rate"),
        (["train", "--dataset", "digits", "--batch-size", "0", "--steps", "1"], "batch size"),
        (["train", "--dataset", "digits", "--batch-size", "5000", "--steps", "1"], "larger than"),
        (["train", "--dataset", "digits", "--steps", "-3"], "steps budget"),
        (["gd1d", "--lr", "abc"], "invalid float value"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err
    assert "Traceback" not in err


def test_module_entry_point_in_a_subprocess():
    p = subprocess.run(
        [sys.executable, "-m", "lrbs", "gd1d", "--lr", "0.5", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["runs"][0]["status"] == "converged"
    bad = subprocess.run(
        [sys.executable, "-m", "lrbs", "train", "--dataset", "csv", "--steps", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr


def test_lr_find_json_csv_and_zoom(capsys, tmp_path):
    path = tmp_path / "lr.csv"
    code, out, err = run_cli(
        capsys,
        "lr-find",
        "--dataset",
        "digits",
        "--batch-size",
        "32",
        "--zoom",
        "0.01",
        "1",
        "--out",
        str(path),
        "--json",
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert set(figures["suggestions"]) == {"steep", "minimum", "valley", "max_usable"}
    assert figures["lr_at_min"] > 0 and figures["min_smoothed_loss"] > 0
    assert [r["round"] for r in figures["rounds"]] == [0, 1]
    keys = {"status", "message", "optimizer", "rounds", "iterations", "elapsed", "lr_at_min"}
    assert keys | {"min_smoothed_loss", "final_round_suggestions", "run_id"} <= set(figures)
    assert figures["suggestions"] == figures["final_round_suggestions"]
    df = pd.read_csv(path)
    assert set(df["round"]) == {0, 1}
    assert {"lr", "loss", "smoothed", "seed", "iteration"} <= set(df.columns)
    assert df[df["round"] == 1].lr.min() == pytest.approx(0.01)


def test_lr_sweep_json(capsys, tmp_path):
    path = tmp_path / "sweep.csv"
    code, out, err = run_cli(
        capsys,
        "lr-sweep",
        "--dataset",
        "digits",
        "--lr",
        "0.01",
        "0.1",
        "--steps",
        "20",
        "--out",
        str(path),
        "--json",
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert [r["lr"] for r in figures["runs"]] == [0.01, 0.1]
    assert all(r["steps"] == 20 and r["status"] == "finished" for r in figures["runs"])
    assert figures["best_lr"] in (0.01, 0.1)
    assert {"status", "budget", "best_lr", "runs", "run_id"} <= set(figures)
    assert figures["budget"] == "20 steps"
    assert {"val_loss", "val_acc", "train_loss", "best"} <= set(figures["runs"][0])
    assert set(pd.read_csv(path).run_id) == {"lr=0.01", "lr=0.1"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["lr-find", "--lr-min", "1", "--lr-max", "0.1"], "must be below"),
        (["lr-find", "--lr-min", "-1"], "greater than 0"),
        (["lr-find", "--lr-max", "nan"], "finite"),
        (["lr-find", "--iterations", "0"], "iterations must be at least 1"),
        (["lr-find", "--dataset", "digits", "--zoom", "1", "0.1"], "must be below"),
        (["lr-sweep", "--lr", "0.1", "0.1", "--steps", "5"], "repeats"),
        (["lr-sweep", "--lr", "0", "--steps", "5"], "greater than 0"),
        (["lr-sweep", "--seconds", "0"], "seconds budget"),
    ],
)
def test_lr_commands_bad_input(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bs_sweep_json(capsys, tmp_path):
    path = tmp_path / "bs.csv"
    code, out, err = run_cli(
        capsys,
        "bs-sweep",
        "--dataset",
        "digits",
        "--batch-sizes",
        "32",
        "full",
        "--steps",
        "10",
        "--scaling",
        "linear",
        "--lr",
        "0.005",
        "--out",
        str(path),
        "--json",
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert {"dataset", "model", "budget", "scaling", "n_train", "runs"} <= set(figures)
    assert (figures["budget"], figures["scaling"], figures["n_train"]) == (
        "10 steps",
        "linear",
        1438,
    )
    runs = figures["runs"]
    assert [r["batch"] for r in runs] == [32, 1438]
    assert runs[1]["lr"] == pytest.approx(0.005 * 1438 / 32)
    assert all(r["updates"] == 10 for r in runs)
    assert {"gap", "samples_per_s", "noise_scale"} <= set(runs[0])
    assert set(pd.read_csv(path).run_id) == {"B=32", "B=1438 (full)"}


def test_bs_probe_and_scaling_check(capsys):
    code, out, err = run_cli(capsys, "bs-probe", "--dataset", "digits", "--cap-mib", "1", "--json")
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["largest"] >= figures["safe"] >= 1
    assert figures["memory_limited"] is True and figures["tried"] > 1
    code, out, err = run_cli(
        capsys, "bs-scaling-check", "--dataset", "digits", "--k-max", "2", "--epochs", "1", "--json"
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert {a["rule"] for a in figures["agreement"]} == {"linear", "fixed"}
    assert figures["dataset"] == "digits"
    final = figures["final_val_loss"]
    assert [(r["rule"], r["k"], r["batch"]) for r in final] == [
        ("linear", 1, 8),
        ("linear", 2, 16),
        ("fixed", 1, 8),
        ("fixed", 2, 16),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["bs-sweep", "--batch-sizes", "0", "--steps", "3"], "at least 1"),
        (["bs-sweep", "--batch-sizes", "-2", "--steps", "3"], "at least 1"),
        (["bs-sweep", "--batch-sizes", "99999", "--steps", "3"], "larger than the training set"),
        (["bs-sweep", "--batch-sizes", "64", "64", "--steps", "3"], "repeat"),
        (["bs-sweep", "--epochs", "0"], "epochs budget"),
        (["bs-scaling-check", "--k-max", "1"], "K must be at least 2"),
        (["bs-scaling-check", "--batch-size", "0"], "base batch must be at least 1"),
        (["bs-scaling-check", "--epochs", "0"], "epochs must be greater than 0"),
        (["bs-sweep", "--scaling", "cubic"], "invalid choice"),
        (["bs-sweep", "--repeats", "11"], "repeats must be at most 10"),
        (["bs-sweep", "--batch-sizes", "2.5", "--steps", "3"], "whole number"),
        (["bs-probe", "--cap-mib", "0"], "memory cap must be at least"),
        (["bs-probe", "--optim-states", "-1"], "optim states must be at least 0"),
    ],
)
def test_bs_commands_bad_input(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bs_schedule_json(capsys):
    code, out, err = run_cli(
        capsys,
        "bs-schedule",
        "--dataset",
        "digits",
        "--epochs",
        "4",
        "--milestones",
        "2",
        "--regimes",
        "decay",
        "grow",
        "--json",
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    regimes = {r["regime"]: r for r in figures["regimes"]}
    assert regimes["grow"]["updates"] < regimes["decay"]["updates"]
    assert "updates instead of" in figures["verdict"]
    code, out, err = run_cli(capsys, "bs-schedule", "--factor", "1")
    assert code == 2 and "factor must be above 1" in err


def test_schedules_json_csv_preview_and_bounds(capsys, tmp_path):
    out_csv = tmp_path / "s.csv"
    args = ["schedules", "--dataset", "digits", "--epochs", "3", "--json", "--out", str(out_csv)]
    code, out, err = run_cli(capsys, *args, "--schedules", "constant", "onecycle", "hd")
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    rows = {r["schedule"]: r for r in figures["schedules"]}
    assert set(rows) == {"constant", "onecycle", "hd"}
    assert rows["onecycle"]["lr_max"] == pytest.approx(1.0, rel=0.01)
    assert rows["constant"]["lr_min"] == rows["constant"]["lr_max"] == 0.5
    curves = pd.read_csv(out_csv)
    assert set(curves.run_id) == set(rows) and {"lr", "val_loss"} <= set(curves.columns)

    code, out, err = run_cli(capsys, *args, "--schedules", "clr", "--bounds", "range-test")
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    b = figures["bounds"]
    assert b["source"] == "a quick range test" and 0 < b["base_lr"] < b["max_lr"]
    assert figures["schedules"][0]["lr_max"] <= b["max_lr"]

    preview = ["schedules", "--preview", "--epochs", "2", "--json", "--out", str(out_csv)]
    code, out, err = run_cli(capsys, *preview)
    assert code == 0, err
    plan = pd.read_csv(out_csv)
    assert set(plan.schedule) == {"constant", "cosine", "onecycle", "clr"}  # hd is reactive
    history = ["schedules", "--bounds", "history", "--dataset", "digits", "--model", "cnn"]
    code, out, err = run_cli(capsys, *history)
    assert code == 2 and "no range test of this dataset and model" in err


def test_noise_scale_json(capsys):
    code, out, err = run_cli(
        capsys,
        "noise-scale",
        "--dataset",
        "digits",
        "--steps",
        "200",
        "--batch-big",
        "256",
        "--json",
    )
    assert code == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["b_simple"] > 0 and 0 < figures["overhead"] < 1
    assert figures["b_simple_q25"] <= figures["b_simple_q75"]
    keys = "dataset model b_simple b_simple_q25 b_simple_q75 overhead measurements steps"
    keys += " final_loss status smith_le_g n_train run_id"
    assert set(keys.split()) <= set(figures)
    assert figures["status"] == "finished" and figures["n_train"] == 1438
    args = "--dataset digits --steps 100 --batch-big 256 --check 16 64 --target-loss 1"
    code, out, err = run_cli(capsys, "noise-scale", *args.split(), "--check-steps", "400", "--json")
    assert code == 0, err
    check = json.loads(out.strip().splitlines()[-1])["check"]
    assert {"target_loss", "s_min", "e_min", "b_crit", "runs"} <= set(check)
    assert check["target_loss"] == 1.0 and [r["batch"] for r in check["runs"]] == [16, 64]
    code, out, err = run_cli(capsys, "noise-scale", "--batch-small", "64", "--batch-big", "32")
    assert code == 2 and "must be smaller than the big batch" in err
    code, out, err = run_cli(capsys, "noise-scale", "--dataset", "digits", "--batch-big", "5000")
    assert code == 2 and "larger than the training set" in err


def test_cli_runs_are_stored_and_history_commands(capsys, tmp_path):
    db = str(tmp_path / "h.db")
    assert main(["train", "--dataset", "digits", "--steps", "20", "--db", db, "--json"]) == 0
    assert main(["lr-find", "--dataset", "digits", "--db", db, "--json"]) == 0
    assert main(["gd1d", "--db", db, "--no-store"]) == 0
    capsys.readouterr()
    assert main(["history", "list", "--db", db, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["kind"] for r in runs] == ["lr-find", "train"]  # newest first; gd1d not stored
    ids = [str(r["id"]) for r in runs]
    out_csv = tmp_path / "runs.csv"
    assert main(["history", "export", *ids, "--out", str(out_csv), "--db", db]) == 0
    df = pd.read_csv(out_csv)
    assert set(df.history_id) == {int(i) for i in ids}
    assert {"history_kind", "channel"} <= set(df.columns)
    assert main(["history", "show", ids[1], "--db", db, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["kind"] == "train" and info["results"]["status"] == "finished"
    assert main(["history", "delete", ids[0], "--db", db]) == 0
    capsys.readouterr()
    assert main(["history", "show", ids[0], "--db", db]) == 2
    assert "there is no run" in capsys.readouterr().err


def test_cli_history_refuses_a_foreign_file(capsys, tmp_path):
    bad = tmp_path / "x.db"
    bad.write_text("hello")
    assert main(["history", "list", "--db", str(bad)]) == 2
    assert "not an lrbs run history" in capsys.readouterr().err
    assert bad.read_text() == "hello"
    # an experiment still runs; only its history entry is lost, with a warning
    assert main(["gd1d", "--db", str(bad), "--json"]) == 0
    assert "not saved in the run history" in capsys.readouterr().err


def test_help_names_each_value_after_its_flag_not_an_internal_dest():
    """`--lr LR`, not argparse's default metavar (the internal dest, `CFG__CONFIG__...`)."""
    from lrbs.cli.main import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.choices and hasattr(a.choices, "items"))
    for name, sub in subs.choices.items():
        text = sub.format_help()
        assert "CFG__" not in text and "cfg__" not in text, name
    lr = subs.choices["recommend"].format_help()
    assert "--batch-size BATCH_SIZE" in lr
    assert "--optimizer {" in lr  # choices still listed
