"""The LR x batch-size map: its fits against known answers, its cells (stacked = sequential,
each cell exactly once over two worker processes), and bad input said in one line."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from lrbs.cli import main
from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.setup import Setup
from lrbs.experiments import lr_batch_map as m
from lrbs.methods import critical_batch as cb

BATCHES = (16, 32, 64, 128, 256, 512, 1024)
DIGITS = Setup(data=DataSpec(name="digits"))


def synthetic_cells(optimum, seeds=3, rates=9, decades=2.0, noise=0.003, centre="between"):
    """Cells whose loss is a parabola in log10(lr) around optimum(B), plus seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for b in BATCHES:
        for lr in cb.lr_grid(0.05, 16, b, centre=centre, rates=rates, decades=decades):
            for s in range(seeds):
                loss = 0.3 + (math.log10(lr) - math.log10(optimum(b))) ** 2
                rows.append({"batch": b, "lr": lr, "seed": s, "loss": loss + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_the_ridge_and_alpha_recover_a_square_root_law():
    cells = synthetic_cells(lambda b: 0.05 * (b / 16) ** 0.5)
    r = cb.ridge(cells)
    assert (r.edge == "").all()
    truth = 0.05 * (r.batch / 16) ** 0.5
    assert np.allclose(np.log10(r.lr_opt), np.log10(truth), atol=0.03)
    assert (r.band_lo <= r.lr_opt).all() and (r.lr_opt <= r.band_hi).all()
    fit = cb.fit_alpha(r)
    assert fit.points == len(BATCHES) and fit.bend is None
    assert fit.alpha == pytest.approx(0.5, abs=0.02)
    assert fit.lo <= 0.5 <= fit.hi and fit.hi < 1.0
    boot = cb.bootstrap_alpha(cells, fit, draws=100)
    assert boot[0] < fit.alpha < boot[1] and boot[1] - boot[0] < 0.1
    assert "sqrt" in fit.nearest_rule() and "linear" not in fit.nearest_rule()


def test_alpha_stops_where_the_ridge_bends():
    """Linear up to B = 128, flat beyond (McCandlish's saturation): alpha ~ 1 over 16..128
    and the bend is at 256."""
    cells = synthetic_cells(lambda b: 0.05 * min(b, 128) / 16, noise=0.0, seeds=1, rates=13)
    fit = cb.fit_alpha(cb.ridge(cells))
    assert (fit.b_first, fit.b_last, fit.bend) == (16, 128, 256)
    assert fit.alpha == pytest.approx(1.0, abs=0.03)


def test_eps_opt_fit_recovers_eps_max_and_b_noise():
    b = np.array(BATCHES, float)
    lr = 2.0 / (1 + 300 / b)
    fit = cb.fit_eps_opt(b, lr)
    assert fit.eps_max == pytest.approx(2.0, rel=1e-3)
    assert fit.b_noise == pytest.approx(300, rel=1e-3)
    assert fit.note == ""
    rising = cb.fit_eps_opt(b, 0.01 * b)  # linear to the end: B_noise beyond the batches
    assert "beyond" in rising.note


def test_b_crit_fit_against_the_papers_formula():
    b = np.array(BATCHES, float)
    s = 400 * (1 + 150 / b)  # S = S_min (1 + B_noise / B)
    fit = cb.fit_steps(b, s)
    assert fit.s_min == pytest.approx(400, rel=1e-6)
    assert fit.b_crit == pytest.approx(150, rel=1e-6)
    assert [cb.regime(x, fit.b_crit) for x in (16, 150, 1024)] == list(cb.REGIMES)
    assert cb.steps_to_target([1, 2, 5, 9], [3.0, 2.0, 1.0, 0.5], 1.5) == 5.0
    assert math.isnan(cb.steps_to_target([1, 2], [3.0, 2.0], 1.0))


def test_a_grid_that_misses_the_ridge_is_said():
    """The true optimum lies above every grid at the large batches: those batches warn and
    are left out of the fits."""
    cells = synthetic_cells(lambda b: 0.05 * (b / 16) ** 1.6, decades=1.0, seeds=2)
    rows = {"cells": cells.assign(status="finished").to_dict(orient="records")}
    result = m.Result(m.Config(), rows)
    edges = result.ridge[result.ridge.edge == "high"].batch.tolist()
    assert edges and edges[-1] == 1024
    text = " ".join(result.warnings())
    assert "B=1024: the best rate" in text and "largest of its grid" in text
    assert result.alpha is None or result.alpha.b_last < 1024


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rates": 1}, "at least three"),
        ({"batch_sizes": (64,)}, "at least two batch sizes"),
        ({"batch_min": 64, "batch_max": 64}, "at least two batch sizes"),
        ({"batch_sizes": (64, 5000)}, "larger than the training set"),
        ({"batch_min": 4096}, "larger than the training set"),
        ({"budget": "target"}, "needs a --target-loss"),
        ({"cap_mib": 1.0, "batch_min": 512}, "does not fit in memory"),
        ({"budget": "target", "target_loss": 0.5, "stacked": "yes"}, "equal budget"),
    ],
)
def test_bad_input_is_one_clear_message(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        m.run(DIGITS, m.Config(**kwargs, noise_steps=0))


def small(**kw):
    base = dict(batch_sizes=(32, 64), rates=3, steps=15, seeds=1, noise_steps=0, base_lr=0.05)
    return m.Config(**(base | kw))


def test_stacked_cells_equal_sequential_ones():
    seq = m.run(DIGITS, small(stacked="no"))
    stk = m.run(DIGITS, small(stacked="yes"))
    a, b = seq.cells(), stk.cells()
    assert a.cell.tolist() == b.cell.tolist() and len(a) == 6
    assert np.allclose(a.loss.astype(float), b.loss.astype(float), rtol=1e-4, atol=1e-6)
    ca, cb_ = seq.curves(), stk.curves()
    assert ca.step.tolist() == cb_.step.tolist()
    assert np.allclose(ca.loss, cb_.loss, rtol=1e-4, atol=1e-6)


def test_two_worker_processes_run_every_cell_exactly_once(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from lrbs.methods.study import open_storage

    journal = str(tmp_path / "study.journal")
    cfg = small(workers=2, storage=journal, study="map-test", steps=5)
    result = m.run(DIGITS, cfg)
    assert result.status == "finished"
    planned = [c["cell"] for c in cfg.cells(1438)]
    assert sorted(result.cells().cell) == sorted(planned)  # 6 cells, each once
    study = optuna.load_study(study_name="map-test", storage=open_storage(journal))
    done = [t.params["cell"] for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(done) == list(range(len(planned)))
    assert "worker" not in result.message


def test_the_command_runs_a_map_and_writes_every_cell(tmp_path, capsys):
    out = tmp_path / "cells.csv"
    args = ["lr-batch-map", "--dataset", "digits", "--batch-sizes", "32", "64", "128"]
    args += ["--rates", "3", "--steps", "20", "--seeds", "1", "--noise-steps", "40"]
    code = main([*args, "--out", str(out), "--db", str(tmp_path / "h.db"), "--json"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and figures["status"] == "finished"
    assert figures["cells"] == 9 and len(pd.read_csv(out)) == 9
    assert figures["b_simple"] is not None and figures["b_simple"] > 0
    assert {"alpha", "b_crit", "warnings", "seconds"} <= set(figures)
    from lrbs.runs.experiment import rebuild
    from lrbs.runs.store import RunStore

    with RunStore(tmp_path / "h.db") as store:  # the history's record rebuilds the same map
        info = store.run(figures["run_id"])
        pts = store.points(figures["run_id"])
    rows = {
        ch: part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
        for ch, part in pts.groupby("channel", sort=False)
    }
    again = rebuild(m, info, rows).summary()
    assert again["cells"] == 9 and again["b_simple"] == pytest.approx(figures["b_simple"])
    assert again["alpha"] == pytest.approx(figures["alpha"]) if figures["alpha"] else True


def test_the_memory_cap_ends_the_powers_of_two():
    """The probe's measured step memory at batch 256 bounds the map (the data allow 1024)."""
    from lrbs.core.kept import load_data
    from lrbs.methods.memory import make_fits, optimizer_states, step_memory_bytes

    data = load_data(DIGITS)
    model = DIGITS.fresh_model(data)
    need = step_memory_bytes(model, data.x_train[:256], data.y_train[:256])
    cfg = m.Config(batch_min=16, cap_mib=need * 1.01 / 2**20, noise_steps=0, seeds=1)
    fitting = m.largest_fitting(DIGITS, data, cfg)
    assert 256 <= fitting < 512
    states = optimizer_states(cfg.optim)  # the map counts its optimizer's buffers (SGD: none)
    assert make_fits(model, data, int(need * 1.01), states)(fitting)
    assert not make_fits(model, data, int(need * 1.01), states)(fitting + 1)
    assert cfg.batches(data.n_train, fitting) == (16, 32, 64, 128, 256)


def test_a_cell_cut_short_is_run_again_by_the_next_worker(tmp_path):
    """A stopped cell's trial failed; the grid sampler counts it as visited, the worker still
    runs it: every cell ends with exactly one complete trial."""
    import optuna
    from optuna.trial import TrialState

    from lrbs.cli.autotune import run_worker
    from lrbs.methods.study import open_storage

    journal = str(tmp_path / "study.journal")
    cfg = small(steps=3)
    cells = cfg.cells(1438)
    study = m.create_map_study(open_storage(journal), "cut", DIGITS, cfg, cells)
    for _ in range(2):  # two cells cut short
        t = study.ask()
        t.suggest_categorical("cell", list(range(len(cells))))
        study.tell(t, state=TrialState.FAIL)
    assert run_worker(journal, "cut", 100) == len(cells)  # `autotune worker` runs map cells
    again = optuna.load_study(study_name="cut", storage=open_storage(journal))
    done = [t.params["cell"] for t in again.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(done) == list(range(len(cells)))
    assert run_worker(journal, "cut", 100) == 0  # nothing left to run


def test_the_charts_mark_diverged_cells_the_ridge_and_the_regimes():
    from lrbs.charts import map as charts

    cells = synthetic_cells(lambda b: 0.05 * (b / 16) ** 0.5, seeds=2)
    cells.loc[cells.lr == cells.lr.max(), "loss"] = None  # the top rate of B=1024 diverged
    rows = {"cells": cells.assign(status="finished").to_dict(orient="records")}
    result = m.Result(m.Config(), rows)
    means = result.cell_means()
    assert (means.diverged > 0).sum() == 1 and means.diverged.max() == 2  # both seeds
    fits = result.fitted_curves()
    assert {"eps_opt(B)", "linear rule (alpha 1)", "sqrt rule (alpha 0.5)"} <= set(fits.curve)
    spec = charts.map_chart(means, result.ridge, fits).to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks[:2] == ["rect", "point"] and "line" in marks  # cells, crosses, ridge
    steps = pd.DataFrame({"batch": [16, 64, 256], "lr": [0.1] * 3, "steps": [900, 300, 200]})
    steps["steps_sd"], steps["seeds_reached"] = 10.0, 2
    spec = charts.steps_chart(steps, fits, b_crit=60.0, b_simple=90.0).to_dict()
    regimes = spec["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert regimes == list(cb.REGIMES)
    charts.ridge_chart(result.ridge, fits).to_dict()
