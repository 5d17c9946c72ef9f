"""Torch threads chosen by the machine's load, and the load recorded with time-budgeted runs.
No test here depends on the machine being idle: timings are compared side by side with wide
margins, or the load reading is injected."""

import json
import time

import pytest
import torch
from support import blobs, stored_rows

from lrbs.cli import main
from lrbs.core import machine, threads
from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup
from lrbs.experiments import train as train_exp
from lrbs.runs.experiment import execute, rebuild, summary_of
from lrbs.runs.store import RunStore, recorder

DIGITS = Setup(DataSpec("digits"), ModelSpec("logreg"))


@pytest.fixture
def two_threads():
    """torch at (up to) two threads for the test, and the process's setting put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    threads._cache.clear()
    threads._last[:] = [None, 0.0]
    yield
    torch.set_num_threads(before)
    threads._cache.clear()
    threads._last[:] = [None, 0.0]


@pytest.fixture
def busy_machine():
    """One spinning process per core (not this process's children), ended after the test."""
    pids = machine.spin(machine.cores(), seconds=20)
    time.sleep(0.2)
    yield pids
    machine.unspin(pids)


def _model(data):
    return build_model(ModelSpec("mlp", hidden=(16,)), data.input_shape, data.n_classes, 0)


def test_pick_threads_takes_the_fewest_within_ten_percent_and_restores_torch():
    before = torch.get_num_threads()
    half = {1: 0.004, 2: 0.002}  # a step that is twice as fast on two threads
    chosen, times = threads.pick_threads(
        lambda: time.sleep(half[min(2, torch.get_num_threads())]), 2, seconds=0.01
    )
    assert chosen == 2 and times[1] > 1.3 * times[2]
    assert torch.get_num_threads() == before
    same, _ = threads.pick_threads(lambda: time.sleep(0.002), 2, seconds=0.01)
    assert same == 1  # no faster on two: one


def test_a_compute_bound_step_gets_every_thread_untimed():
    calls = []
    chosen, _ = threads.pick_threads(lambda: calls.append(time.sleep(0.01)), 4, slow=0.005)
    assert chosen == 4 and len(calls) == 2  # a warm-up and one timed step on one thread


def test_free_cores_leave_what_others_use():
    cores = machine.cores()
    assert threads.free_cores(cores, other=0.0) == cores
    assert threads.free_cores(cores, other=cores + 3.0) == 1
    assert threads.free_cores(cores, other=0.0, in_process=cores) == 1
    assert threads.free_cores(1, other=0.0) == 1


def test_under_an_injected_load_a_run_takes_one_thread_untimed(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "other_load", lambda: 5.0)
    monkeypatch.setattr(threads, "pick_threads", lambda *a, **k: pytest.fail("timed"))
    data = blobs()
    with threads.using("auto"), threads.recording() as used:
        train(_model(data), data, TrainConfig(batch_size=16, budget=Budget(steps=5)))
    assert used == [1] and torch.get_num_threads() == 2  # and torch's setting is back


def test_beside_one_busy_process_per_core_the_choice_fits_the_free_cores(two_threads, busy_machine):
    if machine._busy_seconds() is None:
        pytest.skip("no /proc/stat here")
    data = blobs()
    chosen = threads.choose(_model(data), data, 16, OptimSpec())
    other = threads._last[1]
    assert other >= 1.0  # the spinners were seen
    assert chosen <= max(1, machine.cores() - len(busy_machine))


def test_timing_leaves_the_run_and_the_global_rng_as_they_were(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "other_load", lambda: 0.0)  # as if idle: the counts are timed
    monkeypatch.setattr(machine, "cores", lambda: 2)
    data = blobs()
    cfg = TrainConfig(batch_size=16, budget=Budget(steps=30), optim=OptimSpec("momentum", 0.1))
    model = _model(data)  # building a Linear draws from the global RNG; training must not
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    with threads.using("auto"), threads.recording() as used:
        auto = train(model, data, cfg)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert threads._cache, "the thread counts were timed"
    with threads.using(used[0]):
        fixed = train(_model(data), data, cfg)
    assert [e.loss for e in auto.events] == [e.loss for e in fixed.events]


def test_a_fixed_policy_and_a_bad_one(two_threads):
    data = blobs()
    with threads.using(1), threads.recording() as used:
        train(_model(data), data, TrainConfig(batch_size=16, budget=Budget(steps=3)))
    assert used == [1] and torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="threads must be"):
        threads.parse_policy("banana")


def test_bad_threads_flag_is_one_clear_line(capsys):
    code = main(["train", "--threads", "lots", "--steps", "1", "--no-store"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: threads must be") and "Traceback" not in err


def _cli_json(capsys, *args) -> dict:
    code = main(["train", "--dataset", "digits", "--model", "logreg", "--json", *args])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out.strip().splitlines()[-1])


def test_a_time_budget_beside_a_busy_machine_is_flagged(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "other_cores", lambda a, b: 7.5)  # the injected load
    figures = _cli_json(capsys, "--seconds", "0.3", "--db", str(tmp_path / "h.db"))
    m = figures["machine"]
    assert m["timed"] is True and m["other_cpu"] == 7.5 and m["threads"] >= 1
    assert m["cores"] == machine.cores() and m["seconds"] > 0
    assert figures["busy"] is True and "busy" in figures["busy_note"]
    with RunStore(tmp_path / "h.db") as store:  # the stored run carries the same
        stored = store.run(figures["run_id"])["results"]
    assert stored["busy"] is True and stored["machine"] == m


def test_a_budget_in_steps_is_never_flagged(capsys, monkeypatch):
    monkeypatch.setattr(machine, "other_cores", lambda a, b: 7.5)
    figures = _cli_json(capsys, "--steps", "5", "--no-store")
    assert figures["machine"]["timed"] is False
    assert figures["busy"] is False and figures["busy_note"] == ""


def test_an_idle_reading_is_not_busy():
    load = machine.Load(2, 1, 0.2, 0.1, 0.1, 3.0, timed=True)
    assert not load.busy and load.note() == ""
    assert machine.Load(2, 1, 0.6, None, None, 3.0, timed=True).busy  # > half the free core
    assert not machine.Load(2, 2, 0.4, None, None, 3.0, timed=True).busy
    assert machine.Load(2, 2, 0.6, None, None, 3.0, timed=True).busy


def test_has_time_budget_looks_inside_the_config():
    assert machine.has_time_budget(train_exp.Config(budget=Budget(seconds=2)))
    assert not machine.has_time_budget(train_exp.Config(budget=Budget(steps=2)))
    assert not machine.has_time_budget(None)


def test_the_load_round_trips_through_the_stored_run(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "other_cores", lambda a, b: 3.25)
    cfg = train_exp.Config(batch_size=32, budget=Budget(seconds=0.2))
    rec = recorder(train_exp.KIND, DIGITS, cfg, path=tmp_path / "h.db")
    rec.start()
    result = execute(train_exp, DIGITS, cfg, recorder=rec)
    assert result.busy and result.machine.other_cpu == 3.25
    info, rows = stored_rows(tmp_path / "h.db", rec.run_id)
    again = rebuild(train_exp, info, rows)
    assert again.machine == result.machine and again.busy
    assert summary_of(again)["busy_note"] == summary_of(result)["busy_note"]


def test_the_choice_is_cached_per_model_and_batch(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "other_load", lambda: 0.0)
    monkeypatch.setattr(machine, "cores", lambda: 2)
    calls = []

    def fake_pick(step, max_threads, **kw):
        calls.append(max_threads)
        return max_threads, {1: 1.0}  # as a compute-bound step: every free thread

    monkeypatch.setattr(threads, "pick_threads", fake_pick)
    data = blobs()
    model = _model(data)
    assert threads.choose(model, data, 16, OptimSpec()) == 2
    assert threads.choose(model, data, 16, OptimSpec()) == 2 and calls == [2]
    threads.choose(model, data, 32, OptimSpec())
    assert calls == [2, 2]  # another batch is timed anew


def test_a_page_says_when_its_time_comparison_ran_on_a_busy_machine():
    """The note every job page shows under a finished result with a wall-clock budget."""
    from streamlit.testing.v1 import AppTest

    def page(busy_cpu: float) -> None:
        from lrbs.core.machine import Load
        from lrbs.runs.experiment import Result
        from pages.common.job import busy_note

        load = Load(2, 1, busy_cpu, 2.0, 2.0, 3.0, timed=True)
        busy_note(Result(config=None, rows={}, machine=load))

    for cpu, shown in ((1.7, True), (0.1, False)):
        at = AppTest.from_function(page, args=(cpu,), default_timeout=60).run()
        assert not at.exception
        notes = [w.value for w in at.warning]
        assert bool(notes) == shown
        if shown:
            assert "The machine was busy" in notes[0] and "1.7 of its 2 cores" in notes[0]
