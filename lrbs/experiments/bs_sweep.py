"""Batch-size sweep at equal budgets: every batch size trains from the same initial weights for
the same budget, its learning rate fixed or scaled (linear, sqrt) with an optional warm-up."""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from lrbs.core.config import check, option
from lrbs.core.loop import Budget, OptimSpec, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.methods.noise import sgd_noise_scale as noise_scale
from lrbs.methods.scaling import FULL, RULES, parse_batches, resolve_batches, scaled_lr, warmup
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "bs-sweep"
RUN_COLUMNS = [
    "run",
    "batch",
    "seed",
    "lr",
    "noise_scale",
    "status",
    "train_loss",
    "val_loss",
    "val_acc",
    "gap",
    "epochs",
    "updates",
    "samples_per_s",
    "seconds",
    "peak_memory_mib",
]

RUNS_CHANNEL_COLUMNS = [
    *("run", "batch", "seed", "lr", "status", "val_loss", "val_acc", "train_eval_loss"),
    *("epochs", "steps", "samples", "seconds"),
]


def run_label(batch: int, n_train: int, seed: int | None = None) -> str:
    name = f"B={batch}" + (" (full)" if batch == n_train else "")
    return name if seed is None else f"{name} seed {seed}"


@dataclass(frozen=True, kw_only=True)
class Config:
    batch_sizes: tuple[int | str, ...] = option(
        (64, 128, 256, FULL), help="batch sizes: whole numbers or 'full' (the training set)"
    )
    budget: Budget = option(factory=lambda: Budget(seconds=10.0))
    optim: OptimSpec = option(factory=OptimSpec)
    scaling: str = option(
        "fixed", choices=tuple(RULES), label="scaling rule", help="lr scaling: fixed, linear, sqrt"
    )
    base_batch: int | None = option(
        None, low=1, help="the batch --lr belongs to (default: the smallest swept)"
    )
    warmup_epochs: float = option(
        0.0, low=0.0, help="linear warm-up from --lr to a larger scaled rate, in epochs"
    )
    seed: int = option(0, help="seed of the first repeat (repeats use seed+1, seed+2, ...)")
    repeats: int = option(1, low=1, high=10, help="seeds per batch size")
    log_every: int = option(10, cli=False)
    min_eval_seconds: float = option(0.25, cli=False)

    def __post_init__(self) -> None:
        check(self)
        # 64.0 -> 64, 'FULL' -> 'full': one spelling, so equal lists are equal configs
        object.__setattr__(self, "batch_sizes", parse_batches(self.batch_sizes))

    def plan(self, n_train: int) -> list[tuple[int, float]]:
        """(batch, learning rate) per swept batch size."""
        batches = resolve_batches(self.batch_sizes, n_train)
        base = self.base_batch or batches[0]
        plan = [(b, scaled_lr(self.optim.lr, base, b, self.scaling)) for b in batches]
        for _, lr in plan:
            replace(self.optim, lr=lr)  # a scaled rate may be absurd: checked here
        return plan

    def runs(self, n_train: int) -> dict[str, tuple[int, float, int]]:
        """Every run of the sweep by name: (batch, lr, seed), batch by batch, repeats inside."""
        out = {}
        for batch, lr in self.plan(n_train):
            for r in range(self.repeats):
                seed = self.seed + r
                name = run_label(batch, n_train, seed if self.repeats > 1 else None)
                out[name] = (batch, lr, seed)
        return out

    def train_config(self, batch: int, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(
            batch_size=batch,
            budget=self.budget,
            optim=replace(self.optim, lr=lr),
            seed=seed,
            log_every=self.log_every,
            min_eval_seconds=self.min_eval_seconds,
        )

    def describe_plan(self, n_train: int) -> str:
        """One line per batch: its rate and noise scale (the page's caption)."""
        m = self.optim.effective_momentum
        parts = [
            f"B={b}: lr {lr:.3g}, g = {noise_scale(lr, n_train, b, m):.3g}"
            for b, lr in self.plan(n_train)
        ]
        base = self.base_batch or resolve_batches(self.batch_sizes, n_train)[0]
        if self.scaling == "fixed":
            how = f"lr {self.optim.lr:.3g} is used as given by every batch (not rescaled)"
        else:
            how = (
                f"lr {self.optim.lr:.3g} belongs to batch {base:,}; the others get it rescaled "
                f"by the {self.scaling} rule"
            )
        return (
            "Plan: " + "; ".join(parts) + f". {how.capitalize()}. Noise scale g = lr·N/B with "
            f"N = {n_train:,}."
        )


def run(
    setup: Setup,
    config: Config,
    sink: Sink | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Each batch size (x repeats) trains a fresh model of the run's seed for the same budget;
    every point on "events", one "runs" row as each run ends."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    n = data.n_train
    planned = config.runs(n)
    sink.emit("info", {"dataset": setup.data_name, "model": setup.model_name, "n_train": n})

    def prepare(name: str) -> Planned:
        batch, lr, seed = planned[name]
        extra = {}
        if config.warmup_epochs > 0 and lr > config.optim.lr:
            # from the base batch's rate up to the scaled one (Goyal et al.)
            steps = math.ceil(n / batch)
            extra["lr_scheduler"] = warmup(lr, config.optim.lr, config.warmup_epochs, steps)
        return Planned(
            model=setup.fresh_model(data, seed),
            config=config.train_config(batch, lr, seed),
            extra=extra,
            columns={"batch": batch, "lr": lr, "seed": seed},
        )

    def on_run_end(name: str, r) -> None:
        if r.peak_memory:
            sink.emit("memory", {"run": name, "peak_memory_mib": r.peak_memory / 2**20})

    run_series(list(planned), prepare, data, sink, stop, on_run_end=on_run_end)
    stopped = stop is not None and stop.is_set()
    return Result(config, rows.rows, "stopped" if stopped else "finished")


@dataclass(frozen=True)
class Result(experiment.Result):
    def info(self) -> dict:
        return (self.rows.get("info") or [{}])[0]

    def n_train(self) -> int | None:
        n = self.info().get("n_train")
        return int(n) if n is not None else None

    def events(self) -> pd.DataFrame:
        from lrbs.core.loop import EVENT_COLUMNS

        return self.frame("events", EVENT_COLUMNS)

    def run_rows(self) -> pd.DataFrame:
        """One row per finished run: its batch, seed, rate, noise scale and figures (the
        training loss re-scored in eval mode, so gap = val_loss - train_loss)."""
        runs = self.frame("runs", RUNS_CHANNEL_COLUMNS)
        if runs.empty:
            return pd.DataFrame(columns=RUN_COLUMNS)
        m = self.config.optim.effective_momentum
        n = self.n_train() or 0
        memory = self.frame("memory", ["run", "peak_memory_mib"])
        out = runs.assign(
            batch=runs.batch.astype(int),
            seed=runs.seed.astype(int),
            noise_scale=noise_scale(runs.lr, n, runs.batch, m),
            train_loss=runs.train_eval_loss,
            gap=runs.val_loss - runs.train_eval_loss,
            updates=runs.steps,
            samples_per_s=runs.samples / runs.seconds.where(runs.seconds > 0),
        ).merge(memory, on="run", how="left")
        out = out[RUN_COLUMNS]
        numbers = [c for c in RUN_COLUMNS if c not in ("run", "batch", "seed", "status")]
        return out.astype({c: float for c in numbers})

    def table(self) -> pd.DataFrame:
        return sweep_table(self.run_rows().drop(columns="run"))

    def left_out(self) -> list[str]:
        """Every planned run the verdict does not compare, with why: stopped (and how far into
        its budget), diverged or failed, or never started."""
        runs = self.frame("runs", RUNS_CHANNEL_COLUMNS)
        out = []
        for r in runs.to_dict(orient="records"):
            if r["status"] == "stopped":
                out.append(f"{r['run']} stopped after {spent(self.config.budget, r)}")
            elif r["status"] != "finished":
                out.append(f"{r['run']} {r['status']}")
            elif r["val_loss"] is None or not math.isfinite(r["val_loss"]):
                out.append(f"{r['run']} has no validation loss")
        n = self.n_train()
        if n is not None:
            ran = set(runs.run)
            out += [f"{name} did not run" for name in self.config.runs(n) if name not in ran]
        return out

    def compared(self) -> pd.DataFrame:
        """The batches the verdict compares: every repeat finished its budget with a validation
        loss. Per batch (means over repeats): `final` (the loss at the end of the budget),
        `best` (the lowest loss any evaluation reached), `best_samples` (where), and
        `at_equal` (at `attrs["equal_samples"]`, the most samples every compared run saw: each
        run's last evaluation by then, NaN where it had none); sorted by `final`."""
        cols = ["batch", "lr", "final", "updates", "best", "best_samples", "at_equal"]
        runs = self.frame("runs", RUNS_CHANNEL_COLUMNS)
        if runs.empty:
            return pd.DataFrame(columns=cols)
        runs = runs.assign(val_loss=pd.to_numeric(runs.val_loss, errors="coerce"))
        ok = runs.status.eq("finished") & np.isfinite(runs.val_loss)
        complete = ok.groupby(runs.batch).transform("all")
        runs = runs[complete]
        if runs.empty:
            return pd.DataFrame(columns=cols)
        ev = self.events()
        ev = ev[(ev.kind == "eval") & ev.run_id.isin(runs.run)].dropna(subset=["val_loss"])
        curves = {name: g.sort_values("samples") for name, g in ev.groupby("run_id")}
        equal = min((float(g.samples.iloc[-1]) for g in curves.values()), default=math.nan)
        rows = []
        for r in runs.to_dict(orient="records"):
            g = curves.get(r["run"])
            if g is None or g.empty:
                g = pd.DataFrame({"samples": [r["samples"]], "val_loss": [r["val_loss"]]})
            i = g.val_loss.to_numpy(float).argmin()
            before = g[g.samples <= equal]
            rows.append(
                {
                    "batch": int(r["batch"]),
                    "lr": r["lr"],
                    "final": r["val_loss"],
                    "updates": r["steps"],
                    "best": float(g.val_loss.iloc[i]),
                    "best_samples": float(g.samples.iloc[i]),
                    "at_equal": float(before.val_loss.iloc[-1]) if len(before) else math.nan,
                }
            )
        out = pd.DataFrame(rows).groupby("batch").mean().reset_index()
        out.attrs["equal_samples"] = equal
        return out.sort_values("final", ignore_index=True)[cols]

    def best(self) -> dict | None:
        """The batch with the lowest final validation loss among the batches whose every run
        finished its budget (stopped, diverged or failed runs are not compared)."""
        c = self.compared()
        if c.empty:
            return None
        table = self.table().set_index("batch")
        row = table.loc[int(c.batch.iloc[0])].to_dict()
        return row | {"batch": int(c.batch.iloc[0])}

    def verdict(self) -> str | None:
        """What the sweep says, naming what it compares (the final validation loss at the end
        of the budget), what it leaves out and why, and where the ranking by the lowest loss
        reached, or by the loss at equal samples seen, differs from the final one."""
        c = self.compared()
        left = self.left_out()
        if c.empty:
            if not left:
                return None
            return (
                "No batch size finished its budget with a validation loss, so none is named: "
                + "; ".join(left)
                + "."
            )
        top = c.iloc[0]
        text = (
            f"Compared: the final validation loss at the end of the budget "
            f"({self.config.budget.describe()}) of the {len(c)} batch size(s) that finished it. "
            f"Lowest: batch {int(top.batch)} (val loss {top.final:.4f}, {top.updates:.0f} "
            "updates)."
        )
        order = [int(b) for b in c.batch]

        def ranked(column: str) -> tuple[list[int], pd.Series]:
            """The batches by `column`, and the leader's row."""
            by = [int(b) for b in c.sort_values(column, kind="stable").batch]
            return by, c.set_index("batch").loc[by[0]]

        by_best, lead = ranked("best")
        if by_best != order:
            text += (
                f" Ranked by the lowest validation loss reached at any point instead, the order "
                f"differs ({' < '.join(map(str, by_best))} against {' < '.join(map(str, order))} "
                f"by final loss): batch {by_best[0]} reached {lead.best:.4f} after "
                f"{lead.best_samples:,.0f} samples."
            )
        equal = c.attrs.get("equal_samples", math.nan)
        if len(c) > 1 and c.at_equal.notna().all():
            by_equal, lead = ranked("at_equal")
            if by_equal != order:
                text += (
                    f" At equal samples seen ({equal:,.0f}, the most every compared run saw) the "
                    f"order is {' < '.join(map(str, by_equal))}: batch {by_equal[0]} led "
                    f"with {lead.at_equal:.4f}."
                )
        if left:
            text += " Not compared: " + "; ".join(left) + "."
        return text

    def summary(self) -> dict:
        info = self.info()
        return {
            "status": self.status,
            "dataset": info.get("dataset"),
            "model": info.get("model"),
            "budget": self.config.budget.describe(),
            "scaling": self.config.scaling,
            "n_train": self.n_train(),
            "runs": self.table().to_dict(orient="records"),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.events(), "table": self.table()}

    def report(self) -> str:
        table = self.table()
        return table.to_string(index=False) if not table.empty else self.status


def spent(budget: Budget, run: dict) -> str:
    """How far a run got into its budget, in the budget's own units ("4.6 of 25 s")."""
    got = {"steps": "steps", "epochs": "epochs", "samples": "samples", "seconds": "seconds"}
    units = {"steps": "steps", "epochs": "epochs", "samples": "samples", "seconds": "s"}
    return ", ".join(
        f"{float(run.get(got[k]) or 0):.3g} of {limit:g} {units[k]}"
        for k, limit in asdict(budget).items()
        if limit is not None
    )


def sweep_table(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """One row per batch size: means over repeats, and the spread (std) of the validation loss
    when there are several."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    numeric = [c for c in df.columns if c not in ("batch", "seed", "status", "run")]
    agg = df.groupby("batch")[numeric].mean(numeric_only=True)
    agg["status"] = df.groupby("batch").status.agg(lambda s: "/".join(sorted(set(s))))
    agg["repeats"] = df.groupby("batch").size()
    if df.groupby("batch").size().max() > 1:
        agg["val_loss_std"] = df.groupby("batch").val_loss.std()
    return agg.reset_index()
