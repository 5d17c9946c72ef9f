import math
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from support import blobs

from lrbs.core.errors import ConfigError
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup
from lrbs.experiments import lr_finder
from lrbs.experiments.lr_finder import (
    Config,
    RangeTestConfig,
    minimum,
    range_from_selection,
    range_test,
    smooth,
    spread,
    steepest,
    stored_range_test,
    suggest,
    valley,
)
from lrbs.experiments.sweeps import SweptOptim
from lrbs.runs.experiment import execute, rebuild
from lrbs.runs.sink import Sink
from lrbs.runs.store import RunStore, recorder


def synthetic_curve(n=200):
    """Flat at 2.3, a sigmoid drop of 1.5 centred at lr = 1e-2 (steepest there, in log lr),
    then a quadratic blow-up that puts the minimum near lr = 0.5."""
    lrs = np.logspace(-7, 1, n)
    z = (np.log(lrs) - np.log(1e-2)) / 0.6
    loss = 2.3 - 1.5 / (1 + np.exp(-z)) + 0.4 * lrs**2
    return lrs, loss


def test_steepest_and_minimum_on_a_known_curve():
    lrs, loss = synthetic_curve()
    assert lrs[steepest(lrs, loss)] == pytest.approx(1e-2, rel=0.1)
    # minimum of 2.3 - 1.5 sigmoid + 0.4 lr^2: found numerically on a fine grid
    fine = np.logspace(-3, 1, 200001)
    zf = (np.log(fine) - np.log(1e-2)) / 0.6
    expected = fine[np.argmin(2.3 - 1.5 / (1 + np.exp(-zf)) + 0.4 * fine**2)]
    assert lrs[minimum(lrs, loss)] == pytest.approx(expected, rel=0.05)


def test_valley_is_half_way_down_the_descent():
    lrs, loss = synthetic_curve()
    noisy = loss + np.where(lrs < 1e-4, 1e-4 * np.sin(np.arange(len(lrs))), 0)
    i = valley(lrs, noisy)
    # the descent proper: from where the loss has fallen 5 % of its total drop to where it is
    # within 5 % of the bottom
    top, bottom = noisy[0], noisy.min()
    head = np.argmax(noisy < top - 0.05 * (top - bottom))
    tail = np.argmax(noisy < bottom + 0.05 * (top - bottom))
    assert abs(i - (head + tail) / 2) <= 0.05 * (tail - head) + 2
    assert lrs[head] < lrs[i] < lrs[tail]


def test_valley_ignores_a_long_gentle_creep_before_the_descent():
    lrs = np.logspace(-7, 1, 400)
    creep = 2.3 - 0.01 * np.linspace(0, 1, 400)  # falls a little all along
    z = (np.log(lrs) - np.log(1e-1)) / 0.4
    loss = creep - 1.0 / (1 + np.exp(-z))
    i = valley(lrs[:330], loss[:330])
    assert 1e-2 < lrs[i] < 1.0  # in the real descent, not half-way along the creep


def test_suggest_skips_the_ends_and_scales_minimum():
    lrs, loss = synthetic_curve()
    out = {s.name: s for s in suggest(lrs, loss)}
    assert set(out) == {"steep", "minimum", "valley", "max_usable"}
    assert out["minimum"].lr == pytest.approx(out["max_usable"].lr / 10)
    assert all(s.meaning for s in out.values())


def test_custom_suggestion_rules_can_be_passed():
    from lrbs.experiments.lr_finder import SuggestionRule

    lrs, loss = synthetic_curve()
    first = SuggestionRule("first", "First", "the first kept point", lambda a, b: 0)
    (s,) = suggest(lrs, loss, rules=(first,))
    assert s.lr == pytest.approx(lrs[int(len(lrs) * 0.1)])


def test_debiased_ema_of_a_constant_is_the_constant():
    x = np.full(50, 3.0)
    np.testing.assert_allclose(smooth(x, 0.98, debias=True), 3.0)
    # without the correction the average is anchored at the first value, as torch-lr-finder
    np.testing.assert_allclose(smooth(x, 0.95, debias=False), 3.0)


def test_ema_matches_its_recurrence():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    beta = 0.9
    avg, expected = 0.0, []
    for i, v in enumerate(x):
        avg = beta * avg + (1 - beta) * v
        expected.append(avg / (1 - beta ** (i + 1)))
    np.testing.assert_allclose(smooth(x, beta), expected)
    plain = smooth(x, beta, debias=False)
    assert plain[0] == x[0]
    assert plain[1] == pytest.approx(beta * x[0] + (1 - beta) * x[1])


def test_exponential_schedule_hits_both_ends_exactly():
    cfg = RangeTestConfig(1e-6, 1.0, 61)
    lrs = cfg.lrs()
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, ratios[0])
    lin = RangeTestConfig(0.1, 1.0, 10, mode="linear").lrs()
    np.testing.assert_allclose(np.diff(lin), 0.1)


def model_and_data(seed=0):
    data = blobs(n=400, features=8, classes=4)
    return build_model(ModelSpec("mlp", hidden=(32,)), (8,), 4, seed), data


def test_range_test_records_the_rate_each_step_used():
    model, data = model_and_data()
    cfg = RangeTestConfig(1e-5, 1e-1, 40, batch_size=32, stop_factor=None)
    r = range_test(model, data, cfg)
    assert r.status == "finished" and len(r.lrs) == 40
    np.testing.assert_allclose(r.lrs, cfg.lrs(), rtol=1e-12)
    np.testing.assert_allclose(r.smoothed, smooth(r.losses, cfg.beta))


def test_divergence_stop_ends_the_test_early():
    model, data = model_and_data()
    r = range_test(model, data, RangeTestConfig(1e-4, 1e4, 100, batch_size=32))
    assert r.status == "diverged"
    assert len(r.lrs) < 100
    assert r.smoothed[-1] > 4 * np.nanmin(r.smoothed[:-1])
    assert "4 x its best" in r.message


def test_state_is_restored_exactly():
    model, data = model_and_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # give the optimizer some state first
    loss = torch.nn.functional.cross_entropy(model(data.x_train[:16]), data.y_train[:16])
    loss.backward()
    opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {k: v.clone() for k, v in opt.state[next(iter(opt.state))].items()}
    rng_before = torch.random.get_rng_state()
    range_test(
        model, data, RangeTestConfig(1e-4, 10, 30, optimizer="adam", batch_size=32), optimizer=opt
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in opt.state[next(iter(opt.state))].items():
        assert torch.equal(v, opt_before[k]), k
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_state_is_restored_when_the_test_fails():
    model, data = model_and_data()
    before = [p.clone() for p in model.parameters()]
    calls = {"n": 0}

    def boom(*_):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("a bug in the model")

    model.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError):
        range_test(model, data, RangeTestConfig(1e-4, 1, 20, batch_size=32))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))


def test_same_seed_same_curve_and_stop_flag():
    m1, data = model_and_data()
    m2, _ = model_and_data()
    cfg = RangeTestConfig(1e-5, 1, 30, batch_size=32)
    a, b = range_test(m1, data, cfg), range_test(m2, data, cfg)
    np.testing.assert_array_equal(a.losses, b.losses)
    stop = threading.Event()
    seen = []

    def on_point(p):
        seen.append(p)
        if len(seen) == 7:
            stop.set()

    c = range_test(m1, data, cfg, stop=stop, on_point=on_point)
    assert c.status == "stopped" and len(c.lrs) == 7
    assert [p["iteration"] for p in seen] == list(range(7))


def test_zoom_is_a_finer_exponential_test_of_the_range():
    cfg = RangeTestConfig(1e-7, 10, 100)
    z = cfg.zoom(1e-3, 1e-1)
    assert (z.lr_min, z.lr_max, z.mode) == (1e-3, 1e-1, "exp")
    assert z.points_per_decade() >= 2 * cfg.points_per_decade() - 1e-9
    assert z.iterations == max(50, math.ceil(2 * cfg.points_per_decade() * 2))
    with pytest.raises(ConfigError, match="must be below"):
        cfg.zoom(1e-1, 1e-3)


@pytest.mark.parametrize(
    "selection, expected",
    [
        ({"zoom": {"lr": [0.1, 0.001]}}, (0.001, 0.1)),
        ({"lr": [1e-4, 1e-2]}, (1e-4, 1e-2)),
        ({}, None),
        (None, None),
        ({"zoom": {}}, None),
        ({"zoom": {"lr": [0.0, 1.0]}}, None),
        ({"zoom": {"lr": [0.1, 0.1]}}, None),
    ],
)
def test_range_from_selection(selection, expected):
    assert range_from_selection(selection) == expected


def test_spread_over_seeds():
    m, data = model_and_data()
    results = [
        range_test(
            build_model(ModelSpec("mlp", hidden=(32,)), (8,), 4, s),
            data,
            RangeTestConfig(1e-4, 10, 40, batch_size=32, seed=s),
        )
        for s in range(3)
    ]
    table = spread(results)
    assert set(table.seeds) == {3}
    assert (table.max_over_min >= 1).all()
    assert (table.min_lr <= table.median_lr).all() and (table.median_lr <= table.max_lr).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr_min=1.0, lr_max=1.0), "must be below"),
        (dict(lr_min=10.0, lr_max=1.0), "must be below"),
        (dict(lr_min=0.0), "minimum learning rate must be greater than 0"),
        (dict(lr_min=-1e-3), "minimum learning rate must be greater than 0"),
        (dict(lr_max=float("nan")), "maximum learning rate must be a finite number"),
        (dict(lr_max=float("inf")), "maximum learning rate must be a finite number"),
        (dict(iterations=0), "iterations must be at least 1"),
        (dict(iterations=3), "at least 5 iterations"),
        (dict(mode="cosine"), "ramp"),
        (dict(beta=1.0), "beta"),
        (dict(stop_factor=1.0), "stop factor"),
        (dict(optimizer="lbfgs"), "unknown optimizer"),
    ],
)
def test_bad_range_test_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RangeTestConfig(**kwargs)


def test_batch_larger_than_data_is_refused():
    model, data = model_and_data()
    with pytest.raises(ConfigError, match="larger than the training set"):
        range_test(model, data, RangeTestConfig(batch_size=10_000))


# ---------------------------------------------------------------------------- the experiment

SETUP = Setup(model=ModelSpec("mlp", hidden=(32,)))


@pytest.fixture
def small_data(monkeypatch):
    """Blobs in place of the setup's dataset: a range test here takes milliseconds."""
    data = blobs(n=400, features=8, classes=4)
    monkeypatch.setattr(lr_finder, "load_data", lambda setup: data)
    return data


class Watch(Sink):
    """Records, at each progress report, how many points had arrived."""

    def __init__(self) -> None:
        self.points: list[dict] = []
        self.progress_at: list[tuple[float, int]] = []

    def emit(self, channel: str, row: dict) -> None:
        if channel == "points":
            self.points.append(row)

    def progress(self, fraction: float, text: str = "") -> None:
        self.progress_at.append((fraction, len(self.points)))


def test_run_streams_every_iteration_of_every_round_and_seed(small_data):
    cfg = Config(
        lr_min=1e-4, lr_max=10, iterations=40, batch_size=32, seeds=2, zoom=((1e-3, 1e-1),)
    )
    watch = Watch()
    result = lr_finder.run(SETUP, cfg, watch)
    zoom_its = cfg.rounds()[1].iterations
    assert [(r.round, r.config.seed) for rs in result.rounds for r in rs] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert len(watch.points) == sum(len(r.lrs) for rs in result.rounds for r in rs)
    assert {(p["round"], p["seed"]) for p in watch.points} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # streamed as it goes: a progress report after each point, as a fraction of every iteration
    fractions = [f for f, _ in watch.progress_at]
    assert fractions == sorted(fractions) and len(fractions) == len(watch.points)
    assert [n for _, n in watch.progress_at] == list(range(1, len(watch.points) + 1))
    first = [p for p in watch.points if p["round"] == 0 and p["seed"] == 0]
    assert fractions[len(first) - 1] == pytest.approx(len(first) / (2 * 40 + 2 * zoom_its))
    second = result.rounds[1][0]
    assert second.config.lr_min == 1e-3 and second.lrs[0] == pytest.approx(1e-3)
    columns = ["round", "seed", "iteration", "lr", "loss", "smoothed"]
    assert result.points().columns.tolist() == columns


def test_a_seed_is_the_range_test_of_that_seed(small_data):
    cfg = Config(lr_min=1e-4, lr_max=10, iterations=40, batch_size=32, seeds=2)
    result = lr_finder.run(SETUP, cfg)
    for r in result.latest:
        model = SETUP.fresh_model(small_data, r.config.seed)
        alone = range_test(model, small_data, replace(cfg.base(), seed=r.config.seed))
        np.testing.assert_array_equal(r.losses, alone.losses)
        assert r.status == alone.status and r.message == alone.message
        assert [s.lr for s in r.suggestions] == [s.lr for s in alone.suggestions]


def test_summary_keys_and_median_suggestions(small_data):
    cfg = Config(lr_min=1e-4, lr_max=10, iterations=40, batch_size=32, seeds=3)
    result = lr_finder.run(SETUP, cfg)
    out = result.summary()
    assert set(out["suggestions"]) == {"steep", "minimum", "valley", "max_usable"}
    for name, lr in out["suggestions"].items():
        each = [r.suggestion(name).lr for r in result.latest]
        assert lr == pytest.approx(float(np.median(each)))
    assert out["final_round_suggestions"] == out["suggestions"]
    assert out["lr_at_min"] > 0 and out["min_smoothed_loss"] > 0
    assert [(r["round"], r["seed"]) for r in out["rounds"]] == [(0, 0), (0, 1), (0, 2)]
    assert len(out["spread"]) == 4 and out["optimizer"] == "sgd"
    assert out["status"] == "finished"
    assert result.band() is not None and len(result.band()) > 0
    assert list(result.suggestion_frame().name) == ["steep", "minimum", "valley", "max_usable"]


def test_stop_keeps_what_was_computed(small_data):
    stop = threading.Event()

    class StopAfter(Sink):
        n = 0

        def emit(self, channel, row):
            self.n += 1
            if self.n == 7:
                stop.set()

    cfg = Config(lr_min=1e-4, lr_max=10, iterations=40, batch_size=32, seeds=3)
    result = lr_finder.run(SETUP, cfg, StopAfter(), stop)
    assert result.status == "stopped" and result.stopped
    assert len(result.rounds) == 1 and len(result.latest) == 1
    assert result.latest[0].status == "stopped" and len(result.latest[0].lrs) == 7


def rows_of(store, run_id):
    pts = store.points(run_id)
    return {
        c: part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
        for c, part in pts.groupby("channel")
    }


def test_the_history_rebuilds_the_result_and_is_what_others_read(small_data, tmp_path):
    db = tmp_path / "h.db"
    cfg = Config(lr_min=1e-4, lr_max=10, iterations=40, batch_size=32, seeds=2, zoom=((1e-3, 1.0),))
    rec = recorder(lr_finder.KIND, SETUP, cfg, path=db)
    rec.start()
    result = execute(lr_finder, SETUP, cfg, recorder=rec)
    with RunStore(db) as store:
        again = rebuild(lr_finder, store.run(rec.run_id), rows_of(store, rec.run_id))
        found = stored_range_test(store, SETUP.data.name, SETUP.model.name)
        assert stored_range_test(store, SETUP.data.name, "cnn") is None
    assert again.config == cfg
    assert again.summary() == result.summary()
    pd.testing.assert_frame_equal(again.points(), result.points())
    for a, b in zip(again.rounds, result.rounds, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.smoothed, y.smoothed)
            same = ("status", "message", "round", "config")
            assert [getattr(x, k) for k in same] == [getattr(y, k) for k in same]
    assert found == (result.suggestions(), rec.run_id)
    assert found[0] == result.summary()["suggestions"]


def test_stored_range_test_reads_only_the_new_record(tmp_path):
    with RunStore(tmp_path / "h.db") as store:
        old = store.start_run("lr-range-test", {}, dataset="digits", model="mlp")
        store.finish(old, "finished", {"seeds": [{"suggestions": {"max_usable": 1.0}}]})
        cli = store.start_run("lr-find", {}, dataset="digits", model="mlp")
        store.finish(cli, "finished", {"final_round_suggestions": {"max_usable": 1.0}})
        assert stored_range_test(store, "digits", "mlp") is None
        new = store.start_run("lr-find", {}, dataset="digits", model="mlp")
        store.finish(new, "finished", {"suggestions": {"steep": 0.1, "max_usable": 0.5}})
        assert stored_range_test(store, "digits", "mlp") == ({"steep": 0.1, "max_usable": 0.5}, new)


def test_config_rounds_and_zoom():
    cfg = Config(
        lr_min=1e-6,
        lr_max=1.0,
        iterations=60,
        ramp="linear",
        stop_factor=0,
        optim=SweptOptim("adam", weight_decay=1e-3),
    )
    assert cfg.stop_factor is None  # 0: never stop early
    base = cfg.base()
    assert (base.lr_min, base.lr_max, base.iterations, base.mode) == (1e-6, 1.0, 60, "linear")
    assert (base.optimizer, base.weight_decay) == ("adam", 1e-3)
    z = cfg.zoomed(1e-3, 1e-1)
    assert z.zoom == ((1e-3, 1e-1),) and len(z.rounds()) == 2
    assert z.rounds()[1] == base.zoom(1e-3, 1e-1)
    assert z.zoomed(1e-2, 1e-1).zoom == ((1e-3, 1e-1), (1e-2, 1e-1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr_min=1.0, lr_max=1.0), "must be below"),
        (dict(lr_min=10.0, lr_max=1.0), "must be below"),
        (dict(lr_min=0.0), "minimum learning rate must be greater than 0"),
        (dict(lr_min=-1e-3), "minimum learning rate must be greater than 0"),
        (dict(lr_max=float("nan")), "maximum learning rate must be a finite number"),
        (dict(lr_max=float("inf")), "maximum learning rate must be a finite number"),
        (dict(iterations=0), "iterations must be at least 1"),
        (dict(iterations=3), "at least 5 iterations"),
        (dict(ramp="cosine"), "ramp"),
        (dict(beta=1.0), "beta"),
        (dict(stop_factor=1.0), "stop factor"),
        (dict(optimizer="lbfgs"), "unknown optimizer"),
        (dict(seeds=0), "seeds must be at least 1"),
        (dict(zoom=((1.0, 0.1),)), "zoom range 1 to 0.1: .*must be below"),
        (dict(zoom=((0.0, 0.1),)), "minimum learning rate must be greater than 0"),
    ],
)
def test_bad_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        if "optimizer" in kwargs:
            kwargs = {"optim": SweptOptim(kwargs["optimizer"])}
        Config(**kwargs)


def test_rounds_and_durations_read_the_same_everywhere():
    assert lr_finder.round_label(0) == "round 1 (the whole range)"
    assert lr_finder.round_label(2) == "round 3 (zoom 2)"
    assert lr_finder.seconds_text(0.043) == "0.043 s"  # never "0.0 s" for a quick test
    assert lr_finder.seconds_text(3.14159) == "3.1 s"
    assert lr_finder.seconds_text(125.4) == "125 s"
