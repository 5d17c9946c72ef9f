"""The monitor: lrbs's measurements inside the user's own training loop.

    mon = lrbs.monitor(model, optimizer, name="my run")
    for x, y in loader:
        opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()
        mon.step(loss, batch_size=len(x))    # after optimizer.step(): p.grad is still there
    mon.close()                              # or `with lrbs.monitor(...) as mon:`
    mon.summary()

What it measures on one process, at no extra forward or backward: the gradient noise scale
B_simple = tr(Sigma)/|G|^2 from the gradients the loop already has (see lrbs/monitor/taps.py:
the micro-batches of gradient accumulation when `mon.micro()` is called after each one's
backward, a reading every step; else one pair of successive steps every `noise_every` steps,
N/noise_every readings per N steps, 8 by default so that it costs about 2 % of a step on
bench/monitor.py's MLP), averaged with `NoiseAverage` (its window, about 20 readings, is then
about 160 steps; advice waits for 20 readings); every `sharpness_every` steps
the sharpness (power iteration, a few extra backwards) against the optimizer's stability limit.
When the averaged B_simple passes the batch in use by MARGIN it advises (an "advice" row and a
log line): grow the batch to B = min(B_simple, N/10), the rate by the optimizer's rule (linear
for SGD, sqrt for the adaptive ones), and the accumulation needed where B exceeds `max_batch`.
Given a `GrowingBatchSampler` it acts: the sampler grows at the next epoch and the rate is
rescaled when the new size takes effect.

It records into the run history as kind "monitor" (channels "steps" and "advice"), status
"running" while the loop trains, "finished" (or "diverged" after a NaN/inf loss) on close and
"interrupted" when the process died. Under torchrun every rank builds the monitor and calls
`step` with its own batch: the monitor counts every rank's samples, reads B_simple from DDP's
all-reduce on a DistributedDataParallel model (lrbs/monitor/ddp.py), averages the loss and the
sharpness over the ranks when it reads them, and only rank 0 records, so `summary()` is the
same on every rank but for "rank". The numbers are read from the device every `every` steps
in one go, not once per step; history writes go out at most once a second. A history that
cannot be written costs one warning; the loop and `summary()` go on.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from lrbs.core.errors import ConfigError, positive_int, require
from lrbs.methods.noise import NoiseAverage, b_simple, unbiased
from lrbs.methods.params import trainable
from lrbs.methods.scaling import scaled_lr
from lrbs.methods.sharpness import SharpnessMeter
from lrbs.monitor.advice import MARGIN, Advice, describe_optimizer, read_numbers
from lrbs.monitor.taps import MicroBatchTap, SuccessiveTap

log = logging.getLogger(__name__)

KIND = "monitor"
STEP_COLUMNS = (
    "step",
    "samples",
    "loss",
    "lr",
    "batch",
    "b_simple",
    "b_simple_raw",
    "g2",
    "trace",
    "sharpness",
    "limit",
)
ADVISE_AFTER = 20  # noise readings averaged before any advice
READ_EVERY = 10  # steps between reads of the device's numbers
NOISE_EVERY = 8  # steps per successive-step pair: its cost spread over 8 steps (bench/monitor.py)
SHARPNESS_ITERATIONS = 20
# What the rate does when the monitor grows the batch: "rule" scales it by the optimizer's rule
# (the noise rate/batch kept: fewer updates at equal samples); "keep" holds it, so the noise
# falls as the batch grows: "increase the batch instead of decaying the rate", measured
# (bench/growing.py: on Fashion-MNIST "keep" matched a step decay in 47 % fewer updates,
# "rule" ended where a fixed batch ends).
GROW_RATES = ("rule", "keep")


def dist_ready() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _lr(group: dict) -> float:
    lr = group["lr"]
    return float(lr) if isinstance(lr, torch.Tensor) else lr


def _optional_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


class Monitor:
    """See the module's note; build it with `lrbs.monitor(...)`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        name: str = "",
        db: Any = None,
        *,
        noise: bool = True,
        sharpness_every: int | None = None,
        loss_fn: Callable | None = None,
        advise: bool = True,
        sampler: Any = None,
        max_batch: int | None = None,
        n_train: int | None = None,
        beta: float = 0.95,
        every: int = READ_EVERY,
        noise_every: int = NOISE_EVERY,
        grow_rate: str = "rule",
        rank: int | None = None,
        world: int | None = None,
    ) -> None:
        self.params = trainable(model)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(
                f"the monitor needs the torch optimizer that trains the model, got "
                f"{type(optimizer).__name__}"
            )
        require(isinstance(name, str), f"the run's name must be a string, got {name!r}")
        if not (db is None or db is False or isinstance(db, str | os.PathLike)):
            raise ConfigError(f"db must be None, False or a file path, got {db!r}")
        self.sharpness_every = _optional_int("sharpness_every", sharpness_every)
        if self.sharpness_every is not None:
            require(callable(loss_fn), "sharpness_every needs loss_fn (the loss of the loop)")
        require(
            grow_rate in GROW_RATES,
            f"grow_rate must be one of {', '.join(GROW_RATES)}, got {grow_rate!r}",
        )
        self.grow_rate = grow_rate
        self.max_batch = _optional_int("max_batch", max_batch)
        self.n_train = _optional_int("n_train", n_train)
        if sampler is not None:
            if not all(hasattr(sampler, a) for a in ("grow", "on_change", "batch_size")):
                raise ConfigError(
                    "the monitor drives a lrbs.GrowingBatchSampler (grow, on_change and "
                    f"batch_size), got {type(sampler).__name__}"
                )
            if self.n_train is None:
                self.n_train = getattr(sampler, "n", None)
            sampler.on_change(self._on_batch_change)
        self.model, self.optimizer, self.name = model, optimizer, name
        self.loss_fn, self.advise, self.sampler, self.noise = loss_fn, advise, sampler, noise
        self.every = positive_int("every", every)
        self.noise_every = positive_int("noise_every", noise_every)
        self.rule, self._limit = describe_optimizer(optimizer)
        self.rank, self.world = self._ranks(rank, world)

        self.steps, self.samples = 0, 0
        self.batch_size: int | None = None  # this step's (read by the taps)
        self.in_use: int | None = None  # the batch in use, as of the last read
        self.average = NoiseAverage(beta)
        self.status = "running"
        self.diverged_at: int | None = None
        self.advice: list[Advice] = []
        self.latest: dict[str, Any] = {}
        self._trend: list[tuple[int, float]] = []  # (step, averaged B_simple) per read
        self._pending: list[tuple[dict, Any]] = []
        self._accumulation = 1  # micro-batches per step, as the loop's mon.micro() calls say
        self._micro_calls = 0
        self._micro = MicroBatchTap(self.params)
        self._micro.bind(self)
        self._taps: list[Any] = []
        self._default_taps = True
        if noise:
            self.use_tap(SuccessiveTap(self.params, self.noise_every))
            self._default_taps = True
        self._sharpness: SharpnessMeter | None = None
        self._recorder = None
        self._warned: set[str] = set()
        # under torch.distributed every rank agrees on the numbers (lrbs/monitor/ddp.py); off
        # where the ranks may no longer all be there (an exception, the interpreter's exit)
        self._sync = self.world > 1 and dist_ready()
        if noise and isinstance(model, nn.parallel.DistributedDataParallel):
            self._use_ddp_tap(model)
        if self.rank == 0 and db is not False:
            self._start_recording(db)
        self._run_id = self._recorder.run_id if self._recorder is not None else None
        if self._sync:
            from lrbs.monitor.ddp import shared_value

            shared = shared_value(self._run_id)
            self._run_id = None if shared is None else int(shared)
        atexit.register(self._close_at_exit)

    @staticmethod
    def _ranks(rank: int | None, world: int | None) -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world = dist.get_world_size() if world is None else world
        return (0 if rank is None else int(rank)), (1 if world is None else int(world))

    # ------------------------------------------------------------------ the history

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _start_recording(self, db: Any) -> None:
        from lrbs.runs.store import Recorder, default_path

        group = self.optimizer.param_groups[0]
        hyper = {k: v for k, v in group.items() if k != "params"}
        config = {
            "monitor": {
                "noise": self.noise,
                "sharpness_every": self.sharpness_every,
                "advise": self.advise,
                "max_batch": self.max_batch,
                "n_train": self.n_train,
                "beta": self.average.g2.beta,
                "noise_every": self.noise_every,
                "world": self.world,
            },
            "optimizer": {"name": type(self.optimizer).__name__, **hyper},
            "model": {
                "name": type(self.model).__name__,
                "parameters": sum(p.numel() for p in self.params),
            },
        }
        meta = {
            "name": self.name,
            "model": type(self.model).__name__,
            "device": str(self.params[0].device),
        }
        try:
            self._recorder = Recorder(db or default_path(), KIND, config, meta)
            self._recorder.start()
        except Exception as exc:  # the user's training goes on; only the history is lost
            self._recorder = None
            self._warn_once("history", "lrbs monitor: not recorded in the run history: %s", exc)

    def _record(self, fn: Callable[[], Any]) -> None:
        if self._recorder is None:
            return
        try:
            fn()
        except Exception as exc:
            self._recorder = None
            self._warn_once("history", "lrbs monitor: stopped recording the run history: %s", exc)

    @property
    def run_id(self) -> int | None:
        """The run's id in the history (rank 0's, on every rank)."""
        return self._run_id

    def _use_ddp_tap(self, model: nn.Module) -> None:
        from lrbs.monitor.ddp import DDPNoiseTap

        try:
            self.use_tap(DDPNoiseTap(model))
        except ConfigError as exc:
            log.warning("lrbs monitor: %s; the successive-step estimator is used instead", exc)

    # ------------------------------------------------------------------ the loop's calls

    def use_tap(self, tap: Any) -> None:
        """Take B_simple's two batch sizes from `tap` (see lrbs/monitor/taps.py); the first
        tap put in use replaces the default successive-step one. Per step, the first tap that
        gives a reading is used."""
        require(callable(getattr(tap, "observe", None)), "a noise tap needs observe(model)")
        if self._default_taps:
            self._taps, self._default_taps = [], False
        if hasattr(tap, "bind"):
            tap.bind(self)
        self._taps.append(tap)

    def micro(self) -> None:
        """After each micro-batch's backward when the loop accumulates gradients: the
        micro-batches become B_simple's small batch, the step's sum its big one."""
        if self.noise and self._micro not in self._taps:
            self._taps = [t for t in self._taps if not isinstance(t, SuccessiveTap)]
            self._taps.insert(0, self._micro)
        self._micro_calls += 1
        if self.noise:
            self._micro.snapshot()

    def step(self, loss: Any, batch_size: int | None = None, *, batch: tuple | None = None) -> None:
        """Record the step just taken: its loss, its batch (`batch_size`, or the length of
        `batch`'s inputs), what the taps measure, and every `sharpness_every` steps the
        sharpness on `batch` = (x, y)."""
        if self.status != "running":
            raise ConfigError("mon.step() after mon.close(): open a new monitor")
        value = _loss_value(loss)
        # under DDP the loop gives this rank's batch; the step's gradient is every rank's
        b = self._step_batch(batch_size, batch) * self.world
        self.steps += 1
        self.samples += b
        self.batch_size = b
        if self._micro_calls:
            self._accumulation, self._micro_calls = self._micro_calls, 0
        reading = None
        for tap in self._taps:
            reading = tap.observe(self.model)
            if reading is not None:
                break
        lr = _lr(self.optimizer.param_groups[0])
        row = {"step": self.steps, "samples": self.samples, "loss": value, "lr": lr, "batch": b}
        if self.sharpness_every and self.steps % self.sharpness_every == 0:
            row.update(self._measure_sharpness(batch, lr))
        self._pending.append((row, reading))
        if len(self._pending) >= self.every:
            self._read()

    def _step_batch(self, batch_size: Any, batch: Any) -> int:
        if batch is not None and (not isinstance(batch, tuple | list) or len(batch) != 2):
            raise ConfigError("mon.step's batch must be the pair (inputs, targets)")
        if batch_size is None and batch is not None:
            batch_size = len(batch[0])
        if batch_size is None:
            raise ConfigError("mon.step needs the step's batch size: mon.step(loss, batch_size=n)")
        return positive_int("mon.step's batch_size", batch_size)

    def _measure_sharpness(self, batch: Any, lr: float) -> dict:
        if batch is None:
            raise ConfigError(
                "sharpness_every needs the step's batch: mon.step(loss, batch=(x, y))"
            )
        if self._sharpness is None:
            # DDP's module itself: the power iteration's backwards are this rank's alone
            model = getattr(self.model, "module", self.model)
            self._sharpness = SharpnessMeter(
                model, self.loss_fn, SHARPNESS_ITERATIONS, self.optimizer
            )
        s = self._sharpness.measure(*batch).sharpness
        if self._sync:  # each rank's batch: their mean
            from lrbs.monitor.ddp import mean_over_ranks

            s = mean_over_ranks([s])[0]
        limit = self._limit(lr) if self._limit is not None and lr > 0 else None
        self.latest.update(sharpness=s, limit=limit, sharpness_step=self.steps)
        return {"sharpness": s, "limit": limit}

    # ------------------------------------------------------------------ reading the numbers

    def _read(self) -> None:
        """Read the pending steps' numbers off the device, average, record, advise."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        flat: list = []
        for row, reading in pending:
            flat.append(row["loss"])
            if reading is not None:
                flat += [reading[0], reading[2]]
        values = read_numbers(flat)
        if self._sync:  # the loss: every rank's batch, the mean of theirs
            from lrbs.monitor.ddp import mean_over_ranks

            at = [0]
            for _row, reading in pending[:-1]:
                at.append(at[-1] + (1 if reading is None else 3))
            for i, v in zip(at, mean_over_ranks([values[i] for i in at]), strict=True):
                values[i] = v
        numbers = iter(values)
        rows = []
        for row, reading in pending:
            row["loss"] = next(numbers)
            if not math.isfinite(row["loss"]) and self.diverged_at is None:
                self.diverged_at = row["step"]
                log.warning(
                    "lrbs monitor: the loss is %s at step %d: recorded as diverged (the "
                    "training is not stopped by the monitor)",
                    row["loss"],
                    row["step"],
                )
            if reading is not None:
                small, big = next(numbers), next(numbers)
                self._add_reading(row, small, reading[1], big, reading[3])
            rows.append(row)
            self.latest.update(loss=row["loss"], batch=row["batch"])
        # the batch in use: a window's largest (an epoch's last batch may be a short one)
        self.in_use = max(r["batch"] for r in rows)
        self._trend.append((self.steps, self.latest.get("b_simple", math.nan)))
        self._record(lambda: [self._recorder.emit("steps", r) for r in rows])
        self._maybe_advise()

    def _add_reading(self, row: dict, small: float, b_s: float, big: float, b_b: float) -> None:
        if not (math.isfinite(small) and math.isfinite(big)) or b_s >= b_b:
            return
        g2, trace = unbiased(small, big, b_s, b_b)
        if not (math.isfinite(g2) and math.isfinite(trace)):
            return
        g2_avg, trace_avg = self.average.update(g2, trace)
        b = b_simple(g2_avg, trace_avg)
        row.update(b_simple=b, b_simple_raw=b_simple(g2, trace), g2=g2_avg, trace=trace_avg)
        self.latest.update(b_simple=b, g2=g2_avg, trace=trace_avg)

    # ------------------------------------------------------------------ advice and action

    def _maybe_advise(self) -> None:
        bs, batch = self.latest.get("b_simple", math.nan), self.in_use
        if not self.advise or self.average.n < ADVISE_AFTER or batch is None:
            return
        if not math.isfinite(bs) or bs <= MARGIN * batch:
            return
        if self.sampler is not None and self.sampler.pending is not None:
            return  # a growth is on its way
        target = int(min(bs, self.n_train / 10) if self.n_train else bs)
        last = self.advice[-1] if self.advice else None
        if target <= batch or (last and last.batch == batch and target < 2 * last.target):
            return
        # max_batch is one rank's memory: under DDP the ranks share the batch
        per_step = self.max_batch * self.world if self.max_batch else None
        accumulation = -(-target // per_step) if per_step else 1
        lr = _lr(self.optimizer.param_groups[0])
        advice = Advice(
            step=self.steps,
            b_simple=bs,
            batch=batch,
            target=target,
            rule=self.rule,
            lr=lr,
            new_lr=lr if self.grow_rate == "keep" else scaled_lr(lr, batch, target, self.rule),
            accumulation=accumulation,
            micro_batch=target // (accumulation * self.world),
            grow_to=self._grow(target),
        )
        self.advice.append(advice)
        if self.rank == 0:  # one line per job, not per rank
            log.info("lrbs monitor: %s", advice.line())
        self._record(lambda: self._recorder.emit("advice", asdict(advice)))

    def _grow(self, target: int) -> int | None:
        """Ask the sampler (the loop's micro-batches: `target` / the accumulation per step)
        to grow at its next epoch, within max_batch and the data; the new size or None."""
        s = self.sampler
        if s is None:
            return None
        new = max(1, target // (self._accumulation * self.world))
        new = min(new, self.max_batch or new, getattr(s, "n", new))
        if new <= s.batch_size:
            return None
        s.grow(new)
        return new

    def _on_batch_change(self, old: int, new: int) -> None:
        """The sampler's batch changed: the rate of every group by the rule (unless kept)."""
        if self.grow_rate == "keep":
            return
        factor = scaled_lr(1.0, old, new, self.rule)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].mul_(factor)
            else:
                group["lr"] = group["lr"] * factor
        log.info(
            "lrbs monitor: batch %d -> %d, the rate x %.3g (%s rule)", old, new, factor, self.rule
        )

    # ------------------------------------------------------------------ the end

    def summary(self) -> dict:
        """steps, samples, batch, loss (latest), b_simple (latest averaged) and its trend, the
        rate per group, sharpness / limit where measured, the advice given, status."""
        self._read()
        return {
            "name": self.name,
            "run_id": self.run_id,
            "status": self.status,
            "rank": self.rank,
            "world": self.world,
            "steps": self.steps,
            "samples": self.samples,
            "batch": self.in_use,
            "loss": _finite(self.latest.get("loss")),
            "lr": [_lr(g) for g in self.optimizer.param_groups],
            "b_simple": _finite(self.latest.get("b_simple")),
            "b_simple_trend": self._trend_summary(),
            "g2": _finite(self.latest.get("g2")),
            "trace": _finite(self.latest.get("trace")),
            "noise_readings": self.average.n,
            "sharpness": _finite(self.latest.get("sharpness")),
            "limit": _finite(self.latest.get("limit")),
            "sharpness_step": self.latest.get("sharpness_step"),
            "diverged_at": self.diverged_at,
            "advice": [asdict(a) for a in self.advice],
        }

    def _trend_summary(self) -> dict | None:
        """The averaged B_simple now against half-way through the run: their ratio, and
        "rising"/"falling" where it moved by more than a fifth, else "flat"."""
        points = [(s, b) for s, b in self._trend if math.isfinite(b) and b > 0]
        if len(points) < 2:
            return None
        half = points[-1][0] / 2
        then = min(points, key=lambda p: abs(p[0] - half))
        if then == points[-1]:
            then = points[0]
        ratio = points[-1][1] / then[1]
        direction = "rising" if ratio > 1.2 else "falling" if ratio < 1 / 1.2 else "flat"
        return {"from_step": then[0], "ratio": ratio, "direction": direction}

    def close(self, status: str | None = None, error: str | None = None) -> dict:
        """Read what is pending, end the run's history entry ("finished", or "diverged" after a
        NaN/inf loss, or `status`) and return the summary. Closing twice does nothing more."""
        if self.status != "running":
            return self.summary()
        atexit.unregister(self._close_at_exit)
        if status in ("error", "stopped"):
            self._sync = False  # an abnormal end: the other ranks may not be here
        self._read()
        self.status = status or ("diverged" if self.diverged_at is not None else "finished")
        out = self.summary()
        results = {k: v for k, v in out.items() if k != "advice"}
        results["advice"] = len(self.advice)
        if error:
            results["error"] = error
        self._record(lambda: self._recorder.finish(self.status, results))
        return out

    def _close_at_exit(self) -> None:
        self._sync = False  # the other ranks may be gone
        self.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        elif issubclass(kind, KeyboardInterrupt):
            self.close("stopped")
        else:
            self.close("error", f"{kind.__name__}: {exc}")


def _loss_value(loss: Any) -> torch.Tensor | float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ConfigError(
                "mon.step takes the step's scalar loss; got a tensor of shape "
                f"{tuple(loss.shape)} (reduce it first, e.g. loss.mean())"
            )
        return loss.detach().reshape(())
    if isinstance(loss, int | float) and not isinstance(loss, bool):
        return float(loss)
    raise ConfigError(f"mon.step takes the loss as a tensor or a number, got {loss!r}")


def monitor(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    name: str = "",
    db: Any = None,
    *,
    noise: bool = True,
    sharpness_every: int | None = None,
    loss_fn: Callable | None = None,
    advise: bool = True,
    sampler: Any = None,
    max_batch: int | None = None,
    n_train: int | None = None,
    **options: Any,
) -> Monitor:
    """A `Monitor` on `model` trained by `optimizer` in the caller's loop. db: None for the
    default run history (LRBS_DB, else ~/.local/share/lrbs/runs.db), a file path, or False to
    record nothing. `options`: beta (the noise averaging, 0.95), every (steps between device
    reads, 10), noise_every (steps per reading of the successive-step estimator, 8: one pair
    of successive steps every 8, N/8 readings per N steps), grow_rate ("rule": the rate scaled
    with a grown batch by the optimizer's rule; "keep": held, see GROW_RATES), rank/world (read
    from torch.distributed when it is initialised)."""
    return Monitor(
        model,
        optimizer,
        name,
        db,
        noise=noise,
        sharpness_every=sharpness_every,
        loss_fn=loss_fn,
        advise=advise,
        sampler=sampler,
        max_batch=max_batch,
        n_train=n_train,
        **options,
    )
