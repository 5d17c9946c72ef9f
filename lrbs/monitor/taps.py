"""Noise taps: where a monitor gets its two batch sizes from the loop's own work.

A tap's `observe(model)` is called once per optimizer step, after `optimizer.step()` with the
gradients still in `p.grad`, and returns (|G_small|^2, b_small, |G_big|^2, b_big) for that step
(the norms as floats or 0-d tensors, read later in one go) or None. The monitor averages what
the taps give with `NoiseAverage` and computes B_simple = tr(Sigma)/|G|^2 with
`lrbs.methods.noise.unbiased` (McCandlish et al. 2018, appendix A.1). A tap with a
`bind(monitor)` method is handed the monitor when it is put in use (`Monitor.use_tap`); it can
then read `monitor.batch_size`, this step's batch.

- `MicroBatchTap`: gradient accumulation. The monitor snapshots the accumulated gradient after
  each micro-batch (`Monitor.micro()`); the differences are the micro-batch gradients (batch
  B/k each), their sum the step's (batch B). Exact: the two-batch estimator with no extra work.
- `SuccessiveTap`: one batch per step. The gradients of two successive steps, g_t and g_{t+1},
  stand for two independent batches of B, and their mean for one of 2B. The monitor reads one
  such pair every `noise_every` steps (8: N/8 readings per N steps), which spreads the cost of
  copying two gradients over 8 steps (bench/monitor.py: 2.7 % of a step with it, 12 % with a
  pair every step). But g_{t+1} is taken
  where the step on g_t moved the weights, so it carries g_t's own noise: G_{t+1} ~ G_t -
  eta H g_t (SGD, rate eta, Hessian H). To first order in eta that biases the estimates by

      E[tr(Sigma) estimate] = tr(Sigma) + eta tr(H Sigma)
      E[|G|^2 estimate]     = |G|^2 - eta tr(H Sigma) / B

  so B_simple comes out high by about eta lambda (1 + B_simple/B) relative at most (lambda:
  the sharpness; tr(H Sigma) <= lambda tr(Sigma)). It is usable where eta lambda B_simple/B
  << 1: a small rate against the sharpness, a batch not far below B_simple. Momentum and Adam
  carry the noise over more steps and make it larger. Measured on linear regression
  (tests/test_monitor.py): at eta lambda = 2e-4 it agrees with the exact value and with the
  two-batch NoiseMeter within the sampling noise (about 1 % over 3,000 steps); at eta lambda
  = 0.065 with B_simple/B ~ 2.4 it read B_simple 51 % high (|G|^2 32 % low). Where
  that matters, measure with gradient accumulation (`MicroBatchTap`), DDP's tap, or the
  two-batch NoiseMeter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrbs.core.errors import positive_int

Reading = tuple[Any, float, Any, float]


def flat_grad(params: list[nn.Parameter]) -> torch.Tensor | None:
    """The gradient of `params` as one detached flat vector (a copy); a missing gradient
    counts as zeros; None when no parameter has one."""
    grads = [p.grad for p in params]
    if all(g is None for g in grads):
        return None
    parts = [
        g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat([g.detach().reshape(-1) for g in parts])


class SuccessiveTap:
    """g_t and the mean of g_t, g_{t+1} as the batch-B and batch-2B gradients (see the module's
    note for its bias), one pair of successive steps every `every` steps: the gradient is
    copied at steps 0, every, 2 every, ... (counted from the tap's first step) and paired with
    the next step's, N/every readings per N steps (every=1: each step pairs with the one
    before, N - 1 readings). The steps in between cost nothing. A pair whose two batches
    differ gives no reading. Both gradients sit in the rows of one 2 x P buffer and their 2 x 2
    Gram matrix gives the three squared norms in one product."""

    def __init__(self, params: list[nn.Parameter], every: int = 1) -> None:
        self.params = params
        self.every = positive_int("the noise tap's period (noise_every)", every)
        self.monitor: Any = None
        self.t = 0
        self.pair: torch.Tensor | None = None  # row `row` holds the pair's first gradient
        self.row = 0
        self.prev_batch: float | None = None  # the first gradient's batch; None: no first

    def bind(self, monitor: Any) -> None:
        self.monitor = monitor

    def reset(self) -> None:
        self.prev_batch = None

    def _copy(self, row: int) -> bool:
        """This step's gradient into the buffer's `row`; False where there is none."""
        grads = [p.grad for p in self.params]
        if all(g is None for g in grads):
            return False
        parts = [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1)
            for g, p in zip(grads, self.params, strict=True)
        ]
        n = sum(x.numel() for x in parts)
        first = parts[0]
        if self.pair is None or self.pair.shape[1] != n or self.pair.device != first.device:
            self.pair = torch.empty(2, n, dtype=first.dtype, device=first.device)
        out = self.pair[row]
        if all(x.dtype == out.dtype for x in parts):
            torch.cat(parts, out=out)
        else:  # mixed precisions: promoted to the buffer's
            out.copy_(torch.cat([x.to(out.dtype) for x in parts]))
        return True

    def observe(self, model: nn.Module) -> Reading | None:
        t, self.t = self.t, self.t + 1
        first = t % self.every == 0
        second = self.prev_batch is not None  # the step before took the pair's first gradient
        if not (first or second):
            return None
        batch = self.monitor.batch_size if self.monitor is not None else None
        row = 1 - self.row if second else self.row
        if batch is None or not self._copy(row):
            self.reset()
            return None
        out = None
        if second and self.prev_batch == batch:
            gram = self.pair @ self.pair.T  # |g_a|^2, g_a . g_b, |g_b|^2: one read of both
            small = gram.diagonal().sum() / 2  # the mean of |g_a|^2 and |g_b|^2
            out = (small, batch, gram.sum() / 4, 2 * batch)  # |(g_a + g_b)/2|^2
        self.prev_batch = None
        if first:
            self.row, self.prev_batch = row, batch
        return out


class MicroBatchTap:
    """Gradient accumulation's micro-batches: `snapshot()` after each micro-batch's backward.
    With the usual scaling (each micro-batch's loss divided by the k micro-batches, so the
    accumulated gradient is the big batch's mean) the norms are the true ones; without it they
    are k^2 too large, and B_simple, a ratio, is still right. The micro-batches are taken to be
    of equal size B/k."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.monitor: Any = None
        self._clear()

    def bind(self, monitor: Any) -> None:
        self.monitor = monitor

    def _clear(self) -> None:
        self.last: torch.Tensor | None = None
        self.diff_sq: torch.Tensor | float = 0.0
        self.k = 0

    def snapshot(self) -> None:
        g = flat_grad(self.params)
        if g is None:
            return
        d = g if self.last is None else g - self.last
        self.diff_sq = self.diff_sq + torch.dot(d, d)
        self.last, self.k = g, self.k + 1

    def observe(self, model: nn.Module) -> Reading | None:
        batch = self.monitor.batch_size if self.monitor is not None else None
        k, acc, diff_sq = self.k, self.last, self.diff_sq
        self._clear()
        if k < 2 or acc is None or batch is None:
            return None
        # micro-batch i's gradient is k d_i: the mean of |k d_i|^2 is k sum |d_i|^2
        return (k * diff_sq, batch / k, torch.dot(acc, acc), batch)
