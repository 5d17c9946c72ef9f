"""lrbs under torchrun: a 2-process DDP job on gloo (tests/ddp_worker.py, one launch for all
of it) checks the DDP noise tap against the two-batch NoiseMeter on the same samples, the
monitor's one run and equal summaries, find_lr's equal suggestions and restored state when
one rank's loss runs away (or turns NaN) first, and the memory probe's agreed batch; then
examples/monitor_torchrun.py under torchrun."""

import json
import re
import socket
import subprocess
import sys

import pytest
import torch
from support import ROOT
from torch import nn

from lrbs.core.errors import ConfigError
from lrbs.runs.store import RunStore

LAUNCH_TIMEOUT = 180  # a hang (a rank left in an all-reduce) fails the test instead


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script, *args, env_db=None, cwd=ROOT) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if env_db is not None:
        env["LRBS_DB"] = str(env_db)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *map(str, args),
    ]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the torchrun job hung (no end after {LAUNCH_TIMEOUT} s): {exc.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    db = out / "runs.db"
    torchrun(ROOT / "tests" / "ddp_worker.py", out, db)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks, db


def test_the_ddp_tap_is_the_two_batch_estimator_on_the_same_samples(job):
    ranks, _ = job
    for r in ranks:
        m = r["monitor"]
        assert m["auto_tap"] == "DDPNoiseTap"  # lrbs.monitor chose it for the DDP model
        assert m["sizes"] == [16, 32]  # one rank's batch, both ranks' batch
        # every step: (|G|^2, tr(Sigma)) from the all-reduce = NoiseMeter's, this rank's batch
        # small and the union big, averaged over the ranks
        assert m["max_rel_error"] < 1e-9
        assert m["summary"]["b_simple"] == pytest.approx(m["oracle_b_simple"], rel=1e-9)
        first = m["first_step"]
        assert first["ddp_b_simple"] == pytest.approx(first["two_batch_b_simple"], rel=1e-9)


def test_the_monitor_writes_one_run_and_every_rank_has_the_same_summary(job):
    ranks, db = job
    s0, s1 = (r["monitor"]["summary"] for r in ranks)
    assert [r["monitor"]["rank"] for r in ranks] == [0, 1]
    assert s0 == s1  # every key but "rank": the loss is both ranks' mean
    assert s0["world"] == 2 and s0["steps"] == 40 and s0["batch"] == 32
    assert s0["samples"] == 40 * 32 and s0["status"] == "finished"
    with RunStore(db) as store:
        runs = store.runs()
        assert len(runs) == 1  # rank 0 wrote, rank 1 did not
        run = store.run(s0["run_id"])
        assert run["kind"] == "monitor" and run["status"] == "finished"
        steps = store.points(s0["run_id"], "steps")
    assert len(steps) == 40 and set(steps["batch"]) == {32}
    assert float(steps["loss"].iloc[-1]) == pytest.approx(s0["loss"])


@pytest.mark.parametrize("case", ["find_lr", "find_lr_nan"])
def test_find_lr_gives_every_rank_the_same_answer_and_restores_every_rank(job, case):
    a, b = (r[case] for r in job[0])
    assert a["suggestions"] and a["suggestions"] == b["suggestions"]
    assert a["summary_suggestions"] == a["suggestions"]
    assert a["losses"] == b["losses"]  # the loss followed is the ranks' mean
    assert (a["status"], a["iterations"]) == (b["status"], b["iterations"])
    assert a["status"] == "diverged" and a["iterations"] < 60
    for r in (a, b):
        assert r["weights_restored"] and r["optimizer_restored"] and r["rng_restored"]


def test_one_rank_diverging_first_stops_both_at_the_same_step(job):
    a, b = (r["find_lr"] for r in job[0])
    # each rank on its own loss would have stopped elsewhere (rank 1's inputs are 30 x larger)
    assert a["alone_iterations"] != b["alone_iterations"]
    assert a["iterations"] == b["iterations"]
    # rank 1's loss NaN from the test's 16th step: both stop there, no rank left waiting
    a, b = (r["find_lr_nan"] for r in job[0])
    assert a["iterations"] == b["iterations"] == 16
    assert "nan" in a["message"]


def test_the_memory_probe_agrees_on_the_largest_batch_that_fits_every_rank(job):
    a, b = (r["probe"] for r in job[0])
    assert a == b and a["largest"] == 40  # rank 0 fits 64, rank 1 only 40


def test_the_tap_refuses_a_model_that_is_not_ddp(job):
    assert "DistributedDataParallel" in job[0][0]["bad_tap"]
    from lrbs.monitor.ddp import DDPNoiseTap

    with pytest.raises(ConfigError, match="DistributedDataParallel"):
        DDPNoiseTap(nn.Linear(2, 1))


def test_find_lr_on_a_ddp_model_refuses_settings_it_cannot_honour():
    from lrbs.methods import distributed

    with pytest.raises(ConfigError, match="DistributedDataParallel"):
        distributed.find_lr(nn.Linear(2, 1), [])


def test_the_torchrun_example_runs(tmp_path):
    db = tmp_path / "runs.db"
    proc = torchrun(ROOT / "examples" / "monitor_torchrun.py", "--epochs", "1", env_db=db)
    found = dict(re.findall(r"rank (\d) summary: (\{.*\})", proc.stdout))
    assert set(found) == {"0", "1"}, proc.stdout[-2000:] + proc.stderr[-2000:]
    s0, s1 = (json.loads(found[r]) for r in ("0", "1"))
    assert s0.pop("rank") == 0 and s1.pop("rank") == 1 and s0 == s1
    assert s0["status"] == "finished" and s0["steps"] > 0 and s0["noise_readings"] > 0
    with RunStore(db) as store:
        runs = store.runs()
    assert len(runs) == 1 and runs.iloc[0]["kind"] == "monitor"
    assert torch.isfinite(torch.tensor(s0["b_simple"]))
