"""The instruments moved under the experiments: the noise meter's measuring run
(`lrbs.runs.instruments.measure_noise`), which noise-scale and the LR x batch map both run, and
the schedules (`lrbs.methods.schedules`), built from plain settings on a plain torch optimizer."""

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.loop import OptimSpec
from lrbs.core.models import ModelSpec
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments import lr_batch_map, noise_scale
from lrbs.methods import noise, schedules
from lrbs.runs.instruments import Part, measure_noise
from lrbs.runs.sink import Rows

DIGITS = Setup(DataSpec("digits"), ModelSpec("mlp", hidden=(8,)))
NOISE = noise.Config(batch_small=8, batch_big=64, every=5, batch_size=16, steps=20, seed=3)


def measured(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "measure_seconds"} for r in rows]


class Progress(Rows):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def progress(self, fraction: float, text: str = "") -> None:
        self.seen.append(fraction)


def test_the_measuring_run_streams_its_measurements_and_one_run_row():
    sink = Progress()
    r = measure_noise(DIGITS, load_tensors(DIGITS), NOISE, sink, share=0.25)
    assert r.status == "finished" and r.steps == NOISE.steps
    rows = sink.get("rows")
    assert [row["step"] for row in rows] == list(range(NOISE.every, NOISE.steps + 1, NOISE.every))
    assert all(math.isfinite(row["b_simple"]) for row in rows)
    (run,) = sink.get("runs")
    assert run["run"] == noise.MEASURE and run["phase"] == "measure" and run["dataset"] == "digits"
    assert max(sink.seen) == pytest.approx(0.25)  # the first quarter of a longer series


def test_noise_scale_and_the_map_measure_with_the_same_run():
    data = load_tensors(DIGITS)
    alone = Rows()
    measure_noise(DIGITS, data, NOISE, alone)
    cfg = noise_scale.Config(**{f: getattr(NOISE, f) for f in NOISE.__dataclass_fields__})
    exp = noise_scale.run(DIGITS, cfg)
    assert measured(exp.rows["rows"]) == measured(alone.get("rows"))
    # the map measures at its base batch and rate, between its smallest and largest batches
    mcfg = lr_batch_map.Config(base_lr=0.05, base_batch=16, noise_steps=20, seed=3)
    sink = Rows()
    lr_batch_map.measure_noise(DIGITS, data, mcfg, (8, 32, 64), sink, None)
    same = noise.Config(
        batch_small=8,
        batch_big=64,
        every=1,
        batch_size=16,
        optim=OptimSpec("sgd", 0.05),
        steps=20,
        seed=3,
    )
    by_hand = Rows()
    measure_noise(DIGITS, data, same, by_hand)
    assert sink.rows.keys() == {"noise"}
    assert measured(sink.get("noise")) == measured(by_hand.get("rows"))


def test_a_batch_past_the_data_is_said_before_training():
    data = load_tensors(DIGITS)
    big = noise.Config(batch_small=8, batch_big=data.n_train + 1, every=5, steps=5)
    sink = Rows()
    with pytest.raises(ConfigError, match="larger than the training set"):
        measure_noise(DIGITS, data, big, sink)
    assert not sink.rows


def test_a_part_reports_its_share_of_the_whole():
    sink = Progress()
    part = Part(sink, 0.5, 0.25)
    part.progress(0.0)
    part.progress(1.0)
    part.emit("x", {"a": 1})
    assert sink.seen == [0.5, 0.75] and sink.get("x") == [{"a": 1}]


@dataclass(frozen=True)
class Plain:
    """Schedule settings that are not the experiment's Config."""

    schedules: tuple[str, ...] = ("cosine", "step")
    epochs: int = 4
    batch_size: int = 10
    optim: OptimSpec = field(default_factory=lambda: OptimSpec("sgd", 0.3))
    base_lr: float = 0.01
    max_lr: float = 1.0
    floor: float = 0.1
    step_epochs: float = 1.0
    gamma: float = 0.5
    final_factor: float = 0.01
    warmup_epochs: float = 0.0
    restart_epochs: float = 1.0
    restart_mult: int = 1
    cycle_epochs: float = 1.0
    exp_range_end: float = 0.5
    onecycle_pct: float = 0.3
    onecycle_div: float = 25.0


def test_the_schedules_run_from_plain_settings_on_a_plain_optimizer():
    """Cosine to the floor and step decay against their formulas, on 100 examples in batches
    of 10 (10 updates an epoch), stepped by hand on a torch SGD."""
    s = Plain()
    spe = schedules.steps_per_epoch(100, s.batch_size)
    total = s.epochs * spe
    t = np.arange(total)
    lo = s.optim.lr * s.floor
    cosine = lo + (s.optim.lr - lo) * (1 + np.cos(np.pi * t / total)) / 2
    step = s.optim.lr * s.gamma ** (t // spe)
    for name, want in (("cosine", cosine), ("step", step)):
        opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=s.optim.lr)
        sched = schedules.build_scheduler(name, s, opt, spe)
        got = []
        for _ in range(total):
            got.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        np.testing.assert_allclose(got, want, rtol=1e-9)
    plan = schedules.preview(s, 100)
    np.testing.assert_allclose(plan[plan.schedule == "cosine"].lr, cosine, rtol=1e-9)
    assert schedules.build_scheduler("constant", s, opt, spe) is None
