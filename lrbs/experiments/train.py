"""One training run: the loop every experiment uses, with its budget, optimizer and seed."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.device import describe
from lrbs.core.loop import EVENT_COLUMNS, HEADLINE, Budget, OptimSpec, TrainConfig, train
from lrbs.core.setup import Setup, load_tensors
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink

KIND = "train"


@dataclass(frozen=True, kw_only=True)
class Config:
    batch_size: int = option(128, low=1, help="batch size")
    budget: Budget = option(factory=lambda: Budget(epochs=1.0))
    optim: OptimSpec = option(factory=OptimSpec)
    seed: int = option(0, help="seed of the initial weights, shuffling and dropout")

    def __post_init__(self) -> None:
        check(self)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            batch_size=self.batch_size, budget=self.budget, optim=self.optim, seed=self.seed
        )


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Train a fresh model of the config's seed until the budget is spent: every event on
    "events" as it comes, then the run's headline figures as one "result" row."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    device = describe(data.device).name
    sink.emit("info", {"dataset": setup.data_name, "model": setup.model_name, "device": device})
    tc = config.train_config()

    def on_event(e) -> None:
        sink.emit("events", e.as_dict())
        sink.progress(tc.budget.fraction(e), e.kind)

    r = train(setup.fresh_model(data, config.seed), data, tc, on_event=on_event, stop=stop)
    sink.emit("result", r.headline())
    sink.progress(1.0, r.status)
    return Result(config, rows.rows, r.status, r.message)


@dataclass(frozen=True)
class Result(experiment.Result):
    def events(self) -> pd.DataFrame:
        return self.frame("events", EVENT_COLUMNS)

    def summary(self) -> dict:
        info = (self.rows.get("info") or [{}])[0]
        out = {k: info.get(k) for k in ("dataset", "model", "device")}
        head = (self.rows.get("result") or [{}])[0]
        out.update({k: head.get(k) for k in HEADLINE})
        out["status"] = self.status
        out["message"] = head.get("message") or self.message
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"events": self.events()}

    def report(self) -> str:
        s = self.summary()
        epochs = s["epochs"] if s["epochs"] is not None else float("nan")
        return (
            f"{s['status']}: {s['steps']} steps, {epochs:.2f} epochs, "
            f"val loss {s['val_loss']}, val acc {s['val_acc']}"
        )
