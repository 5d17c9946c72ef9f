"""A network lrbs did not write: the CNN of PyTorch's MNIST example, its optimizer and loss.

The model, the optimizer and the loss are those of `mnist/main.py` in the pytorch/examples
repository, written out here as a user would bring them: two 3x3 convolutions (32 and 64
channels), a 2x2 max-pool, dropout 0.25, a 128-unit layer, dropout 0.5, ten outputs through
`log_softmax`; the loss is the negative log-likelihood on those log-probabilities; the
optimizer is Adadelta (the script's default rate is 1.0 at batch 64, decayed by 0.7 an epoch).
Inputs are normalised with the script's MNIST constants (0.1307, 0.3081).

Data: MNIST where its IDX files are (`<root>/MNIST/raw/`, root `$LRBS_DATA_ROOT`), else
Fashion-MNIST (`<root>/FashionMNIST/raw/` or Debian's `dataset-fashion-mnist`); nothing is
downloaded. The first `LRBS_EXAMPLE_IMAGES` training images (default 6,000: the network costs
about 70 MFLOP a sample, forward and backward, so an update at batch 64 takes 0.1 s or more on
2 CPU cores and a full epoch of 60,000 several minutes) and a sixth as many of the test images
for validation.

    python -m lrbs recommend --workload examples/pytorch_mnist_cnn.py --train-epochs 2
"""

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.1307, 0.3081  # the script's MNIST constants
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout1(x)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def model() -> nn.Module:
    return Net()


def folders() -> list[Path]:
    root = Path(os.environ.get("LRBS_DATA_ROOT", Path.home() / ".cache" / "lrbs" / "data"))
    return [
        root / "MNIST" / "raw",
        root / "FashionMNIST" / "raw",
        Path("/usr/share/datasets/fashion-mnist"),
    ]


def read_idx(path: Path, offset: int) -> np.ndarray:
    """An IDX file's payload (gzipped or not): `offset` header bytes, then unsigned bytes."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return np.frombuffer(raw, dtype=np.uint8, offset=offset)


def find(name: str) -> Path | None:
    for folder in folders():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.exists():
                return candidate
    return None


def split(which: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = (find(n) for n in FILES[which])
    if images is None or labels is None:
        raise FileNotFoundError(
            "no MNIST or Fashion-MNIST IDX files: put them in $LRBS_DATA_ROOT/MNIST/raw/ or "
            "install Debian's dataset-fashion-mnist"
        )
    x = read_idx(images, 16).reshape(-1, 1, 28, 28)[:count]
    y = read_idx(labels, 8)[:count]
    x = (torch.tensor(x, dtype=torch.float32) / 255.0 - MEAN) / STD
    return x, torch.tensor(y, dtype=torch.int64)


def data():
    n = int(os.environ.get("LRBS_EXAMPLE_IMAGES", "6000"))
    return split("train", n), split("val", max(1, n // 6))


def loss():
    return F.nll_loss


def optimizer(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(params, lr=lr)
