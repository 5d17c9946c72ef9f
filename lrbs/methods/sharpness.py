"""The sharpness meter: the top eigenvalue of the loss Hessian, lambda_max, by power iteration
on Hessian-vector products, and the stability limits it is compared with, on plain torch
objects.

Gradient descent on c/2 x^2 diverges above lr = 2/c; on a network the same law holds through
lambda_max (Cohen et al. 2021). With heavy-ball momentum beta the limit is (2 + 2 beta)/lr; for
Adam the preconditioned sharpness lambda_max(P^-1 H) is held to (2 + 2 beta1)/((1 - beta1) lr),
38/lr at beta1 = 0.9 (Cohen et al. 2022).

From any training loop:

    meter = SharpnessMeter(model, loss_fn, iterations=20, optimizer=opt)   # opt: optional
    ...
    reading = meter.measure(x, y)      # at the weights now, on a fixed measurement batch
    reading.sharpness / gd_limit(lr)   # near 1: the edge of stability

`optimizer` matters only for Adam/AdamW: once it has taken a step the meter measures the
preconditioned sharpness, to be compared with `adam_limit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lrbs.core.errors import positive_int, positive_number, require
from lrbs.methods.params import trainable

ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch's Adam defaults, which lrbs uses
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gd_limit(lr: float) -> float:
    """The largest stable sharpness of gradient descent at rate lr: 2/lr."""
    return 2 / positive_number("learning rate", lr)


def momentum_limit(lr: float, beta: float) -> float:
    """Heavy-ball momentum beta at rate lr: (2 + 2 beta)/lr."""
    require(0 <= beta < 1, f"the momentum must be in [0, 1), got {beta!r}")
    return (2 + 2 * beta) / positive_number("learning rate", lr)


def adam_limit(lr: float, beta1: float = ADAM_BETA1) -> float:
    """Adam's limit on the preconditioned sharpness: (2 + 2 beta1)/((1 - beta1) lr)."""
    require(0 <= beta1 < 1, f"Adam's beta1 must be in [0, 1), got {beta1!r}")
    return (2 + 2 * beta1) / ((1 - beta1) * positive_number("learning rate", lr))


def stability_limit(lr: float, optim: Any) -> float:
    """The limit for an optimizer described by `optim.name` ("sgd", "momentum", "adam",
    "adamw") and, for "momentum", `optim.momentum` (an lrbs OptimSpec, say)."""
    if optim.name == "momentum":
        return momentum_limit(lr, optim.momentum)
    if optim.name in ("adam", "adamw"):
        return adam_limit(lr)
    return gd_limit(lr)


def power_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    iterations: int,
    tol: float = 1e-4,
) -> tuple[float, torch.Tensor, int]:
    """The eigenvalue of largest magnitude of a symmetric operator, its unit eigenvector and the
    products used: v <- Av/|Av|, lambda = v.Av, ending early once lambda changes by less than
    `tol` relative."""
    v = v0 / v0.norm().clamp_min(1e-30)
    lam, used = float("nan"), 0
    for used in range(1, iterations + 1):
        av = matvec(v)
        new = float(torch.dot(v, av))
        norm = av.norm()
        if not math.isfinite(new) or float(norm) == 0.0:
            return new, v, used
        v = av / norm
        if math.isfinite(lam) and abs(new - lam) <= tol * abs(new):
            return new, v, used
        lam = new
    return lam, v, used


def adam_preconditioner(
    optimizer: torch.optim.Optimizer | None, params: list[torch.Tensor]
) -> torch.Tensor | None:
    """D = P^-1/2 as a flat vector over `params`, P = (1 - beta1^t) diag(sqrt(v_hat) + eps):
    for Adam/AdamW once it has taken a step; else None (no preconditioning)."""
    if optimizer is None or not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return None
    parts = []
    for p in params:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            return None
        t = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - ADAM_BETA2**t)
        pre = (1 - ADAM_BETA1**t) * (v_hat.sqrt() + ADAM_EPS)
        parts.append(pre.reshape(-1).rsqrt())
    return torch.cat(parts).detach()


@dataclass(frozen=True)
class SharpnessReading:
    sharpness: float  # lambda_max (of D H D with Adam's preconditioner, when preconditioned)
    loss: float  # the loss on the measurement batch, in eval mode
    seconds: float
    iterations: int  # Hessian-vector products used
    preconditioned: bool


class SharpnessMeter:
    """lambda_max of `loss(model(x), y)` by power iteration on Hessian-vector products (one
    forward and backward with its graph kept, then one more backward per product). The
    eigenvector is kept between measurements, so each starts where the last ended (a fixed
    seed starts the first). With an Adam/AdamW `optimizer` that has stepped it measures the
    preconditioned sharpness lambda_max(P^-1 H) as the symmetric D H D, D = P^-1/2. The model
    is measured in eval mode (no dropout: the Hessian of one function) and left as it was."""

    def __init__(
        self,
        model: nn.Module,
        loss: Loss = nn.functional.cross_entropy,
        iterations: int = 20,
        optimizer: torch.optim.Optimizer | None = None,
        tol: float = 1e-4,
    ) -> None:
        self.params = trainable(model)
        self.model, self.loss, self.optimizer, self.tol = model, loss, optimizer, tol
        self.iterations = positive_int("power-iteration steps", iterations)
        n = sum(p.numel() for p in self.params)
        gen = torch.Generator(device="cpu").manual_seed(0)
        first = self.params[0]
        dtype = first.dtype if first.dtype.is_floating_point else torch.float32
        self.v = torch.randn(n, generator=gen).to(first.device, dtype)

    def measure(self, x: torch.Tensor, y: torch.Tensor) -> SharpnessReading:
        t0 = time.perf_counter()
        model, wrt = self.model, self.params
        was_training = model.training
        model.eval()
        try:
            d = adam_preconditioner(self.optimizer, wrt)
            with torch.enable_grad():
                # H u = d(g . u)/d theta, each product one backward through the kept graph
                loss_t = self.loss(model(x), y)
                grads = torch.autograd.grad(loss_t, wrt, create_graph=True)
                flat_g = torch.cat([g.reshape(-1) for g in grads])

                def hvp(v: torch.Tensor) -> torch.Tensor:
                    u = v if d is None else d * v
                    hu = torch.autograd.grad(flat_g, wrt, u, retain_graph=True)
                    flat = torch.cat([h.reshape(-1) for h in hu])
                    return flat if d is None else d * flat

                lam, v, used = power_iteration(hvp, self.v, self.iterations, self.tol)
            loss = float(loss_t.detach())
            if bool(torch.isfinite(v).all()):
                self.v = v.detach()
        finally:
            model.train(was_training)
        return SharpnessReading(
            sharpness=lam,
            loss=loss,
            seconds=time.perf_counter() - t0,
            iterations=used,
            preconditioned=d is not None,
        )


def hessian_sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    iterations: int,
    loss: Loss = nn.functional.cross_entropy,
) -> float:
    """lambda_max of the loss of `model` on (x, y), by power iteration from a fixed start."""
    return SharpnessMeter(model, loss, iterations).measure(x, y).sharpness
