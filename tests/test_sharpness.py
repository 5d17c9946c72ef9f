import json
import threading

import pytest
import torch
from test_pages import charts, open_page
from test_pages_lr import wait
from torch import nn

from lrbs.cli import main
from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.loop import OptimSpec
from lrbs.core.models import ModelSpec
from lrbs.core.setup import Setup
from lrbs.experiments import sharpness as sh
from lrbs.experiments.sweeps import SweptOptim
from lrbs.runs.sink import Rows, Sink

DIGITS = Setup(DataSpec("digits"), ModelSpec("mlp", hidden=(16,)))


def tiny_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=gen)
    return model, x, y


def exact_hessian_top(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = s.numel()
            params[n] = flat[i : i + k].view(s)
            i += k
        out = torch.func.functional_call(model, params, (x,))
        return nn.functional.cross_entropy(out, y)

    h = torch.autograd.functional.hessian(loss_of, flat0)
    return float(torch.linalg.eigvalsh(h).max())


def test_power_iteration_matches_the_exact_hessian():
    model, x, y = tiny_problem()
    exact = exact_hessian_top(model, x, y)
    meter = sh.Meter(model, x, y, iterations=500)
    meter.v = meter.v.double()
    got = meter.measure()
    assert got["sharpness"] == pytest.approx(exact, rel=0.01)
    assert not got["preconditioned"]


def test_on_a_quadratic_the_sharpness_is_the_curvature():
    a = torch.diag(torch.tensor([3.0, 1.5, 0.5, 0.1], dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)).double())
    h = q @ a @ q.T  # a rotated quadratic x.Hx/2: its curvature along the top direction is 3
    lam, v, _ = sh.power_iteration(lambda u: h @ u, torch.ones(4, dtype=torch.float64), 500, 1e-14)
    assert lam == pytest.approx(3.0, rel=1e-9)
    assert float(torch.dot(v, h @ v)) == pytest.approx(3.0, rel=1e-9)
    # a 1-D quadratic c/2 x^2 through autograd: f'' = c exactly
    c = 2.5
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def hvp(u):
        (g,) = torch.autograd.grad(0.5 * c * (w**2).sum(), w, create_graph=True)
        return torch.autograd.grad(g, w, u)[0]

    lam, _, _ = sh.power_iteration(hvp, torch.ones(1, dtype=torch.float64), 5)
    assert lam == pytest.approx(c, rel=1e-12)


def test_limits_by_formula():
    assert sh.stability_limit(0.1, OptimSpec("sgd", 0.1)) == pytest.approx(20.0)
    assert sh.stability_limit(0.1, OptimSpec("momentum", 0.1, 0.9)) == pytest.approx(38.0)
    assert sh.stability_limit(0.1, OptimSpec("momentum", 0.1, 0.5)) == pytest.approx(30.0)
    assert sh.stability_limit(0.01, OptimSpec("adam", 0.01)) == pytest.approx(3800.0)
    assert sh.stability_limit(0.01, OptimSpec("adamw", 0.01)) == pytest.approx(3800.0)


def test_config_checks():
    with pytest.raises(ConfigError):
        sh.Config(lrs=(0.1, 0.1))
    with pytest.raises(ConfigError):
        sh.Config(lrs=())
    with pytest.raises(ConfigError):
        sh.Config(subset=100, batch_size=200)
    with pytest.raises(ConfigError):
        sh.Config(every=0)


def small(**kw) -> sh.Config:
    base = {"lrs": (0.5, 4.0), "subset": 200, "steps": 30, "every": 5, "iterations": 10}
    return sh.Config(**(base | kw))


def test_end_to_end_streams_and_rebuilds():
    cfg = small()
    seen = Rows()
    result = sh.run(DIGITS, cfg, seen)
    assert result.status == "finished"
    rows = seen.rows["sharpness"]
    assert [r["step"] for r in rows if r["run"] == "lr=0.5"] == [0, 5, 10, 15, 20, 25, 30]
    for r in rows:
        assert set(sh.ROW_COLUMNS) <= set(r)
        assert r["limit"] == pytest.approx(2 / r["lr"])
    # one initialisation: the same lambda_0 for every rate
    inits = [r["sharpness"] for r in rows if r["step"] == 0]
    assert len(inits) == 2 and inits[0] == pytest.approx(inits[1])
    s = result.summary()
    assert s["lambda0"] == pytest.approx(inits[0])
    assert s["max_stable_lr"] == pytest.approx(2 / inits[0])
    assert [r["lr"] for r in s["rates"]] == [0.5, 4.0]
    assert 0 < s["measure_share"] < 1
    rebuilt = sh.Result.from_record(cfg, seen.rows, {"status": "finished", "results": s})
    assert rebuilt.summary() == s
    assert rebuilt.table().equals(result.table())
    assert list(result.tables()) == ["per_rate", "sharpness", "events"]


def test_momentum_and_minibatch_notes():
    cfg = small(lrs=(0.2,), optim=SweptOptim("momentum", momentum=0.5), batch_size=50, steps=20)
    result = sh.run(DIGITS, cfg)
    s = result.summary()
    assert s["rates"][0]["limit"] == pytest.approx(3.0 / 0.2)
    assert s["max_stable_lr_momentum"] == pytest.approx(3 / s["lambda0"])
    assert any("Minibatch" in n for n in s["notes"])


def test_adam_measures_the_preconditioned_sharpness():
    cfg = small(lrs=(0.01,), optim=SweptOptim("adam"), steps=10)
    m = sh.run(DIGITS, cfg).measurements()
    assert not m.preconditioned.iloc[0] and m.preconditioned.iloc[1:].all()
    assert m.limit.iloc[0] == pytest.approx(3800.0)


class StopAfter(Sink):
    def __init__(self, stop: threading.Event, n: int) -> None:
        self.stop, self.n, self.seen = stop, n, 0

    def emit(self, channel, row):
        if channel == "sharpness":
            self.seen += 1
            if self.seen == self.n:
                self.stop.set()


def test_a_stop_keeps_what_was_measured():
    stop = threading.Event()
    result = sh.run(DIGITS, small(steps=200), StopAfter(stop, 3), stop)
    assert result.status == "stopped"
    m = result.measurements()
    assert len(m) >= 3 and set(m.run) == {"lr=0.5"}  # the second rate never started
    assert result.summary()["lambda0"] is not None


def test_divergence_is_a_result():
    result = sh.run(DIGITS, small(lrs=(500.0,), steps=30))
    row = result.summary()["rates"][0]
    assert row["status"] == "diverged" and "diverged" in row["labels"]
    assert row["settled_ratio"] is None


def test_cli_json_keys(capsys):
    args = ["sharpness", "--dataset", "digits", "--hidden", "16", "--lr", "0.5", "1"]
    assert (
        main([*args, "--subset", "200", "--steps", "20", "--every", "10", "--json", "--no-store"])
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "status",
        "lambda0",
        "max_stable_lr",
        "max_stable_lr_momentum",
        "rates",
        "measure_seconds",
        "measure_share",
        "notes",
        "dataset",
        "model",
    ):
        assert key in out, key
    assert [r["lr"] for r in out["rates"]] == [0.5, 1.0]
    assert {"settled_ratio", "labels", "max_loss_spike", "sharpness_init"} <= set(out["rates"][0])


def test_page_runs_and_draws():
    at = open_page("pages/sharpness.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.text_input(key="s_hidden").set_value("16")
    at.text_input(key="sh_lrs").set_value("0.5, 2")
    at.number_input(key="sh_subset").set_value(300)
    at.number_input(key="sh_steps").set_value(30)
    at.number_input(key="sh_every").set_value(10).run()
    assert not at.exception and not at.error
    at.button(key="sh_job_run").click().run()
    wait(at, "sh_job")
    assert not at.exception
    assert len(charts(at)) == 3  # sharpness with its limits, the ratio, the loss
    assert any("measured three ways" in m.value for m in at.markdown)
    assert list(at.dataframe[-1].value.lr) == [0.5, 2.0]


def test_page_bad_input():
    at = open_page("pages/sharpness.py")
    at.text_input(key="sh_lrs").set_value("0.1, 0.1").run()
    assert not at.exception
    assert any("repeat" in e.value for e in at.error)


def test_a_cli_run_is_offered_by_the_page(tmp_path, capsys):
    db = tmp_path / "runs.db"
    args = ["sharpness", "--dataset", "digits", "--hidden", "16", "--lr", "0.5", "2"]
    rest = ["--subset", "300", "--steps", "30", "--every", "10", "--db", str(db), "--json"]
    assert main([*args, *rest]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    at = open_page("pages/sharpness.py")
    at.text_input(key="s_db_path").set_value(str(db))
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.text_input(key="s_hidden").set_value("16")
    at.text_input(key="sh_lrs").set_value("0.5, 2")
    at.number_input(key="sh_subset").set_value(300)
    at.number_input(key="sh_steps").set_value(30)
    at.number_input(key="sh_every").set_value(10).run()
    assert not at.exception and not at.error
    offers = [i.value for i in at.info if "These settings already ran" in i.value]
    assert offers and f"run #{figures['run_id']}" in offers[0]
    at.button(key="sh_job_load").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert table.settled_ratio.tolist() == [r["settled_ratio"] for r in figures["rates"]]
    assert len(charts(at)) == 3  # drawn from the stored points


@pytest.mark.parametrize(
    "ratio, label",
    [
        (0.1, None),
        (0.49, None),
        (0.6, "approaching the edge"),
        (0.85, "edge of stability"),
        (1.0, "edge of stability"),
        (1.19, "edge of stability"),
        (1.25, "past the edge of stability"),
        (1.42, "past the edge of stability"),
    ],
)
def test_the_edge_label_follows_the_measured_ratio(ratio, label):
    assert sh.edge_label(ratio) == label


def test_the_defaults_reach_the_edge_on_the_default_data():
    """The page is named for the edge of stability: its default rates on the default data
    (MNIST-1D's MLP) must show it, one below the edge, one at it, one past it."""
    cfg = sh.Config()
    result = sh.run(Setup(DataSpec("mnist1d"), ModelSpec("mlp")), cfg, Sink())
    table = result.table().set_index("lr")
    assert list(table.index) == list(sh.DEFAULT_LRS)
    for _, row in table.iterrows():  # the label is the one its own ratio gives
        edge = sh.edge_label(row.settled_ratio)
        assert edge is None or edge in row.labels
    labels = " | ".join(table.labels)
    assert "progressive sharpening" in labels
    assert "edge of stability" in table.labels.iloc[1], table.labels.iloc[1]
    assert "past the edge" in table.labels.iloc[2] or "edge of stability" in table.labels.iloc[2]
    assert table.settled_ratio.iloc[0] < 1 - sh.EDGE_BAND  # the smallest rate stays below it
