import json
import math
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.charts.schedules import per_epoch_chart, step_frame
from lrbs.cli import main
from lrbs.core.errors import ConfigError
from lrbs.core.loop import Event, OptimSpec, Progress
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup
from lrbs.experiments import bs_schedule as bss
from lrbs.runs.sink import Rows
from lrbs.runs.store import jsonable

CFG = bss.Config(epochs=6, milestones=(2, 4), factor=2.0, batch_size=16)


@pytest.fixture(autouse=True)
def blobs_data(monkeypatch):
    """run() loads the test blobs and builds make()'s model: a regime run takes milliseconds."""
    monkeypatch.setattr(bss, "load_tensors", lambda setup: blobs())
    monkeypatch.setattr(Setup, "fresh_model", lambda self, data, seed=None: make())


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
    cfg = bss.Config(epochs=3, milestones=(1, 2), factor=10, batch_size=50)
    assert bss.planned(cfg, "grow", 2, 240)[1] == 240


def run_and_events(cfg):
    result = bss.run(Setup(), cfg)
    steps = {r["run"]: r["steps"] for r in result.rows["runs"]}
    return result, steps, result.events()


def test_the_loop_uses_what_each_schedule_promises():
    result, steps, events = run_and_events(CFG)
    per = bss.per_epoch(events, 240, momentum=0.9)
    pd.testing.assert_frame_equal(per, result.per_epoch())
    for regime in ("decay", "grow", "hybrid", "constant"):
        rows = per[per.run_id == regime].sort_values("epoch")
        expected = [bss.planned(CFG, regime, e, 240) for e in range(6)]
        assert rows.lr.tolist() == pytest.approx([lr for lr, _ in expected]), regime
        assert rows.batch_size.tolist() == [b for _, b in expected], regime
        # updates = sum over epochs of ceil(N / B)
        assert steps[regime] == sum(math.ceil(240 / b) for _, b in expected)
    grow = per[per.run_id == "grow"]
    decay = per[per.run_id == "decay"]
    np.testing.assert_allclose(grow.noise_scale.values, decay.noise_scale.values)


def test_every_regime_starts_from_the_same_weights():
    first_losses = {}
    _, _, events = run_and_events(CFG)
    for regime in CFG.regimes:
        ev = events[(events.run_id == regime) & (events.kind == "eval")]
        first_losses[regime] = ev.val_loss.iloc[0]  # scored before any update
    assert len(set(first_losses.values())) == 1


def plateau_events(losses):
    return [
        Event(
            run_id="p",
            kind="eval",
            step=0,
            epoch=float(i + 1),
            samples=0,
            elapsed=0.0,
            lr=0.1,
            batch_size=16,
            val_loss=v,
        )
        for i, v in enumerate(losses)
    ]


def test_plateau_grows_the_batch_then_falls_back_to_lr_reduction():
    cfg = bss.Config(epochs=20, milestones=(), factor=2, batch_size=10, patience=2)
    reports = []
    regime = bss.PlateauRegime(cfg, n_train=100, report=reports.append)  # N/10 = 10: 20 passes
    opt = torch.optim.SGD(make().parameters(), lr=0.1)
    regime.make_scheduler(opt)
    for ev in plateau_events([1.0, 1.0, 1.0]):
        regime.on_epoch_end(Progress(epoch=ev.epoch), ev, opt)
    assert regime.batch == 10 and regime.switched_at == 3
    assert reports == [{"epoch": 3, "action": "switch", "batch_size": 10}]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for ev in plateau_events([1.0, 1.0, 1.0, 1.0]):
        regime.on_epoch_end(Progress(epoch=ev.epoch), ev, opt)
    assert opt.param_groups[0]["lr"] < 0.1  # ReduceLROnPlateau took over


def test_plateau_grows_while_the_batch_stays_under_n_over_10():
    cfg = bss.Config(epochs=20, milestones=(), factor=2, batch_size=10, patience=2)
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
    result, _, _ = run_and_events(CFG)
    table, verdict = result.table(), result.verdict()
    assert table.set_index("regime").loc["decay", "updates_vs_decay"] == 1.0
    assert "updates instead of" in verdict
    assert "not judged: one seed: run repeats to judge" in verdict
    assert table.set_index("regime").loc["grow", "updates_vs_decay"] < 1
    assert "seconds_vs_decay" not in table  # wall-clock times of regimes run in turn
    assert bss.TIMES_NOTE in result.notes()


def runs_rows(grow, decay, grow_steps=48, decay_steps=480):
    rows = [
        {
            "run": f"{r} seed {i}",
            "regime": r,
            "seed": i,
            "status": "finished",
            "val_loss": v,
            "steps": steps,
            "seconds": 1.0,
        }
        for r, losses, steps in (("decay", decay, decay_steps), ("grow", grow, grow_steps))
        for i, v in enumerate(losses)
    ]
    return rows


@pytest.mark.parametrize(
    "grow, decay, grow_steps, expected",
    [
        # gap 0.003; noise 2 * sqrt(0.01²/2 + 0.01²/2) = 0.02: within noise, fewer updates
        ([0.503, 0.493], [0.50, 0.49], 48, "reproduces the paper's claim"),
        ([0.70, 0.71], [0.50, 0.51], 48, "does not reproduce"),  # gap 0.2 >> noise 0.014
        ([0.30, 0.31], [0.50, 0.51], 48, "better than the claim"),
        ([0.503, 0.493], [0.50, 0.49], 480, "did not save updates"),
    ],
)
def test_the_claim_is_judged_against_the_noise_over_seeds(grow, decay, grow_steps, expected):
    table, verdict = bss.summary_table(runs_rows(grow, decay, grow_steps))
    assert expected in verdict
    row = table.set_index("regime").loc["grow"]
    assert row.repeats == 2 and row.val_loss == pytest.approx(sum(grow) / 2)
    assert row.val_loss_std == pytest.approx(abs(grow[0] - grow[1]) / 2**0.5)


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
        bss.Config(**kwargs)


def test_batch_larger_than_data():
    with pytest.raises(ConfigError, match="larger than the training set"):
        bss.run(Setup(), bss.Config(batch_size=1000))


# ------------------------------------------------------------------ the experiment shape


def test_config_is_keyword_only_with_momentum_by_default():
    with pytest.raises(TypeError):
        bss.Config(("decay",), 6)  # positional: refused
    cfg = bss.Config()
    assert cfg.optim == OptimSpec(name="momentum", lr=0.1, momentum=0.9)
    assert cfg.regimes == tuple(bss.REGIMES) and cfg.milestones == (5, 10)
    assert bss.Config(milestones=(), regimes=("plateau",)).milestones == ()


def test_run_streams_every_point_and_rebuilds_from_the_history():
    seen = Rows()
    cfg = bss.Config(regimes=("decay", "grow"), epochs=4, milestones=(2,), batch_size=16)
    result = bss.run(Setup(), cfg, seen)
    assert seen.rows == result.rows and seen.fraction == 1.0
    assert [r["run"] for r in seen.rows["runs"]] == ["decay", "grow"]
    assert seen.rows["info"] == [{"n_train": 240, "dataset": "mnist1d"}]
    rows = json.loads(json.dumps(jsonable(result.rows)))
    again = bss.Result.from_record(cfg, rows, {"status": "finished", "results": {}})
    pd.testing.assert_frame_equal(again.table(), result.table())
    pd.testing.assert_frame_equal(again.per_epoch(), result.per_epoch())
    assert again.summary() == result.summary()
    assert list(result.tables()) == ["curves", "table", "per_epoch"]


def test_a_stop_ends_the_series_and_keeps_what_ran():
    stop = threading.Event()

    class StopAfterFirst(Rows):
        def emit(self, channel, row):
            super().emit(channel, row)
            if channel == "runs":
                stop.set()

    result = bss.run(Setup(), CFG, StopAfterFirst(), stop)
    assert result.status == "stopped"
    assert list(result.table().regime) == ["decay"]
    assert "Stopped before every regime ran" in result.verdict()


def test_milestone_steps_are_drawn_where_the_milestone_is():
    """Issue 16: milestones 2 and 4 change the lr and batch at x = 2 and 4 (epochs done), not
    at 3 and 5; every run's steps reach the end of the run."""
    result, _, _ = run_and_events(CFG)
    steps = step_frame(result.per_epoch(), "lr")
    decay = steps[steps.run_id == "decay"].sort_values("x")
    changes = decay.x[decay.lr.diff().fillna(0) != 0].tolist()
    assert changes == [2.0, 4.0] and decay.x.max() == 6.0
    grow = step_frame(result.per_epoch(), "batch_size")
    grow = grow[grow.run_id == "grow"].sort_values("x")
    assert grow.x[grow.batch_size.diff().fillna(0) != 0].tolist() == [2.0, 4.0]
    plan = bss.plan(CFG, 240)
    assert plan[(plan.regime == "decay") & (plan.start == 2)].lr.iloc[0] == pytest.approx(0.05)


def test_the_small_charts_have_legends():
    result, _, _ = run_and_events(CFG)
    for y in ("lr", "batch_size", "noise_scale"):
        spec = per_epoch_chart(result.per_epoch(), y, y, list(CFG.regimes)).to_dict()
        assert spec["encoding"]["color"]["legend"] is not None
        assert spec["mark"]["interpolate"] == "step-after"


def test_a_plateau_regime_that_cannot_grow_says_so():
    cfg = bss.Config(batch_size=128, factor=5)  # 640 > N/10 = 400
    note = cfg.plateau_cap(4000)
    assert "cannot grow the batch" in note and "640" in note and "400" in note
    assert bss.Config(batch_size=16, factor=2).plateau_cap(4000) is None
    assert bss.Config(regimes=("decay",), batch_size=128).plateau_cap(4000) is None
    cfg = bss.Config(regimes=("plateau",), epochs=6, milestones=(), batch_size=16, factor=5)
    result = bss.run(Setup(), cfg)  # N = 240: 80 > 24
    assert any("cannot grow the batch" in n for n in result.notes())
    assert result.summary()["notes"] == result.notes()


def test_the_plateau_notes_never_contradict_each_other():
    """The reported contradiction: "'plateau' cannot grow the batch here" beside "'plateau'
    reached its batch cap N/10 after epoch 10" (which says it grew to the cap)."""
    cfg = bss.Config(regimes=("plateau",), epochs=12, milestones=(), batch_size=128, factor=5)
    rows = {
        "info": [{"n_train": 1438}],
        "plateau": [{"run": "plateau", "epoch": 10, "action": "switch", "batch_size": 128}],
    }
    notes = bss.Result(cfg, rows).notes()
    assert notes[0].startswith("'plateau' cannot grow the batch here: its next batch 128 × 5")
    assert notes[1] == (
        "'plateau': the validation loss stalled after epoch 10 and its batch could not grow "
        "(128 × 5 = 640 is above its cap N/10 = 143), so from then on it reduces the LR on "
        "plateaus."
    )
    assert not any("reached its batch cap" in n for n in notes)
    # a regime that grew first says so, and no note says it cannot grow
    small = bss.Config(regimes=("plateau",), epochs=12, milestones=(), batch_size=16, factor=5)
    grew = {
        "info": [{"n_train": 1438}],
        "plateau": [
            {"run": "plateau", "epoch": 3, "action": "grow", "batch_size": 80},
            {"run": "plateau", "epoch": 6, "action": "switch", "batch_size": 80},
        ],
    }
    notes = bss.Result(small, grew).notes()
    assert notes[0] == "'plateau' grew the batch to 80 after epoch 3."
    assert "its batch, grown to 80, could grow no further (80 × 5 = 400" in notes[1]
    assert not any("cannot grow" in n for n in notes)


def test_the_cli_json_keys_and_empty_milestones(capsys):
    args = ["bs-schedule", "--epochs", "3", "--regimes", "decay", "grow", "--milestones", "1"]
    assert main([*args, "--batch-size", "16", "--json", "--no-store"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"dataset", "n_train", "verdict", "regimes", "status"} <= set(figures)
    assert {"regime", "updates", "val_loss", "updates_vs_decay"} <= set(figures["regimes"][0])
    args = ["bs-schedule", "--epochs", "2", "--regimes", "plateau", "--milestones"]
    assert main([*args, "--batch-size", "16", "--json", "--no-store"]) == 0


def test_a_diverged_regime_is_shown_as_diverged_and_judges_nothing():
    cfg = bss.Config(
        regimes=("decay", "grow"),
        epochs=2,
        milestones=(1,),
        batch_size=16,
        optim=OptimSpec("sgd", 1e5),
    )
    result = bss.run(Setup(), cfg)
    table = result.table()
    assert set(table.status) == {"diverged"}
    assert "reproduces" not in result.verdict()
