import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LRBS_DATA_ROOT", str(ROOT / "tests" / ".no-data-here"))
torch.set_num_threads(min(2, torch.get_num_threads()))

from lrbs.data import TensorData  # noqa: E402


def blobs(n: int = 240, n_val: int = 60, features: int = 6, classes: int = 3, seed: int = 0):
    """Gaussian blobs: learnable in a few steps, so loop tests run in milliseconds."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 3

    def draw(m):
        y = torch.randint(0, classes, (m,), generator=g)
        return centres[y] + torch.randn(m, features, generator=g), y

    x, y = draw(n)
    xv, yv = draw(n_val)
    return TensorData(x, y, xv, yv, classes, (features,), "blobs")


@pytest.fixture
def data():
    return blobs()
