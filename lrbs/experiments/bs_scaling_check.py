"""Seed 001's scaling-rule check: batch B0*k with lr0*k for k = 1..K, and the same batches at a
fixed lr0; under the linear rule the validation curves per epoch should lie on each other."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.errors import ConfigError, positive_number
from lrbs.core.loop import EVENT_COLUMNS, Budget, OptimSpec, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.spread import ONE_SEED
from lrbs.methods.scaling import scaled_lr
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "bs-scaling-check"
RULES = ("linear", "fixed")
CURVE_COLUMNS = ["rule", "k", "seed", "batch", "lr", "epoch", "val_loss", "val_acc", "status"]


@dataclass(frozen=True, kw_only=True)
class Config:
    base_batch: int = option(
        8, low=1, flag=("--batch-size", "--base-batch"), label="base batch", help="base batch B0"
    )
    optim: OptimSpec = option(factory=lambda: OptimSpec("sgd", 0.001))
    k_max: int = option(4, low=2, high=32, label="K", help="batches B0*1 .. B0*K")
    epochs: float = option(2.0, help="epochs per run")
    seed: int = option(0, help="seed of every run (same initial weights; the first repeat)")
    repeats: int = option(1, low=1, high=10, help="seeds per run: seed, seed+1, ...")

    def __post_init__(self) -> None:
        check(self)  # K from 2 (two batch sizes to compare) to 32
        positive_number("epochs", self.epochs)

    def plan(self, n_train: int) -> list[tuple[str, int, int, float]]:
        """(rule, k, batch, lr): the linear rule and, for contrast, a fixed rate."""
        out = []
        for rule in RULES:
            for k in range(1, self.k_max + 1):
                b = self.base_batch * k
                if b > n_train:
                    raise ConfigError(
                        f"batch {b} (= {self.base_batch} x {k}) is larger than "
                        f"the training set ({n_train})"
                    )
                out.append((rule, k, b, scaled_lr(self.optim.lr, self.base_batch, b, rule)))
        for _, _, _, lr in out:
            replace(self.optim, lr=lr)  # a scaled rate may be absurd: checked here
        return out


def run_name(rule: str, k: int, seed: int | None = None) -> str:
    return f"{rule} k={k}" + ("" if seed is None else f" seed {seed}")


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Every (rule, k) trains the seed's initial weights for `epochs`, scored at the start and
    after each epoch; all points on "events", a "runs" row as each run ends."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    sink.emit("info", {"dataset": setup.data_name, "model": setup.model_name})
    seeds = range(config.seed, config.seed + config.repeats)
    planned = {
        run_name(rule, k, s if config.repeats > 1 else None): (rule, k, b, lr, s)
        for rule, k, b, lr in config.plan(data.n_train)
        for s in seeds
    }

    def prepare(name: str) -> Planned:
        rule, k, b, lr, seed = planned[name]
        tc = TrainConfig(
            batch_size=b,
            budget=Budget(epochs=config.epochs),
            optim=replace(config.optim, lr=lr),
            seed=seed,
            eval_at_start=True,
        )
        return Planned(
            model=setup.fresh_model(data, seed),
            config=tc,
            columns={"rule": rule, "k": k, "batch": b, "lr": lr, "seed": seed},
        )

    run_series(list(planned), prepare, data, sink, stop)
    stopped = stop is not None and stop.is_set()
    return Result(config, rows.rows, "stopped" if stopped else "finished")


@dataclass(frozen=True)
class Result(experiment.Result):
    def curves(self) -> pd.DataFrame:
        """Validation loss per evaluation of every (rule, k) run, as far as it went."""
        events = self.frame("events", EVENT_COLUMNS)
        ev = events[events.kind == "eval"]
        if ev.empty:
            return pd.DataFrame(columns=CURVE_COLUMNS)
        parts = ev.run_id.str.extract(r"^(\w+) k=(\d+)(?: seed (\d+))?$")
        runs = self.frame("runs", ["run", "status"])
        status = dict(zip(runs.run, runs.status, strict=True))
        out = pd.DataFrame(
            {
                "rule": parts[0],
                "k": parts[1].astype(int),
                "seed": parts[2].fillna(self.config.seed).astype(int),
                "batch": ev.batch_size.astype(int),
                "lr": ev.lr,
                "epoch": ev.epoch,
                "val_loss": ev.val_loss,
                "val_acc": ev.val_acc,
                "status": [status.get(r, "running") for r in ev.run_id],
            }
        )
        return out.reset_index(drop=True)

    def agreement(self) -> pd.DataFrame:
        return agreement(self.curves())

    def verdict(self) -> str | None:
        """How the two rules compare, in words (markdown)."""
        by = self.agreement().set_index("rule")
        if not {"linear", "fixed"} <= set(by.index):
            return None
        lin, fix = by.loc["linear"], by.loc["fixed"]
        verdict = "agree" if lin.relative_spread < 0.5 * fix.relative_spread else "do not agree"
        text = (
            f"Under the linear rule the curves differ by **{lin.mean_spread:.4f}** on average "
            f"({lin.relative_spread:.2%} of the loss); at a fixed rate by "
            f"**{fix.mean_spread:.4f}** ({fix.relative_spread:.2%}). Both charts share one y "
            "scale; curves that agree lie on top of each other. On this data the linear "
            f"rule's curves **{verdict}** better than the fixed rate's."
        )
        noise = float(self.agreement().seed_noise.mean())
        if pd.isna(noise):
            return text + f" ({ONE_SEED}: whether these gaps exceed reseeding is not judged.)"
        within = [
            r for r in ("linear", "fixed") if by.loc[r].mean_spread <= 2 * noise
        ]  # within twice the seed-to-seed spread of one curve
        if not within:
            said = "both rules' gaps between batch sizes are beyond the noise"
        elif len(within) == 1:
            said = f"only the {within[0]} rule's gaps are within noise"
        else:
            said = "both rules' gaps are within noise: this data cannot tell them apart"
        return text + (
            f" Over {self.config.repeats} seeds one curve moves by {noise:.4f} (std) when "
            f"only the seed changes: {said}."
        )

    def summary(self) -> dict:
        curves = self.curves()
        final = curves[curves.epoch == curves.epoch.max()] if not curves.empty else curves
        info = (self.rows.get("info") or [{}])[0]
        return {
            "status": self.status,
            "dataset": info.get("dataset"),
            "agreement": self.agreement().to_dict(orient="records"),
            "final_val_loss": final[["rule", "k", "batch", "lr", "val_loss"]].to_dict(
                orient="records"
            ),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.curves(), "agreement": self.agreement()}

    def report(self) -> str:
        agree = self.agreement()
        return agree.to_string(index=False) if not agree.empty else self.status


def agreement(curves: pd.DataFrame) -> pd.DataFrame:
    """How closely the curves of one rule lie on each other: per rule, the mean over epochs of
    the spread (max - min) of validation loss across k (of the seeds' mean curves), absolute
    and relative to the mean; and `seed_noise`, the mean standard deviation of one curve over
    its seeds (NaN with one seed)."""
    out = []
    curves = curves.copy()
    if "seed" not in curves:
        curves["seed"] = 0
    keys = ["rule", "k", "epoch"]
    seeds = curves.groupby(keys, sort=False).val_loss
    noise = seeds.std().reset_index().rename(columns={"val_loss": "std"})
    noise = noise[noise.epoch > 0]
    curves = seeds.mean().reset_index()
    for rule, d in curves.groupby("rule", sort=False):
        # whole epochs after the start (at epoch 0 every run has the same weights)
        per_epoch = d[(d.epoch == d.epoch.round()) & (d.epoch > 0)].groupby("epoch").val_loss
        spread = per_epoch.max() - per_epoch.min()
        final = d[d.epoch == d.epoch.max()]
        out.append(
            {
                "rule": rule,
                "mean_spread": float(spread.mean()),
                "relative_spread": float((spread / per_epoch.mean()).mean()),
                "final_val_loss_min": float(final.val_loss.min()),
                "final_val_loss_max": float(final.val_loss.max()),
                "seed_noise": float(noise[noise.rule == rule]["std"].mean()),
            }
        )
    return pd.DataFrame(
        out,
        columns=[
            "rule",
            "mean_spread",
            "relative_spread",
            "final_val_loss_min",
            "final_val_loss_max",
            "seed_noise",
        ],
    )
