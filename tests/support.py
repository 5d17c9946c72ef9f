"""Shared test helpers (a plain module: two conftest.py files cannot both be imported by name)."""

from pathlib import Path

import torch

from lrbs.core.data import TensorData

ROOT = Path(__file__).resolve().parents[1]


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


def stored_rows(path, run_id: int) -> tuple[dict, dict[str, list[dict]]]:
    """A stored run's record and its points per channel, as `rebuild` takes them."""
    from lrbs.runs.store import RunStore

    with RunStore(path) as store:
        info = store.run(run_id)
        pts = store.points(run_id)
    rows = {
        ch: part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
        for ch, part in pts.groupby("channel", sort=False)
    }
    return info, rows


def one_torch_thread():
    """For a fixture: torch on one thread meanwhile (timings and plans of these tests assume
    it), put back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
