import math

import numpy as np
import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError
from lrbs.core.loop import EVENT_COLUMNS, Event, Progress
from lrbs.core.models import ModelSpec, build_model
from lrbs.experiments import bs_schedule as bss

CFG = bss.ScheduleConfig(
    epochs=6, milestones=(2, 4), factor=2.0, lr=0.1, batch=16, optimizer="momentum"
)


def make():
    return build_model(ModelSpec("mlp", hidden=(16,)), (6,), 3, seed=4)


@pytest.mark.parametrize(
    "regime, expected",
    [
        ("decay", [(0.1, 16)] * 2 + [(0.05, 16)] * 2 + [(0.025, 16)] * 2),
        ("grow", [(0.1, 16)] * 2 + [(0.1, 32)] * 2 + [(0.1, 64)] * 2),
        ("hybrid", [(0.1, 16)] * 2 + [(0.1, 32)] * 2 + [(0.05, 32)] * 2),
        ("constant", [(0.1, 16)] * 6),
    ],
)
def test_planned_lr_and_batch_per_epoch(regime, expected):
    got = [bss.planned(CFG, regime, e, 240) for e in range(6)]
    assert [(pytest.approx(lr), b) for lr, b in expected] == got


def test_growth_is_capped_at_the_training_set():
    cfg = bss.ScheduleConfig(epochs=3, milestones=(1, 2), factor=10, batch=50)
    assert bss.planned(cfg, "grow", 2, 240)[1] == 240


def run_and_events(cfg, data=None):
    data = data or blobs()
    events = []
    results = bss.run_regimes(make, data, cfg, on_event=lambda e: events.append(e))
    return results, pd.DataFrame([e.as_dict() for e in events], columns=EVENT_COLUMNS)


def test_the_loop_uses_what_each_schedule_promises():
    results, events = run_and_events(CFG)
    per = bss.per_epoch(events, 240, momentum=0.9)
    for regime in ("decay", "grow", "hybrid", "constant"):
        rows = per[per.run_id == regime].sort_values("epoch")
        expected = [bss.planned(CFG, regime, e, 240) for e in range(6)]
        assert rows.lr.tolist() == pytest.approx([lr for lr, _ in expected]), regime
        assert rows.batch_size.tolist() == [b for _, b in expected], regime
        # updates = sum over epochs of ceil(N / B)
        assert results[regime].steps == sum(math.ceil(240 / b) for _, b in expected)
    grow = per[per.run_id == "grow"]
    decay = per[per.run_id == "decay"]
    np.testing.assert_allclose(grow.noise_scale.values, decay.noise_scale.values)


def test_every_regime_starts_from_the_same_weights():
    first_losses = {}
    results, events = run_and_events(CFG)
    for regime in CFG.regimes:
        ev = events[(events.run_id == regime) & (events.kind == "eval")]
        first_losses[regime] = ev.val_loss.iloc[0]  # scored before any update
    assert len(set(first_losses.values())) == 1


def plateau_events(losses):
    return [
        Event("p", "eval", 0, float(i + 1), 0, 0.0, 0.1, 16, val_loss=v)
        for i, v in enumerate(losses)
    ]


def test_plateau_grows_the_batch_then_falls_back_to_lr_reduction():
    cfg = bss.ScheduleConfig(epochs=20, milestones=(), factor=2, batch=10, patience=2, lr=0.1)
    regime = bss.PlateauRegime(cfg, n_train=100)  # N/10 = 10: 20 would pass it
    opt = torch.optim.SGD(make().parameters(), lr=0.1)
    regime.make_scheduler(opt)
    for ev in plateau_events([1.0, 1.0, 1.0]):
        regime.on_epoch_end(Progress(epoch=ev.epoch), ev, opt)
    assert regime.batch == 10 and regime.switched_at == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for ev in plateau_events([1.0, 1.0, 1.0, 1.0]):
        regime.on_epoch_end(Progress(epoch=ev.epoch), ev, opt)
    assert opt.param_groups[0]["lr"] < 0.1  # ReduceLROnPlateau took over


def test_plateau_grows_while_the_batch_stays_under_n_over_10():
    cfg = bss.ScheduleConfig(epochs=20, milestones=(), factor=2, batch=10, patience=2)
    regime = bss.PlateauRegime(cfg, n_train=1000)  # N/10 = 100
    opt = torch.optim.SGD(make().parameters(), lr=0.1)
    regime.make_scheduler(opt)
    sizes = []
    for ev in plateau_events([1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]):
        regime.on_epoch_end(Progress(epoch=ev.epoch), ev, opt)
        sizes.append(regime.batch)
    assert sizes[:5] == [10, 10, 10, 20, 20]
    assert max(sizes) == 80 and regime.switched_at is not None


def test_summary_and_verdict():
    results, _ = run_and_events(CFG)
    table, verdict = bss.summary(results)
    assert table.set_index("regime").loc["decay", "updates_vs_decay"] == 1.0
    assert "updates instead of" in verdict
    assert ("reproduces the paper's claim" in verdict) or ("does not reproduce" in verdict)
    assert table.set_index("regime").loc["grow", "updates_vs_decay"] < 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(factor=1.0), "factor must be above 1"),
        (dict(factor=0.5), "factor must be above 1"),
        (dict(milestones=(10, 5)), "increasing order"),
        (dict(milestones=(5, 5)), "increasing order"),
        (dict(milestones=(0,)), "outside the run"),
        (dict(milestones=(15,)), "outside the run"),
        (dict(patience=0), "patience must be at least 1"),
        (dict(epochs=0), "epochs must be at least 1"),
        (dict(regimes=()), "at least one regime"),
        (dict(regimes=("decay", "warp")), "unknown regime"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        bss.ScheduleConfig(**kwargs)


def test_batch_larger_than_data():
    with pytest.raises(ConfigError, match="larger than the training set"):
        bss.run_regimes(make, blobs(), bss.ScheduleConfig(batch=1000))
