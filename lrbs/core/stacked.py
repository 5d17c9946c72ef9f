"""K learning rates trained at once: the K models stacked with `torch.func` and vmapped.

For a small model one update is mostly fixed costs (kernel launches on a GPU, Python and
dispatch on a CPU); K stacked models share those costs, so K rates can cost little more than one.
Every model starts from the same weights and sees the same minibatches as in K separate runs of
`lrbs.core.loop.train` (same seed, same shuffles), so the curves agree with the sequential sweep
within float tolerance. The optimizer is torch's, built once over the stacked parameters with
lr = 1; each model's update is then scaled by its own rate. That is exact for every optimizer
here (SGD, momentum, Adam, AdamW), whose update is proportional to the rate and whose state
does not depend on it.

Only for models without randomness or running statistics (no dropout, no batch norm), and for
budgets in steps, epochs or samples: a time budget is shared by the K models, which is not what
K separate runs of T seconds each would be.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, require
from lrbs.core.loop import (
    Event,
    LoopState,
    Progress,
    RunResult,
    TrainConfig,
    check_divergence,
    result_of,
)
from lrbs.core.models import Dropout

STACKED_BUDGET = (
    "a stacked sweep needs a budget in steps, epochs or samples (the K models would share a "
    "time budget)"
)


def stackable(model: nn.Module) -> str | None:
    """None if K copies of `model` can be vmapped; else why not."""
    for m in model.modules():
        if isinstance(m, Dropout | nn.Dropout | nn.modules.batchnorm._BatchNorm):
            return f"{type(m).__name__} layers draw random numbers or keep running statistics"
    return None


def unstackable_data(data) -> str | None:
    """None if runs on `data` can be stacked; else why not (streamed data, a user's own loss,
    metric or optimizer, mixed precision or accumulation: the plain loop handles those)."""
    if not isinstance(data, TensorData):
        return "the data are streamed from a Dataset"
    if not data.task.builtin or data.task.optimizer is not None:
        return "a workload's own loss, metric or optimizer runs one model at a time"
    if not data.compute.plain:
        return "mixed precision and gradient accumulation run one model at a time"
    return None


def train_stacked(
    make_model: Callable[[], nn.Module],
    data: TensorData,
    cfg: TrainConfig,
    lrs: Sequence[float],
    *,
    run_ids: Sequence[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
) -> list[RunResult]:
    """Train one model per rate in `lrs`, all in one vmapped loop; cfg.optim.lr is ignored."""
    require(len(lrs) > 0, "give at least one learning rate")
    require(cfg.budget.seconds is None, STACKED_BUDGET)
    why = unstackable_data(data)
    require(why is None, f"this run cannot be stacked: {why}")
    n = data.n_train
    if cfg.batch_size > n:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the training set ({n})")
    device = data.device
    models = [make_model() for _ in lrs]
    why = stackable(models[0])
    require(why is None, f"this model cannot be stacked: {why}")
    k = len(lrs)
    ids = list(run_ids) if run_ids is not None else [f"lr={lr:g}" for lr in lrs]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    del models

    task = data.task

    def logits_of(p, b, x):
        return functional_call(base, (p, b), (x,))

    forward = vmap(logits_of, in_dims=(0, 0, None))

    def loss_of(p, b, x, y):
        return task.loss(functional_call(base, (p, b), (x,)), y)

    losses_of_models = vmap(loss_of, in_dims=(0, 0, None, None))

    def losses_of(x, y) -> torch.Tensor:
        """Each model's mean loss on the batch, [k]."""
        return losses_of_models(params, buffers, x, y)

    leaves = list(params.values())
    opt = replace(cfg.optim, lr=1.0).build(leaves)
    scale = torch.tensor(list(lrs), device=device, dtype=leaves[0].dtype)

    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    score_idx = torch.randperm(n, generator=gen, device=device)[: min(cfg.train_eval_size, n)]
    perm = torch.randperm(n, generator=gen, device=device)
    states = [LoopState() for _ in range(k)]
    status = ["finished"] * k
    message = [""] * k
    events: list[list[Event]] = [[] for _ in range(k)]
    step = epoch = pos = samples = 0
    eval_seconds, last_eval = 0.0, 0.0
    t0 = time.perf_counter()
    loss_sum, pending = torch.zeros(k, device=device), 0  # per model, since the last read

    def elapsed() -> float:
        return time.perf_counter() - t0 - eval_seconds

    def emit(i: int, ev: Event) -> None:
        events[i].append(ev)
        if on_event is not None:
            on_event(ev)

    metric_of = vmap(task.metric, in_dims=(0, None)) if task.metric is not None else None
    loss_of_outputs = vmap(task.loss, in_dims=(0, None))

    @torch.no_grad()
    def scores(x, y):
        total = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        for s in range(0, len(y), 8192):
            out = forward(params, buffers, x[s : s + 8192])  # [k, n, ...]
            yy = y[s : s + 8192]
            total += loss_of_outputs(out, yy) * len(yy)
            if metric_of is not None:
                correct += metric_of(out, yy) * len(yy)
        m = max(1, len(y))
        acc = (correct / m).tolist() if metric_of is not None else [None] * k
        return (total / m).tolist(), acc

    def run_eval() -> None:
        nonlocal eval_seconds, last_eval
        t = time.perf_counter()
        val_loss, val_acc = scores(data.x_val, data.y_val)
        tr_loss, _ = scores(data.x_train[score_idx], data.y_train[score_idx])
        eval_seconds += time.perf_counter() - t
        last_eval = elapsed()
        for i in live():
            values = {"train_eval_loss": tr_loss[i], "val_loss": val_loss[i], "val_acc": val_acc[i]}
            emit(i, make_event(i, "eval", **values))

    def make_event(i: int, kind: str, **values) -> Event:
        return Event(
            run_id=ids[i],
            kind=kind,
            step=step,
            epoch=epoch + pos / n,
            samples=samples,
            elapsed=elapsed(),
            lr=float(lrs[i]),
            batch_size=batch,
            **values,
        )

    def live() -> list[int]:
        return [i for i in range(k) if status[i] == "finished"]

    def read_losses() -> None:
        nonlocal pending
        means = (loss_sum / pending).tolist()  # one host read per interval
        loss_sum.zero_()
        pending = 0
        for i in live():
            emit(i, make_event(i, "train", loss=means[i]))
            states[i].step = step
            status[i], message[i] = check_divergence(means[i], states[i], cfg.divergence_factor)

    batch = cfg.batch_size
    if cfg.eval_at_start:
        run_eval()
    stopped = False
    while not cfg.budget.reached(step, epoch + pos / n, samples, elapsed) and live():
        if stop is not None and stop.is_set():
            stopped = True
            break
        idx = perm[pos : pos + batch]
        loss = losses_of(data.x_train[idx], data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        # the models share no parameter, so the gradient of the sum is each model's own
        loss.sum().backward()
        before = [p.detach().clone() for p in leaves]
        opt.step()
        with torch.no_grad():
            for p, b in zip(leaves, before, strict=True):
                shape = (k,) + (1,) * (p.dim() - 1)
                p.copy_(torch.lerp(b, p, scale.view(shape)))  # each model by its own rate
        loss_sum.add_(loss.detach())
        pending += 1
        step += 1
        pos += len(idx)
        samples += len(idx)
        epoch_done = pos >= n
        if pending == cfg.log_every or epoch_done:
            read_losses()
        if epoch_done:
            epoch, pos = epoch + 1, 0
            perm = torch.randperm(n, generator=gen, device=device)
            due = bool(cfg.eval_every) and step % cfg.eval_every == 0
            each = cfg.eval_each_epoch and elapsed() - last_eval >= cfg.min_eval_seconds
            if (each or due) and live():
                run_eval()
        elif cfg.eval_every and step % cfg.eval_every == 0:
            run_eval()
    if pending:
        read_losses()
    if cfg.eval_at_end and live():
        last = [next((e for e in reversed(events[i]) if e.kind == "eval"), None) for i in live()]
        if any(e is None or e.step != step for e in last):
            run_eval()
    if stopped:
        status = ["stopped" if s == "finished" else s for s in status]
    return [
        result_of(ids[i], status[i], message[i], events[i], _end(events[i], elapsed()))
        for i in range(k)
    ]


def _end(events: list[Event], elapsed: float) -> Progress:
    """Where a model's run ended: its last event (a diverged model stops before the others)."""
    last = events[-1] if events else None
    if last is None:
        return Progress(elapsed=elapsed)
    return Progress(last.step, last.epoch, last.samples, elapsed)
