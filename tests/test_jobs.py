"""Jobs in worker processes: the queue keeps order and capacity, a cancelled queued job never
starts, a running job stops from anywhere, a killed worker's job is 'interrupted' with its
points and the pool goes on."""

import os
import signal
import time

import pytest

from lrbs.core.data import DataSpec
from lrbs.core.loop import Budget
from lrbs.core.setup import Setup
from lrbs.experiments import train
from lrbs.runs.jobs import JobPool
from lrbs.runs.store import RunStore

SETUP = Setup(data=DataSpec(name="digits"))


def config(**budget):
    return train.Config(batch_size=32, budget=Budget(**budget))


def wait_for(db, run_id, statuses, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with RunStore(db) as store:
            status = store.status(run_id)
        if status in statuses:
            return status
        time.sleep(0.1)
    pytest.fail(f"run {run_id} still {status} after {timeout} s")


@pytest.fixture(scope="module")
def pool():
    p = JobPool(workers=1)
    yield p
    p.close()


def test_one_worker_runs_jobs_in_order_one_at_a_time(pool, tmp_path):
    db = str(tmp_path / "runs.db")
    ids = [pool.submit(db, train.KIND, SETUP, config(steps=60 + i)) for i in range(3)]
    with RunStore(db) as store:
        places = [store.queue_position(i) for i in ids]
    waiting = [p for p in places if p is not None]
    assert waiting == sorted(waiting) and len(set(waiting)) == len(waiting)
    assert places[-1] is not None, "with one worker the third job waits"
    for i in ids:
        assert wait_for(db, i, {"finished"}) == "finished"
    with RunStore(db) as store:
        runs = [store.run(i) for i in ids]
    starts = [r["started"] for r in runs]
    assert starts == sorted(starts), "jobs must start in the order they were queued"
    for a, b in zip(runs, runs[1:], strict=False):
        assert b["started"] >= a["ended"] - 1e-3, "one worker runs one job at a time"


def test_a_cancelled_queued_job_never_starts(pool, tmp_path):
    db = str(tmp_path / "runs.db")
    first = pool.submit(db, train.KIND, SETUP, config(seconds=3))
    queued = pool.submit(db, train.KIND, SETUP, config(steps=10))
    with RunStore(db) as store:
        assert store.queue_position(queued) == 0 or store.status(queued) == "queued"
        assert store.request_stop(queued) == "cancelled"
    wait_for(db, first, {"finished"})
    time.sleep(1.0)  # the worker has taken the cancelled one off the queue by now
    with RunStore(db) as store:
        assert store.status(queued) == "cancelled"
        assert store.points(queued).empty


def test_stop_from_anywhere_keeps_the_points(pool, tmp_path):
    db = str(tmp_path / "runs.db")
    run = pool.submit(db, train.KIND, SETUP, config(seconds=60))
    deadline = time.time() + 60
    while time.time() < deadline:
        with RunStore(db) as store:
            if not store.points(run).empty:
                store.request_stop(run)  # another process/tab: only the run id is needed
                break
        time.sleep(0.1)
    assert wait_for(db, run, {"stopped"}, timeout=30) == "stopped"
    with RunStore(db) as store:
        assert not store.points(run).empty


def test_a_killed_worker_leaves_an_interrupted_run_and_a_new_worker(tmp_path):
    db = str(tmp_path / "runs.db")
    pool = JobPool(workers=1)
    try:
        run = pool.submit(db, train.KIND, SETUP, config(seconds=60))
        deadline = time.time() + 60
        while time.time() < deadline:
            with RunStore(db) as store:
                if len(store.points(run)) >= 2:
                    break
            time.sleep(0.1)
        (victim,) = pool.pids()
        os.kill(victim, signal.SIGKILL)
        assert wait_for(db, run, {"interrupted"}, timeout=10) == "interrupted"
        with RunStore(db) as store:
            assert not store.points(run).empty
        after = pool.submit(db, train.KIND, SETUP, config(steps=20))
        assert wait_for(db, after, {"finished"}, timeout=60) == "finished"
        assert pool.pids() != [victim]
    finally:
        pool.close()
