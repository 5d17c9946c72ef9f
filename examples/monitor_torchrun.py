"""lrbs under torchrun: DistributedDataParallel on scikit-learn's digits (bundled, offline), the
rate found by lrbs.find_lr on every rank, then training under lrbs's monitor.

    torchrun --nproc_per_node 2 examples/monitor_torchrun.py [--epochs 3]

find_lr runs on every rank on the DDP model and its DistributedSampler loader: the ranks step
together, the stop rule and the suggestions are decided on the loss averaged over the ranks,
so every rank gets the same rate, and the weights and the optimizer come back as they were.
The monitor reads the gradient noise scale B_simple from DDP's own all-reduce (each rank's
gradient is the small batch, the averaged one the big batch: no extra forward or backward);
rank 0 records the run in lrbs's run history (LRBS_DB or ~/.local/share/lrbs/runs.db) and
every rank's summary() is the same. Gloo on the CPU, NCCL where there are GPUs.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

try:
    import lrbs
except ModuleNotFoundError:  # run from a checkout of lrbs, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import lrbs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="each rank's batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    gpu = torch.cuda.is_available()
    dist.init_process_group("nccl" if gpu else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if gpu else "cpu"
    if gpu:
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # the same initial weights on every rank

    x, y = load_digits(return_X_y=True)
    train = TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))
    sampler = DistributedSampler(train, seed=0)
    loader = DataLoader(train, batch_size=args.batch, sampler=sampler, drop_last=True)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    model = DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    # on every rank; the same suggestions everywhere, the model and optimizer restored
    found = lrbs.find_lr(model, loader, optimizer=opt, loss=loss_fn, lr_max=10, iterations=80)
    lr = found.suggestions().get("valley", 0.01)
    for group in opt.param_groups:
        group["lr"] = lr

    with lrbs.monitor(model, opt, name=f"digits, torchrun x{dist.get_world_size()}") as mon:
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for xb, yb in loader:
                xb, yb = xb.to(device), yb.to(device)
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                mon.step(loss, batch_size=len(xb))  # this rank's batch
    summary = mon.summary()  # every rank the same (but "rank")
    print(f"rank {rank} summary: {json.dumps(summary)}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
