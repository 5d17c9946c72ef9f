"""A tiny regression workload: a map-style Dataset of a noisy linear target, MSE, no metric,
and an optimizer with two parameter groups (the head at a tenth of the rate)."""

import torch
from torch import nn
from torch.utils.data import Dataset


class Points(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 5, generator=g)
        w = torch.arange(1.0, 6.0)
        self.y = (self.x @ w + 0.1 * torch.randn(n, generator=g)).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))


def data():
    return Points(400, 1), Points(100, 2)


def loss():
    return nn.functional.mse_loss


def optimizer(params, lr):
    params = list(params)
    return torch.optim.SGD(
        [{"params": params[:2], "lr": lr}, {"params": params[2:], "lr": lr / 10}], lr=lr
    )
