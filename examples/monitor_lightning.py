"""lrbs's monitor in a Lightning Trainer: scikit-learn's digits (bundled, offline), an MLP,
SGD, and `LrbsCallback` doing the monitor's work (the noise scale B_simple, the advice, the
run in lrbs's history) at each optimizer step.

    python examples/monitor_lightning.py [--epochs 3] [--devices 2]

With --devices 2 the Trainer runs the "ddp" strategy on two CPU processes: the callback reads
B_simple from DDP's own all-reduce, rank 0 records the run (LRBS_DB or
~/.local/share/lrbs/runs.db), and every rank's summary is the same.
"""

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lrbs  # noqa: F401
except ModuleNotFoundError:  # run from a checkout of lrbs, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lrbs.monitor.lightning import LrbsCallback


class Digits(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.loss_fn = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="each process's batch")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (ddp for 2+)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    train = TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))
    loader = DataLoader(train, batch_size=args.batch, shuffle=True, drop_last=True)
    callback = LrbsCallback(name=f"digits, Lightning x{args.devices}")
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(Digits(args.lr), loader)
    print(f"rank {trainer.global_rank} summary: {json.dumps(callback.summary)}", flush=True)


if __name__ == "__main__":
    main()
