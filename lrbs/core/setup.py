"""From names to a ready run: data on the device and a seeded model. Pages and the CLI share it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import Arrays, DataSpec, TensorData, load
from lrbs.core.device import DEVICE_CHOICES, pick_device
from lrbs.core.errors import require
from lrbs.core.models import ModelSpec, build_model


@dataclass(frozen=True)
class Setup:
    """What every training experiment shares: data, model, seed and device."""

    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    seed: int = option(0, low=0, high=2**31 - 1, help="seed of the split and of every run")
    device: str = option("auto", help="where to train: " + ", ".join(DEVICE_CHOICES) + " or cuda:N")

    def __post_init__(self) -> None:
        require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool),
            f"seed must be a whole number, got {self.seed!r}",
        )
        check(self)

    def torch_device(self) -> torch.device:
        return pick_device(self.device)

    def fresh_model(self, data: TensorData, seed: int | None = None) -> nn.Module:
        """Initial weights from `seed` (default: the setup's), on the data's device: bit-equal
        for every call with one seed."""
        seed = self.seed if seed is None else seed
        model = build_model(self.model, data.input_shape, data.n_classes, seed)
        return model.to(data.x_train.device)


def load_tensors(setup: Setup, arrays: Arrays | None = None) -> TensorData:
    arrays = arrays if arrays is not None else load(setup.data)
    return TensorData.from_arrays(arrays, setup.torch_device())
