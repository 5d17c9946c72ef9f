import threading
import time
from dataclasses import dataclass, field, replace

import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.core.data import DataSpec, load
from lrbs.core.errors import ConfigError, LrbsError
from lrbs.core.loop import Budget
from lrbs.core.models import ModelSpec
from lrbs.core.setup import Setup
from lrbs.experiments import sweeps
from lrbs.experiments.sweeps import Config, SweptOptim, add_decade, refine, run
from lrbs.runs.experiment import execute, rebuild
from lrbs.runs.live import LiveRun
from lrbs.runs.sink import Sink
from lrbs.runs.store import RunStore, recorder


@dataclass(frozen=True)
class RecordingSetup(Setup):
    """A setup that keeps a copy of every initial model it builds."""

    starts: list = field(default_factory=list, compare=False, hash=False)

    def fresh_model(self, data, seed=None):
        m = super().fresh_model(data, seed)
        self.starts.append([p.detach().clone() for p in m.parameters()])
        return m


SETUP = Setup(model=ModelSpec("mlp", hidden=(16,)))
LOAD_DATA = sweeps.load_data  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def small_data(monkeypatch):
    """Blobs in place of the setup's dataset: every sweep here trains in milliseconds."""
    monkeypatch.setattr(sweeps, "load_data", lambda setup: blobs())


def test_every_rate_starts_from_the_same_weights_with_the_same_budget():
    setup = RecordingSetup(model=ModelSpec("mlp", hidden=(16,)))
    cfg = Config(lrs=(0.001, 0.01, 0.1, 1.0), budget=Budget(steps=25), batch_size=16)
    result = run(setup, cfg)
    starts = setup.starts
    assert len(starts) == 4
    for other in starts[1:]:
        assert all(torch.equal(a, b) for a, b in zip(starts[0], other, strict=True))
    runs = result.rows["runs"]
    assert [r["run"] for r in runs] == ["lr=0.001", "lr=0.01", "lr=0.1", "lr=1"]
    assert {r["steps"] for r in runs} == {25}
    events = result.curves()
    train = events[events.kind == "train"]
    lrs = [set(train[train.run_id == r["run"]].lr) for r in runs]
    assert lrs == [{0.001}, {0.01}, {0.1}, {1.0}]
    assert result.status == "finished"


def test_equal_time_budgets():
    cfg = Config(lrs=(0.01, 0.1), budget=Budget(seconds=0.3), batch_size=16)
    for r in run(SETUP, cfg).rows["runs"]:
        assert r["seconds"] >= 0.3
        assert r["seconds"] < 0.3 + 0.25  # one step past the budget at most, plus noise


def test_table_marks_the_best_and_shows_diverged_runs():
    cfg = Config(lrs=(0.1, 1e4), budget=Budget(steps=60), batch_size=16)
    result = run(SETUP, cfg)
    table = result.table()
    assert list(table.status) == ["finished", "diverged"]
    assert table.best.tolist() == [True, False]
    assert result.best_lr() == 0.1
    assert {"train_loss", "val_loss", "val_acc", "epochs", "steps", "seconds"} <= set(table.columns)
    out = result.summary()
    assert out["best_lr"] == 0.1 and [r["lr"] for r in out["runs"]] == [0.1, 1e4]
    assert out["budget"] == "60 steps"


class StopAt(Sink):
    def __init__(self, stop: threading.Event, step: int) -> None:
        self.stop, self.step = stop, step

    def emit(self, channel: str, row: dict) -> None:
        if channel == "events" and row["step"] >= self.step:
            self.stop.set()


def test_stop_ends_the_whole_sweep():
    stop = threading.Event()
    cfg = Config(lrs=(0.01, 0.1, 1.0), budget=Budget(steps=10_000), batch_size=16)
    result = run(SETUP, cfg, StopAt(stop, 20), stop)
    assert result.status == "stopped"
    assert list(result.table().status) == ["stopped"]


def test_progress_is_one_fraction_over_the_series():
    seen = []

    class Progress(Sink):
        def progress(self, fraction: float, text: str = "") -> None:
            seen.append(fraction)

    run(SETUP, Config(lrs=(0.01, 0.1), budget=Budget(steps=20), batch_size=16), Progress())
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert any(0.4 < f < 0.6 for f in seen)  # half-way after the first of two rates


def test_the_history_rebuilds_the_result(tmp_path):
    cfg = Config(lrs=(0.01, 0.1), budget=Budget(steps=20), batch_size=16)
    rec = recorder(sweeps.KIND, SETUP, cfg, path=tmp_path / "h.db")
    rec.start()
    result = execute(sweeps, SETUP, cfg, recorder=rec)
    with RunStore(tmp_path / "h.db") as store:
        info = store.run(rec.run_id)
        pts = store.points(rec.run_id)
    rows = {
        c: part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
        for c, part in pts.groupby("channel")
    }
    again = rebuild(sweeps, info, rows)
    assert again.config == cfg
    pd.testing.assert_frame_equal(again.table(), result.table())
    assert info["results"]["best_lr"] == result.best_lr()


def test_data_handed_over_is_not_loaded_again(monkeypatch):
    spec = DataSpec("digits")
    arrays = load(spec)
    sweeps.keep_arrays(spec, arrays)
    monkeypatch.setattr("lrbs.core.kept.load", lambda s: pytest.fail("loaded again"))
    assert LOAD_DATA(Setup(spec)).n_train == len(arrays.y_train)
    for i in range(sweeps.KEEP_DATASETS):  # newer datasets push it out
        sweeps.keep_arrays(DataSpec("digits", seed=100 + i), arrays)
    calls = []
    monkeypatch.setattr("lrbs.core.kept.load", lambda s: calls.append(s) or arrays)
    LOAD_DATA(Setup(spec))
    LOAD_DATA(Setup(spec))
    assert calls == [spec]


def test_refine_spans_the_decade_around_the_best():
    grid = refine(0.1)
    assert grid[0] == pytest.approx(0.0316) and grid[-1] == pytest.approx(0.316)
    assert grid[2] == 0.1 and len(grid) == 5
    assert add_decade((0.01, 0.1)) == (0.01, 0.1, 1.0)
    assert add_decade((0.01, 0.1), above=False) == (0.001, 0.01, 0.1)


@pytest.mark.parametrize(
    "lrs, message",
    [
        ((), "grid is empty"),
        ((0.1, 0.1), "repeats 0.1"),
        ((0.1, -1.0), "greater than 0"),
        ((float("nan"),), "finite"),
        ((0.1, float("inf")), "finite"),
        (tuple(10.0**-k for k in range(13)), "at most 12"),
    ],
)
def test_bad_grids(lrs, message):
    with pytest.raises(ConfigError, match=message):
        Config(lrs=lrs)


def test_grid_is_sorted_and_budget_checked():
    assert Config(lrs=(1.0, 0.01)).lrs == (0.01, 1.0)
    with pytest.raises(ConfigError, match="budget"):
        Config(lrs=(0.1,), budget=Budget(seconds=0))
    with pytest.raises(ConfigError, match="steps, epochs or samples"):
        Config(budget=Budget(seconds=1), stacked="yes")
    with pytest.raises(ConfigError, match="unknown value 'maybe'"):
        Config(stacked="maybe")
    with pytest.raises(ConfigError, match="unknown optimizer"):
        Config(optim=SweptOptim("lbfgs"))


def test_batch_larger_than_data_is_refused():
    with pytest.raises(ConfigError, match="larger than the training set"):
        run(SETUP, Config(batch_size=10_000, budget=Budget(steps=1)))


# ---------------------------------------------------------------------------- LiveRun


def test_live_run_buffers_rows_and_returns_the_result():
    def work(emit, stop, progress):
        for i in range(5):
            emit("points", {"i": i})
            progress((i + 1) / 5)
        return "done"

    job = LiveRun(work).start()
    assert job.join(10)
    snap = job.snapshot()
    assert snap.result == "done" and snap.error is None and snap.progress == 1.0
    assert snap.table("points").i.tolist() == [0, 1, 2, 3, 4]
    snap.rows["points"].clear()  # a copy: the job's buffer is untouched
    assert len(job.snapshot().rows["points"]) == 5


def test_live_run_stop_and_errors_become_messages():
    def slow(emit, stop, progress):
        while not stop.is_set():
            emit("tick", {"t": time.time()})
            time.sleep(0.01)
        return "stopped"

    job = LiveRun(slow).start()
    time.sleep(0.05)
    job.stop()
    assert job.join(5) and job.snapshot().result == "stopped"

    def bad(emit, stop, progress):
        raise LrbsError("batch size 0 is not allowed")

    job = LiveRun(bad).start()
    job.join(5)
    assert job.snapshot().error == "batch size 0 is not allowed"

    def bug(emit, stop, progress):
        raise ValueError("oops")

    job = LiveRun(bug).start()
    job.join(5)
    assert job.snapshot().error == "ValueError: oops"

    def oom(emit, stop, progress):
        raise torch.OutOfMemoryError("CUDA out of memory")

    job = LiveRun(oom).start()
    job.join(5)
    assert "out of memory" in job.snapshot().error


def test_live_run_stops_when_its_session_is_gone():
    alive = {"yes": True}

    def work(emit, stop, progress):
        for i in range(1000):
            emit("x", {"i": i})
            if i == 10:
                alive["yes"] = False
            if stop.is_set():
                return i
            time.sleep(0.001)

    job = LiveRun(work, alive=lambda: alive["yes"]).start()
    job.join(10)
    assert job.snapshot().result == 11


def test_tables_for_csv():
    cfg = Config(lrs=(0.1,), budget=Budget(steps=5), batch_size=16)
    tables = run(SETUP, cfg).tables()
    assert list(tables) == ["curves", "table"]  # the first is what --out writes
    assert set(tables["curves"].run_id) == {"lr=0.1"}
    assert isinstance(tables["table"], pd.DataFrame) and len(tables["table"]) == 1


def test_repeats_give_each_rate_its_mean_and_spread_and_a_verdict_on_the_noise():
    cfg = Config(lrs=(0.05, 0.1), budget=Budget(steps=15), batch_size=16, repeats=2, seed=3)
    result = run(SETUP, cfg)
    runs = result.run_table()
    assert list(runs.run) == ["lr=0.05 seed 3", "lr=0.05 seed 4", "lr=0.1 seed 3", "lr=0.1 seed 4"]
    table = result.table()
    assert list(table.repeats) == [2, 2]
    one = runs[runs.lr == 0.1].val_loss
    row = table.set_index("lr").loc[0.1]
    assert row.val_loss == pytest.approx(one.mean())
    assert row.val_loss_std == pytest.approx(one.std())
    text = result.verdict()
    assert text.startswith(f"Best: lr {result.best_lr():g}")
    assert "±" in text and ("within noise" in text or "beyond the noise" in text)
    single = run(SETUP, Config(lrs=(0.05, 0.1), budget=Budget(steps=15), batch_size=16))
    assert "one seed: run repeats to judge" in single.verdict()


def test_a_stopped_or_unfinished_rate_is_never_the_best():
    table = pd.DataFrame(
        {
            "lr": [0.01, 0.1, 1.0],
            "status": ["finished", "stopped", "finished/stopped"],
            "val_loss": [0.9, 0.1, 0.2],
        }
    )
    assert sweeps.mark_best(table).best.tolist() == [True, False, False]


@pytest.mark.parametrize("stacked", ["no", "yes"])
def test_checkpoints_fall_at_the_same_steps_in_every_run_epoch_ends_included(stacked):
    """eval_every scores every run at its multiples and only there, also where one ends an
    epoch (a step the loop once skipped when epoch-end scoring was off)."""
    n = sweeps.load_data(SETUP).n_train
    batch = n // 2  # an epoch every 2 updates: every checkpoint below ends one
    cfg = Config(lrs=(0.01, 0.1), budget=Budget(steps=6), batch_size=batch, eval_every=2)
    r = run(SETUP, replace(cfg, stacked=stacked))
    ev = r.curves()
    ev = ev[ev.kind == "eval"]
    for _, part in ev.groupby("run_id"):
        assert sorted(part.step) == [2, 4, 6]
