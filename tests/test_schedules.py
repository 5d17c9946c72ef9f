"""LR schedules against their definitions (formulas, not the torch schedulers they use),
hypergradient descent against a hand-computed update, bounds from a range test."""

import json
import math
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from lrbs.cli import main
from lrbs.core.errors import ConfigError
from lrbs.core.loop import OptimSpec
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments import schedules as sch
from lrbs.experiments.lr_finder import RangeTestConfig, range_test
from lrbs.runs.sink import Rows
from lrbs.runs.store import RunStore, jsonable

N, B = 1000, 100  # 10 updates per epoch


def config(lr: float = 0.5, optimizer: str = "sgd", **kw) -> sch.Config:
    """A Config with the base rate and optimizer given as before the OptimSpec held them."""
    return sch.Config(optim=OptimSpec(name=optimizer, lr=lr), **kw)


def planned(name: str, **kw) -> np.ndarray:
    cfg = config(schedules=(name,), batch_size=B, **kw)
    plan = sch.preview(cfg, N, max_points=10**6)
    assert list(plan.step) == list(range(cfg.epochs * 10))
    return plan.lr.to_numpy()


def test_constant_step_and_exponential():
    assert np.allclose(planned("constant", epochs=5, lr=0.3), 0.3)
    t = np.arange(100)
    assert np.allclose(
        planned("step", epochs=10, lr=0.5, step_epochs=3, gamma=0.2), 0.5 * 0.2 ** (t // 30)
    )
    lrs = planned("exponential", epochs=10, lr=0.5, final_factor=0.01)
    assert np.allclose(lrs, 0.5 * 0.01 ** (t / 100))


def test_cosine_and_warm_restarts():
    t = np.arange(100)
    lr, floor = 0.4, 0.1
    cos = planned("cosine", epochs=10, lr=lr, floor=floor)
    lo = lr * floor
    assert np.allclose(cos, lo + (lr - lo) * (1 + np.cos(np.pi * t / 100)) / 2)
    sgdr = planned("cosine-restarts", epochs=10, lr=lr, restart_epochs=3, restart_mult=2)
    # periods of 30, 60, 120 updates (restarts at 30 and 90), each starting again at lr
    start = np.select([t < 30, t < 90], [0, 30], 90)
    period = np.select([t < 30, t < 90], [30, 60], 120)
    assert np.allclose(sgdr, lr * (1 + np.cos(np.pi * (t - start) / period)) / 2, atol=1e-9)


def test_warmup_then_cosine():
    lrs = planned("warmup-cosine", epochs=10, lr=0.2, warmup_epochs=2)
    t = np.arange(20)
    # linear from lr/W, reaching lr at step W where the cosine takes over
    assert np.allclose(lrs[:20], 0.2 * (1 / 20 + (1 - 1 / 20) * t / 20))
    c = np.arange(80)
    assert np.allclose(lrs[20:], 0.2 * (1 + np.cos(np.pi * c / 80)) / 2)


def smith_clr(t, base, top, step, mode, gamma=1.0):
    """Smith (2017), section 3.1."""
    cycle = np.floor(1 + t / (2 * step))
    x = np.abs(t / step - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**t}[mode]
    return base + (top - base) * np.maximum(0, 1 - x) * scale


@pytest.mark.parametrize(
    "name, mode", [("clr", "triangular"), ("clr2", "triangular2"), ("clr-exp", "exp_range")]
)
def test_cyclical_rates_follow_smith(name, mode):
    t = np.arange(200)
    lrs = planned(name, epochs=20, base_lr=0.01, max_lr=0.5, cycle_epochs=2.5, exp_range_end=0.1)
    gamma = 0.1 ** (1 / 200)
    assert np.allclose(lrs, smith_clr(t, 0.01, 0.5, 25, mode, gamma))
    if mode != "exp_range":
        assert lrs[25] == pytest.approx(0.5)  # the first peak reaches the upper bound


def test_one_cycle_goes_up_to_the_upper_bound_and_far_below_the_start():
    lrs = planned("onecycle", epochs=10, max_lr=0.8, onecycle_pct=0.3, onecycle_div=20)
    assert lrs[0] == pytest.approx(0.8 / 20)
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(0.8)
    assert peak == pytest.approx(0.3 * 100, abs=1)
    assert np.all(np.diff(lrs[: peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert lrs[-1] == pytest.approx(0.8 / 20 / 1e4, rel=1e-3)


def test_what_trains_is_what_was_previewed(mnist1d_small):
    data = mnist1d_small
    cfg = config(
        schedules=("clr2", "warmup-cosine", "onecycle"),
        epochs=3,
        batch_size=128,
        optimizer="momentum",
        log_every=1,
    )
    plan = sch.preview(cfg, data.n_train, max_points=10**6)
    result = sch.run(Setup(), cfg)
    events = result.events()
    used = events[events.kind == "train"]
    assert (result.plan().lr.to_numpy() == plan.lr.to_numpy()).all()  # the Result's own preview
    for name, part in used.groupby("run_id"):
        expect = plan[plan.schedule == name].set_index("step").lr
        got = part.set_index(part.step - 1).lr  # event `step` counts updates done
        assert np.allclose(got.to_numpy(), expect.loc[got.index].to_numpy()), name


# ------------------------------------------------------------------ hypergradient descent


def quadratic_steps(opt_name: str, beta: float, lr0: float):
    """Three updates on f(x) = 1/2 x'Ax in float64 with the HD wrapper; returns the rates
    used and the gradients seen."""
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[opt_name]([x], lr=lr0)
    hd = sch.Hypergradient(opt, beta)
    rates, grads = [], []
    for _ in range(3):
        opt.zero_grad()
        (0.5 * x @ a @ x).backward()
        grads.append(x.grad.clone())
        opt.step()
        rates.append(opt.param_groups[0]["lr"])
    hd.remove()
    return rates, grads


def test_sgd_hd_moves_the_rate_by_beta_times_the_gradient_product():
    beta, lr0 = 0.01, 0.1
    rates, g = quadratic_steps("sgd", beta, lr0)
    assert rates[0] == lr0  # no previous gradient yet
    assert rates[1] == pytest.approx(lr0 + beta * float(g[1] @ g[0]), rel=1e-9)
    assert rates[2] == pytest.approx(rates[1] + beta * float(g[2] @ g[1]), rel=1e-9)


def test_adam_hd_uses_adams_direction():
    beta, lr0 = 1e-3, 0.05
    rates, g = quadratic_steps("adam", beta, lr0)
    # Adam's first step direction is m/(sqrt(v)+eps) with m = g0, v = g0^2 after debiasing
    u0 = g[0] / (g[0].abs() + 1e-8)
    assert rates[1] == pytest.approx(lr0 + beta * float(g[1] @ u0), rel=1e-6)


def test_hd_rate_stays_positive_and_beta_zero_is_plain_sgd():
    rates, _ = quadratic_steps("sgd", 1e6, 0.1)  # an absurd beta would push it below zero
    assert min(rates) > 0
    rates, _ = quadratic_steps("sgd", 0.0, 0.1)
    assert rates == [0.1, 0.1, 0.1]


def test_hd_trains_and_its_rate_moves(mnist1d_small):
    setup = Setup()
    cfg = config(schedules=("hd",), epochs=2, batch_size=64, lr=0.05)
    res = sch.run(setup, cfg)
    events = res.events()
    lrs = set(events[(events.run_id == "hd") & (events.kind == "train")].lr)
    assert res.runs()[0]["status"] == "finished" and len(lrs) > 5


# ------------------------------------------------------------------ bounds from the range test


def test_bounds_from_suggestions():
    b = sch.RangeBounds.from_suggestions({"steep": 0.05, "max_usable": 1.0})
    assert (b.lr, b.base_lr, b.max_lr) == (0.05, 0.05, 1.0)
    b = sch.RangeBounds.from_suggestions({"steep": 0.8, "max_usable": 1.0})
    assert (b.lr, b.base_lr) == (0.8, 0.25)  # at most max/4, so a cycle spans 4x
    b = sch.RangeBounds.from_suggestions({"max_usable": 2.0})
    assert (b.lr, b.base_lr) == (0.5, 0.5)
    with pytest.raises(ConfigError, match="maximum usable"):
        sch.RangeBounds.from_suggestions({"steep": 0.1})


def test_one_cycle_and_clr_bounds_carried_from_a_range_test(mnist1d_small, tmp_path):
    setup = Setup()
    result = range_test(setup.fresh_model(mnist1d_small), mnist1d_small, RangeTestConfig())
    found = {s.name: s.lr for s in result.suggestions}
    b = sch.RangeBounds.from_suggestions(found)
    cfg = config(
        schedules=("clr", "onecycle"), epochs=4, lr=b.lr, base_lr=b.base_lr, max_lr=b.max_lr
    )
    plan = sch.preview(cfg, mnist1d_small.n_train, max_points=10**6)
    peaks = plan.groupby("schedule").lr.max()
    # the cycle's step size is not a whole number of updates: its peaks fall between two
    assert found["max_usable"] * 0.99 < peaks["clr"] <= found["max_usable"]
    assert peaks["onecycle"] == pytest.approx(found["max_usable"], rel=1e-4)
    assert plan[plan.schedule == "clr"].lr.min() == pytest.approx(b.base_lr)

    # the same bounds read back from the run history, as the CLI stores a range test
    store = RunStore(tmp_path / "runs.db")
    run = store.start_run("lr-find", {}, dataset="mnist1d", model="mlp")
    store.finish(run, "diverged", {"suggestions": found})
    other = store.start_run("lr-find", {}, dataset="digits", model="mlp")
    store.finish(other, "diverged", {"suggestions": {"max_usable": 9.0}})
    assert sch.bounds_from_history(store, "mnist1d", "mlp") == replace_source(b, run)
    assert sch.bounds_from_history(store, "mnist1d", "cnn") is None
    store.close()


def replace_source(b: sch.RangeBounds, run_id: int) -> sch.RangeBounds:
    from dataclasses import replace

    return replace(b, source=f"range test #{run_id} in the history")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"base_lr": 1.0, "max_lr": 1.0}, "must be below the upper bound"),
        ({"base_lr": 2.0, "max_lr": 1.0}, "must be below the upper bound"),
        ({"cycle_epochs": 0}, "cycle step size"),
        ({"hd_beta": -1e-4}, "beta must be >= 0"),
        ({"hd_beta": math.nan}, "beta must be a finite number"),
        ({"schedules": ("cosine", "cosine")}, "listed twice"),
        ({"schedules": ("linear",)}, "unknown schedule"),
        ({"schedules": ("warmup-cosine",), "epochs": 2, "warmup_epochs": 2}, "shorter than"),
        ({"gamma": 1.0}, "gamma must be between 0 and 1"),
        ({"schedules": ()}, "at least one schedule"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"patience": 0}, "patience must be at least 1"),
        ({"bounds": "guess"}, "unknown value 'guess'"),
        ({"restart_mult": 0}, "restart multiplier must be at least 1"),
    ],
)
def test_bad_configs_are_clear(kw, message):
    with pytest.raises(ConfigError, match=message):
        sch.Config(**kw)


def test_config_is_keyword_only_and_holds_an_optim_spec():
    with pytest.raises(TypeError):
        sch.Config(("constant",), 3)  # positional: refused
    cfg = sch.Config()
    assert cfg.optim == OptimSpec(name="sgd", lr=0.5) and not hasattr(cfg, "optimizer")
    with pytest.raises(ConfigError, match="larger than the training set"):
        sch.Config(batch_size=500).fits(400)


def test_preview_of_reactive_schedules_is_empty_and_beta_defaults_by_optimizer():
    cfg = config(schedules=("plateau", "hd"), optimizer="adam")
    assert sch.preview(cfg, N).empty
    assert cfg.beta == 1e-7
    assert sch.Config().beta == 1e-3


# ------------------------------------------------------------------ the experiment shape


def test_run_streams_every_point_and_the_result_rebuilds_from_them(mnist1d_small):
    seen = Rows()
    cfg = config(schedules=("constant", "plateau"), epochs=2, batch_size=128)
    result = sch.run(Setup(), cfg, seen)
    assert seen.rows == result.rows  # every row reached the sink as it went
    assert {"bounds", "events", "runs"} <= set(seen.rows)
    assert [r["run"] for r in seen.rows["runs"]] == ["constant", "plateau"]
    assert seen.fraction == 1.0 and result.status == "finished"
    table = result.table()
    assert list(table.schedule) == ["constant", "plateau"]
    assert (table.status == "finished").all() and table.val_loss.notna().all()
    assert table.set_index("schedule").loc["constant", "lr_max"] == 0.5
    assert "Lowest final validation loss" in result.verdict()
    assert "**" not in result.summary()["verdict"]
    assert result.bounds == sch.RangeBounds(0.5, 0.25, 1.0, "the settings")
    assert set(result.plan().schedule) == {"constant"}  # plateau reacts: no plan
    # the history's copy: JSON rows and the record rebuild the same tables
    rows = json.loads(json.dumps(jsonable(result.rows)))
    info = {"status": result.status, "results": jsonable(result.summary())}
    again = sch.Result.from_record(cfg, rows, info)
    pd.testing.assert_frame_equal(again.table(), table)
    assert again.summary() == jsonable(result.summary())
    assert list(result.tables()) == ["curves", "table", "plan"]


def test_a_stop_ends_the_series_and_keeps_what_ran():
    stop = threading.Event()

    class StopAfterFirst(Rows):
        def emit(self, channel, row):
            super().emit(channel, row)
            if channel == "runs":
                stop.set()

    cfg = config(schedules=("constant", "cosine", "hd"), epochs=1, batch_size=128)
    result = sch.run(Setup(), cfg, StopAfterFirst(), stop)
    assert result.status == "stopped" and result.stopped
    assert list(result.table().schedule) == ["constant"]
    assert "Stopped before every schedule ran" in result.verdict()


def test_a_diverging_schedule_is_a_result_not_an_error():
    cfg = config(schedules=("constant",), epochs=1, batch_size=128, lr=1e4, max_lr=2e4)
    result = sch.run(Setup(), cfg)
    assert result.status == "finished"
    assert result.table().status.tolist() == ["diverged"]
    assert "No schedule finished" in result.verdict()


def test_preview_streams_the_plan_and_trains_nothing():
    seen = Rows()
    result = sch.run(Setup(), config(schedules=("cosine", "hd"), epochs=2, preview=True), seen)
    assert "events" not in seen.rows and "runs" not in seen.rows
    assert len(seen.rows["plan"]) == 2 * math.ceil(4000 / 64)
    assert list(result.tables()) == ["plan"]
    assert result.summary()["steps"] == 2 * math.ceil(4000 / 64)


def test_history_bounds_come_from_the_file_the_cli_records_to(tmp_path, capsys, monkeypatch):
    """`--bounds history` reads the --db file the command records in (not LRBS_DB), or the
    file --history-db names."""
    db = tmp_path / "other.db"
    with RunStore(db) as store:
        run = store.start_run("lr-find", {}, dataset="digits", model="mlp")
        store.finish(run, "diverged", {"suggestions": {"steep": 0.1, "max_usable": 2}})
    args = ["schedules", "--dataset", "digits", "--bounds", "history", "--preview", "--json"]
    assert main([*args, "--db", str(db)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["bounds"] == {
        "source": f"range test #{run} in the history",
        "lr": 0.1,
        "base_lr": 0.1,
        "max_lr": 2.0,
    }
    assert main([*args, "--no-store", "--history-db", str(db)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["max_lr"] == 2.0
    monkeypatch.setenv("LRBS_DB", str(tmp_path / "empty.db"))
    assert main(args) == 2  # LRBS_DB holds no range test of digits
    assert "no range test of this dataset and model" in capsys.readouterr().err


def test_the_cli_json_keys(capsys):
    args = ["--dataset", "digits", "--epochs", "1", "--schedules", "constant", "--json"]
    assert main(["schedules", *args, "--no-store"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    keys = {"status", "optimizer", "lr", "base_lr", "max_lr", "bounds", "verdict", "schedules"}
    assert keys <= set(figures)
    assert set(figures["schedules"][0]) >= {"schedule", "status", "val_loss", "lr_min", "lr_max"}


@pytest.fixture(scope="module")
def mnist1d_small():
    return load_tensors(Setup())


def test_repeats_give_each_schedule_its_mean_and_spread_and_judge_the_gap(mnist1d_small):
    cfg = config(schedules=("constant", "cosine"), epochs=1, batch_size=256, repeats=2, seed=5)
    result = sch.run(Setup(), cfg)
    assert [r["run"] for r in result.runs()] == [
        "constant seed 5",
        "constant seed 6",
        "cosine seed 5",
        "cosine seed 6",
    ]
    assert {r["seed"] for r in result.runs()} == {5, 6}
    table = result.table().set_index("schedule")
    assert list(table.index) == ["constant", "cosine"] and set(table.repeats) == {2}
    per_run = sch.run_table(result.events(), {r["run"]: r["status"] for r in result.runs()})
    const = per_run[per_run.schedule.str.startswith("constant")].val_loss.astype(float)
    assert table.loc["constant", "val_loss"] == pytest.approx(const.mean())
    assert table.loc["constant", "val_loss_std"] == pytest.approx(const.std())
    verdict = result.verdict()
    assert "± " in verdict and "2 seeds" in verdict and "noise" in verdict
