"""A tiny classification workload: 3 Gaussian blobs in 8-D as (x, y) tensor pairs, an MLP."""

import torch
from torch import nn


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 2
    y = torch.randint(0, 3, (600,), generator=g)
    x = centres[y] + torch.randn(600, 8, generator=g)
    return (x[:480], y[:480]), (x[480:], y[480:])
