"""From names to a ready run: data on the device and a seeded model. Pages, the CLI and the
API share it. The data and model are lrbs's own (`DataSpec`, `ModelSpec`) or a user's workload
(`workload`: a file's path, or a `Workload` built from objects by the API)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from lrbs.core.config import check, option
from lrbs.core.data import Arrays, DataSpec, TensorData, load
from lrbs.core.device import DEVICE_CHOICES, pick_device
from lrbs.core.errors import require
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.stream import StreamData
from lrbs.core.task import Compute
from lrbs.core.workload import Workload, load_workload


@dataclass(frozen=True)
class Setup:
    """What every training experiment shares: data, model, seed, device and how it computes."""

    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    seed: int = option(0, low=0, high=2**31 - 1, help="seed of the split and of every run")
    device: str = option("auto", help="where to train: " + ", ".join(DEVICE_CHOICES) + " or cuda:N")
    compute: Compute = Compute()
    workload: str | Workload | None = option(
        None,
        flag="--workload",
        help="a workload file (model(), data(), optional loss(), optimizer(), metric()) in "
        "place of --dataset and --model",
    )

    def __post_init__(self) -> None:
        require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool),
            f"seed must be a whole number, got {self.seed!r}",
        )
        check(self)
        if self.workload is not None:
            require(
                isinstance(self.workload, str | Workload) and str(self.workload).strip() != "",
                "the workload must be a file's path or a Workload",
            )
            own_data = replace(self.data, seed=DataSpec().seed) != DataSpec()
            require(
                not own_data and self.model == ModelSpec(),
                "a workload brings its own data and model: give --workload without "
                "--dataset/--model and their settings",
            )

    @property
    def data_name(self) -> str:
        """The dataset's name, or the workload's (its path)."""
        return str(self.workload) if self.workload is not None else self.data.name

    @property
    def model_name(self) -> str:
        return str(self.workload) if self.workload is not None else self.model.name

    def torch_device(self) -> torch.device:
        return pick_device(self.device)

    def the_workload(self) -> Workload | None:
        """The workload: imported afresh from its file, or the one given."""
        if self.workload is None or isinstance(self.workload, Workload):
            return self.workload
        return load_workload(self.workload)

    def fresh_model(self, data: TensorData | StreamData, seed: int | None = None) -> nn.Module:
        """Initial weights from `seed` (default: the setup's), on the data's device: bit-equal
        for every call with one seed."""
        seed = self.seed if seed is None else seed
        if data.workload is not None:
            model = data.workload.build_model(seed).to(data.device)
            data.workload.check_step(model, data)
            return model
        model = build_model(self.model, data.input_shape, data.n_classes, seed)
        return model.to(data.device)


def load_tensors(setup: Setup, arrays: Arrays | None = None) -> TensorData | StreamData:
    """The setup's data on its device: the built-in set's tensors, or the workload's data in
    memory or streamed (`Compute.data_path`)."""
    workload = setup.the_workload()
    if workload is not None:
        return workload.build_data(setup.torch_device(), setup.compute)
    arrays = arrays if arrays is not None else load(setup.data)
    return TensorData.from_arrays(arrays, setup.torch_device(), setup.compute)
