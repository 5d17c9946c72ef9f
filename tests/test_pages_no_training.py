"""Pages never train in the web process: with every way to train made to fail in the test's
own process (where AppTest runs the page), the pages' seeding buttons still fill their
settings, from jobs that ran in the worker processes, and with the figures the engine gives
when it runs the same seeding in-process."""

import sys

import pytest
import torch
import torch._dynamo  # noqa: F401  (imported before torch.autograd is patched: it records it)
from test_pages import open_page

from lrbs.core import loop
from lrbs.core.loop import OptimSpec
from lrbs.experiments import registry
from lrbs.runs.experiment import setup_of
from lrbs.runs.store import RunStore


class TrainedHere(AssertionError):
    pass


def no_training_here(monkeypatch):
    """Every gradient, and the training loop wherever it was imported, fail in this process."""

    def refuse(*args, **kwargs):
        raise TrainedHere("a page trained in the web process")

    def refuse_grad(*args, **kwargs):  # another function: torch keeps a rule per function
        raise TrainedHere("a page took a gradient in the web process")

    registry()  # every experiment imported now, so that each one's `train` is patched below
    for name, module in list(sys.modules.items()):
        if name.startswith("lrbs") and getattr(module, "train", None) is loop.train:
            monkeypatch.setattr(module, "train", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "grad", refuse_grad)


def finish(at, key):
    jobs = at.session_state[key]["jobs"]
    for _, job in jobs:
        assert job.join(120), "a quick job did not finish"
    at.run()
    assert not at.exception, at.exception
    return [job for _, job in jobs]


def setup_of_run(job):
    with RunStore(job.db) as store:
        return setup_of(store.run(job.run_id)["config"])


def test_schedules_quick_range_test_runs_as_a_job(monkeypatch):
    from lrbs.core.setup import load_tensors
    from lrbs.experiments import schedules as sch

    with monkeypatch.context() as m:
        no_training_here(m)
        at = open_page("pages/schedules.py")
        at.selectbox(key="s_dataset").set_value("digits").run()
        at.button(key="ls_quick_rt").click().run()
        assert not at.exception, at.exception
        (job,) = finish(at, "ls_quick_rt_job")
        assert any("From a quick range test" in s.value for s in at.success)
        got = [at.number_input(key=k).value for k in ("ls_lr", "ls_base", "ls_max")]
    assert job.status == "finished"  # recorded in the run history as an lr-find run
    with RunStore(job.db) as store:
        info = store.run(job.run_id)
    assert info["kind"] == "lr-find"
    optim = info["config"]["config"]["optim"]
    cfg = sch.Config(
        batch_size=info["config"]["config"]["batch_size"],
        optim=OptimSpec(name=optim["name"], lr=0.1, momentum=optim["momentum"]),
    )
    setup = setup_of(info["config"])
    data = load_tensors(setup)
    want = sch.quick_range_test(setup.fresh_model(data), data, cfg)
    # the worker may train on other thread counts: the same ramp point, or its neighbour
    for g, w in zip(got, (want.lr, want.base_lr, want.max_lr), strict=True):
        assert g == pytest.approx(w, rel=0.2)


def test_autotune_seeding_runs_a_range_test_and_the_probe_as_jobs(monkeypatch):
    from lrbs.core.setup import load_tensors
    from lrbs.experiments import autotune as engine

    with monkeypatch.context() as m:
        no_training_here(m)
        at = open_page("pages/autotune.py")
        at.selectbox(key="s_dataset").set_value("digits").run()
        at.button(key="at_seed_probe").click().run()
        assert not at.exception, at.exception
        jobs = finish(at, "at_seed_probe_job")
        assert any("From a quick range test" in s.value for s in at.success)
        lo, hi = at.number_input(key="at_lr_min").value, at.number_input(key="at_lr_max").value
        batches = at.text_input(key="at_batches").value
    assert [j.status for j in jobs] == ["finished", "finished"]
    setup = setup_of_run(jobs[0])
    want, _ = engine.seed_space(setup, load_tensors(setup), engine.SearchSpace())
    assert batches == ", ".join(map(str, want.batches))
    assert lo == pytest.approx(want.lr_min, rel=0.2) and hi == pytest.approx(want.lr_max, rel=0.2)
    assert hi / lo == pytest.approx(10)  # a decade


def test_a_stopped_quick_job_fills_nothing(monkeypatch):
    with monkeypatch.context() as m:
        no_training_here(m)
        at = open_page("pages/schedules.py")
        at.selectbox(key="s_dataset").set_value("digits").run()
        before = at.number_input(key="ls_max").value
        at.button(key="ls_quick_rt").click().run()
        (job,) = [j for _, j in at.session_state["ls_quick_rt_job"]["jobs"]]
        job.stop()
        finish(at, "ls_quick_rt_job")
    if job.status == "finished":  # it ended before the stop reached it
        assert any("From a quick range test" in s.value for s in at.success)
    else:
        assert job.status in ("stopped", "cancelled")
        assert at.number_input(key="ls_max").value == before
        assert any("range test was stopped; nothing was filled in" in e.value for e in at.error)
