"""Does the card's answer hold? `python -m bench.holds` runs recommend (quick budget) on every
built-in dataset here x {SGD + momentum, Adam} and on the example workloads, then trains the
card's answer for the planned length against its neighbours over seeds: the rate ÷3 and ×3 at
the card's batch, the batch halved and doubled (the rate carried by the card's own rule), and
where a case has one, the default a user would otherwise reach for (the example script's own
rate and batch; Adam's 1e-3 at batch 64). Every contender sees the same samples (the planned
epochs) from the same seeds' weights and batches.

The card holds when its mean validation loss is the best of the contenders or within noise of
the best (lrbs.core.spread: the gap inside two standard errors). Rows in bench/holds.csv, one
per case x contender; markdown tables on stdout."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lrbs.core.data import DataSpec, availability
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.setup import Setup
from lrbs.core.spread import difference, spread
from lrbs.experiments import recommend
from lrbs.experiments.sweeps import SweptOptim, load_data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Case:
    name: str
    setup: Setup
    optimizer: str  # the swept optimizer (a workload's own optimizer() overrides it)
    epochs: float  # the planned training
    default: tuple[float, int] | None = None  # (lr, batch) a user would otherwise start from
    needs: str = ""  # why a case cannot run here, checked before it starts


def cases() -> list[Case]:
    here = availability()
    out = []
    for name in ("mnist1d", "digits", "covertype-synthetic", "fashion-mnist"):
        for opt in ("momentum", "adam"):
            default = (1e-3, 64) if opt == "adam" else None
            needs = "" if here.get(name) else f"{name} is not on this machine"
            setup = Setup(DataSpec(name))
            out.append(Case(f"{name} {opt}", setup, opt, 10.0, default=default, needs=needs))
    ex = ROOT / "examples"
    out += [
        Case("regression_mse.py", Setup(workload=str(ex / "regression_mse.py")), "adam", 10.0),
        Case("char_transformer.py", Setup(workload=str(ex / "char_transformer.py")), "adam", 1.0),
        Case(
            "pytorch_mnist_cnn.py (PyTorch's MNIST example)",
            Setup(workload=str(ex / "pytorch_mnist_cnn.py")),
            "sgd",
            2.0,
            default=(1.0, 64),
        ),
        Case(
            "resnet18_cifar.py",
            Setup(workload=str(ex / "resnet18_cifar.py")),
            "momentum",
            1.0,
            needs="about a CPU second an update: run it where a GPU is (--cases resnet18)",
        ),
    ]
    return out


def contenders(card: dict, default: tuple[float, int] | None, n_train: int) -> dict:
    """name -> (lr, batch): the card, its rate /3 and x3, its batch /2 and x2 with the rate
    carried by the card's rule (linear or square root), and a user's default."""
    lr, b = card["lr"], card["batch"]
    power = 1.0 if recommend.SCALING_RULE.get(card["optimizer"], "linear") == "linear" else 0.5
    out = {"card": (lr, b), "rate ÷3": (lr / 3, b), "rate ×3": (lr * 3, b)}
    if b // 2 >= 1:
        out["batch ÷2"] = (lr * 0.5**power, b // 2)
    if 2 * b <= n_train:
        out["batch ×2"] = (lr * 2.0**power, 2 * b)
    if default is not None and default != (lr, b):
        out["default"] = default
    return out


def trained_loss(setup: Setup, data, optimizer: str, lr: float, batch: int, epochs, seed):
    cfg = TrainConfig(
        batch_size=batch,
        budget=Budget(epochs=epochs),
        optim=OptimSpec(optimizer, lr, SweptOptim(optimizer).momentum),
        seed=seed,
        eval_each_epoch=False,
    )
    r = train(setup.fresh_model(data, seed), data, cfg, run_id=f"{lr:.3g}@{batch}")
    return r.val_loss if r.status == "finished" and r.val_loss is not None else math.inf


def audit(case: Case, budget: str, seeds: int) -> list[dict]:
    t = time.perf_counter()
    cfg = recommend.Config(
        budget=budget, optim=SweptOptim(case.optimizer), train_epochs=case.epochs
    )
    r = recommend.run(case.setup, cfg)
    card, seconds = r.card(), time.perf_counter() - t
    if card.get("lr") is None:
        return [{"case": case.name, "contender": "card", "note": r.report()}]
    data = load_data(case.setup)
    losses = {}
    for name, (lr, batch) in contenders(card, case.default, data.n_train).items():
        losses[name] = (
            lr,
            batch,
            [
                trained_loss(case.setup, data, case.optimizer, lr, batch, case.epochs, s)
                for s in range(seeds)
            ],
        )
    means = {
        k: spread(v[2]).mean if all(math.isfinite(x) for x in v[2]) else math.inf
        for k, v in losses.items()
    }
    best = min(means, key=means.get)
    rows = []
    for name, (lr, batch, values) in losses.items():
        s, d = spread(values), difference(losses["card"][2], losses[best][2])
        rows.append(
            {
                "case": case.name,
                "contender": name,
                "lr": lr,
                "batch": batch,
                "mean": s.mean,
                "std": s.std,
                "seeds": seeds,
                "best": name == best,
                "card_within_noise": best == "card" or bool(d.within_noise),
                "card_minus_best": d.delta,
                "noise": d.noise,
                "confidence": card["confidence"],
                "rate_rule": card["rate_rule"],
                "held": (card.get("hold") or {}).get("held"),
                "planned_epochs": case.epochs,
                "swept_steps": card.get("swept_steps"),
                "horizon_steps": card.get("horizon_steps"),
                "swept_lr": card.get("swept_lr"),
                "carry": (card.get("horizon_rule") or {}).get("factor"),
                "exponent": (card.get("horizon_rule") or {}).get("exponent"),
                "pipeline_seconds": seconds,
                "busy": bool(r.budget_plan.get("machine_busy")),
            }
        )
    return rows


def timing(name: str, optimizer: str, repeats: int = 3) -> dict:
    """The plan's timed update (recommend's cost measurement) against `train`'s own, 1,000
    updates at the base batch, alternated `repeats` times in one process (a fresh process's
    one-time costs fall on the first of them, as they do in recommend)."""
    setup = Setup(DataSpec(name))
    cfg = recommend.Config(optim=SweptOptim(optimizer))
    data = load_data(setup)
    plan, trained = [], []
    for _ in range(repeats):
        plan.append(recommend.measure_costs(setup, cfg, data).step)
        tc = TrainConfig(
            batch_size=cfg.batch_size,
            budget=Budget(steps=1000),
            optim=OptimSpec(optimizer, 0.01, SweptOptim(optimizer).momentum),
            eval_each_epoch=False,
            eval_at_end=False,
        )
        r = train(setup.fresh_model(data), data, tc)
        trained.append(r.elapsed / r.steps)
    p, t = sorted(plan)[repeats // 2], sorted(trained)[repeats // 2]
    return {
        "dataset": name,
        "optimizer": optimizer,
        "plan_ms": 1e3 * p,
        "train_ms": 1e3 * t,
        "ratio": p / t,
        "plan_all_ms": [round(1e3 * v, 3) for v in plan],
        "train_all_ms": [round(1e3 * v, 3) for v in trained],
    }


def tables(df: pd.DataFrame) -> str:
    lines = [
        "| case | card (lr @ batch) | card's loss | best contender | its loss | card within noise "
        "| a user's default | confidence | pipeline s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    held = 0
    for case, part in df.groupby("case", sort=False):
        card = part[part.contender == "card"].iloc[0]
        best = part[part.best].iloc[0]
        held += bool(card.card_within_noise)
        d = part[part.contender == "default"]
        default = (
            f"{d.iloc[0]['mean']:.4f} ({d.iloc[0].lr:.3g} @ {d.iloc[0].batch})" if len(d) else "—"
        )
        lines.append(
            f"| {case} | {card.lr:.3g} @ {card.batch} | {card['mean']:.4f} ± {card['std']:.4f} "
            f"| {best.contender} ({best.lr:.3g} @ {best.batch}) | {best['mean']:.4f} ± "
            f"{best['std']:.4f} | {'yes' if card.card_within_noise else 'no'} | "
            f"{default} | {card.confidence} | {card.pipeline_seconds:.0f} |"
        )
    n = df.case.nunique()
    lines.append(f"\nThe card is the best or within noise of the best in {held} of {n} cases.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", help="substrings of the case names (default: all here)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", default="quick", choices=recommend.BUDGETS)
    p.add_argument("--out", default=str(HERE / "holds.csv"))
    p.add_argument(
        "--timing", action="store_true", help="only the plan's timed update against train's"
    )
    a = p.parse_args()
    if a.timing:
        for name in ("fashion-mnist", "mnist1d"):
            for opt in ("momentum", "adam"):
                print(timing(name, opt), flush=True)
        return
    rows, every = [], cases()
    if a.cases:  # in the order given
        every = [c for pattern in a.cases for c in every if pattern in c.name]
        every = list(dict.fromkeys(every))
    for case in every:
        chosen = bool(a.cases)
        if case.needs and not (chosen and "GPU" in case.needs):
            print(f"{case.name}: skipped ({case.needs})", flush=True)
            continue
        t = time.perf_counter()
        rows += audit(case, a.budget, a.seeds)
        print(f"{case.name}: {time.perf_counter() - t:.0f} s", flush=True)
        pd.DataFrame(rows).to_csv(a.out, index=False)
    print(tables(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
