import math
import threading

import numpy as np
import pytest
import torch
from support import blobs, stored_rows

from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.loop import OptimSpec
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments import noise_scale as ns
from lrbs.runs.experiment import execute, rebuild
from lrbs.runs.sink import Sink
from lrbs.runs.store import RunStore, recorder

DIGITS = Setup(DataSpec("digits"), ModelSpec("mlp", hidden=(8,)))


def test_unbiased_estimators_recover_a_known_mean_and_covariance():
    """Per-example gradients g = G + xi with xi ~ N(0, Sigma): the mean gradient of a batch of
    B has E|G_B|^2 = |G|^2 + tr(Sigma)/B. Average the estimators over many batch pairs."""
    rng = np.random.default_rng(0)
    dim = 20
    G = rng.normal(size=dim) * 0.3
    scales = rng.uniform(0.5, 2.0, size=dim)  # Sigma = diag(scales^2)
    b_s, b_b = 8, 128
    est = []
    for _ in range(4000):
        gs = G + (rng.normal(size=(b_s, dim)) * scales).mean(0)
        gb = G + (rng.normal(size=(b_b, dim)) * scales).mean(0)
        est.append(ns.unbiased(gs @ gs, gb @ gb, b_s, b_b))
    g2, trace = np.mean(est, axis=0)
    assert g2 == pytest.approx(G @ G, rel=0.05)
    assert trace == pytest.approx((scales**2).sum(), rel=0.05)
    assert trace / g2 == pytest.approx((scales**2).sum() / (G @ G), rel=0.08)
    assert ns.b_simple(g2, trace) == trace / g2
    assert math.isnan(ns.b_simple(0.0, 1.0)) and math.isnan(ns.b_simple(-1.0, 1.0))


def test_grad_sq_norm_matches_autograd_and_leaves_no_gradients():
    data = blobs()
    m = build_model(ModelSpec("mlp", hidden=(8,)), (6,), 3, 0)
    x, y = data.x_train[:50], data.y_train[:50]
    got = ns.grad_sq_norm(m, x, y)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(m(x), y), list(m.parameters()))
    assert got == pytest.approx(sum(float(g.pow(2).sum()) for g in grads), rel=1e-5)
    assert all(p.grad is None for p in m.parameters())


def exact_b_simple(model, data):
    """tr(Sigma)/|G|^2 from every per-example gradient of the training set."""
    per = []
    for i in range(data.n_train):
        loss = torch.nn.functional.cross_entropy(
            model(data.x_train[i : i + 1]), data.y_train[i : i + 1]
        )
        g = torch.autograd.grad(loss, list(model.parameters()))
        per.append(torch.cat([t.flatten() for t in g]))
    per = torch.stack(per).double()
    mean = per.mean(0)
    trace = ((per - mean) ** 2).sum(1).mean()
    return float(trace / mean.pow(2).sum())


def test_meter_recovers_b_simple_at_fixed_weights():
    setup = Setup(DataSpec("digits", size=300), ModelSpec("mlp", hidden=(8,)))
    data = load_tensors(setup)
    expected = exact_b_simple(setup.fresh_model(data), data)
    # a negligible learning rate keeps the weights fixed, so every measurement samples the
    # same gradient distribution; 300 measurements averaged
    cfg = ns.Config(
        batch_small=4,
        batch_big=64,
        every=1,
        beta=0.995,
        batch_size=16,
        optim=OptimSpec("sgd", 1e-12),
        steps=300,
    )
    result = ns.run(setup, cfg)
    rows = result.measurements()
    assert len(rows) == 300 and result.status == "finished"
    assert rows.g2_avg.iloc[-1] > 0
    assert result.b_simple == pytest.approx(expected, rel=0.25)
    assert 0 < result.overhead < 1


def test_measurement_interval_headline_and_summary_keys():
    cfg = ns.Config(batch_small=8, batch_big=64, every=7, batch_size=16, steps=70)
    r = ns.run(DIGITS, cfg)
    steps = r.measurements().step.tolist()
    assert all(b - a >= 7 for a, b in zip(steps, steps[1:], strict=False))
    assert len(steps) >= 7
    h = r.headline()
    assert h["steps"] == 70 and h["measurements"] == len(steps)
    assert h["b_simple_q25"] <= h["b_simple"] * 10 and h["b_simple_q25"] <= h["b_simple_q75"]
    assert h["n_train"] == 1438 and h["status"] == "finished"
    summary = r.summary()
    legacy = {
        "dataset",
        "model",
        "b_simple",
        "b_simple_q25",
        "b_simple_q75",
        "overhead",
        "measurements",
        "steps",
        "final_loss",
        "status",
        "smith_le_g",
    }
    assert legacy <= set(summary) and "check" not in summary
    assert summary["dataset"] == "digits" and summary["model"] == "mlp"
    assert summary["smith_le_g"] == pytest.approx(0.1 * 1438 / 16)  # plain SGD: m = 0
    assert list(r.tables()) == ["rows"]


class Order(Sink):
    """Which channel each row came on, in order, and every progress report."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.fractions: list[float] = []

    def emit(self, channel: str, row: dict) -> None:
        self.seen.append(channel)

    def progress(self, fraction: float, text: str = "") -> None:
        self.fractions.append(fraction)


def test_measurements_stream_as_they_are_taken():
    sink = Order()
    r = ns.run(DIGITS, ns.Config(batch_small=8, batch_big=64, every=10, steps=60), sink)
    first_run_row = sink.seen.index("runs")
    n = len(r.measurements())
    assert n >= 4 and sink.seen[:first_run_row].count("rows") == n  # each before the run ended
    assert sink.fractions == sorted(sink.fractions) and sink.fractions[-1] == 1.0


def test_a_diverged_run_is_diverged_not_finished_with_nan(tmp_path):
    cfg = ns.Config(optim=OptimSpec("sgd", 1e5), steps=100, batch_big=256, check=(16, 64))
    wide = Setup(DataSpec("digits"))  # 256 hidden units: its loss becomes NaN at once
    rec = recorder(ns.KIND, wide, cfg, path=tmp_path / "h.db")
    rec.start()
    r = execute(ns, wide, cfg, recorder=rec)
    assert r.status == "diverged" and r.diverged
    assert "diverged" in r.message and "check was not run" in r.message
    assert math.isnan(r.b_simple) and r.check_table().empty  # no check on nothing
    assert r.summary()["check"]["fit_error"] == "the check was not run"
    with RunStore(tmp_path / "h.db") as store:
        info = store.run(rec.run_id)
        assert info["status"] == "diverged" and info["results"]["status"] == "diverged"


def test_the_check_through_the_series_and_its_fit():
    cfg = ns.Config(
        batch_small=8,
        batch_big=64,
        every=10,
        batch_size=16,
        steps=100,
        check=(16, 64),
        target_loss=1.0,
        check_steps=500,
    )
    sink = Order()
    r = ns.run(DIGITS, cfg, sink)
    table = r.check_table()
    assert list(table.batch) == [16, 64] and set(table.status) == {"reached"}
    assert (table.examples == table.steps * table.batch).all()
    # eps_opt(B) anchored at the training batch: its own rate there
    anchored = ns.anchored_lr(16, r.b_simple, 0.1, 16)
    assert table.lr.iloc[0] == pytest.approx(float(anchored)) == pytest.approx(0.1)
    assert sink.seen.count("runs") == 3  # the measuring run, then one per batch: one series
    assert sink.fractions == sorted(sink.fractions)
    check = r.summary()["check"]
    assert check["target_loss"] == 1.0 and len(check["runs"]) == 2
    assert list(r.tables()) == ["rows", "check"]
    assert len(r.tables()["check"]) == 3  # two batches and the fit's row


def test_a_stored_run_rebuilds_the_same_result(tmp_path):
    cfg = ns.Config(batch_small=8, batch_big=64, every=10, batch_size=16, steps=60)
    rec = recorder(ns.KIND, DIGITS, cfg, path=tmp_path / "h.db")
    rec.start()
    live = execute(ns, DIGITS, cfg, recorder=rec)
    info, rows = stored_rows(tmp_path / "h.db", rec.run_id)
    loaded = rebuild(ns, info, rows)
    assert loaded.config == cfg
    assert loaded.summary() == live.summary()
    assert loaded.measurements().b_simple.tolist() == live.measurements().b_simple.tolist()


def test_stop_keeps_what_was_measured():
    stop = threading.Event()

    class StopAfterTwo(Sink):
        n = 0

        def emit(self, channel: str, row: dict) -> None:
            if channel == "rows":
                self.n += 1
                if self.n == 2:
                    stop.set()

    cfg = ns.Config(batch_small=8, batch_big=64, every=10, steps=1000, check=(16, 64))
    r = ns.run(DIGITS, cfg, StopAfterTwo(), stop)
    assert r.status == "stopped" and r.headline()["steps"] < 1000
    assert len(r.measurements()) >= 2 and r.check_table().empty


def test_fit_recovers_s_min_and_e_min():
    s_min, e_min = 200.0, 40_000.0
    batches = np.array([16, 64, 256, 1024, 4096])
    steps = s_min * (1 + (e_min / s_min) / batches)  # S = S_min (1 + B_noise / B)
    fit = ns.fit_tradeoff(batches, steps)
    assert fit.s_min == pytest.approx(s_min) and fit.e_min == pytest.approx(e_min)
    assert fit.b_crit == pytest.approx(200.0)
    examples = steps * batches
    lhs = (steps / fit.s_min - 1) * (examples / fit.e_min - 1)
    np.testing.assert_allclose(lhs, 1.0)


def test_fit_needs_two_points_and_a_sensible_shape():
    with pytest.raises(ConfigError, match="at least two"):
        ns.fit_tradeoff([16, 64], [100, math.nan])
    with pytest.raises(ConfigError, match="non-positive"):
        ns.fit_tradeoff([16, 64, 256], [100, 200, 400])  # more steps for bigger batches


def test_optimal_lr_curve_and_the_one_sgd_noise_scale():
    lr = ns.optimal_lr(np.array([1, 100, 10_000]), b_noise=100, lr_max=1.0)
    assert lr.tolist() == pytest.approx([1 / 101, 0.5, 1 / 1.01])
    assert ns.smith_le_noise(0.1, 1000, 10, momentum=0.5) == pytest.approx(20.0)
    assert ns.sgd_noise_scale(np.array([0.1, 0.2]), 1000, 10).tolist() == pytest.approx([10, 20])
    from lrbs.experiments import scaling

    assert scaling.noise_scale(0.1, 1000, 10, 0.5) == ns.sgd_noise_scale(0.1, 1000, 10, 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_small=64, batch_big=64), "must be smaller than the big batch"),
        (dict(batch_small=128, batch_big=64), "must be smaller than the big batch"),
        (dict(every=0), "measurement interval k must be at least 1"),
        (dict(batch_small=0), "small batch must be at least 1"),
        (dict(beta=1.0), "beta"),
        (dict(check=(16, 16)), "listed twice"),
        (dict(check=(0, 16)), "check batch sizes must be at least 1"),
        (dict(target_loss=0.0), "target loss must be > 0"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ns.Config(**kwargs)


def test_the_config_is_keyword_only():
    with pytest.raises(TypeError):
        ns.Config(32, 512)  # type: ignore[misc]


def test_big_batch_larger_than_data():
    with pytest.raises(ConfigError, match="big batch .* larger than the training set"):
        ns.Config(batch_big=1000).check_data(240)
    with pytest.raises(ConfigError, match="check batch .* larger than the training set"):
        ns.Config(batch_big=64, check=(16, 500)).check_data(240)


def test_one_explanation_of_a_critical_batch_and_of_a_value_above_the_data():
    """The reported contradiction: 233, 586 and 4,025 for the same data, the last above its
    4,000 training samples, each shown without saying what it is."""
    above = ns.critical_batch_note(4025, "b_simple", 4000, steps=1000, batch=128, lr=0.1, loss=0.42)
    assert above.startswith("B_simple = tr(Σ)/|G|² = 4,025 is the gradient noise scale measured ")
    assert "after 1,000 training steps at batch 128, lr 0.1 (training loss 0.42 then)" in above
    assert ns.WHY_THEY_DIFFER in above
    assert "above the training set (N = 4,000)" in above and "capped at N = 4,000" in above
    below = ns.critical_batch_note(586, "b_crit", 4000, target=0.5)
    assert "B_crit = E_min/S_min = 586" in below and "training loss 0.5" in below
    assert "above the training set" not in below
    assert ns.WHY_THEY_DIFFER not in ns.critical_batch_note(233, "b_noise", 4000, why=False)
    assert ns.critical_batch_note(math.nan, "b_simple", 4000, why=False) == "No B_simple here."
    assert ns.capped_batch(4025, 4000) == 4000 and ns.capped_batch(233, 4000) == 233
    with pytest.raises(ConfigError, match="unknown critical-batch quantity"):
        ns.critical_batch_note(10, "b_guess", 4000)


def test_the_note_of_a_measurement_held_by_another_experiment():
    """Recommend holds the meter's rows without a noise-scale config: the note still says what
    its B_simple is (recommend's page calls Result(None, rows).critical_note())."""
    rows = {
        "rows": [{"step": 40, "loss": 0.9, "b_simple": 5000.0}],
        "runs": [{"phase": "measure", "n_train": 1438, "status": "finished"}],
    }
    note = ns.Result(None, rows).critical_note()
    assert "B_simple = tr(Σ)/|G|² = 5,000" in note and "after 40 training steps" in note
    assert "above the training set (N = 1,438)" in note
