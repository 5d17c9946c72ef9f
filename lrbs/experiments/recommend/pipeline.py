"""Recommend's pipeline: each step in turn, each composing a method (lrbs.methods) through the
runners of lrbs.runs, streaming on its own channels ("<step>/<channel>") so that the Result, the
page and the run history all rebuild every step from the same rows."""

from __future__ import annotations

import math
import threading
import time

from lrbs.core.data import TensorData
from lrbs.core.device import describe
from lrbs.core.errors import require
from lrbs.core.kept import load_data
from lrbs.core.loop import Budget, TrainConfig
from lrbs.core.setup import Setup
from lrbs.experiments.recommend.card import Result
from lrbs.experiments.recommend.plan import (
    HOLD_EVALUATIONS,
    HOLD_SAMPLES,
    LAW_POINTS,
    Config,
    Effort,
    plan_budget,
    score_size,
)
from lrbs.experiments.recommend.rules import candidate_batches, optimizer_family, sweep_grid
from lrbs.experiments.recommend.steps import SPANS, STEPS, Stage
from lrbs.methods import noise
from lrbs.methods.memory import make_fits, optimizer_states
from lrbs.runs import sweep as rates
from lrbs.runs.experiment import collect
from lrbs.runs.instruments import probe_batches, range_tests
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink


class _Pipeline:
    """The steps, each a method composed on the setup's model and data (`run` calls them in
    STEPS order; each returns its status)."""

    def __init__(self, setup, config, data, sink, rows, stop) -> None:
        self.setup, self.config, self.data = setup, config, data
        self.sink, self.rows, self.stop = sink, rows, stop

    def stage(self, step: str, columns: dict | None = None, part=(0.0, 1.0)) -> Stage:
        lo, hi = SPANS[step]
        a, b = lo + (hi - lo) * part[0], lo + (hi - lo) * part[1]
        return Stage(self.sink, step, a, b, columns=columns)

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def now(self) -> Result:
        return Result(self.config, self.rows.rows)

    @property
    def effort(self) -> Effort:
        return self.now().effort

    def range(self) -> str:
        e, stage = self.effort, self.stage("range")
        test = self.config.range_test(e)
        stopped = range_tests(self.setup, self.data, [test], e.range_seeds, stage, self.stop)
        return "stopped" if stopped else "finished"

    def sweep(self) -> str:
        now = self.now()
        e = now.effort
        grid = sweep_grid(list(now.suggestions().values()), e.rates)
        every = max(1, e.sweep_steps // LAW_POINTS) if now.carried else None
        for k in range(e.sweep_seeds):
            seed = self.setup.seed + k
            cfg = rates.Config(
                lrs=grid,
                budget=Budget(steps=e.sweep_steps),
                batch_size=self.config.batch_size,
                optim=self.config.optim,
                seed=seed,
                stacked=self.config.stacked,
                eval_every=every,
                train_eval_size=score_size(self.data),
            )
            part = (k / e.sweep_seeds, (k + 1) / e.sweep_seeds)
            stage = self.stage("sweep", {"seed": seed}, part)
            rates.train_rates(self.setup, self.data, cfg, stage, self.stop)
            if self.stopped:
                return "stopped"
        if self.now().confirmed is None:
            return "failed: every rate diverged"
        return "finished"

    def probe(self) -> str:
        stage, data = self.stage("probe"), self.data
        top = self.config.top_batch(data.n_train)
        stage.emit("info", {"n_train": data.n_train, "device": data.device.type, "upper": top})
        cap = self.config.cap_mib
        fits = make_fits(
            self.setup.fresh_model(data),
            data,
            int(cap * 2**20) if cap else None,
            optimizer_states(self.config.optim.name),
        )
        r = probe_batches(fits, top, stage, self.stop)
        return "stopped" if r.stopped else "finished"

    def throughput(self) -> str:
        now, e = self.now(), self.effort
        base, data = self.config.batch_size, self.data
        batches = candidate_batches(base, now.probe.safe, data.n_train, self.config.max_batch)
        lr = now.confirmed.lr

        def prepare(name: str) -> Planned:
            b = int(name.removeprefix("B="))
            tc = TrainConfig(
                batch_size=b,
                budget=Budget(steps=200, seconds=e.throughput_seconds),
                optim=self.config.optim_at(lr * min(1.0, base / b)),
                seed=self.setup.seed,
                log_every=5,
                eval_each_epoch=False,
                eval_at_end=False,
                divergence_factor=None,
            )
            return Planned(self.setup.fresh_model(data), tc, columns={"batch": b})

        run_series([f"B={b}" for b in batches], prepare, data, self.stage("throughput"), self.stop)
        return "stopped" if self.stopped else "finished"

    def noise(self) -> str:
        now, e, data, seed = self.now(), self.effort, self.data, self.setup.seed
        optim = self.config.optim_at(now.confirmed.lr)
        cfg = noise.sized_config(data.n_train, self.config.batch_size, optim, e.noise_steps, seed)
        stage = self.stage("noise")
        model = self.setup.fresh_model(data)
        meter = noise.periodic_meter(model, data, cfg, lambda row: stage.emit("rows", row))

        def prepare(name: str) -> Planned:
            tc = noise.measure_train_config(cfg, evaluate=False)
            return Planned(meter.model, tc, {"stop_rule": meter.observe}, {"phase": "measure"})

        run_series([noise.MEASURE], prepare, data, stage, self.stop)
        if self.stopped:
            return "stopped"
        if not math.isfinite(self.now().b_simple):
            return "failed: no noise scale was measured"
        return "finished"

    def confirm(self) -> str:
        plan = self.now().plan(swept=True)
        base = self.config.batch_size
        steps = int(min(math.ceil(plan["expected_steps"]), 10 * self.effort.sweep_steps))

        def prepare(name: str) -> Planned:
            tc = TrainConfig(
                batch_size=plan["batch"],
                budget=Budget(steps=max(1, steps)),
                optim=self.config.optim_at(plan["lr"]),
                seed=self.setup.seed,
                log_every=10,
                min_eval_seconds=0.25,
                train_eval_size=score_size(self.data),
            )
            columns = {
                "batch": plan["batch"],
                "lr": plan["lr"],
                "base_batch": base,
                "expected_steps": plan["expected_steps"],
                "target_loss": plan["target_loss"],
            }
            return Planned(self.setup.fresh_model(self.data), tc, columns=columns)

        carried = self.now().carried
        part = (0.0, 0.5) if carried else (0.0, 1.0)
        run_series(["confirm"], prepare, self.data, self.stage("confirm", part=part), self.stop)
        if carried and not self.stopped:
            self.hold()
        return "stopped" if self.stopped else "finished"

    def hold(self) -> None:
        """The card's own rate at the card's batch (known once the short run decided the batch),
        HOLD_SAMPLES x a sweep run's samples, no longer than the planned training."""
        now = self.now()
        f, base = now.final(), self.config.batch_size
        samples = min(HOLD_SAMPLES * self.effort.sweep_steps, now.horizon_steps) * base
        steps = max(1, math.ceil(samples / f["batch"]))

        def prepare(name: str) -> Planned:
            tc = TrainConfig(
                batch_size=f["batch"],
                budget=Budget(steps=steps),
                optim=self.config.optim_at(f["lr"]),
                seed=self.setup.seed,
                log_every=10,
                eval_every=max(1, steps // HOLD_EVALUATIONS),
                eval_each_epoch=False,
                train_eval_size=score_size(self.data),
            )
            columns = {"batch": f["batch"], "lr": f["lr"], "base_batch": base}
            columns |= {"target_loss": now.confirmed.loss, "sweep_samples": self.sweep_samples}
            return Planned(self.setup.fresh_model(self.data), tc, columns=columns)

        stage = self.stage("confirm", part=(0.5, 1.0))
        run_series(["hold"], prepare, self.data, stage, self.stop)

    @property
    def sweep_samples(self) -> int:
        return self.effort.sweep_steps * self.config.batch_size


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Every step in turn; a "steps" row as each ends (its status and seconds). A stop ends
    the pipeline after the step under way; a step that cannot go on (every rate diverged)
    ends it too, keeping what came before."""
    rows, sink = collect(sink)
    data: TensorData = load_data(setup)
    require(
        config.batch_size <= data.n_train,
        f"the base batch ({config.batch_size}) is larger than the training set ({data.n_train})",
    )
    sink.emit(
        "info",
        {
            "dataset": setup.data_name,
            "model": setup.model_name,
            "device": describe(data.device).name,
            "n_train": data.n_train,
            "optimizer": optimizer_family(setup, data, config.optim.name),
        },
    )
    sink.progress(0.0, "timing this model's updates")
    sink.emit("plan", plan_budget(setup, config, data))
    pipeline = _Pipeline(setup, config, data=data, sink=sink, rows=rows, stop=stop)
    status = "finished"
    for step in STEPS:
        t0 = time.perf_counter()
        outcome = getattr(pipeline, step)()
        sink.emit("steps", {"step": step, "status": outcome, "seconds": time.perf_counter() - t0})
        sink.progress(SPANS[step][1], f"{step}: {outcome}")
        if outcome == "stopped" or pipeline.stopped:
            status = "stopped"
            break
        if outcome != "finished":
            break
    result = Result(config, rows.rows, status)
    return Result(config, rows.rows, status, result.explain())
