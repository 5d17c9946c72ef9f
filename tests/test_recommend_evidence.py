"""The Recommend card against its evidence, on hand-made pipeline rows (no training): a rate
the batch rule carries past the measured stability is capped and says by what, every band
names its batch, the confidence follows the evidence with its reasons, the sweep chart draws
the diverged rates, and the progress bar agrees with its "k of 6 steps"."""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from lrbs.charts.recommend import sweep_chart
from lrbs.experiments import recommend
from lrbs.experiments.recommend import Config, Stability, cap_rate, stability_of

# MNIST-1D with SGD as reported: 1.57 confirmed at batch 64, 3.39 diverged in both seeds, the
# range test's maximum usable rate 1.07
GRID = (0.34, 0.731, 1.57, 3.39)


def sweep_runs(losses: dict[float, tuple[float, float]]) -> list[dict]:
    """Two seeds' final validation loss per rate; None: diverged."""
    rows = []
    for lr, pair in losses.items():
        for seed, loss in enumerate(pair):
            status = "diverged" if loss is None else "finished"
            rows.append({"seed": seed, "lr": lr, "status": status, "val_loss": loss, "steps": 400})
    return rows


REPORTED = {0.34: (1.40, 1.41), 0.731: (1.12, 1.10), 1.57: (1.09, 1.10), 3.39: (None, None)}


def fake(
    monkeypatch,
    losses=REPORTED,
    max_usable: float = 1.07,
    sps=(0.02, 0.01, 0.03),
    b_noise: float = 1000.0,
    confirm: dict | None = None,
) -> recommend.Result:
    """A finished pipeline's Result: the sweep's rows as given, the range test's suggestions,
    the throughput at batches 64/128/256 and B_simple patched in; the short run at the chosen
    batch trains the rate the pipeline plans for it (`confirm` overrides its row)."""
    sugg = {"steep": 0.5, "minimum": 0.1, "valley": 0.17, "max_usable": max_usable}
    through = pd.DataFrame({"batch": [64, 128, 256], "seconds_per_step": list(sps)})
    monkeypatch.setattr(recommend.Result, "suggestions", lambda self: sugg)
    monkeypatch.setattr(recommend.Result, "range_spread", lambda self: pd.DataFrame())
    monkeypatch.setattr(recommend.Result, "throughput", lambda self: through)
    monkeypatch.setattr(recommend.Result, "b_simple", property(lambda self: b_noise))
    probe = SimpleNamespace(largest=2000, safe=2000)
    monkeypatch.setattr(recommend.Result, "probe", property(lambda self: probe))
    steps = [{"step": s, "status": "finished", "seconds": 1.0} for s in recommend.STEPS]
    rows = {"steps": steps, "sweep/runs": sweep_runs(losses)}
    plan = recommend.Result(Config(), rows).plan(swept=True)
    run = {"batch": plan["batch"], "lr": plan["lr"], "status": "finished"}
    run |= {"val_loss": plan["target_loss"], "target_loss": plan["target_loss"]}
    return recommend.Result(Config(), rows | {"confirm/runs": [run | (confirm or {})]})


def test_the_stability_cap_by_hand():
    s = Stability(max_usable=1.07, diverged=3.39, stable=1.57)
    # the linear rule doubles 1.57 for batch 128: above every rate that trained
    c = cap_rate(3.14, 1.57, 2.0, s)
    assert (c.lr, c.cap, c.capped_by) == (1.57, 1.57, "sweep")
    assert c.caps["range_test"] == pytest.approx(2.14) and c.rule_lr == 3.14
    # no swept rate diverged: the range test's limit, scaled by the same rule, decides
    c = cap_rate(3.14, 1.57, 2.0, Stability(max_usable=1.2))
    assert c.lr == pytest.approx(2.4) and c.capped_by == "range_test"
    # never below the rate the sweep itself trained
    c = cap_rate(3.14, 1.57, 2.0, Stability(max_usable=0.5))
    assert c.lr == 1.57 and c.capped_by == "swept"
    # at the base batch the confirmed rate stands, even above the range test's limit
    assert cap_rate(1.57, 1.57, 1.0, s).capped_by is None
    # a smaller batch, or a carry to a longer training, only lowers the rate: no cap binds
    assert cap_rate(0.39, 1.57, 0.25, s).lr == 0.39 and cap_rate(0.8, 1.57, 1.0, s).lr == 0.8


def test_the_sweeps_stability_edge():
    table = recommend.loss_table(pd.DataFrame(sweep_runs(REPORTED)))
    assert stability_of(table, 1.07) == Stability(1.07, 3.39, 1.57)
    calm = recommend.loss_table(pd.DataFrame(sweep_runs({0.1: (1, 1), 1.0: (0.5, 0.5)})))
    assert stability_of(calm, math.nan) == Stability()


def test_a_rate_the_linear_rule_carries_past_the_measured_stability_is_capped(monkeypatch):
    r = fake(monkeypatch)
    card = r.card()
    assert card["batch"] == 128 and card["rule"] == "linear" and card["rate_rule"] == "linear"
    assert card["rule_lr"] == pytest.approx(3.14)  # what the rule alone gives
    assert card["lr"] == card["cap"] == 1.57 and card["capped_by"] == "sweep"
    assert card["stability"] == {
        "max_usable": 1.07,
        "smallest_diverged": 3.39,
        "largest_stable": 1.57,
        "at_batch": 64,
    }
    # the short run at the chosen batch trained the capped rate, not the rule's
    assert r.plan(swept=True)["lr"] == 1.57 and card["trained_at_batch"]
    assert "capped at 1.57" in card["rate_text"] and "3.39 diverged" in card["rate_text"]
    assert card["schedule"]["peak_lr"] <= card["cap"]
    assert "torch.optim.SGD(model.parameters(), lr=1.57)" in card["snippet"]
    # the --json object carries the same
    again = json.loads(json.dumps(card, default=str))
    assert again["capped_by"] == "sweep" and again["cap"] == 1.57
    assert "capped at 1.57" in r.report()


def test_the_batch_choice_counts_the_steps_a_capped_rate_costs(monkeypatch):
    """At batch 128 the cap halves the linear rule's rate: twice the steps S(B) promised, so
    batch 128 wins only where its step is cheap enough to pay for them."""
    r = fake(monkeypatch)
    table = r.batch_table(swept=True).set_index("batch")
    s_min = 400 / (1 + 1000 / 64)
    assert table.steps_to_target[64] == pytest.approx(400)
    assert table.steps_to_target[128] == pytest.approx(s_min * (1 + 1000 / 128) * 2)
    assert table.steps_to_target[256] == pytest.approx(s_min * (1 + 1000 / 256) * 4)
    slow = fake(monkeypatch, sps=(0.01, 0.01, 0.03))  # the same step at 64 and 128: 64 wins
    assert int(slow.batch_table()[lambda t: t.best].batch.iloc[0]) == 64


def test_every_band_names_its_batch(monkeypatch):
    card = fake(monkeypatch).card()
    assert card["band"] == [0.731, 1.57] and card["band_batch"] == 64
    assert card["band_at_batch"] == pytest.approx([1.462, 1.57]) and card["band_rescaled"]
    text = card["band_text"]
    swept, rescaled = "at batch 64, as swept: 0.731 to 1.57", "at batch 128, rescaled"
    assert text == f"{swept}; {rescaled}, capped at 1.57: 1.46 to 1.57"
    for reason in card["confidence_reasons"]:
        if "band" in reason:
            assert "batch 64" in reason, reason


def test_confidence_comes_from_the_evidence(monkeypatch):
    # capped and rescaled: two issues, each a reason
    level, reasons = fake(monkeypatch).confidence()
    assert level == "low"
    assert any("capped at 1.57" in x for x in reasons)
    assert any("only check at that batch" in x for x in reasons)
    # at the base batch (the fastest step, no noise), a wide band, seeds agree: high
    wide = {0.34: (1.4, 1.41), 0.731: (1.10, 1.12), 1.57: (1.10, 1.11), 3.39: (2.0, 2.02)}
    base = fake(monkeypatch, wide, sps=(0.005, 0.01, 0.03), b_noise=0.0)
    card = base.card()
    assert card["batch"] == 64 and card["capped_by"] is None and card["rate_rule"] == "none"
    assert card["confidence"] == "high", card["confidence_reasons"]
    assert any("trained at batch 64 over every seed" in x for x in card["confidence_reasons"])
    # the same, but a band of one swept rate: the grid was too coarse, medium at most
    single = {0.34: (1.4, 1.41), 0.731: (1.3, 1.31), 1.57: (1.10, 1.11), 3.39: (2.0, 2.02)}
    one = fake(monkeypatch, single, sps=(0.005, 0.01, 0.03), b_noise=0.0)
    level, reasons = one.confidence()
    assert one.confirmed.band_width == 1 and level == "medium"
    assert any("one swept rate" in x and "too coarse" in x for x in reasons)
    # a short run at the chosen batch that missed the target: the batch stays, and says why
    missed = fake(monkeypatch, confirm={"val_loss": 9.0})
    card = missed.card()
    assert card["batch"] == 64 and card["lr"] == 1.57 and card["confidence"] != "high"
    assert any("missed the target" in x for x in card["confidence_reasons"])


def test_the_sweep_chart_draws_the_diverged_rates(monkeypatch):
    table = fake(monkeypatch).sweep_table()
    spec = sweep_chart(table).to_dict()
    rows = [r for d in spec["datasets"].values() for r in d if r.get("what") == "diverged"]
    assert [r["lr"] for r in rows] == [3.39] and rows[0]["label"] == "diverged (2 of 2 seeds)"
    finite = table[table.lr < 3.39]
    assert rows[0]["mean"] >= (finite["mean"] + finite["std"]).max()  # at the top edge
    marks = [layer["mark"] for layer in spec["layer"]]
    assert any(isinstance(m, dict) and m.get("shape") == "triangle-up" for m in marks)
    assert "diverged" in spec["title"]
    assert "diverged" not in sweep_chart(table[table.lr < 3.39]).to_dict()["title"]


def test_the_progress_bar_and_its_step_count_agree():
    n = len(recommend.STEPS)
    for k, step in enumerate(recommend.STEPS):
        lo, hi = recommend.SPANS[step]
        rows = {"steps": [{"step": s} for s in recommend.STEPS[:k]]}
        for share in (0.0, 0.5, 1.0):
            fraction, text = recommend.step_progress(rows, lo + share * (hi - lo))
            assert fraction == pytest.approx((k + share) / n)
            assert text.startswith(f"{k} of {n} steps done; now step {k + 1}")
    done = {"steps": [{"step": s} for s in recommend.STEPS]}
    assert recommend.step_progress(done, 0.9) == (1.0, f"all {n} steps done")
    # a stale fraction (the job writes it a few times a second) never runs the bar backwards
    rows = {"steps": [{"step": "range"}, {"step": "sweep"}]}
    assert recommend.step_progress(rows, 0.1)[0] == pytest.approx(2 / n)


def test_a_stopped_result_says_so_and_what_finished():
    steps = [{"step": "range", "status": "finished", "seconds": 1.0}]
    steps.append({"step": "sweep", "status": "stopped", "seconds": 1.0})
    r = recommend.Result(Config(), {"steps": steps}, "stopped")
    assert r.status_text() == (
        "Stopped after 1 of 6 steps: finished range test; not done: confirmation sweep "
        "(stopped), largest batch that fits (not run), throughput per batch (not run), "
        "gradient noise scale (not run), runs at the chosen batch (not run)"
    )
    card = r.card()
    assert card["status"] == "stopped" and card["steps_done"] == ["range"]


def carried(monkeypatch, hold: dict | None, curve: list[float]) -> recommend.Result:
    """`fake`'s pipeline with a planned training 4x the sweep's 400 updates (the rate carried)
    and a run at the card's rate whose evaluations are `curve` (evenly spaced)."""
    r = fake(monkeypatch)
    effort = recommend.EFFORT["quick"]
    plan = {k: getattr(effort, k) for k in recommend.Effort.__dataclass_fields__}
    plan |= {"sweep_steps": 400, "horizon_steps": 1600}
    rows = dict(r.rows) | {"plan": [plan]}
    card = recommend.Result(Config(), rows).final()
    if hold is not None:
        run = {"run": "hold", "batch": card["batch"], "lr": card["lr"], "steps": 800}
        run |= {"status": "finished", "val_loss": curve[-1]} | hold
        steps = [800 * (i + 1) / len(curve) for i in range(len(curve))]
        events = [
            {"run_id": "hold", "kind": "eval", "step": s, "val_loss": v}
            for s, v in zip(steps, curve, strict=True)
        ]
        rows |= {
            "confirm/runs": rows["confirm/runs"] + [run],
            "confirm/events": events,
        }
    return recommend.Result(Config(), rows)


def test_a_carried_rate_is_trained_at_the_cards_batch_and_must_still_fall(monkeypatch):
    best = 1.09  # the sweep's best mean loss (REPORTED, 1.57)
    r = carried(monkeypatch, {}, [1.6, 1.3, 1.15, 1.1, 1.08, 1.05])
    held, why = r.held()
    assert held and "still fell over its last third" in why and r.carried
    card = r.card()
    assert card["trained_at_batch"] and card["hold"]["held"] is True
    assert card["hold"]["lr"] == card["lr"] and card["hold"]["batch"] == card["batch"]
    assert "horizon" in card["rate_rule"] and r.carry_factor == pytest.approx(0.5)
    assert why in card["confidence_reasons"]
    assert not any("over every seed of the sweep" in x for x in card["confidence_reasons"])
    # ended above the sweep's best beyond its noise (2 % here): not held, and it costs a level
    r = carried(monkeypatch, {}, [1.6, 1.4, 1.3, 1.25, 1.2, best * 1.1])
    assert r.held()[0] is False and "did not reach the sweep's best" in r.held()[1]
    assert r.confidence()[0] == "low"  # carried + not held
    # below the best but rising over its last third
    assert (
        "rose over its last third"
        in carried(monkeypatch, {}, [1.6, 1.2, 0.9, 0.8, 1.0, 1.05]).held()[1]
    )
    # diverged
    held = carried(monkeypatch, {"status": "diverged", "val_loss": None}, [1.6, 2.0]).held()
    assert held == (False, held[1]) and held[1].endswith("diverged")
    # no such run (an older run's rows): nothing is claimed
    r = carried(monkeypatch, None, [])
    assert r.held() is None and "hold" not in r.card()


def test_a_sweep_shorter_than_an_epoch_is_carried_from_one_epoch(monkeypatch):
    """Within the first epoch the best rate barely moves (bench/horizon.py): a sweep of 400
    updates, one epoch 800, a planned 1,600 carries by (1600 / 800)^-0.5, not (1600 / 400)^-0.5."""
    from lrbs.methods.horizon import carried_from

    assert carried_from(400, 1600, 800) == 800 and carried_from(400, 1600, None) == 400
    assert carried_from(400, 600, 800) == 600  # never past the planned training: no carry
    assert carried_from(1000, 1600, 800) == 1000  # a sweep past one epoch carries from its end
    r = carried(monkeypatch, {}, [1.6, 1.3, 1.15, 1.1, 1.08, 1.05])
    rows = dict(r.rows)
    rows["plan"] = [rows["plan"][0] | {"train_epochs": 2.0}]  # 1,600 updates = 2 epochs
    r = recommend.Result(Config(), rows)
    assert r.epoch_steps == 800 and r.carry_start == 800
    assert r.carry_factor == pytest.approx(2**-0.5)
    assert r.card()["horizon_rule"]["from_steps"] == 800
    assert "from one epoch (800 updates" in r.horizon_text()
