import math
import re
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget, OptimSpec
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup
from lrbs.experiments import bs_probe, bs_scaling_check, bs_sweep, registry, scaling
from lrbs.experiments import train as train_exp
from lrbs.runs.experiment import rebuild
from lrbs.runs.sink import Rows
from lrbs.runs.store import jsonable

SETUP = Setup(model=ModelSpec("mlp", hidden=(16,)), device="cpu")


def make(seed):
    return build_model(ModelSpec("mlp", hidden=(16,)), (6,), 3, seed)


@pytest.fixture
def on_blobs(monkeypatch):
    """The experiments load the blobs (240 training samples) instead of the setup's data."""
    for module in (bs_sweep, bs_scaling_check, bs_probe, train_exp):
        monkeypatch.setattr(module, "load_tensors", lambda setup: blobs())


def from_history(module, result):
    """The result rebuilt the way a page or the CLI rebuilds it from the run history: the config
    and rows through JSON, every channel as the store gives it back."""
    import json

    stored = json.loads(json.dumps(jsonable({"config": {"config": result.config}})))
    rows = {
        ch: pd.DataFrame(json.loads(json.dumps(jsonable(r))))
        .dropna(axis=1, how="all")
        .to_dict("records")
        for ch, r in result.rows.items()
    }
    info = {"config": stored["config"], "status": result.status, "results": result.summary()}
    return rebuild(module, info, rows)


def test_the_batch_experiments_are_registered_and_the_helpers_module_is_not():
    found = registry()
    assert {"bs-sweep", "bs-scaling-check", "bs-probe", "train"} <= set(found)
    assert found["bs-sweep"] is bs_sweep and found["train"] is train_exp
    assert scaling not in found.values()


@pytest.mark.parametrize("rule, expected", [("fixed", 0.1), ("linear", 0.4), ("sqrt", 0.2)])
def test_scaling_rules(rule, expected):
    assert scaling.scaled_lr(0.1, 32, 128, rule) == pytest.approx(expected)


def test_warmup_ramps_linearly_then_holds():
    model = make(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.4)
    sched = scaling.warmup(0.4, 0.1, epochs=2, steps_per_epoch=5)(opt)
    seen = []
    for _ in range(14):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 + 0.3 * min(1, i / 10) for i in range(14)]
    np.testing.assert_allclose(seen, expected)


def train_lrs(result, run):
    ev = result.events()
    return list(ev[(ev.run_id == run) & (ev.kind == "train")].lr)


def test_warmup_is_applied_in_the_sweep(on_blobs):
    cfg = bs_sweep.Config(
        batch_sizes=(16, 64),
        budget=Budget(epochs=2),
        optim=OptimSpec("sgd", 0.05),
        scaling="linear",
        warmup_epochs=1,
        log_every=1,
    )
    result = bs_sweep.run(SETUP, cfg)
    assert set(train_lrs(result, "B=16")) == {0.05}
    lrs = train_lrs(result, "B=64")
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.2)
    assert lrs == sorted(lrs)


def test_noise_scale():
    assert scaling.noise_scale(0.1, 60000, 128) == pytest.approx(0.1 * 60000 / 128)
    assert scaling.noise_scale(0.1, 60000, 128, momentum=0.9) == pytest.approx(60000 / 128)


def test_full_means_the_whole_training_set():
    assert scaling.resolve_batches((64, "full", 8), 240) == (8, 64, 240)
    assert scaling.batches_from_text("64, 128 FULL") == (64, 128, "full")
    # one spelling, so a page's list and the CLI's are the same config
    assert bs_sweep.Config(batch_sizes=(64.0, "Full")).batch_sizes == (64, "full")


@pytest.mark.parametrize(
    "values, message",
    [
        ((0,), "at least 1"),
        ((-8,), "at least 1"),
        ((500,), "larger than the training set"),
        ((64, 64), "repeat 64"),
        ((64, "full", 240), "repeat 240"),
        ((2.5,), "whole number"),
        (("big",), "not a number"),
        ((), "empty"),
    ],
)
def test_bad_batch_lists(values, message):
    with pytest.raises(ConfigError, match=message):
        scaling.resolve_batches(values, 240)


@pytest.mark.parametrize(
    "values, message",
    [((0,), "at least 1"), ((64, 64), "repeat 64"), ((2.5,), "whole number"), ((), "empty")],
)
def test_bad_batch_lists_are_refused_by_the_config(values, message):
    with pytest.raises(ConfigError, match=message):
        bs_sweep.Config(batch_sizes=values)


def test_bad_budget_scaled_rate_and_settings():
    with pytest.raises(ConfigError, match="budget"):
        bs_sweep.Config(budget=Budget(seconds=0))
    cfg = bs_sweep.Config(batch_sizes=(1, 240), optim=OptimSpec("sgd", 1e4), scaling="linear")
    with pytest.raises(ConfigError, match="absurdly large"):
        cfg.plan(240)
    with pytest.raises(ConfigError, match="scaling rule: unknown value 'cubic'"):
        bs_sweep.Config(scaling="cubic")
    with pytest.raises(ConfigError, match="repeats must be at most 10"):
        bs_sweep.Config(repeats=11)
    with pytest.raises(ConfigError, match="warmup epochs must be at least 0"):
        bs_sweep.Config(warmup_epochs=-1)


def test_every_batch_starts_from_the_same_weights_and_budget(on_blobs, monkeypatch):
    starts = []
    fresh = Setup.fresh_model

    def recording(self, data, seed=None):
        m = fresh(self, data, seed)
        starts.append([p.detach().clone() for p in m.parameters()])
        return m

    monkeypatch.setattr(Setup, "fresh_model", recording)
    cfg = bs_sweep.Config(batch_sizes=(16, 32, "full"), budget=Budget(steps=7))
    result = bs_sweep.run(SETUP, cfg)
    runs = result.run_rows()
    assert list(runs.batch) == [16, 32, 240]
    assert list(runs.run) == ["B=16", "B=32", "B=240 (full)"]
    assert set(runs.updates) == {7}
    assert len(starts) == 3
    for other in starts[1:]:
        assert all(torch.equal(a, b) for a, b in zip(starts[0], other, strict=True))


def test_epoch_budget_counts_updates_per_batch(on_blobs):
    cfg = bs_sweep.Config(batch_sizes=(16, 50, "full"), budget=Budget(epochs=2))
    runs = bs_sweep.run(SETUP, cfg).run_rows()
    assert list(runs.updates) == [2 * 15, 2 * 5, 2]
    assert all(e == pytest.approx(2) for e in runs.epochs)


def test_sweep_streams_every_point_and_progress_as_it_goes(on_blobs):
    seen = []

    class Watch(Rows):
        def emit(self, channel, row):
            super().emit(channel, row)
            seen.append((channel, len(self.rows.get("runs", []))))

        def progress(self, fraction, text=""):
            seen.append(("progress", fraction))

    cfg = bs_sweep.Config(batch_sizes=(16, 64), budget=Budget(steps=10))
    sink = Watch()
    result = bs_sweep.run(SETUP, cfg, sink)
    # events of the first run arrive before its "runs" row, those of the second after it
    first_runs_row = seen.index(("runs", 1))
    assert any(c == "events" for c, _ in seen[:first_runs_row])
    assert any(c == "events" for c, _ in seen[first_runs_row + 1 :])
    fractions = [f for c, f in seen if c == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sink.rows["events"] == result.rows["events"]


def test_repeats_table_and_summary(on_blobs):
    cfg = bs_sweep.Config(batch_sizes=(16, 64), budget=Budget(steps=10), repeats=3)
    result = bs_sweep.run(SETUP, cfg)
    rows = result.run_rows()
    assert list(zip(rows.batch, rows.seed, strict=True)) == [
        (16, 0),
        (16, 1),
        (16, 2),
        (64, 0),
        (64, 1),
        (64, 2),
    ]
    assert rows.run.iloc[1] == "B=16 seed 1"
    table = result.table()
    assert list(table.batch) == [16, 64] and set(table.repeats) == {3}
    assert "val_loss_std" in table
    first = rows[rows.batch == 16]
    assert table.val_loss[0] == pytest.approx(first.val_loss.mean())
    assert table.gap[0] == pytest.approx((first.val_loss - first.train_loss).mean())
    assert table.noise_scale[0] == pytest.approx(0.1 * 240 / 16)
    out = result.summary()
    assert {"dataset", "model", "budget", "scaling", "n_train", "runs"} <= set(out)
    assert out["n_train"] == 240 and out["budget"] == "10 steps"
    assert [r["batch"] for r in out["runs"]] == [16, 64]
    best = result.best()
    assert best["val_loss"] == table.val_loss.min()
    assert f"batch {int(best['batch'])}" in result.verdict()
    assert list(result.tables()) == ["curves", "table"]
    assert set(result.tables()["curves"].run_id) == set(rows.run)


def test_sweep_result_is_rebuilt_from_the_history(on_blobs):
    cfg = bs_sweep.Config(batch_sizes=(16, "full"), budget=Budget(steps=5), repeats=2)
    live = bs_sweep.run(SETUP, cfg)
    back = from_history(bs_sweep, live)
    assert back.config == cfg
    pd.testing.assert_frame_equal(back.table(), live.table(), check_dtype=False)
    assert jsonable(back.summary()) == jsonable(live.summary())  # NaN: null in JSON


def test_a_stop_ends_the_sweep_and_keeps_what_ran(on_blobs):
    stop = threading.Event()

    class StopAfterFirst(Rows):
        def emit(self, channel, row):
            super().emit(channel, row)
            if channel == "runs":
                stop.set()

    cfg = bs_sweep.Config(batch_sizes=(16, 32, 64), budget=Budget(steps=5))
    result = bs_sweep.run(SETUP, cfg, StopAfterFirst(), stop)
    assert result.status == "stopped"
    assert list(result.table().batch) == [16]


def test_a_diverged_batch_is_a_result(on_blobs):
    cfg = bs_sweep.Config(
        batch_sizes=(16, 64), budget=Budget(steps=50), optim=OptimSpec("sgd", 1e4)
    )
    result = bs_sweep.run(SETUP, cfg)
    assert result.status == "finished"
    assert set(result.table().status) == {"diverged"}
    assert result.best() is None
    assert result.verdict() == (
        "No batch size finished its budget with a validation loss, so none is named: "
        "B=16 diverged; B=64 diverged."
    )


def test_a_run_stopped_mid_budget_is_not_compared_and_is_named(on_blobs):
    """The reported bug: after Stop, the verdict named a batch that ran 4.6 of its 25 s."""
    stop = threading.Event()

    class StopInSecond(Rows):
        def emit(self, channel, row):
            super().emit(channel, row)
            if channel == "events" and row["run_id"] == "B=32" and row["step"] >= 10:
                stop.set()

    cfg = bs_sweep.Config(batch_sizes=(16, 32, 64), budget=Budget(steps=40), log_every=5)
    result = bs_sweep.run(SETUP, cfg, StopInSecond(), stop)
    assert dict(zip(result.table().batch, result.table().status, strict=True)) == {
        16: "finished",
        32: "stopped",
    }
    assert list(result.compared().batch) == [16] and result.best()["batch"] == 16
    verdict = result.verdict()
    assert "Lowest: batch 16" in verdict and "batch 32 (" not in verdict
    got = re.search(
        r"Not compared: B=32 stopped after (\d+) of 40 steps; B=64 did not run\.$", verdict
    )
    assert got and 10 <= int(got[1]) < 40, verdict


def sweep_rows(curves: dict[int, list[tuple[int, float]]], status=None) -> dict:
    """A sweep's streamed rows from hand-made evaluation curves: batch -> [(samples, val loss)]."""
    status = status or {}
    events, runs = [], []
    for b, points in curves.items():
        for samples, loss in points:
            events.append(
                dict(
                    run_id=f"B={b}",
                    kind="eval",
                    step=samples // b,
                    epoch=samples / 240,
                    samples=samples,
                    elapsed=0.0,
                    lr=0.1,
                    batch_size=b,
                    val_loss=loss,
                )
            )
        last = points[-1]
        runs.append(
            dict(
                run=f"B={b}",
                batch=b,
                seed=0,
                lr=0.1,
                status=status.get(b, "finished"),
                val_loss=last[1],
                val_acc=0.5,
                train_eval_loss=last[1],
                epochs=1.0,
                steps=last[0] // b,
                samples=last[0],
                seconds=1.0,
            )
        )
    return {"info": [{"n_train": 240}], "events": events, "runs": runs}


def test_verdict_says_when_best_or_equal_samples_rank_differently():
    # B=16 dips to 0.30 early and ends at 0.60; B=64 ends lowest (0.50) but never dips.
    curves = {16: [(960, 0.30), (1920, 0.60)], 64: [(960, 0.80), (3840, 0.50)]}
    cfg = bs_sweep.Config(batch_sizes=(16, 64), budget=Budget(steps=60))
    result = bs_sweep.Result(cfg, sweep_rows(curves))
    c = result.compared()
    assert list(c.batch) == [64, 16] and list(c.best) == [0.50, 0.30]
    assert c.attrs["equal_samples"] == 1920  # the most every compared run saw
    assert list(c.at_equal) == [0.80, 0.60]  # B=64's last evaluation by then: 960 samples
    verdict = result.verdict()
    assert verdict.startswith("Compared: the final validation loss at the end of the budget")
    assert "Lowest: batch 64 (val loss 0.5000" in verdict
    assert "lowest validation loss reached at any point" in verdict
    assert "16 < 64 against 64 < 16" in verdict and "batch 16 reached 0.3000" in verdict
    assert "At equal samples seen (1,920" in verdict and "batch 16 led with 0.6000" in verdict
    # when every ranking agrees, the verdict says only what it compares and the winner
    same = {16: [(960, 0.9), (1920, 0.85)], 64: [(960, 0.8), (3840, 0.5)]}
    plain = bs_sweep.Result(cfg, sweep_rows(same)).verdict()
    assert "Lowest: batch 64" in plain and "order" not in plain and "Not compared" not in plain


def test_a_diverged_batch_is_named_beside_the_winner():
    curves = {16: [(960, 0.4)], 64: [(960, 9.0)]}
    cfg = bs_sweep.Config(batch_sizes=(16, 64), budget=Budget(steps=60))
    verdict = bs_sweep.Result(cfg, sweep_rows(curves, {64: "diverged"})).verdict()
    assert "Lowest: batch 16" in verdict and verdict.endswith("Not compared: B=64 diverged.")


def test_scaling_check_plan_and_agreement(on_blobs):
    cfg = bs_scaling_check.Config(base_batch=8, optim=OptimSpec("sgd", 0.01), k_max=3, epochs=1)
    plan = cfg.plan(240)
    assert [(r, k, b) for r, k, b, _ in plan][:3] == [
        ("linear", 1, 8),
        ("linear", 2, 16),
        ("linear", 3, 24),
    ]
    assert [lr for r, _, _, lr in plan if r == "linear"] == pytest.approx([0.01, 0.02, 0.03])
    assert {lr for r, _, _, lr in plan if r == "fixed"} == {0.01}
    result = bs_scaling_check.run(SETUP, cfg)
    curves = result.curves()
    assert set(curves.rule) == {"linear", "fixed"} and set(curves.k) == {1, 2, 3}
    assert set(curves.status) == {"finished"}
    linear3 = curves[(curves.rule == "linear") & (curves.k == 3)]
    assert set(linear3.batch) == {24} and list(linear3.lr) == pytest.approx([0.03, 0.03])
    assert list(linear3.epoch) == [0, 1]  # scored at the start and after the epoch
    agree = result.agreement().set_index("rule")
    manual = curves[(curves.rule == "fixed") & (curves.epoch == 1)].val_loss
    assert agree.loc["fixed", "mean_spread"] == pytest.approx(manual.max() - manual.min())
    out = result.summary()
    assert {a["rule"] for a in out["agreement"]} == {"linear", "fixed"}
    assert len(out["final_val_loss"]) == 6
    assert "Under the linear rule" in result.verdict()
    back = from_history(bs_scaling_check, result)
    pd.testing.assert_frame_equal(back.curves(), curves, check_dtype=False)


def test_agreement_on_made_up_curves():
    curves = pd.DataFrame(
        {
            "rule": ["linear"] * 4 + ["fixed"] * 4,
            "k": [1, 2, 1, 2] * 2,
            "epoch": [1, 1, 2, 2] * 2,
            "val_loss": [1.0, 1.1, 0.5, 0.5, 1.0, 1.5, 0.5, 0.9],
        }
    )
    a = bs_scaling_check.agreement(curves).set_index("rule")
    assert a.loc["linear", "mean_spread"] == pytest.approx(0.05)
    assert a.loc["fixed", "mean_spread"] == pytest.approx(0.45)


def test_agreement_averages_the_seeds_and_measures_their_noise():
    # two seeds of each (rule, k) at epoch 1: the mean curves are those of the test above
    curves = pd.DataFrame(
        {
            "rule": ["linear"] * 4 + ["fixed"] * 4,
            "k": [1, 1, 2, 2] * 2,
            "seed": [0, 1] * 4,
            "epoch": [1] * 8,
            "val_loss": [0.9, 1.1, 1.0, 1.2, 0.9, 1.1, 1.4, 1.6],
        }
    )
    a = bs_scaling_check.agreement(curves).set_index("rule")
    assert a.loc["linear", "mean_spread"] == pytest.approx(0.1)  # 1.1 - 1.0
    assert a.loc["fixed", "mean_spread"] == pytest.approx(0.5)  # 1.5 - 1.0
    assert a.loc["linear", "seed_noise"] == pytest.approx(0.2 / 2**0.5)  # std of (x, x + 0.2)


def test_scaling_check_repeats_say_what_is_within_noise(on_blobs):
    cfg = bs_scaling_check.Config(
        base_batch=16, optim=OptimSpec("sgd", 0.01), k_max=2, epochs=1, repeats=2, seed=4
    )
    result = bs_scaling_check.run(SETUP, cfg)
    assert [r["run"] for r in result.rows["runs"]][:2] == ["linear k=1 seed 4", "linear k=1 seed 5"]
    assert set(result.curves().seed) == {4, 5}
    assert "Over 2 seeds one curve moves by" in result.verdict()
    single = bs_scaling_check.run(SETUP, replace(cfg, repeats=1))
    assert "one seed: run repeats to judge" in single.verdict()


def test_a_diverged_scaling_check_is_shown_as_diverged(on_blobs):
    cfg = bs_scaling_check.Config(base_batch=16, optim=OptimSpec("sgd", 1e5), k_max=2, epochs=1)
    result = bs_scaling_check.run(SETUP, cfg)
    assert set(result.curves().status) == {"diverged"}
    assert result.status == "finished"


def test_scaling_check_bad_input():
    with pytest.raises(ConfigError, match="K must be at least 2"):
        bs_scaling_check.Config(k_max=1)
    with pytest.raises(ConfigError, match="K must be at most 32"):
        bs_scaling_check.Config(k_max=33)
    with pytest.raises(ConfigError, match="epochs must be greater than 0"):
        bs_scaling_check.Config(epochs=0)
    with pytest.raises(ConfigError, match="larger than the training set"):
        bs_scaling_check.Config(base_batch=100, k_max=3).plan(240)


def test_probe_finds_the_boundary_exactly():
    limit = 1000
    r = bs_probe.largest_batch(lambda b: b <= limit, upper=10**6)
    assert r.largest == limit and r.hit_limit
    assert r.safe == 512  # a power of two at or below 90 % of 1000
    # doubling then bisection: about log2 twice, not a linear scan
    assert len(r.tried) <= 2 * math.ceil(math.log2(limit)) + 2
    r = bs_probe.largest_batch(lambda b: True, upper=240)
    assert (r.largest, r.safe, r.hit_limit) == (240, 240, False)


def test_probe_with_a_faked_out_of_memory_error():
    data = blobs()
    model = make(0)

    def oom_above_100(module, inputs):
        if inputs[0].shape[0] > 100:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    model.register_forward_pre_hook(oom_above_100)
    r = bs_probe.largest_batch(bs_probe.make_fits(model, data), upper=data.n_train)
    assert r.largest == 100 and r.hit_limit
    assert all(p.grad is None for p in model.parameters())


def test_probe_on_the_cpu_with_a_cap():
    data = blobs()
    model = make(0)
    need = {
        b: bs_probe.step_memory_bytes(model, data.x_train[:b], data.y_train[:b]) for b in (10, 20)
    }
    assert need[20] > need[10]  # activations grow with the batch
    per_sample = need[20] - need[10]
    cap = need[10] + 5 * per_sample // 10  # fits 15, not 16
    r = bs_probe.largest_batch(bs_probe.make_fits(model, data, cap_bytes=cap), upper=data.n_train)
    assert r.largest == 15


def test_probe_experiment_streams_each_try_and_says_what_it_found(on_blobs):
    data = blobs()
    need = bs_probe.step_memory_bytes(make(0), data.x_train[:20], data.y_train[:20], 1)
    cfg = bs_probe.Config(cap_mib=need / 2**20)
    result = bs_probe.run(SETUP, cfg)
    tried = result.tried()
    assert len(tried) == len(result.rows["tried"]) > 3
    assert result.memory_limited and 20 <= result.largest < 240
    out = result.summary()
    assert out["largest"] == result.largest and out["tried"] == len(tried)
    assert out["safe"] == 2 ** math.floor(math.log2(int(0.9 * out["largest"])))
    assert "power of two" in result.verdict() and "limited by memory" in result.verdict()
    assert jsonable(from_history(bs_probe, result).summary()) == jsonable(out)
    # no cap: the whole training set fits, and 240 is not called a power of two
    free = bs_probe.run(SETUP, bs_probe.Config())
    assert (free.largest, free.safe, free.memory_limited) == (240, 240, False)
    assert "power of two" not in free.verdict()
    assert "training set size (240)" in free.verdict()


def test_probe_stop_keeps_what_was_tried():
    stop = threading.Event()
    calls = []

    def fits(b):
        calls.append(b)
        if len(calls) == 3:
            stop.set()
        return b <= 1000

    r = bs_probe.largest_batch(fits, upper=10**6, stop=stop)
    assert r.stopped and len(r.tried) == 3 and r.largest == 4


def test_probe_bad_input():
    with pytest.raises(ConfigError, match="memory cap must be at least"):
        bs_probe.Config(cap_mib=0)
    with pytest.raises(ConfigError, match="optim states must be at least 0"):
        bs_probe.Config(optim_states=-1)


def test_step_memory_counts_saved_activations():
    model = torch.nn.Sequential(torch.nn.Linear(10, 50), torch.nn.ReLU(), torch.nn.Linear(50, 3))
    x, y = torch.randn(8, 10), torch.zeros(8, dtype=torch.long)
    small = bs_probe.step_memory_bytes(model, x, y, optim_states=0)
    big = bs_probe.step_memory_bytes(
        model, torch.randn(16, 10), torch.zeros(16, dtype=torch.long), 0
    )
    params = sum(p.numel() for p in model.parameters()) * 4
    assert small > 2 * params
    # doubling the batch adds at least the extra input and hidden activations
    assert big - small >= 8 * (10 + 50) * 4


def test_classes_per_batch():
    counts = np.array([900, 90, 10])
    table = scaling.classes_per_batch(counts, 100, ["a", "b", "c"])
    assert table.expected_per_batch.tolist() == pytest.approx([90, 9, 1])
    assert table.share.sum() == pytest.approx(1)
    assert "1 samples per batch" in scaling.smallest_class_warning(counts, 100)
    assert scaling.smallest_class_warning(counts, 1000) is None
    wide = scaling.classes_table(counts, [100, 1000], ["a", "b", "c"])
    assert list(wide.columns) == ["class", "B=100", "B=1000"]
    assert wide["B=1000"].tolist() == pytest.approx([900, 90, 10])


def test_train_experiment_streams_and_summarises(on_blobs):
    cfg = train_exp.Config(batch_size=32, budget=Budget(steps=13), optim=OptimSpec("sgd", 0.1))
    sink = Rows()
    result = train_exp.run(SETUP, cfg, sink)
    out = result.summary()
    keys = {"dataset", "model", "device", "status", "steps", "epochs", "samples", "elapsed"}
    keys |= {"final_loss", "val_loss", "val_acc", "train_eval_loss", "peak_memory", "gap"}
    assert keys | {"message"} <= set(out)
    assert out["status"] == "finished" and out["steps"] == 13
    assert out["samples"] == 7 * 32 + 16 + 5 * 32
    assert out["gap"] == pytest.approx(out["val_loss"] - out["train_eval_loss"])
    events = result.tables()["events"]
    assert events[events.kind == "train"].step.max() == 13
    assert sink.rows["events"] == result.rows["events"] and sink.fraction == 1.0
    assert jsonable(from_history(train_exp, result).summary()) == jsonable(out)


def test_train_experiment_diverges_as_a_result_and_stops(on_blobs):
    cfg = train_exp.Config(budget=Budget(steps=200), optim=OptimSpec("sgd", 1e4), batch_size=32)
    result = train_exp.run(SETUP, cfg)
    assert result.status == "diverged" and "loss" in result.summary()["message"]
    stop = threading.Event()
    stop.set()
    stopped = train_exp.run(SETUP, train_exp.Config(batch_size=32), stop=stop)
    assert stopped.status == "stopped"
    with pytest.raises(ConfigError, match="batch size must be at least 1"):
        train_exp.Config(batch_size=0)
