"""Model registry. Every model is initialised from a seed through its own generator, so two
runs with one seed start from bit-equal weights, whatever thread builds them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from lrbs.core.config import option
from lrbs.core.errors import ConfigError, require

MODELS = {
    "logreg": "Logistic regression: one linear layer.",
    "mlp": "Multilayer perceptron (default: one hidden layer of 256 ReLUs, as in the seeds).",
    "cnn": "Small CNN (seed 001): one convolution, dropout, one dense layer.",
    "bottleneck": "Seed 004's deep bottleneck MLP for tabular data (512-256-256-128-256-256-512).",
}
BOTTLENECK = (512, 256, 256, 128, 256, 256, 512)


@dataclass(frozen=True)
class ModelSpec:
    name: str = option("mlp", flag="--model", help="model: " + ", ".join(MODELS))
    hidden: tuple[int, ...] = option((256,), help="MLP hidden layer sizes")
    dropout: float = option(0.25, help="dropout of the cnn and bottleneck models")
    channels: int = option(32, help="channels of the cnn model")

    def __post_init__(self) -> None:
        require(self.name in MODELS, f"unknown model {self.name!r}; known: {', '.join(MODELS)}")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        require(
            all(isinstance(h, int) and h > 0 for h in self.hidden),
            f"hidden layer sizes must be positive whole numbers, got {self.hidden}",
        )
        require(self.channels > 0, "the CNN needs at least one channel")


class Dropout(nn.Module):
    """Dropout drawing from a generator of its own. torch's Dropout draws from the global RNG,
    which every thread shares; two runs at once would then disturb each other's masks."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)


def _mlp(sizes: list[int], dropout: float, dropout_after: set[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if i in dropout_after and dropout > 0:
                layers.append(Dropout(dropout))
    return layers


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, seed: int = 0
) -> nn.Module:
    """A fresh model on the CPU with weights drawn from `seed` (move it with `.to(device)`).
    A model too large for this machine's memory is refused before it is allocated."""
    with torch.device("meta"):  # shapes only: no memory, no init
        n_params = count_parameters(_layers(spec, input_shape, n_classes))
    check_memory(n_params)
    model = _layers(spec, input_shape, n_classes)
    init_weights(model, seed)
    return model


TRAINING_COPIES = 4  # weights, gradients and two optimizer states (Adam), float32 each


def available_memory() -> int | None:
    """Bytes of physical memory free now (None where the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_params: int) -> None:
    need = n_params * 4 * TRAINING_COPIES
    free = available_memory()
    if free is not None and need > free:
        raise ConfigError(
            f"the model has {n_params:,} parameters: training it needs about "
            f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB of memory free; "
            "choose fewer or smaller layers"
        )


def _layers(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    n_in = math.prod(input_shape)
    if spec.name == "logreg":
        model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_classes))
    elif spec.name == "mlp":
        model = nn.Sequential(nn.Flatten(), *_mlp([n_in, *spec.hidden, n_classes], 0, set()))
    elif spec.name == "bottleneck":
        # seed 004: dropout after the 1st, 3rd, 6th and 7th hidden layers
        layers = _mlp([n_in, *BOTTLENECK, n_classes], spec.dropout, {0, 2, 5, 6})
        model = nn.Sequential(nn.Flatten(), *layers)
    else:
        model = _cnn(spec, input_shape, n_classes)
    return model


def _cnn(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    if len(input_shape) == 3:  # (channels, height, width)
        conv, pool, spatial = nn.Conv2d, nn.MaxPool2d, input_shape[1:]
    elif len(input_shape) == 2:  # (channels, length): MNIST-1D
        conv, pool, spatial = nn.Conv1d, nn.MaxPool1d, input_shape[1:]
    else:
        raise ConfigError("the CNN needs image or sequence data; use an MLP for tabular data")
    if min(spatial) < 4:
        raise ConfigError(f"inputs of shape {input_shape} are too small for the CNN")
    c = spec.channels
    out = [(s - 2) // 2 for s in spatial]  # 3-wide convolution, no padding, then pool by 2
    return nn.Sequential(
        conv(input_shape[0], c, 3),
        nn.ReLU(),
        pool(2),
        Dropout(spec.dropout),
        nn.Flatten(),
        nn.Linear(c * math.prod(out), n_classes),
    )


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> None:
    """torch's default init for Linear and Conv layers, drawn from a private generator."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound, generator=g)


def set_generator(model: nn.Module, generator: torch.Generator) -> None:
    """Give every dropout in the model the run's generator."""
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
