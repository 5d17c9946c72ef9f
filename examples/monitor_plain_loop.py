"""lrbs's monitor in a plain PyTorch loop: scikit-learn's digits (bundled, offline), an MLP,
SGD, a batch that grows itself when the measured noise scale says it should.

    python examples/monitor_plain_loop.py [--epochs 4]

The monitor reads the gradient noise scale B_simple from successive steps (no extra forward or
backward), measures the sharpness every 100 steps against SGD's limit 2/lr, advises when
B_simple passes twice the batch, and, driving the GrowingBatchSampler, grows the batch at the
next epoch with the rate scaled by the linear rule. The run appears in lrbs's run history
(LRBS_DB or ~/.local/share/lrbs/runs.db) as kind "monitor" while it trains.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lrbs
except ModuleNotFoundError:  # run from a checkout of lrbs, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lrbs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    train = TensorDataset(x, torch.tensor(y))
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    sampler = lrbs.GrowingBatchSampler(train, args.batch, seed=0)
    loader = DataLoader(train, batch_sampler=sampler)
    with lrbs.monitor(
        model,
        opt,
        name="digits, plain loop",
        sharpness_every=100,
        loss_fn=loss_fn,
        sampler=sampler,  # the monitor grows it (and rescales the rate) on its advice
        max_batch=128,  # the largest batch that fits in memory (python -m lrbs bs-probe)
    ) as mon:
        for _epoch in range(args.epochs):
            for xb, yb in loader:
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                mon.step(loss, batch=(xb, yb))  # after optimizer.step(): p.grad still there
    print(json.dumps(mon.summary(), indent=1))


if __name__ == "__main__":
    main()
