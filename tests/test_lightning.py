"""lrbs's monitor in a real Lightning Trainer (lrbs/monitor/lightning.py): on one CPU process
with gradient accumulation, and examples/monitor_lightning.py on one process and with the
"ddp" strategy on two CPU processes."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from support import ROOT, one_torch_thread
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrbs.core.errors import ConfigError
from lrbs.runs.store import RunStore

pl = pytest.importorskip(
    "lightning.pytorch",
    reason="Lightning is not installed (pip install lightning, listed in requirements.txt): "
    "THE LIGHTNING CALLBACK IS NOT TESTED",
)
from lrbs.monitor.lightning import LrbsCallback  # noqa: E402
from lrbs.monitor.taps import MicroBatchTap  # noqa: E402

single_thread = pytest.fixture(autouse=True)(one_torch_thread)


class Tiny(pl.LightningModule):
    """A linear classifier that keeps every training step's loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(6, 3)
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.losses.append(float(loss.detach()))
        return {"loss": loss}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int = 320, batch: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def trainer(callback, **options) -> "pl.Trainer":
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        **options,
    )


def test_the_callback_monitors_a_real_trainer_with_accumulation(tmp_path):
    db = tmp_path / "runs.db"
    callback = LrbsCallback(name="lightning test", db=str(db), every=5)
    module = Tiny()
    trainer(callback, max_steps=15, accumulate_grad_batches=2).fit(module, loader())
    s = callback.summary
    # 15 optimizer steps of two micro-batches of 8: the monitor's steps and batches
    assert s["status"] == "finished" and s["steps"] == 15
    assert s["batch"] == 16 and s["samples"] == 15 * 16
    assert len(module.losses) == 30
    means = [(a + b) / 2 for a, b in zip(module.losses[::2], module.losses[1::2], strict=True)]
    assert s["loss"] == pytest.approx(means[-1], rel=1e-6)  # the step's mean loss
    assert s["lr"] == [0.1]
    # the micro-batches were B_simple's small batch: a reading every step
    assert isinstance(callback.monitor._taps[0], MicroBatchTap) and s["noise_readings"] == 15
    with RunStore(db) as store:
        run = store.run(s["run_id"])
        steps = store.points(s["run_id"], "steps")
    assert (
        run["kind"] == "monitor"
        and run["status"] == "finished"
        and run["name"] == ("lightning test")
    )
    # the recorded losses: each step's mean over its micro-batches, as training_step gave them
    assert list(steps["loss"]) == pytest.approx(means, rel=1e-6)


def test_the_callback_refuses_a_sampler():
    with pytest.raises(ConfigError, match="sampler"):
        LrbsCallback(sampler=object())


def run_example(tmp_path, *args: str) -> tuple[dict, "object"]:
    db = tmp_path / "runs.db"
    env = {**os.environ, "LRBS_DB": str(db), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "examples" / "monitor_lightning.py"), "--epochs", "1", *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the Lightning example hung: {exc.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = {
        int(r): json.loads(s) for r, s in re.findall(r"rank (\d) summary: (\{.*\})", proc.stdout)
    }
    with RunStore(db) as store:
        runs = store.runs()
    return found, runs


def test_the_lightning_example_runs_on_one_process(tmp_path):
    found, runs = run_example(tmp_path)
    assert set(found) == {0}
    s = found[0]
    assert s["status"] == "finished" and s["steps"] == 1792 // 16 and s["noise_readings"] > 0
    assert len(runs) == 1 and runs.iloc[0]["kind"] == "monitor"


def test_the_lightning_example_runs_with_ddp_on_two_processes(tmp_path):
    found, runs = run_example(tmp_path, "--devices", "2")
    assert set(found) == {0, 1}
    s0, s1 = found[0], found[1]
    assert s0.pop("rank") == 0 and s1.pop("rank") == 1
    assert s0 == s1  # the same summary on both ranks
    # two ranks of 16: the batch is 32, B_simple read from DDP's all-reduce every step
    assert s0["world"] == 2 and s0["batch"] == 32 and s0["steps"] == 1792 // 32
    assert s0["noise_readings"] == s0["steps"]
    assert len(runs) == 1 and runs.iloc[0]["kind"] == "monitor"  # rank 0 alone recorded
