"""`python -m lrbs COMMAND`: every experiment of the app, on the command line.

`--out FILE.csv` writes the CSV the page offers; `--json` prints one JSON object of headline
figures as the last line of stdout. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence

import pandas as pd

from lrbs import gd1d
from lrbs.data import DATASETS, DataSpec, load
from lrbs.device import DEVICE_CHOICES, describe
from lrbs.errors import LrbsError
from lrbs.models import MODELS, ModelSpec
from lrbs.setup import Setup, load_tensors
from lrbs.train import EVENT_COLUMNS, OPTIMIZERS, Budget, OptimSpec, TrainConfig, train

log = logging.getLogger("lrbs")
COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {}


class ArgumentError(LrbsError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ArgumentError(f"{self.prog}: {message}")


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def add_training_args(p: argparse.ArgumentParser, lr: float = 0.1, batch: int = 128) -> None:
    g = p.add_argument_group("data, model and optimizer (shared by every training command)")
    g.add_argument("--dataset", default="mnist1d", help=f"one of: {', '.join(DATASETS)}")
    g.add_argument("--dataset-size", type=int, default=None, help="samples to generate/keep")
    g.add_argument("--csv", default=None, help="CSV file, for --dataset csv")
    g.add_argument("--target", default=None, help="target column, for --dataset csv")
    g.add_argument("--data-root", default=None, help="torchvision root folder")
    g.add_argument("--model", default="mlp", help=f"one of: {', '.join(MODELS)}")
    g.add_argument("--hidden", type=int, nargs="+", default=[256], help="MLP hidden sizes")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help=f"one of: {', '.join(DEVICE_CHOICES)}")
    g.add_argument("--optimizer", default="sgd", help=f"one of: {', '.join(OPTIMIZERS)}")
    g.add_argument("--lr", type=float, default=lr, help="learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="for --optimizer momentum")
    g.add_argument("--batch-size", type=int, default=batch)


def setup_from(a: argparse.Namespace) -> Setup:
    data = DataSpec(
        name=a.dataset,
        size=a.dataset_size,
        seed=a.seed,
        root=a.data_root,
        csv_path=a.csv,
        target=a.target,
    )
    return Setup(data, ModelSpec(a.model, hidden=tuple(a.hidden)), a.seed, a.device)


def optim_from(a: argparse.Namespace) -> OptimSpec:
    return OptimSpec(a.optimizer, a.lr, a.momentum)


def build_parser() -> Parser:
    parser = Parser(prog="python -m lrbs", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("gd1d", help="gradient descent on a 1-D loss")
    p.add_argument("--loss", default="quadratic", choices=gd1d.LOSSES)
    p.add_argument("--curvature", type=float, default=2.0)
    p.add_argument("--start", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, nargs="+", default=[0.1, 0.5, 1.1])
    p.add_argument("--momentum", type=float, default=0.0)
    add_output_args(p)

    p = sub.add_parser("train", help="one training run (the loop every page uses)")
    add_training_args(p)
    add_budget_args(p)
    add_output_args(p)

    sub.add_parser("datasets", help="list datasets and whether they are here")
    return parser


def add_budget_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("budget (the first limit reached ends the run)")
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--samples", type=int, default=None)
    g.add_argument("--seconds", type=float, default=None)


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write the CSV the page offers")
    p.add_argument("--json", action="store_true", help="headline figures as JSON, last line")


def write_csv(df: pd.DataFrame, path: str | None) -> None:
    if path:
        df.to_csv(path, index=False)
        log.info("wrote %d rows to %s", len(df), path)


class ProgressBar:
    """A text progress bar on stderr, so stdout keeps only results."""

    def __init__(self, width: int = 30) -> None:
        self.width, self.last = width, -1

    def __call__(self, fraction: float, text: str = "") -> None:
        filled = int(self.width * min(1.0, fraction))
        if filled == self.last and fraction < 1:
            return
        self.last = filled
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if fraction >= 1 else "\r"
        print(f"[{bar}] {fraction:4.0%} {text}", end=end, file=sys.stderr, flush=True)


@command("gd1d")
def cmd_gd1d(a: argparse.Namespace) -> dict:
    cfg = gd1d.GDConfig(a.loss, a.curvature, a.start, a.steps, tuple(a.lr), a.momentum)
    paths = gd1d.run(cfg)
    write_csv(gd1d.paths_frame(paths), a.out)
    out = gd1d.summary(cfg, paths)
    if not a.json:
        print(f"{cfg.loss}: stability limit lr < {out['stability_limit']:.4g}")
        for r in out["runs"]:
            print(f"  lr={r['lr']:<8g} {r['status']:<12} final loss {r['final_loss']:.4g}")
    return out


@command("train")
def cmd_train(a: argparse.Namespace) -> dict:
    setup = setup_from(a)
    budget = (
        Budget(a.steps, a.epochs, a.samples, a.seconds)
        if any(v is not None for v in (a.steps, a.epochs, a.samples, a.seconds))
        else Budget(epochs=1)
    )
    cfg = TrainConfig(batch_size=a.batch_size, budget=budget, optim=optim_from(a), seed=a.seed)
    data = load_tensors(setup)
    model = setup.fresh_model(data, data.x_train.device)
    bar = ProgressBar()
    result = train(model, data, cfg, on_event=lambda e: bar(cfg.budget.fraction(e), e.kind))
    bar(1.0, result.status)
    write_csv(pd.DataFrame([e.as_dict() for e in result.events], columns=EVENT_COLUMNS), a.out)
    out = {"dataset": a.dataset, "model": a.model, "device": describe(data.x_train.device).name}
    out.update(result.headline())
    if not a.json:
        print(
            f"{result.status}: {result.steps} steps, {result.epochs:.2f} epochs, "
            f"val loss {result.val_loss}, val acc {result.val_acc}"
        )
    return out


@command("datasets")
def cmd_datasets(a: argparse.Namespace) -> dict:
    from lrbs.data import availability

    here = availability()
    for name, ok in here.items():
        e = DATASETS[name]
        print(f"{name:<22} {'here' if ok else 'absent':<7} {e.about if ok else e.how_to_get}")
    return {"available": here}


def _clean(obj):
    """JSON without NaN/inf (they are not JSON): such floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if a.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        out = COMMANDS[a.command](a)
    except LrbsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if getattr(a, "json", False):
        print(json.dumps(_clean(out)))
    return 0


__all__ = ["main", "load"]
