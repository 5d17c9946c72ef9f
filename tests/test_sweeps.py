import threading
import time

import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError, LrbsError
from lrbs.core.loop import Budget
from lrbs.core.models import ModelSpec, build_model
from lrbs.experiments.sweeps import (
    LRSweepConfig,
    add_decade,
    best_lr,
    lr_sweep,
    refine,
    sweep_table,
)
from lrbs.runs.live import LiveRun


def factory(record):
    def make():
        m = build_model(ModelSpec("mlp", hidden=(16,)), (6,), 3, seed=11)
        record.append([p.detach().clone() for p in m.parameters()])
        return m

    return make


def test_every_rate_starts_from_the_same_weights_with_the_same_budget():
    data, starts = blobs(), []
    cfg = LRSweepConfig((0.001, 0.01, 0.1, 1.0), Budget(steps=25), batch_size=16)
    results = lr_sweep(factory(starts), data, cfg)
    assert len(results) == 4 and len(starts) == 4
    for other in starts[1:]:
        assert all(torch.equal(a, b) for a, b in zip(starts[0], other, strict=True))
    assert {r.steps for r in results} == {25}
    assert [r.run_id for r in results] == ["lr=0.001", "lr=0.01", "lr=0.1", "lr=1"]
    lrs = [{e.lr for e in r.events if e.kind == "train"} for r in results]
    assert lrs == [{0.001}, {0.01}, {0.1}, {1.0}]


def test_equal_time_budgets():
    cfg = LRSweepConfig((0.01, 0.1), Budget(seconds=0.3), batch_size=16)
    results = lr_sweep(factory([]), blobs(), cfg)
    for r in results:
        assert r.elapsed >= 0.3
        assert r.elapsed < 0.3 + 0.25  # one step past the budget at most, plus noise


def test_table_marks_the_best_and_shows_diverged_runs():
    cfg = LRSweepConfig((0.1, 1e4), Budget(steps=60), batch_size=16)
    results = lr_sweep(factory([]), blobs(), cfg)
    table = sweep_table(results, cfg.lrs)
    assert list(table.status) == ["finished", "diverged"]
    assert table.best.tolist() == [True, False]
    assert best_lr(table) == 0.1
    assert {"train_loss", "val_loss", "val_acc", "epochs", "steps", "seconds"} <= set(table.columns)


def test_stop_ends_the_whole_sweep():
    stop = threading.Event()
    cfg = LRSweepConfig((0.01, 0.1, 1.0), Budget(steps=10_000), batch_size=16)

    def on_event(e):
        if e.step >= 20:
            stop.set()

    results = lr_sweep(factory([]), blobs(), cfg, on_event=on_event, stop=stop)
    assert len(results) == 1 and results[0].status == "stopped"


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
    ],
)
def test_bad_grids(lrs, message):
    with pytest.raises(ConfigError, match=message):
        LRSweepConfig(lrs)


def test_grid_is_sorted_and_budget_checked():
    assert LRSweepConfig((1.0, 0.01)).lrs == (0.01, 1.0)
    with pytest.raises(ConfigError, match="budget"):
        LRSweepConfig((0.1,), Budget(seconds=0))


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


def test_sweep_table_columns_for_csv():
    cfg = LRSweepConfig((0.1,), Budget(steps=5), batch_size=16)
    table = sweep_table(lr_sweep(factory([]), blobs(), cfg), cfg.lrs)
    assert isinstance(table, pd.DataFrame) and len(table) == 1
