"""THE training loop: every experiment in lrbs trains through `train`.

Data sits on the device and a minibatch is a slice of one shuffled index per epoch (the fast
path), or it is streamed from a Dataset in that same order (`lrbs.core.stream`). The loss and
metric are the data's task (`lrbs.core.task`); precision and gradient accumulation its compute.
The learning rate (a torch scheduler) and the batch size (a function of progress) may change at
any step.
Budgets count steps, epochs, samples or seconds of training (evaluation time is not counted).
Losses are summed on the device and read every `log_every` steps, so a GPU is not synchronised
each step. A NaN/inf loss, or one above `divergence_factor` x the best so far (and above the
first loss read), ends the run as `diverged`, which is a result like any other.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import nn

from lrbs.core import threads as cpu_threads
from lrbs.core.config import option
from lrbs.core.data import TensorData
from lrbs.core.device import is_out_of_memory, peak_memory_bytes, release_memory, reset_peak_memory
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.models import set_generator
from lrbs.core.stream import MemoryOrder, StreamData, StreamOrder
from lrbs.core.task import CLASSIFICATION, Compute, Task

log = logging.getLogger(__name__)

OPTIMIZERS = {
    "sgd": "SGD",
    "momentum": "SGD with momentum",
    "adam": "Adam",
    "adamw": "AdamW",
}


@dataclass(frozen=True)
class OptimSpec:
    name: str = option("sgd", flag="--optimizer", choices=tuple(OPTIMIZERS), help="optimizer")
    lr: float = option(0.1, help="learning rate")
    momentum: float = option(0.9, help="for --optimizer momentum")
    weight_decay: float = option(0.0, help="weight decay")

    def __post_init__(self) -> None:
        require(
            self.name in OPTIMIZERS,
            f"unknown optimizer {self.name!r}; known: {', '.join(OPTIMIZERS)}",
        )
        positive_number("learning rate", self.lr)
        require(self.lr <= 1e6, f"learning rate {self.lr:g} is absurdly large (limit 1e6)")
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, "weight decay must be >= 0")

    @property
    def effective_momentum(self) -> float:
        return self.momentum if self.name == "momentum" else 0.0

    def build(self, params) -> torch.optim.Optimizer:
        if self.name in ("sgd", "momentum"):
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.effective_momentum, weight_decay=self.weight_decay
            )
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)


@dataclass(frozen=True)
class Budget:
    """When a run ends: the first limit reached. At least one must be set."""

    EXCLUSIVE: ClassVar[bool] = True  # flags given replace the default budget, not merge
    steps: int | None = option(None, help="budget: parameter updates")
    epochs: float | None = option(None, help="budget: passes over the training set")
    samples: int | None = option(None, help="budget: training samples seen")
    seconds: float | None = option(None, help="budget: seconds of training")

    def __post_init__(self) -> None:
        set_ = {k: v for k, v in asdict(self).items() if v is not None}
        require(bool(set_), "a budget needs steps, epochs, samples or seconds")
        for k, v in set_.items():
            positive_number(f"the {k} budget", v)
        if self.steps is not None:
            positive_int("the steps budget", self.steps)
        if self.samples is not None:
            positive_int("the samples budget", self.samples)

    def fraction(self, p: Progress) -> float:
        """How much of the budget is spent, 0..1 (the limit nearest to its end)."""
        parts = [
            p.step / self.steps if self.steps else 0.0,
            p.epoch / self.epochs if self.epochs else 0.0,
            p.samples / self.samples if self.samples else 0.0,
            p.elapsed / self.seconds if self.seconds else 0.0,
        ]
        return min(1.0, max(parts))

    def reached(self, step: int, epoch: float, samples: int, elapsed: Callable[[], float]) -> bool:
        """Whether a run at this point is done: the test a training loop makes before every
        step, so it builds nothing and reads the clock only for a time budget."""
        return (
            (self.steps is not None and step >= self.steps)
            or (self.samples is not None and samples >= self.samples)
            or (self.epochs is not None and epoch >= self.epochs)
            or (self.seconds is not None and elapsed() >= self.seconds)
        )

    def describe(self) -> str:
        units = {"steps": "steps", "epochs": "epochs", "samples": "samples", "seconds": "s"}
        return ", ".join(f"{v:g} {units[k]}" for k, v in asdict(self).items() if v is not None)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    budget: Budget = field(default_factory=lambda: Budget(epochs=1))
    optim: OptimSpec = field(default_factory=OptimSpec)
    seed: int = 0
    log_every: int = 10  # steps between train events (and host reads of the loss)
    eval_every: int | None = None  # steps between evaluations, besides epoch ends
    eval_each_epoch: bool = True
    eval_at_end: bool = True
    eval_at_start: bool = False  # score the untrained model too (a curve's epoch-0 point)
    min_eval_seconds: float = 0.0  # skip an epoch-end evaluation this soon after the last
    divergence_factor: float | None = 10.0  # None: only NaN/inf count as divergence
    train_eval_size: int = 4096  # training samples re-scored at each evaluation

    def __post_init__(self) -> None:
        positive_int("batch size", self.batch_size)
        positive_int("log interval", self.log_every)
        if self.eval_every is not None:
            positive_int("evaluation interval", self.eval_every)
        if self.divergence_factor is not None:
            require(self.divergence_factor > 1, "the divergence factor must be above 1")
        require(isinstance(self.seed, int), f"seed must be a whole number, got {self.seed!r}")


@dataclass(frozen=True)
class Progress:
    step: int = 0  # parameter updates done
    epoch: float = 0.0  # passes over the training set, fractional
    samples: int = 0
    elapsed: float = 0.0  # seconds of training, evaluation excluded


@dataclass(frozen=True, slots=True)
class Event:
    """One point of a run. `kind` is "train" (mean loss over the last steps) or "eval"
    (validation loss/accuracy and the training loss re-scored in eval mode)."""

    run_id: str
    kind: str
    step: int
    epoch: float
    samples: int
    elapsed: float
    lr: float
    batch_size: int
    loss: float | None = None
    train_eval_loss: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


EVENT_COLUMNS = list(Event.__slots__)


HEADLINE = (  # a run's headline figures, as RunResult.headline() gives them
    "status",
    "steps",
    "epochs",
    "samples",
    "elapsed",
    "final_loss",
    "val_loss",
    "val_acc",
    "train_eval_loss",
    "peak_memory",
    "message",
    "gap",
)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str
    steps: int
    epochs: float
    samples: int
    elapsed: float
    final_loss: float | None  # last train-event loss
    best_loss: float | None
    val_loss: float | None  # last evaluation
    val_acc: float | None
    train_eval_loss: float | None
    peak_memory: int | None = None
    message: str = ""
    events: tuple[Event, ...] = ()

    @property
    def gap(self) -> float | None:
        """Generalization gap: validation loss minus training loss, both in eval mode."""
        if self.val_loss is None or self.train_eval_loss is None:
            return None
        return self.val_loss - self.train_eval_loss

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.elapsed if self.elapsed > 0 else float("nan")

    def headline(self) -> dict:
        return {k: getattr(self, k) for k in HEADLINE}


@torch.no_grad()
def score(
    model: nn.Module, chunks, task: Task = CLASSIFICATION, compute: Compute | None = None
) -> tuple[float, float | None]:
    """Mean loss and mean metric (None without one) over `chunks` of (x, y), in eval mode;
    summed on the device and read once."""
    was_training = model.training
    model.eval()
    ctx = compute.autocast if compute is not None and compute.precision != "fp32" else None
    total, metric, n = 0.0, 0.0, 0
    for x, y in chunks:
        if ctx is None:
            out = model(x)
            loss = task.loss(out, y)
        else:
            with ctx(x.device):
                out = model(x)
                loss = task.loss(out, y)
        total = total + loss.float() * len(y)
        if task.metric is not None:
            metric = metric + task.metric(out, y) * len(y)
        n += len(y)
    model.train(was_training)
    n = max(1, n)
    value = total.item() if isinstance(total, torch.Tensor) else total
    if task.metric is None:
        return value / n, None
    m = metric.item() if isinstance(metric, torch.Tensor) else float(metric)
    return value / n, m / n


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    chunk: int = 8192,
    task: Task = CLASSIFICATION,
) -> tuple[float, float | None]:
    """Mean loss and metric (cross-entropy and accuracy by default) over (x, y), in eval mode."""
    chunks = ((x[i : i + chunk], y[i : i + chunk]) for i in range(0, len(y), chunk))
    return score(model, chunks, task)


def evaluate_data(
    model: nn.Module, data: TensorData | StreamData, which: str = "val", idx=None
) -> tuple[float, float | None]:
    """Mean loss and metric of `model` on the data's validation set (or these training
    samples), on either path, in the data's precision."""
    return score(model, data.chunks(which, idx), data.task, data.compute)


def make_step(model: nn.Module, opt: torch.optim.Optimizer, data) -> Callable:
    """step(x, y) -> the batch's mean loss (a tensor), after one update. fp32 without
    accumulation is the plain three lines; otherwise the batch is split into
    `compute.accumulate` micro-batches whose losses are weighted by their share of the batch
    (so the gradient is the whole batch's mean), under autocast, with a GradScaler for fp16."""
    loss_fn, compute = data.task.loss, data.compute
    if compute.plain:

        def plain(x, y):
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return plain
    k, device = compute.accumulate, data.device
    scaler = compute.scaler(device)

    def accumulated(x, y):
        opt.zero_grad(set_to_none=True)
        total, n = None, len(y)
        for xi, yi in zip(x.tensor_split(k), y.tensor_split(k), strict=True):
            if len(yi) == 0:
                continue
            with compute.autocast(device):
                part = loss_fn(model(xi), yi).float() * (len(yi) / n)
            (scaler.scale(part) if scaler is not None else part).backward()
            total = part.detach() if total is None else total + part.detach()
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return total

    return accumulated


@contextlib.contextmanager
def seeded_global_rng(device: torch.device, seed: int):
    """Torch's global RNG seeded from the run's seed while it trains, the caller's state back
    afterwards: a model that draws from it (a user's own nn.Dropout, noise in its forward)
    then trains the same for the same seed. Offset from the seed so that its stream is not the
    one the run's own generator draws the batches from."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed + 0x5EED)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed + 0x5EED)
        yield


def _seeded(fn: Callable[..., RunResult]) -> Callable[..., RunResult]:
    @functools.wraps(fn)
    def run(model: nn.Module, data: TensorData | StreamData, cfg: TrainConfig, **kw):
        with seeded_global_rng(data.device, cfg.seed):
            return fn(model, data, cfg, **kw)

    return run


@_seeded
def train(
    model: nn.Module,
    data: TensorData | StreamData,
    cfg: TrainConfig,
    *,
    run_id: str = "run",
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    batch_size_at: Callable[[Progress], int] | None = None,
    on_epoch_end: Callable[[Progress, Event | None, torch.optim.Optimizer], None] | None = None,
    stop_rule: Callable[[Event], str | None] | None = None,
) -> RunResult:
    """Train `model` in place on `data` until the budget is spent, `stop` is set, the loss
    diverges or `stop_rule(event)` returns a status. Returns what happened; never raises for
    divergence or out-of-memory."""
    device = data.device
    n = data.n_train
    require(n > 0, "the training set is empty")
    if cfg.batch_size > n:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the training set ({n})")
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    set_generator(model, gen)
    opt = optimizer or data.task.build_optimizer(model.parameters(), cfg.optim)
    sched = lr_scheduler(opt) if lr_scheduler else None
    step = make_step(model, opt, data)
    n_score = min(cfg.train_eval_size, n)
    if isinstance(data, StreamData):  # the permutations are drawn on the CPU
        order_gen = gen if device.type == "cpu" else torch.Generator().manual_seed(cfg.seed)
        order = StreamOrder(data, order_gen, cfg.batch_size, cfg.seed)
    else:
        order_gen, order = gen, MemoryOrder(data, gen)
    score_idx = torch.randperm(n, generator=order_gen, device=order_gen.device)[:n_score]

    events: list[Event] = []
    state = LoopState()

    def emit(ev: Event) -> None:
        events.append(ev)
        if on_event is not None:
            on_event(ev)

    def progress() -> Progress:
        return Progress(state.step, state.epoch + state.pos / n, state.samples, state.elapsed())

    def spent() -> bool:
        return cfg.budget.reached(
            state.step, state.epoch + state.pos / n, state.samples, state.elapsed
        )

    def make_event(kind: str, **values) -> Event:
        p = progress()
        lr = state.lr if state.lr is not None else opt.param_groups[0]["lr"]
        return Event(
            run_id=run_id,
            kind=kind,
            step=p.step,
            epoch=p.epoch,
            samples=p.samples,
            elapsed=p.elapsed,
            lr=lr,
            batch_size=state.batch,
            **values,
        )

    def run_eval() -> Event:
        t = time.perf_counter()
        val_loss, val_acc = evaluate_data(model, data)
        tr_loss = evaluate_data(model, data, "train", score_idx)[0] if n_score else None
        state.eval_seconds += time.perf_counter() - t
        state.last_eval_at = state.elapsed()
        ev = make_event("eval", train_eval_loss=tr_loss, val_loss=val_loss, val_acc=val_acc)
        emit(ev)
        return ev

    reset_peak_memory(device)
    model.train()
    status, message = "finished", ""
    # losses since the last read, summed on the device (holding each step's loss tensor
    # instead measured 2-4 % slower on small CPU steps)
    loss_sum, pending = torch.zeros((), device=device), 0
    state.batch = cfg.batch_size
    # this run's torch threads (lrbs.core.threads): timed, if at all, before its clock starts
    threads = cpu_threads.for_run(model, data, cfg.batch_size, cfg.optim)
    state.t0 = time.perf_counter()
    try:
        order.shuffle()
        if cfg.eval_at_start:
            run_eval()
        with torch.enable_grad():
            while not spent():
                if stop is not None and stop.is_set():
                    status = "stopped"
                    break
                if batch_size_at is not None:
                    state.batch = max(1, min(n, int(batch_size_at(progress()))))
                x, y = order.take(state.pos, state.batch)
                loss = step(x, y)
                # the rate this update used (read after step: hypergradient descent sets it there)
                state.lr = opt.param_groups[0]["lr"]
                if sched is not None:
                    sched.step()
                loss_sum.add_(loss.detach())
                pending += 1
                taken = len(y)
                state.step += 1
                state.pos += taken
                state.samples += taken
                epoch_done = state.pos >= n
                if pending == cfg.log_every or epoch_done:
                    mean = loss_sum.item() / pending  # one host read per interval
                    loss_sum.zero_()
                    pending = 0
                    ev = make_event("train", loss=mean)
                    emit(ev)
                    status, message = check_divergence(mean, state, cfg.divergence_factor)
                    if status == "finished" and stop_rule is not None:
                        status = stop_rule(ev) or "finished"
                    if status != "finished":
                        break
                if epoch_done:
                    state.epoch += 1
                    state.pos = 0
                    order.shuffle()
                    since = state.elapsed() - state.last_eval_at
                    ev = None
                    due = bool(cfg.eval_every) and state.step % cfg.eval_every == 0
                    if (cfg.eval_each_epoch and since >= cfg.min_eval_seconds) or due:
                        ev = run_eval()
                    if on_epoch_end is not None:  # may change the lr or the next batch size
                        on_epoch_end(progress(), ev, opt)
                elif cfg.eval_every and state.step % cfg.eval_every == 0:
                    run_eval()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        del exc
        release_memory(device)
        status = "oom"
        message = f"out of memory at batch size {state.batch} on {device.type}"
        log.warning(message)
    finally:
        order.close()
        threads.restore()
    if pending and status in ("finished", "stopped"):
        emit(make_event("train", loss=loss_sum.item() / pending))
    last_eval = next((e for e in reversed(events) if e.kind == "eval"), None)
    needs_eval = last_eval is None or last_eval.step != state.step
    if cfg.eval_at_end and status in ("finished", "stopped") and needs_eval:
        last_eval = run_eval()
    return result_of(run_id, status, message, events, progress(), peak_memory_bytes(device))


def result_of(
    run_id: str,
    status: str,
    message: str,
    events: list[Event],
    end: Progress,
    peak_memory: int | None = None,
) -> RunResult:
    """A run's result: where it ended, its last train loss, its best, its last evaluation."""
    losses = [e.loss for e in events if e.kind == "train" and e.loss is not None]
    last_eval = next((e for e in reversed(events) if e.kind == "eval"), None)
    return RunResult(
        run_id=run_id,
        status=status,
        steps=end.step,
        epochs=end.epoch,
        samples=end.samples,
        elapsed=end.elapsed,
        final_loss=losses[-1] if losses else None,
        best_loss=min((x for x in losses if math.isfinite(x)), default=None),
        val_loss=last_eval.val_loss if last_eval else None,
        val_acc=last_eval.val_acc if last_eval else None,
        train_eval_loss=last_eval.train_eval_loss if last_eval else None,
        peak_memory=peak_memory,
        message=message,
        events=tuple(events),
    )


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    pos: int = 0
    samples: int = 0
    batch: int = 1
    t0: float = 0.0
    eval_seconds: float = 0.0
    best: float = math.inf
    first: float | None = None
    lr: float | None = None
    last_eval_at: float = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.eval_seconds


def check_divergence(loss: float, state: LoopState, factor: float | None) -> tuple[str, str]:
    if not math.isfinite(loss):
        return "diverged", f"loss became {loss} at step {state.step}"
    if state.first is None:
        state.first = loss
    # Above factor x best *and* above the untrained model's loss: a run whose loss fell to
    # 0.001 is not diverging when noise lifts it to 0.02.
    if factor is not None and loss > max(factor * state.best, state.first):
        return "diverged", (
            f"loss {loss:.4g} exceeded {factor:g} x the best so far ({state.best:.4g}) "
            f"at step {state.step}"
        )
    state.best = min(state.best, loss)
    return "finished", ""
