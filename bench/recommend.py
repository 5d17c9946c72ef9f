"""Recommend, measured: `python -m bench.recommend audit` runs the pipeline (quick budget) on the
built-in datasets x {SGD + momentum, Adam} and tabulates which range-test rule lands closest to
the confirmed best; `python -m bench.recommend optuna` compares the time to a good answer with
an Optuna TPE study over the same lr x batch space, side by side in one run.

Both write CSVs next to this file (bench/recommend_*.csv) and print markdown tables."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from lrbs.core.data import DataSpec, availability
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.setup import Setup
from lrbs.experiments import recommend
from lrbs.experiments.sweeps import SweptOptim, load_data

HERE = Path(__file__).resolve().parent
DATASETS = ("mnist1d", "digits", "covertype-synthetic", "fashion-mnist")
OPTIMIZERS = ("momentum", "adam")


def audit(datasets: tuple[str, ...], budget: str) -> pd.DataFrame:
    """One pipeline per dataset x optimizer; one row per rule."""
    here = availability()
    rows = []
    out = HERE / "recommend_audit.csv"
    for name in datasets:
        if not here.get(name):
            print(f"{name}: not on this machine, skipped", flush=True)
            continue
        for opt in OPTIMIZERS:
            setup = Setup(DataSpec(name))
            cfg = recommend.Config(budget=budget, optim=SweptOptim(opt))
            t = time.perf_counter()
            r = recommend.run(setup, cfg)
            seconds = time.perf_counter() - t
            card = r.card()
            lo, hi = card.get("band_at_batch") or (math.nan, math.nan)
            for a in card.get("audit", []):
                rows.append(
                    {
                        "dataset": name,
                        "optimizer": opt,
                        "swept_lr": card.get("swept_lr"),
                        "swept_steps": card.get("swept_steps"),
                        "horizon_steps": card.get("horizon_steps"),
                        "carry": (card.get("horizon_rule") or {}).get("factor", 1.0),
                        "base_lr": card.get("base_lr"),
                        "band_lo": card["band"][0],
                        "band_hi": card["band"][1],
                        "lr": card["lr"],
                        "batch": card["batch"],
                        "lr_in_band": lo * (1 - 1e-9) <= card["lr"] <= hi * (1 + 1e-9),
                        "confidence": card["confidence"],
                        "reasons": "; ".join(card["confidence_reasons"]),
                        "estimated_batch": card.get("estimated_batch"),
                        "b_simple": card.get("b_simple"),
                        "confirm_val_loss": r.confirm_run().get("val_loss"),
                        "confirm_batch": r.confirm_run().get("batch"),
                        "confirm_lr": r.confirm_run().get("lr"),
                        "target_loss": card.get("target_loss"),
                        "seconds": seconds,
                        "rule": a["rule"],
                        "rule_lr": a["lr"],
                        "times_off": a["times_off"],
                        "in_band": a["in_band"],
                        "loss_cost": a["loss_cost"],
                        "closest": a["closest"],
                    }
                )
            print(f"{name} {opt}: {r.report().splitlines()[0]} ({seconds:.0f} s)", flush=True)
            pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


def audit_tables(df: pd.DataFrame) -> str:
    runs = df.drop_duplicates(["dataset", "optimizer"])
    # the rules are judged at the sweep's length: against the swept best, inside the swept
    # band; the card's rate is that best carried to the planned training and to its batch
    lines = [
        "| dataset | optimizer | swept best (updates) | band as swept | carried to planned "
        "| card lr @ batch | confidence | s |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for _, r in runs.iterrows():
        carried = (
            f"× {r.carry:.3g} to {r.horizon_steps:,.0f}: {r.base_lr:.3g}"
            if r.carry != 1
            else "— (swept that long)"
        )
        lines.append(
            f"| {r.dataset} | {r.optimizer} | {r.swept_lr:.3g} ({r.swept_steps:,.0f}) "
            f"| {r.band_lo:.3g}–{r.band_hi:.3g} | {carried} | {r.lr:.3g} @ {r.batch} "
            f"| {r.confidence} | {r.seconds:.0f} |"
        )
    g = df.groupby("rule")
    per_rule = pd.DataFrame(
        {
            "closest": g.closest.sum(),
            "in_band": g.in_band.sum(),
            "runs": g.size(),
            "median_times_off": g.times_off.median(),
            "worst_times_off": g.times_off.max(),
            "median_loss_cost": g.loss_cost.median(),
        }
    ).reset_index()
    lines += ["", "| rule | closest | in band | median × off | worst × off | median loss cost |"]
    lines.append("|---|---|---|---|---|---|")
    for _, r in per_rule.iterrows():
        lines.append(
            f"| {r.rule} | {r.closest}/{r.runs} | {r.in_band}/{r.runs} | "
            f"{r.median_times_off:.2f} | {r.worst_times_off:.2f} | {r.median_loss_cost:.4f} |"
        )
    return "\n".join(lines)


def val_loss_of(setup: Setup, lr: float, batch: int, optim: str, budget: Budget, seed: int = 0):
    data = load_data(setup)
    tc = TrainConfig(
        batch_size=batch,
        budget=budget,
        optim=OptimSpec(optim, lr),
        seed=seed,
        eval_each_epoch=False,
    )
    r = train(setup.fresh_model(data, seed), data, tc)
    return r.val_loss if r.status == "finished" and r.val_loss is not None else math.inf


def seconds_per_step(setup: Setup, batch: int, optim: str) -> float:
    data = load_data(setup)
    tc = TrainConfig(
        batch_size=batch,
        budget=Budget(steps=60),
        optim=OptimSpec(optim, 1e-3),
        eval_each_epoch=False,
        eval_at_end=False,
    )
    r = train(setup.fresh_model(data), data, tc)
    return r.elapsed / r.steps


def lrbs_answer(
    setup: Setup, optim: str, budget: Budget, epochs: float | None, sweep_steps: int | None
) -> dict:
    """lrbs's pipeline told the planned training (`epochs` at its base batch), then its
    answer trained for `budget`: the race's lrbs row."""
    t = time.perf_counter()
    cfg = recommend.Config(optim=SweptOptim(optim), train_epochs=epochs, sweep_steps=sweep_steps)
    r = recommend.run(setup, cfg)
    card = r.card()
    pipeline = time.perf_counter() - t
    t = time.perf_counter()
    ours = val_loss_of(setup, card["lr"], card["batch"], optim, budget)
    seconds = pipeline + time.perf_counter() - t
    print(f"lrbs: {seconds:.0f} s, lr {card['lr']:.3g} batch {card['batch']}: {ours:.4f}")
    print(r.horizon_text(), flush=True)
    rule = card.get("horizon_rule") or {}
    return {
        "who": "lrbs",
        "trial": 0,
        "seconds": seconds,
        "pipeline_seconds": pipeline,
        "lr": card["lr"],
        "batch": card["batch"],
        "val_loss": ours,
        "best_so_far": ours,
        "swept_steps": card["swept_steps"],
        "horizon_steps": card["horizon_steps"],
        "swept_lr": card["swept_lr"],
        "carry_factor": rule.get("factor", 1.0),
        "measured_exponent": rule.get("measured_exponent"),
    }


def optuna_race(
    dataset: str,
    optim: str,
    epochs: float,
    factor: float,
    match: bool = True,
    seconds: float | None = None,
    tpe_seed: int = 0,
    lrbs_row: dict | None = None,
    out: Path | None = None,
    study: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """lrbs's pipeline, then its answer trained for `epochs`; then a TPE study (seed
    `tpe_seed`) whose every trial trains (lr, batch) for the same `epochs`, until it has spent
    `factor` x lrbs's time. Rows: the study's best-so-far against its cumulative seconds, and
    lrbs's point (`lrbs_row`: one measured before, for a second study against the same
    answer). With `match`, the pipeline is told the planned training (`epochs`, or `seconds`
    converted to epochs at its base batch at the measured update time), as a user would;
    without, it sweeps at its budget's own length. With `seconds`, every training (lrbs's
    answer and each trial) gets that many seconds instead of `epochs`: the card's own
    objective, time to a loss. Every row is written to `out` as it comes. `study`: the trials
    of a study recorded before (same settings), taken up to `factor` x lrbs's time instead of
    running a new one (for a second answer of lrbs against the same study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = Setup(DataSpec(dataset))
    n = load_data(setup).n_train
    budget = Budget(seconds=seconds) if seconds else Budget(epochs=epochs)
    planned = None
    if match:
        base = recommend.Config().batch_size
        if seconds:
            steps = seconds / seconds_per_step(setup, base, optim)
            planned = round(steps * base / n, 2)
        else:
            planned = epochs
    rows = [lrbs_row or lrbs_answer(setup, optim, budget, planned, None)]
    if out:
        pd.DataFrame(rows).to_csv(out, index=False)
    lrbs_seconds = rows[0]["seconds"]
    if study is not None:
        trials = study[study.who == "optuna"]
        if trials.seconds.max() < factor * lrbs_seconds:
            print(f"the recorded study ends at {trials.seconds.max():.0f} s, before the race's end")
        kept = trials[trials.seconds <= factor * lrbs_seconds]
        df = pd.concat([pd.DataFrame(rows), kept], ignore_index=True)
        if out:
            df.to_csv(out, index=False)
        return df
    batches = [2**k for k in range(4, 11) if 2**k <= n // 2]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=tpe_seed))
    spent, best = 0.0, math.inf
    while spent < factor * lrbs_seconds:
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-5, 3.0, log=True)
        batch = trial.suggest_categorical("batch", batches)
        t = time.perf_counter()
        loss = val_loss_of(setup, lr, batch, optim, budget)
        spent += time.perf_counter() - t
        study.tell(trial, loss if math.isfinite(loss) else 1e9)
        best = min(best, loss)
        rows.append(
            {
                "who": "optuna",
                "tpe_seed": tpe_seed,
                "trial": trial.number + 1,
                "seconds": spent,
                "lr": lr,
                "batch": batch,
                "val_loss": loss,
                "best_so_far": best,
            }
        )
        print(f"trial {trial.number}: {spent:.0f} s, best {best:.4f}", flush=True)
        if out:
            pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


def race_summary(df: pd.DataFrame) -> dict:
    ours = df[df.who == "lrbs"].iloc[0]
    opt = df[df.who == "optuna"]
    best10 = float(opt.best_so_far.min())
    at = {}
    for k in (1, 2, 5, 10):
        part = opt[opt.seconds <= k * ours.seconds]
        at[k] = float(part.best_so_far.min()) if not part.empty else math.nan
    reach = opt[opt.best_so_far <= ours.val_loss]
    near = opt[opt.best_so_far <= 1.02 * best10]
    to_match = float(reach.seconds.iloc[0]) if not reach.empty else math.inf
    return {
        "lrbs_loss": float(ours.val_loss),
        "lrbs_seconds": float(ours.seconds),
        "pipeline_seconds": float(ours.pipeline_seconds),
        "optuna_at_1x": at[1],
        "optuna_at_2x": at[2],
        "optuna_at_5x": at[5],
        "optuna_at_10x": at[10],
        "optuna_best": best10,
        "within_2pct_of_optuna_10x": bool(ours.val_loss <= 1.02 * best10),
        "optuna_seconds_to_match": to_match,  # inf: not within the race
        "optuna_seconds_to_2pct": float(near.seconds.iloc[0]),
        # the goal's time half: Optuna needs at least 5 x lrbs's time to reach its answer
        "time_goal_met": bool(to_match >= 5 * float(ours.seconds)),
        "trials": len(opt),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("audit", "optuna"))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--budget", default="quick", choices=recommend.BUDGETS)
    p.add_argument("--optimizer", default="momentum")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--factor", type=float, default=10.0)
    p.add_argument("--no-match", action="store_true", help="sweep at the budget's own steps")
    p.add_argument("--seconds", type=float, default=None, help="train each for seconds")
    p.add_argument("--tpe-seed", type=int, default=0, help="the TPE sampler's seed")
    p.add_argument(
        "--lrbs-from", type=Path, default=None, help="a race CSV whose lrbs row to race again"
    )
    p.add_argument(
        "--study-from", type=Path, default=None, help="a race CSV whose study to race against"
    )
    p.add_argument("--tag", default="", help="added to the CSV's name")
    a = p.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is fastest
    if a.what == "audit":
        df = audit(tuple(a.datasets), a.budget)
        print(audit_tables(df))
        return
    for name in a.datasets:
        ours = None
        if a.lrbs_from:
            old = pd.read_csv(a.lrbs_from)
            ours = old[old.who == "lrbs"].iloc[0].dropna().to_dict()
        tag = ("_unmatched" if a.no_match else "") + (f"_{a.seconds:g}s" if a.seconds else "")
        tag += (f"_tpe{a.tpe_seed}" if a.tpe_seed else "") + a.tag
        out = HERE / f"recommend_optuna_{name}{tag}.csv"
        study = pd.read_csv(a.study_from) if a.study_from else None
        df = optuna_race(
            name,
            a.optimizer,
            a.epochs,
            a.factor,
            not a.no_match,
            a.seconds,
            a.tpe_seed,
            ours,
            out,
            study,
        )
        s = race_summary(df)
        print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()})


if __name__ == "__main__":
    main()
