"""The Recommend pipeline: each rule against an independent oracle (a plain sweep run
separately, a hand computation of the batch rule, a quadratic loss whose best rate is 1/lambda),
a stop that keeps the finished steps, the history's rebuild and the CLI's --json card."""

import json
import math
import threading
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from lrbs.cli import main
from lrbs.core.data import DataSpec
from lrbs.core.loop import Budget
from lrbs.core.models import ModelSpec
from lrbs.core.setup import Setup
from lrbs.experiments import recommend, sweeps
from lrbs.experiments.recommend import (
    Config,
    batch_choice,
    candidate_batches,
    confirm,
    loss_table,
    rescale,
    sweep_grid,
)
from lrbs.experiments.sweeps import SweptOptim
from lrbs.runs.experiment import execute, rebuild
from lrbs.runs.sink import Sink
from lrbs.runs.store import RunStore, recorder

SETUP = Setup(DataSpec(name="digits"), ModelSpec("mlp", hidden=(32,)))
# the rate of the sweep's own length (no planned training): the card's rate is the plain
# sweep's best, which the oracles below recompute
SMALL = Config(rates=4, seeds=2, sweep_steps=40, optim=SweptOptim("momentum"), train_epochs=None)
# the "quick" budget made tiny, so that a whole pipeline takes a few seconds
TINY = recommend.Effort(
    range_seeds=2,
    range_iterations=40,
    rates=4,
    sweep_seeds=1,
    sweep_steps=30,
    noise_steps=60,
    throughput_seconds=0.05,
)


@pytest.fixture(scope="module", autouse=True)
def tiny_budget():
    """The tiny budget, on one CPU thread: with the machine shared, two OpenMP threads per
    tiny step wait on each other far longer than the step takes (bench/RESULTS.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(recommend.EFFORT, "quick", TINY)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished(tiny_budget):
    return recommend.run(SETUP, SMALL)


# ---------------------------------------------------------------------------- pure rules


def test_the_grid_spans_the_suggestions_and_a_decade_around_them():
    grid = sweep_grid([0.01, 0.05, 0.2], 7)
    assert len(grid) == 7 and list(grid) == sorted(grid)
    assert grid[0] == pytest.approx(0.01 / math.sqrt(10), rel=1e-2)
    assert grid[-1] == pytest.approx(0.2 * math.sqrt(10), rel=1e-2)
    one = sweep_grid([0.1], 5)  # a single suggestion still gets a decade
    assert one[-1] / one[0] == pytest.approx(10, rel=1e-2)


def test_the_batch_rule_against_a_hand_computation():
    batches = [16, 64, 256, 1024]
    sps = [0.002, 0.0025, 0.004, 0.012]  # seconds per step, as if measured
    b_noise, base, base_steps = 200.0, 64, 1000
    table = batch_choice(batches, sps, b_noise, base, base_steps)
    s_min = base_steps / (1 + b_noise / base)
    hand = {b: s_min * (1 + b_noise / b) * t for b, t in zip(batches, sps, strict=True)}
    assert table.seconds_to_target.tolist() == pytest.approx(list(hand.values()))
    assert int(table[table.best].batch.iloc[0]) == min(hand, key=hand.get) == 256
    # the base batch takes exactly the steps it took
    assert table.set_index("batch").steps_to_target[64] == pytest.approx(base_steps)
    # no gradient noise: the steps do not fall with the batch, so the fastest step wins
    flat = batch_choice(batches, sps, 0.0, base, base_steps)
    assert int(flat[flat.best].batch.iloc[0]) == 16


def test_rates_rescale_by_the_optimizers_rule_up_to_the_critical_batch():
    assert rescale(0.1, 64, 256, "momentum", b_crit=1e9) == pytest.approx(0.4)
    assert rescale(0.1, 64, 256, "sgd", b_crit=128) == pytest.approx(0.2)  # capped at B_crit
    assert rescale(0.001, 64, 256, "adam", b_crit=1e9) == pytest.approx(0.002)
    assert rescale(0.1, 64, 16, "sgd", b_crit=128) == pytest.approx(0.025)  # smaller: linear


def test_candidate_batches_stay_under_the_safe_batch():
    assert candidate_batches(64, 300, 4000) == (16, 32, 64, 128, 256)
    assert candidate_batches(100, 4000, 1000) == (16, 32, 64, 100, 128, 256)  # <= N/2
    assert candidate_batches(8, 20, 1000) == (1, 2, 4, 8, 16)


# the real quick budget, read when this module is imported (the fixture above patches it later)
BIG = recommend.EFFORT["quick"]


def costs(step: float, evaluation: float = 0.0) -> recommend.Costs:
    return recommend.Costs(step=step, evaluation=evaluation, epochs_per_step=64 / 4000)


def test_the_estimate_against_a_hand_count():
    c = recommend.Costs(
        step=0.01, evaluation=0.05, epochs_per_step=0.016, big_batches=8.5, top_batches=31.25
    )
    parts = recommend.estimated_seconds(BIG, c)
    run = 0.01 * 400 + 0.05 * (1 + 400 * 0.016)  # one eval at the end, one about each epoch
    assert parts["range"] == pytest.approx(0.01 * 3 * 100)
    assert parts["sweep"] == pytest.approx(2 * 7 * run)
    assert parts["probe"] == pytest.approx(0.01 * 2 * 31.25)  # 1 + 2 + 4 ... up to the top
    assert parts["throughput"] == pytest.approx(8 * 0.25 + 0.01 * 2 * 31.25)
    assert parts["noise"] == pytest.approx(0.01 * (300 + 15 * 8.5))
    assert parts["confirm"] == pytest.approx(run)


def total(e, c):
    return sum(recommend.estimated_seconds(e, c).values())


def test_a_plan_raises_an_effort_that_fits_and_shrinks_one_that_does_not():
    fast = costs(0.001, 0.01)
    assert total(BIG, fast) < 0.5 * 60  # the budget's own effort would leave most of it idle
    grown = recommend.fit_effort(BIG, fast, 60.0)
    assert 0.8 * 60 <= total(grown, fast) <= recommend.FILL * 60 + 1e-6
    assert grown.rates == recommend.CEILING["rates"] and grown.sweep_steps > BIG.sweep_steps
    assert BIG.sweep_seeds < grown.sweep_seeds <= recommend.CEILING["sweep_seeds"]
    # what the user set stays: the rest of the budget lengthens the sweep
    kept = recommend.fit_effort(BIG, fast, 60.0, frozenset({"rates", "sweep_seeds"}))
    assert (kept.rates, kept.sweep_seeds) == (BIG.rates, BIG.sweep_seeds)
    assert kept.sweep_steps > grown.sweep_steps and total(kept, fast) <= 0.9 * 60 + 1e-6
    # never longer than the planned training: there the rest goes to rates and seeds
    assert recommend.fit_effort(BIG, fast, 60.0, longest=500).sweep_steps == 500
    # a model 20x slower: the plan fits the budget, lowering range seeds first, then updates
    slow_costs = costs(0.01, 0.05)
    slow = recommend.fit_effort(BIG, slow_costs, 60.0)
    assert total(slow, slow_costs) <= 60.0 + 1e-6 < total(BIG, slow_costs)
    assert slow.range_seeds == recommend.FLOOR.range_seeds
    assert slow.sweep_steps < BIG.sweep_steps and slow.rates == BIG.rates  # rates kept longer
    for name in recommend.SHRINK_ORDER:
        assert getattr(recommend.FLOOR, name) <= getattr(slow, name) <= getattr(BIG, name)


def test_a_plan_never_goes_below_the_floor_nor_lowers_what_the_user_set():
    transformer = costs(0.25, 5.0)  # a transformer's update and evaluation on a CPU
    very_slow = recommend.fit_effort(BIG, transformer, 60.0)
    assert very_slow == recommend.FLOOR
    assert total(very_slow, transformer) > 60.0  # over the budget: the card says so
    fixed = frozenset({"rates", "sweep_steps"})
    kept = recommend.fit_effort(BIG, transformer, 60.0, fixed=fixed)
    assert kept.rates == BIG.rates and kept.sweep_steps == BIG.sweep_steps
    assert kept.sweep_seeds == recommend.FLOOR.sweep_seeds
    assert Config(rates=9, sweep_steps=500).fixed == {"rates", "sweep_steps"}


def test_the_pipeline_runs_what_its_plan_says(monkeypatch):
    """A model whose updates take (as if) a second: the plan falls to the floors and every step
    runs the plan's seeds, rates and updates; the card and the report say so."""
    floor = replace(TINY, rates=3, sweep_steps=20, range_iterations=30)
    monkeypatch.setitem(recommend.EFFORT, "quick", replace(TINY, rates=5, sweep_steps=60))
    # patched where they are looked up: the plan's module
    monkeypatch.setattr(recommend.plan, "FLOOR", floor)
    monkeypatch.setattr(recommend.plan, "measure_costs", lambda *a: recommend.Costs(step=1.0))
    stop = threading.Event()
    r = recommend.run(SETUP, Config(), StopAt(stop, "steps", "sweep"), stop)
    plan = r.budget_plan
    assert plan["seconds_per_step"] == 1.0 and plan["shrunk"] and plan["over_budget"]
    assert r.effort.rates == 3 and r.effort.sweep_steps == 20
    runs = r.sweep_runs()
    assert runs.lr.nunique() == 3 and set(runs.steps) == {20}
    # the default planned training, 10 epochs of 1,438 samples, carried from the floor's 20
    card = r.card()
    assert card["train_epochs"] == recommend.TRAIN_EPOCHS == 10
    assert card["horizon_steps"] == math.ceil(10 * 1438 / 64) and card["swept_steps"] == 20
    assert card["plan"]["rates"] == 3
    assert "over the budget" in r.plan_text() and "1e+03 ms" in r.plan_text()


def test_the_costs_are_measured_on_the_model():
    data = sweeps.load_data(SETUP)
    c = recommend.measure_costs(SETUP, Config(), data)
    assert 0 < c.step < 0.5 and 0 < c.evaluation < 2
    assert c.epochs_per_step == pytest.approx(64 / data.n_train)
    assert c.top_batches == pytest.approx((data.n_train // 2) / 64)
    assert Config(max_batch=256).top_batch(data.n_train) == 256


def quadratic_sweep(lam: float, grid, seeds: int = 3, steps: int = 5) -> pd.DataFrame:
    """Gradient descent on L(x) = lam x^2 / 2 from x0 = 1 for `steps` steps: the loss after
    them is (1 - lr lam)^(2 steps) lam / 2, smallest at lr = 1/lam; each seed's loss is off by
    up to 5 % (noise in proportion to the loss, as between seeds of a real sweep)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for lr in grid:
            loss = lam / 2 * (1 - lr * lam) ** (2 * steps) * (1 + 0.05 * rng.random())
            status = "diverged" if loss > 1e6 else "finished"
            rows.append({"seed": seed, "lr": lr, "status": status, "val_loss": loss})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "lam, suggested", [(0.5, (0.2, 0.5, 2.0)), (4.0, (0.05, 0.3, 1.2)), (37.0, (0.5, 1.5, 1.9))]
)
def test_the_confirmed_rate_on_a_quadratic_lands_within_1_5x_of_one_over_lambda(lam, suggested):
    # suggestions (in units of 1/lam) as a range test gives them: scattered around the best
    grid = sweep_grid([s / lam for s in suggested], 10)
    best = confirm(loss_table(quadratic_sweep(lam, grid)))
    assert 1 / 1.5 <= best.lr * lam <= 1.5
    assert best.band_lo <= best.lr <= best.band_hi
    assert not best.at_edge


def test_a_single_seed_has_no_band_and_diverged_rates_are_never_best():
    runs = pd.DataFrame(
        {
            "seed": [0, 0, 0],
            "lr": [0.01, 0.1, 1.0],
            "status": ["finished", "finished", "diverged"],
            "val_loss": [0.5, 0.4, 0.01],
        }
    )
    best = confirm(loss_table(runs))
    assert best.lr == 0.1 and best.band_lo == best.band_hi == 0.1 and best.noise == 0


def test_the_refined_best_is_the_vertex_of_the_parabola_in_log_lr():
    grid = np.geomspace(1e-3, 1.0, 7)
    best = 0.037  # between grid points: the loss is a parabola in log(lr) around it
    loss = (np.log(grid) - math.log(best)) ** 2 + 0.3
    assert recommend.refined_best(grid, loss) == pytest.approx(best, rel=1e-9)
    # at the grid's edge, or next to a diverged rate, the grid's own best stands
    assert recommend.refined_best(grid, (np.log(grid) - math.log(5.0)) ** 2) == grid[-1]
    loss[4] = np.inf
    assert recommend.refined_best(grid, loss) == grid[np.argmin(loss)]


def law_curves(best_at, steps=range(100, 801, 100), seeds: int = 2) -> pd.DataFrame:
    """Checkpoints of a sweep whose best rate at step t is best_at(t) exactly (the loss a
    parabola in log(lr) around it, the same for every seed), on a 13-rate grid."""
    grid = np.geomspace(1e-4, 10.0, 13)
    rows = []
    for t in steps:
        for lr in grid:
            for seed in range(seeds):
                loss = 1 / t + (math.log(lr) - math.log(best_at(t))) ** 2
                rows.append({"seed": seed, "lr": lr, "step": t, "val_loss": loss})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("exponent", [-0.5, -0.2, 0.0])
def test_the_checkpoints_give_the_best_rate_at_each_step(exponent):
    """The oracle: the sweep's best rate at step t is 0.05 (t/800)^exponent exactly."""
    points = recommend.checkpoint_bests(law_curves(lambda t: 0.05 * (t / 800) ** exponent), 800)
    assert list(points.step) == list(range(200, 801, 100))  # from a quarter of the sweep on
    want = 0.05 * (points.step / 800) ** exponent
    assert np.allclose(points.lr, want, rtol=1e-6)
    assert recommend.measured_exponent(points) == pytest.approx(exponent, abs=1e-6)
    assert recommend.measured_exponent(points.head(2)) is None  # two points make no slope


def test_the_square_root_rule_or_the_sweeps_own_steeper_fall_and_a_diverged_rate():
    assert recommend.HORIZON_EXPONENT == -0.5
    assert recommend.carry_factor(400, 1600) == pytest.approx(0.5)  # 4x longer: half the rate
    assert recommend.carry_factor(400, 400) == 1.0
    assert recommend.carry_factor(400, 1600, -1.0) == pytest.approx(0.25)
    rule = recommend.horizon_exponent
    assert rule(None) == rule(0.3) == rule(-0.1) == rule(float("nan")) == -0.5
    assert rule(-0.8) == -0.8 and rule(-1.7) == -1.0  # steeper, down to rate x updates constant
    # a rate that diverged (no score after step 300) is never the best there
    d = law_curves(lambda t: 20 / (t + 300))
    top = d.lr.max()
    d = d[(d.lr != top) | (d.step <= 300)]
    assert (recommend.checkpoint_bests(d, 800).lr < top).all()


def sweep_rows(curve_of_best) -> dict:
    """A carried sweep's rows (2 seeds, 3 rates, checkpoints 100 to 400 of 400 updates, a
    planned training of 4,000): the middle rate best, its validation loss `curve_of_best`."""
    plan = {**asdict(replace(TINY, sweep_steps=400)), "horizon_steps": 4000}
    runs, events = [], []
    for seed in (0, 1):
        for lr, curve in ((0.01, [2.0, 1.8, 1.7, 1.6]), (0.1, curve_of_best), (1.0, [3] * 4)):
            for step, v in zip((100, 200, 300, 400), curve, strict=True):
                ev = {"seed": seed, "run_id": f"lr={lr:g}", "kind": "eval", "lr": lr}
                events.append(ev | {"step": step, "val_loss": v + 0.001 * seed})
            run = {"seed": seed, "run": f"lr={lr:g}", "lr": lr, "status": "finished"}
            runs.append(run | {"val_loss": curve[-1] + 0.001 * seed, "steps": 400})
    steps = [{"step": "sweep", "status": "finished", "seconds": 1.0}]
    return {"plan": [plan], "sweep/runs": runs, "sweep/events": events, "steps": steps}


def test_a_sweep_that_overfits_says_so_on_the_card():
    rising = recommend.Result(Config(), sweep_rows([1.0, 0.8, 0.9, 1.0]))
    assert rising.carried and rising.confirmed.lr == 0.1
    assert rising.overfitting() == pytest.approx((0.8005, 1.0005))
    level, reasons = rising.confidence()
    assert level == "low" and any("overfits inside the sweep" in r for r in reasons)
    falling = recommend.Result(Config(), sweep_rows([1.0, 0.9, 0.85, 0.8]))
    assert falling.overfitting() is None
    assert not any("overfits" in r for r in falling.confidence()[1])


def test_a_planned_training_aims_the_sweep_at_its_length():
    c = recommend.Costs(
        step=0.001, evaluation=0.01, epochs_per_step=64 / 4000, noise_follows_sweep=True
    )
    cfg = Config(train_epochs=3)
    assert cfg.horizon(4000) == math.ceil(3 * 4000 / 64)
    aimed, _ = cfg.aimed(4000)
    fits = cfg.planned(c, 4000)
    assert aimed.sweep_steps == fits.sweep_steps == 188  # it fits
    assert fits.noise_steps == 188  # B_noise measured over as long a training as the sweep's
    long = Config(train_epochs=400)  # 25,000 updates: the plan shrinks the sweep to fit
    e = long.planned(c, 4000)
    assert 100 <= e.sweep_steps < 25_000 and total(e, c) <= 60 + 1e-6
    assert e.noise_steps == max(e.sweep_steps, TINY.noise_steps)
    # the estimate counts the noise meter's updates as it will run them
    noise = recommend.estimated_seconds(replace(e, noise_steps=TINY.noise_steps), c)["noise"]
    assert noise == pytest.approx(0.001 * (e.noise_steps + 15 * c.big_batches))
    # a planned training shorter than the floor is swept at exactly its length
    assert Config(train_epochs=0.5).planned(c, 4000).sweep_steps == 32
    # what the user set stays: the sweep's own updates, carried to the planned length
    assert Config(train_epochs=400, sweep_steps=50).planned(c, 4000).sweep_steps == 50


# ---------------------------------------------------------------------------- the pipeline


def test_the_confirmed_best_is_the_argmin_of_a_plain_sweep(finished):
    """The oracle: lrbs.experiments.sweeps run directly, once per seed, on the same grid."""
    grid = tuple(sorted(finished.sweep_runs().lr.unique()))
    assert len(grid) == 4
    means = {}
    for seed in (0, 1):
        cfg = sweeps.Config(
            lrs=grid,
            budget=Budget(steps=40),
            batch_size=SMALL.batch_size,
            optim=SMALL.optim,
            seed=seed,
        )
        table = sweeps.run(SETUP, cfg).table()
        for lr, loss, status in zip(table.lr, table.val_loss, table.status, strict=True):
            means.setdefault(lr, []).append(loss if status != "diverged" else math.inf)
    oracle = min(means, key=lambda lr: np.mean(means[lr]))
    assert finished.confirmed.lr == oracle
    card = finished.card()
    assert card["base_lr"] == oracle
    assert card["band"][0] <= oracle <= card["band"][1]
    assert card["target_loss"] == pytest.approx(np.mean(means[oracle]))


def test_the_card_is_complete_and_its_batch_follows_the_rule(finished):
    card = finished.card()
    assert finished.status == "finished" and card["missing"] == []
    assert set(card["seconds"]) == set(recommend.STEPS)
    assert card["confidence"] in ("high", "medium", "low") and card["confidence_reasons"]
    assert set(card["suggestions"]) == {"steep", "minimum", "valley", "max_usable"}
    assert len(card["audit"]) == 4 and sum(r["closest"] for r in card["audit"]) == 1
    # no memory cap: up to the largest batch considered, half the training set
    assert card["largest_batch"] == card["safe_batch"] == 1438 // 2
    assert "at least **719**, the largest batch considered" in finished.probe.verdict()
    assert card["b_simple"] > 0
    # the chosen batch by hand from the measured throughput and B_simple
    t = finished.throughput()
    s = (1 + card["b_simple"] / t.batch) * t.seconds_per_step
    # a rate the stability cap holds below the rule's costs its shortfall in steps
    s *= [finished.rate_at(b).rule_lr / finished.rate_at(b).lr for b in t.batch]
    assert card["estimated_batch"] == int(t.batch[int(np.argmin(s))])
    if card["batch"] != card["base_batch"]:  # confirmed at the chosen batch
        want = rescale(card["base_lr"], 64, card["batch"], "momentum", card["b_simple"])
        assert card["rule_lr"] == pytest.approx(want)
        assert card["lr"] == pytest.approx(min(want, card["cap"]))
    assert "torch.optim.SGD" in card["snippet"] and f"batch_size={card['batch']}" in card["snippet"]
    assert card["schedule"]["name"] == "one-cycle" and card["horizon_steps"] == 40
    assert card["schedule"]["peak_lr"] == pytest.approx(card["band_at_batch"][1])
    tables = finished.tables()
    assert {"sweep", "audit", "range", "batches", "noise", "confirm"} <= set(tables)
    assert tables["batches"].best.sum() == 1


def test_a_planned_training_longer_than_the_sweep_gets_the_carried_rate():
    """Swept at 40 updates, planned at 5 epochs (113 updates at batch 64): every sweep run is
    scored at the same checkpoints (the evidence beside the rule) and the card's rate is the
    confirmed one times the rule's factor, (113 / 40)^exponent."""
    cfg = replace(SMALL, sweep_steps=40, train_epochs=5)
    r = recommend.run(SETUP, cfg)
    n = sweeps.load_data(SETUP).n_train
    card = r.card()
    assert card["horizon_steps"] == math.ceil(5 * n / 64) == 113 and card["swept_steps"] == 40
    curves = r.sweep_curves()
    assert len(curves) and set(curves.step) == {*range(6, 37, 6), 40}  # every 40 // 6, the end
    assert curves.groupby(["seed", "lr"]).size().nunique() == 1  # the same checkpoints for all
    assert set(r.checkpoints().step) == {12, 18, 24, 30, 36, 40}
    e = r.exponent
    assert e == recommend.horizon_exponent(recommend.measured_exponent(r.checkpoints()))
    factor = (113 / 40) ** e
    assert card["swept_lr"] == r.confirmed.lr
    assert card["base_lr"] == pytest.approx(r.confirmed.lr * factor)
    assert card["horizon_rule"]["factor"] == pytest.approx(factor)
    if card["batch"] == 64:
        assert card["lr"] == pytest.approx(card["base_lr"])
    lo, hi = card["band_at_batch"]
    assert lo * (1 - 1e-9) <= card["lr"] <= hi * (1 + 1e-9)
    assert any("carried to the planned 113" in x for x in card["confidence_reasons"])
    assert "carried to the planned 113" in r.report()
    # the confirming run checks the rate as swept, at the sweep's length
    run = r.confirm_run()
    swept = r.plan(swept=True)
    assert run["lr"] == pytest.approx(swept["lr"]) and run["target_loss"] == r.confirmed.loss
    # and the card's own rate is trained at the card's batch for twice the sweep's samples
    hold = r.hold_run()
    assert (hold["lr"], hold["batch"]) == (pytest.approx(card["lr"]), card["batch"])
    assert hold["steps"] == math.ceil(2 * 40 * 64 / card["batch"]) and card["trained_at_batch"]
    assert card["hold"]["held"] is r.held()[0] and r.held()[1] in card["confidence_reasons"]
    assert len(r.hold_curve()) >= recommend.HOLD_EVALUATIONS
    # the same planned training, short enough to sweep at its length: nothing is carried
    short = recommend.run(SETUP, replace(SMALL, sweep_steps=None, train_epochs=1))
    c = short.card()
    assert c["horizon_steps"] == c["swept_steps"] == math.ceil(n / 64) and c["horizon_rule"] is None
    assert set(short.sweep_runs().steps) == {c["horizon_steps"]}
    assert "swept at the planned training's length" in short.report()


class StopAt(Sink):
    def __init__(self, stop: threading.Event, channel: str, step: str | None = None) -> None:
        self.stop, self.channel, self.step = stop, channel, step

    def emit(self, channel: str, row: dict) -> None:
        if channel == self.channel and (self.step is None or row.get("step") == self.step):
            self.stop.set()


def test_a_stop_after_the_sweep_keeps_the_range_test_and_the_sweep():
    stop = threading.Event()
    cfg = Config(rates=3, seeds=1, sweep_steps=20)
    r = recommend.run(SETUP, cfg, StopAt(stop, "steps", "sweep"), stop)
    assert r.status == "stopped" and r.stopped
    card = r.card()
    assert card["missing"] == ["probe", "throughput", "noise", "confirm"]
    # the default planned training (225 updates): the swept rate carried from 20 to it
    assert card["swept_lr"] == r.confirmed.lr and card["batch"] == cfg.batch_size
    assert card["lr"] == pytest.approx(r.confirmed.lr * r.carry_factor) and r.carry_factor < 1
    assert "missing" in r.message and "probe" in r.message
    assert card["confidence"] == "low" or "not confirmed" in " ".join(card["confidence_reasons"])


def test_a_stop_inside_the_sweep_keeps_the_range_tests_suggestions():
    stop = threading.Event()
    r = recommend.run(SETUP, Config(rates=3, seeds=1), StopAt(stop, "sweep/runs"), stop)
    card = r.card()
    assert r.status == "stopped" and card["lr"] is None
    assert card["missing"][0] == "sweep"
    assert set(card["suggestions"]) == {"steep", "minimum", "valley", "max_usable"}
    assert not r.range_result.points().empty


def test_the_history_rebuilds_the_card(tmp_path):
    cfg = Config(rates=3, seeds=1, sweep_steps=20)
    rec = recorder(recommend.KIND, SETUP, cfg, path=tmp_path / "h.db")
    rec.start()
    result = execute(recommend, SETUP, cfg, recorder=rec)
    with RunStore(tmp_path / "h.db") as store:
        info = store.run(rec.run_id)
        pts = store.points(rec.run_id)
    rows = {
        c: part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
        for c, part in pts.groupby("channel")
    }
    again = rebuild(recommend, info, rows)
    assert again.config == cfg
    a, b = again.card(), result.card()
    for key in ("lr", "batch", "band", "confidence", "snippet", "missing", "closest_rule"):
        assert a[key] == b[key], key
    assert info["results"]["lr"] == b["lr"]


def test_bad_settings_are_one_clear_message(capsys):
    code = main(["recommend", "--dataset", "digits", "--batch-size", "5000", "--no-store"])
    err = capsys.readouterr().err
    assert code == 2 and "larger than the training set" in err and "Traceback" not in err
    code = main(["recommend", "--budget", "forever", "--no-store"])
    assert code == 2 and "Traceback" not in capsys.readouterr().err
    with pytest.raises(Exception, match="rates"):
        Config(rates=2)
    assert Config(optim=SweptOptim("adam")).effort.rates == TINY.rates
    assert Config(rates=5, seeds=3).effort.sweep_seeds == 3


def test_the_cli_prints_the_card_as_json(capsys, tmp_path):
    out_csv = tmp_path / "sweep.csv"
    args = ["recommend", "--dataset", "digits", "--hidden", "32", "--rates", "3", "--seeds", "1"]
    args += ["--sweep-steps", "20", "--optimizer", "adam", "--out", str(out_csv)]
    code = main([*args, "--json", "--db", str(tmp_path / "h.db")])
    out = capsys.readouterr().out
    assert code == 0
    card = json.loads(out.strip().splitlines()[-1])
    assert card["optimizer"] == "adam" and card["rule"] == "sqrt"
    assert card["lr"] > 0 and card["batch"] >= 1 and "run_id" in card
    assert "torch.optim.Adam(" in card["snippet"] and card["schedule"]["name"] == "warm-up + cosine"
    table = pd.read_csv(out_csv)
    assert {"lr", "mean", "std", "best", "in_band"} <= set(table.columns)


def test_the_runs_re_score_no_more_training_samples_than_the_validation_set_holds(monkeypatch):
    """The training loss is only drawn beside the validation loss: re-scoring 4,096 training
    samples at every evaluation was most of the pipeline on a slow model. Digits holds 360
    validation samples and 1,437 training ones; every re-scoring (the plan's timed evaluation,
    the sweep's, the confirming runs') takes at most the 360."""
    from lrbs.core import loop
    from lrbs.experiments.recommend import plan

    sizes, real = [], loop.evaluate_data

    def counted(model, data, which="val", idx=None):
        if which == "train":
            sizes.append((len(idx), data.n_val, data.n_train))
        return real(model, data, which, idx)

    monkeypatch.setattr(loop, "evaluate_data", counted)
    monkeypatch.setattr(plan, "evaluate_data", counted)
    r = recommend.run(SETUP, replace(SMALL, train_epochs=3.0))
    assert r.card()["lr"] is not None
    assert len(sizes) > 10  # the plan, each sweep run, the confirming runs
    n_val, n_train = sizes[0][1:]
    assert n_val < n_train and {s for s, _, _ in sizes} == {n_val}
