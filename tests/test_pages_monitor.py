"""A monitored run (lrbs.monitor in a hand-written loop, kind "monitor") on the Run history
page: its curves, B_simple against the batch, the sharpness against its limit and the advice;
a run still training shows as running; it exports with lrbs's own runs; a hostile URL gives no
traceback. The charts themselves: tests of lrbs/charts/monitor.py below."""

import math

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from support import ROOT, one_torch_thread
from test_pages import charts, open_page
from torch import nn

import lrbs
from lrbs.charts import monitor as mc
from lrbs.runs.store import RunStore, default_path

single_thread = pytest.fixture(autouse=True)(one_torch_thread)


class FixedTap:
    """B_simple = 1000 at any batch: the monitor advises growing a batch of 8."""

    def bind(self, monitor) -> None:
        self.monitor = monitor

    def observe(self, model):
        b = self.monitor.batch_size
        return (1.0 + 1000.0 / b, b, 1.0 + 1000.0 / (2 * b), 2 * b)


def monitored(steps: int = 40, close: bool = True, name: str = "page test"):
    """A short monitored run in the test's run history (LRBS_DB, tests/conftest.py)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.functional.mse_loss
    mon = lrbs.monitor(
        model, opt, name=name, sharpness_every=10, loss_fn=loss_fn, every=5, n_train=5000
    )
    mon.use_tap(FixedTap())
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    for t in range(steps):
        xb, yb = x[t % 8 * 8 :][:8], y[t % 8 * 8 :][:8]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        mon.step(loss, batch=(xb, yb))
    if close:
        mon.close()
    else:  # what a running loop has written by now
        mon.summary()
        mon._recorder.flush()
    return mon


def with_url(params: dict[str, str]) -> AppTest:
    """The history page opened from a link with these query parameters."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page("pages/history.py")
    at.run()
    assert not at.exception, at.exception
    return at


def history_page(run_id: int, params: dict | None = None) -> AppTest:
    at = with_url(params) if params else open_page("pages/history.py")
    at.session_state["h_selected"] = [run_id]
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_finished_monitored_run_shows_its_curves_and_advice():
    mon = monitored()
    at = history_page(mon.run_id)
    # the overlay, then loss, rate, batch, noise and sharpness
    assert len(charts(at)) == 6
    titles = [c.proto.spec for c in charts(at)]
    for title in ("Training loss", "Learning rate", "Noise scale", "Sharpness against"):
        assert any(title in spec for spec in titles), title
    noise = next(c.proto.spec for c in charts(at) if "Noise scale" in c.proto.spec)
    assert '"type":"log"' in noise.replace(" ", "")  # B_simple against the batch, log y
    advice = at.dataframe[-1].value
    assert list(advice["grow to"]) == [500] and list(advice["batch"]) == [8]
    assert any("finished: 40 step(s)" in c.value for c in at.caption)
    assert not at.info or not any("Running" in i.value for i in at.info)


def test_a_running_monitored_run_shows_as_running():
    mon = monitored(25, close=False, name="still training")
    try:
        at = history_page(mon.run_id)
        assert any("Running: 25 step(s)" in i.value for i in at.info)
        assert len(charts(at)) >= 4
        with RunStore(default_path()) as store:
            assert store.run(mon.run_id)["status"] == "running"
    finally:
        mon.close()
    at.run()  # the next draw: finished
    assert not at.exception
    assert any("finished" in c.value for c in at.caption)


def test_a_monitored_run_exports_and_compares_with_lrbs_runs():
    mon = monitored(20)
    with RunStore(default_path()) as store:
        points = store.export([mon.run_id])
    steps = points[points.channel == "steps"]
    assert set(points.history_kind) == {"monitor"} and len(steps) == 20
    assert {"step", "loss", "lr", "batch", "b_simple", "sharpness", "limit"} <= set(steps)
    assert steps.limit.dropna().iloc[0] == pytest.approx((2 + 2 * 0.9) / 0.01)
    at = history_page(mon.run_id)
    assert at.selectbox(key="h_channel").value == "steps"  # the overlay: step against loss
    assert (at.selectbox(key="h_x").value, at.selectbox(key="h_y").value) == ("step", "loss")


def test_a_link_opens_the_monitored_run():
    mon = monitored(12, name="linked")
    at = with_url({"job.h_open": str(mon.run_id)})
    assert at.session_state["h_selected"] == [mon.run_id]
    assert any("finished: 12 step(s)" in c.value for c in at.caption)


@pytest.mark.parametrize(
    "params",
    [
        {"job.h_open": "banana", "h_selected": "[999999]", "run": "-1"},
        {"job.h_open": "99999999999999999999999"},
        {"h_channel": '{"a":1}', "h_x": "NaN", "h_kind": '["zzz"]', "s_db_path": "[1]"},
    ],
)
def test_nonsense_query_parameters_give_no_traceback(params):
    mon = monitored(12)
    at = history_page(mon.run_id, params)
    if "job.h_open" in params:
        assert any("not a run in this history" in w.value for w in at.warning)


# ---------------------------------------------------------------------------- the charts


def steps_frame(sharpness: bool = True) -> pd.DataFrame:
    n = 30
    return pd.DataFrame(
        {
            "step": range(1, n + 1),
            "loss": [1 / (i + 1) for i in range(n)],
            "lr": [0.1] * 15 + [0.4] * 15,
            "batch": [8] * 15 + [32] * 15,
            "b_simple": [math.nan] * 5 + [40.0 + i for i in range(n - 5)],
            "sharpness": [(5.0 + i) if sharpness and i % 10 == 9 else math.nan for i in range(n)],
            "limit": [(38.0 if i < 15 else 9.5) if i % 10 == 9 else math.nan for i in range(n)],
        }
    )


def test_the_monitor_charts_have_what_the_run_measured():
    full = mc.monitor_charts(steps_frame())
    assert list(full) == ["loss", "rate", "batch", "noise", "sharpness"]
    noise = full["noise"].to_dict()
    values = pd.DataFrame(noise["datasets"][next(iter(noise["datasets"]))])
    assert set(values.curve) == {"batch in use", "B_simple (averaged)"}
    assert len(values[values.curve == "B_simple (averaged)"]) == 25  # the NaNs left out
    assert noise["encoding"]["y"]["scale"]["type"] == "log"
    sharp = mc.monitor_charts(steps_frame(sharpness=False))
    assert "sharpness" not in sharp and "noise" in sharp
    assert mc.monitor_charts(pd.DataFrame()) == {}
    table = mc.advice_table(pd.DataFrame([{"step": 20, "target": 500, "batch": 8, "x": 1}]))
    assert list(table.columns) == ["step", "batch", "grow to"]
    assert mc.advice_table(pd.DataFrame()).empty
