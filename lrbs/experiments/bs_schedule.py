"""Batch-size schedules against learning-rate decay: "Don't decay the learning rate, increase
the batch size" (Smith, Kindermans, Ying & Le 2017; seed 004).

Dividing the rate by f and multiplying the batch by f give the same SGD noise scale
g = lr/(1 - m) * N/B, so they should train alike; growing the batch needs far fewer updates.
Each regime is a small object the training loop consults: `batch_size_at` before each step,
`on_epoch_end` after each epoch (where milestones and plateaus act, through torch's MultiStepLR
and ReduceLROnPlateau).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch

from lrbs.core.config import check, option
from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, require
from lrbs.core.loop import EVENT_COLUMNS, Budget, Event, OptimSpec, Progress, TrainConfig
from lrbs.core.setup import Setup, load_tensors
from lrbs.core.spread import ONE_SEED, difference, spread
from lrbs.methods.noise import sgd_noise_scale
from lrbs.runs import experiment
from lrbs.runs.experiment import collect
from lrbs.runs.series import Planned, run_series
from lrbs.runs.sink import Sink

KIND = "bs-schedule"

REGIMES = {
    "decay": "decay the LR by f at each milestone",
    "grow": "grow the batch by f at each milestone, LR fixed",
    "hybrid": "grow the batch at the first milestone(s), then decay the LR",
    "plateau": "grow the batch by f when validation loss stalls, up to N/10; then reduce the LR",
    "constant": "constant LR and batch (baseline)",
}
PER_EPOCH_COLUMNS = [
    "run_id",
    "epoch",
    "start",
    "lr",
    "batch_size",
    "updates",
    "noise_scale",
    "val_loss",
    "val_acc",
    "elapsed",
]
PLAN_COLUMNS = ["regime", "epoch", "start", "lr", "batch_size", "noise_scale"]


def _milestones(default: tuple[int, ...]):
    """The milestones option; the CLI's `--milestones` may also be given empty (none)."""
    f = option(default, help="epochs after which decay/grow/hybrid act (none: give it empty)")
    return dataclasses.field(default=f.default, metadata={**f.metadata, "empty_ok": True})


@dataclass(frozen=True, kw_only=True)
class Config:
    regimes: tuple[str, ...] = option(
        tuple(REGIMES), label="regime", help="regimes to train: " + ", ".join(REGIMES)
    )
    epochs: int = option(15, low=1, high=1000, help="epochs each regime trains")
    milestones: tuple[int, ...] = _milestones((5, 10))
    factor: float = option(5.0, help="f: the LR divided or the batch multiplied by it")
    optim: OptimSpec = option(factory=lambda: OptimSpec("momentum", 0.1))  # the initial LR
    batch_size: int = option(128, low=1, help="the initial batch size")
    hybrid_grow: int = option(1, low=0, help="milestones at which hybrid grows the batch")
    patience: int = option(2, low=1, help="plateau: epochs without improvement before it acts")
    seed: int = option(0, help="seed of every regime's weights and batches (first repeat)")
    repeats: int = option(1, low=1, high=10, help="seeds per regime: seed, seed+1, ...")

    def __post_init__(self) -> None:
        check(self)
        require(len(self.regimes) > 0, "choose at least one regime")
        for r in self.regimes:
            require(r in REGIMES, f"unknown regime {r!r}; known: {', '.join(REGIMES)}")
        require(len(set(self.regimes)) == len(self.regimes), "a regime is listed twice")
        require(self.factor > 1, f"the factor must be above 1, got {self.factor}")
        ms = list(self.milestones)
        require(all(isinstance(m, int) for m in ms), "milestones must be whole epochs")
        require(
            ms == sorted(ms) and len(set(ms)) == len(ms),
            f"milestones must be in increasing order without repeats, got {ms}",
        )
        for m in ms:
            require(0 < m < self.epochs, f"milestone {m} is outside the run (1..{self.epochs - 1})")

    def fits(self, n_train: int) -> None:
        """Refuse a batch larger than the training set, before anything trains."""
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch size {self.batch_size} is larger than the training set ({n_train:,})"
            )

    def plateau_cap(self, n_train: int) -> str | None:
        """Why "plateau" cannot grow the batch at all, if it cannot: the next batch B*f is
        above its cap N/10, so it only ever reduces the LR."""
        if "plateau" not in self.regimes:
            return None
        if round(self.batch_size * self.factor) <= n_train / 10:
            return None
        return (
            f"'plateau' cannot grow the batch here: its next batch "
            f"{self.over_cap(self.batch_size, n_train)}, so it only reduces the LR on plateaus "
            "(a smaller initial batch, a smaller factor or more data lets it grow)."
        )

    def over_cap(self, batch: int, n_train: int) -> str:
        """Why `batch` may not grow: "128 × 5 = 640 is above its cap N/10 = 143"."""
        grown = round(batch * self.factor)
        return f"{batch:,} × {self.factor:g} = {grown:,} is above its cap N/10 = {n_train // 10:,}"

    def plateau_switch(self, run: str, epoch: int, batch: int, n_train: int) -> str:
        """What the plateau regime did when the loss stalled and its batch could not grow: the
        same reason `plateau_cap` gives before training, and whether it had grown first."""
        why = self.over_cap(batch, n_train)
        if batch == self.batch_size:
            how = f"its batch could not grow ({why})"
        else:
            how = f"its batch, grown to {batch:,}, could grow no further ({why})"
        return (
            f"'{run}': the validation loss stalled after epoch {epoch} and {how}, so from then "
            "on it reduces the LR on plateaus."
        )


def planned(cfg: Config, regime: str, epoch: int, n_train: int) -> tuple[float, int]:
    """(lr, batch) a milestone regime uses during `epoch` (0-based)."""
    lr0 = cfg.optim.lr
    passed = sum(1 for m in cfg.milestones if epoch >= m)
    if regime == "decay":
        return lr0 / cfg.factor**passed, cfg.batch_size
    if regime == "grow":
        return lr0, min(n_train, round(cfg.batch_size * cfg.factor**passed))
    if regime == "hybrid":
        grow = min(passed, cfg.hybrid_grow)
        return (
            lr0 / cfg.factor ** (passed - grow),
            min(n_train, round(cfg.batch_size * cfg.factor**grow)),
        )
    if regime == "constant":
        return lr0, cfg.batch_size
    raise ConfigError(f"{regime!r} has no fixed plan (it reacts to the validation loss)")


def plan(cfg: Config, n_train: int) -> pd.DataFrame:
    """Per milestone regime and epoch, before training: the lr, the batch and the noise scale
    ('plateau' is not planned: it reacts to the validation loss). `epoch` counts from 1;
    `start` is the epochs done when it begins (where a chart draws its step)."""
    rows = []
    m = cfg.optim.effective_momentum
    for r in cfg.regimes:
        if r == "plateau":
            continue
        for e in range(cfg.epochs):
            lr, b = planned(cfg, r, e, n_train)
            rows.append(
                {
                    "regime": r,
                    "epoch": e + 1,
                    "start": e,
                    "lr": lr,
                    "batch_size": b,
                    "noise_scale": sgd_noise_scale(lr, n_train, b, m),
                }
            )
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


class MilestoneRegime:
    """decay / grow / hybrid / constant: the plan above, applied at each epoch's end. The LR
    part goes through torch's MultiStepLR, stepped once per epoch."""

    def __init__(self, cfg: Config, regime: str, n_train: int) -> None:
        self.cfg, self.regime, self.n = cfg, regime, n_train
        self.batch = planned(cfg, regime, 0, n_train)[1]
        self.sched = None

    def make_scheduler(self, opt: torch.optim.Optimizer):
        decay_at = [m for e, m in enumerate(self.cfg.milestones) if self._decays(e)]
        self.sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=decay_at, gamma=1 / self.cfg.factor
        )
        return None  # stepped per epoch here, not per update by the loop

    def _decays(self, i: int) -> bool:
        return self.regime == "decay" or (self.regime == "hybrid" and i >= self.cfg.hybrid_grow)

    def batch_size_at(self, p: Progress) -> int:
        return self.batch

    def on_epoch_end(self, p: Progress, ev: Event | None, opt) -> None:
        self.sched.step()
        self.batch = planned(self.cfg, self.regime, round(p.epoch), self.n)[1]


class PlateauRegime:
    """Seed 004's Keras recipe: when the validation loss has not improved for `patience`
    epochs, grow the batch by f, while the grown batch stays <= N/10; after that, reduce the
    LR on plateau (torch's ReduceLROnPlateau with the same factor and patience). `report`
    gets a row each time it grows the batch or switches to reducing the LR."""

    def __init__(
        self, cfg: Config, n_train: int, report: Callable[[dict], None] | None = None
    ) -> None:
        self.cfg, self.n, self.report = cfg, n_train, report
        self.batch = cfg.batch_size
        self.best = math.inf
        self.waited = 0
        self.reducer = None
        self.switched_at: int | None = None

    def make_scheduler(self, opt: torch.optim.Optimizer):
        self.reducer = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=1 / self.cfg.factor, patience=self.cfg.patience - 1, threshold=0
        )
        return None

    def batch_size_at(self, p: Progress) -> int:
        return self.batch

    def on_epoch_end(self, p: Progress, ev: Event | None, opt) -> None:
        if ev is None or ev.val_loss is None:
            return
        loss = ev.val_loss
        if self.switched_at is not None:
            self.reducer.step(loss)
            return
        if loss < self.best:
            self.best, self.waited = loss, 0
            return
        self.waited += 1
        if self.waited < self.cfg.patience:
            return
        grown = round(self.batch * self.cfg.factor)
        epoch = round(p.epoch)
        if grown <= self.n / 10:
            self.batch, self.waited = grown, 0
            action = "grow"
        else:  # the batch may not grow further: from now on the LR falls on plateaus
            self.switched_at = epoch
            self.reducer.best = self.best
            self.reducer.step(loss)
            action = "switch"
        if self.report is not None:
            self.report({"epoch": epoch, "action": action, "batch_size": self.batch})


def make_regime(
    cfg: Config, regime: str, n_train: int, report: Callable[[dict], None] | None = None
):
    if regime == "plateau":
        return PlateauRegime(cfg, n_train, report)
    return MilestoneRegime(cfg, regime, n_train)


def run_names(cfg: Config) -> dict[str, tuple[str, int]]:
    """Every run by name: (regime, seed), regime by regime, repeats inside ("grow seed 1")."""
    seeds = range(cfg.seed, cfg.seed + cfg.repeats)
    return {
        (r if cfg.repeats == 1 else f"{r} seed {s}"): (r, s) for r in cfg.regimes for s in seeds
    }


def plan_run(
    name: str, cfg: Config, setup: Setup, data: TensorData, sink: Sink, seed: int | None = None
) -> Planned:
    """One run of a regime (`name` "grow" or "grow seed 1"): fresh weights of its seed, its
    optimizer and its hooks."""
    regime_name, seed = run_names(cfg).get(name, (name, cfg.seed if seed is None else seed))
    report = lambda row: sink.emit("plateau", row | {"run": name})  # noqa: E731
    regime = make_regime(cfg, regime_name, data.n_train, report)
    model = setup.fresh_model(data, seed)
    opt = data.task.build_optimizer(model.parameters(), cfg.optim)
    regime.make_scheduler(opt)
    tc = TrainConfig(
        batch_size=cfg.batch_size,
        budget=Budget(epochs=cfg.epochs),
        optim=cfg.optim,
        seed=seed,
        eval_at_start=True,
    )
    hooks = {"batch_size_at": regime.batch_size_at, "on_epoch_end": regime.on_epoch_end}
    return Planned(model, tc, {"optimizer": opt, **hooks}, {"regime": regime_name, "seed": seed})


def run(
    setup: Setup, config: Config, sink: Sink | None = None, stop: threading.Event | None = None
) -> Result:
    """Every regime from the same initial weights, for the same epochs and optimizer. Streams
    the data's size ("info"), every training point ("events"), one row as each regime ends
    ("runs") and what the plateau regime did ("plateau")."""
    rows, sink = collect(sink)
    data = load_tensors(setup)
    config.fits(data.n_train)
    sink.emit("info", {"n_train": data.n_train, "dataset": setup.data_name})
    results = run_series(
        list(run_names(config)),
        lambda name: plan_run(name, config, setup, data, sink),
        data,
        sink,
        stop,
    )
    stopped = (stop is not None and stop.is_set()) or any(
        r.status == "stopped" for r in results.values()
    )
    return Result(config, rows.rows, "stopped" if stopped else "finished")


def per_epoch(events: pd.DataFrame, n_train: int, momentum: float = 0.0) -> pd.DataFrame:
    """Per regime and epoch: the lr and batch used, the noise scale, and the validation loss
    at the epoch's end. `epoch` counts from 1; `start` is the epochs done when it began, so a
    milestone at epoch 5 changes the values drawn from x = 5 on, where the curves change."""
    train_rows = events[events.kind == "train"].copy()
    if train_rows.empty:
        return pd.DataFrame(columns=PER_EPOCH_COLUMNS)
    train_rows["epoch_index"] = (train_rows.epoch.astype(float) - 1e-9).clip(lower=0).astype(int)
    used = (
        train_rows.groupby(["run_id", "epoch_index"], sort=False)
        .agg(
            lr=("lr", "last"),
            batch_size=("batch_size", "max"),
            updates=("step", "max"),
        )
        .reset_index()
    )
    used["noise_scale"] = sgd_noise_scale(used.lr, n_train, used.batch_size, momentum)
    evals = events[(events.kind == "eval") & (events.epoch > 0)].copy()
    evals["epoch_index"] = evals.epoch.astype(float).round().astype(int) - 1
    out = used.merge(
        evals[["run_id", "epoch_index", "val_loss", "val_acc", "elapsed"]],
        on=["run_id", "epoch_index"],
        how="left",
    )
    out["epoch"] = out.epoch_index + 1
    out["start"] = out.epoch_index
    return out[PER_EPOCH_COLUMNS]


def whole(value) -> int | None:
    """A count read back from the history (where a JSON table may have made it a float)."""
    return None if value is None or pd.isna(value) else int(value)


SUMMARY_COLUMNS = ["regime", "repeats", "status", "val_loss", "val_acc", "updates", "seconds"]
TIMES_NOTE = (
    "Times are not compared: the regimes ran one after another on a shared machine, so their "
    "wall-clock seconds measure the machine as much as the regime. Updates are compared."
)


def summary_table(runs: list[dict]) -> tuple[pd.DataFrame, str]:
    """The table relative to "decay the LR" (means over seeds, with the spread of the
    validation loss when repeated), and a one-line verdict on the paper's claim, judged
    against the noise over seeds. `runs`: the "runs" rows (run_series's) of what ran."""
    per_run = pd.DataFrame(
        [
            {
                "regime": r.get("regime") or r["run"],
                "seed": r.get("seed"),
                "status": r["status"],
                "val_loss": r.get("val_loss"),
                "val_acc": r.get("val_acc"),
                "updates": whole(r.get("steps")),
                "seconds": r.get("seconds"),
            }
            for r in runs
        ],
        columns=["regime", "seed", "status", "val_loss", "val_acc", "updates", "seconds"],
    )
    numbers = ["val_loss", "val_acc", "updates", "seconds"]
    per_run[numbers] = per_run[numbers].apply(pd.to_numeric, errors="coerce")
    by = per_run.groupby("regime", sort=False)
    df = by[numbers].mean().reset_index()
    df["status"] = by.status.agg(lambda s: "/".join(dict.fromkeys(s))).values
    df["repeats"] = by.size().values
    df = df[SUMMARY_COLUMNS]
    if not df.empty and df.repeats.max() > 1:
        df["val_loss_std"] = by.val_loss.std().values
    losses = {k: g.val_loss.tolist() for k, g in by}
    idx = df.set_index("regime")
    if "decay" not in idx.index:
        return df, "Run 'decay the LR' to compare the other regimes with it."
    ref = idx.loc["decay"]
    df["val_loss_vs_decay"] = df.val_loss - ref.val_loss
    df["updates_vs_decay"] = df.updates / ref.updates
    if "grow" not in idx.index:
        return df, "Add 'grow the batch' to test the claim."
    grow = idx.loc["grow"]
    if pd.isna(grow.val_loss) or pd.isna(ref.val_loss):
        return df, "'grow' or 'decay' has no validation loss: no verdict."
    diff = difference(losses["grow"], losses["decay"])
    fewer = grow.updates < ref.updates
    gap = diff.text() if diff.judged else f"{diff.delta:+.4f}"
    verdict = (
        f"Growing the batch reached validation loss {spread(losses['grow']).text()} against "
        f"{spread(losses['decay']).text()} for decaying the LR ({gap}) with "
        f"{grow.updates:,.0f} updates instead of {ref.updates:,.0f} "
        f"({grow.updates / ref.updates:.0%}). "
    )
    if diff.within_noise is None:
        verdict += f"The paper's claim is not judged: {ONE_SEED}."
    elif not fewer:
        verdict += "It did not save updates: this does not reproduce the claim."
    elif diff.within_noise:
        verdict += (
            f"The same loss within the noise over {diff.a.n} seeds with fewer updates: this "
            "reproduces the paper's claim."
        )
    elif diff.delta < 0:
        verdict += "A lower loss beyond the noise, with fewer updates: better than the claim."
    else:
        verdict += (
            "Fewer updates, but a loss worse than decay's beyond the noise: this does not "
            "reproduce the claim."
        )
    return df, verdict


@dataclass(frozen=True)
class Result(experiment.Result):
    """The regimes' curves, lr/batch/noise per epoch, the summary against decay, a verdict."""

    @cached_property
    def n_train(self) -> int | None:
        info = self.rows.get("info") or []
        return whole(info[0].get("n_train")) if info else None

    def events(self) -> pd.DataFrame:
        return self.frame("events", EVENT_COLUMNS)

    def per_epoch(self) -> pd.DataFrame:
        if self.n_train is None:
            return pd.DataFrame(columns=PER_EPOCH_COLUMNS)
        return per_epoch(self.events(), self.n_train, self.config.optim.effective_momentum)

    def per_epoch_shown(self) -> pd.DataFrame:
        """`per_epoch` of the first seed's runs, named by regime (what the small charts draw:
        a milestone regime's lr and batch are the same for every seed)."""
        out = self.per_epoch()
        if self.config.repeats == 1 or out.empty:
            return out
        first = out[out.run_id.str.endswith(f" seed {self.config.seed}")]
        return first.assign(run_id=first.run_id.str.replace(r" seed \d+$", "", regex=True))

    def plan(self) -> pd.DataFrame:
        if self.n_train is None:
            return pd.DataFrame(columns=PLAN_COLUMNS)
        return plan(self.config, self.n_train)

    @cached_property
    def _summary(self) -> tuple[pd.DataFrame, str]:
        return summary_table(list(self.rows.get("runs", [])))

    def table(self) -> pd.DataFrame:
        return self._summary[0]

    def verdict(self) -> str:
        return self._summary[1] + (" Stopped before every regime ran." if self.stopped else "")

    def notes(self) -> list[str]:
        """What the plateau regime did, or why it could not grow the batch."""
        out = []
        if self.n_train is not None and (cap := self.config.plateau_cap(self.n_train)):
            out.append(cap)
        for r in self.rows.get("plateau", []):
            who = r.get("run", "plateau")
            if r["action"] == "grow":
                grew = f"grew the batch to {r['batch_size']:,} after epoch {r['epoch']}"
                out.append(f"'{who}' {grew}.")
            elif self.n_train is not None:
                batch = int(r.get("batch_size") or self.config.batch_size)
                out.append(self.config.plateau_switch(who, int(r["epoch"]), batch, self.n_train))
        if self.rows.get("runs"):
            out.append(TIMES_NOTE)
        return out

    def summary(self) -> dict:
        info = (self.rows.get("info") or [{}])[0]
        return {
            "status": self.status,
            "message": self.message,
            "dataset": info.get("dataset"),
            "n_train": self.n_train,
            "verdict": self.verdict(),
            "notes": self.notes(),
            "regimes": self.table().to_dict(orient="records"),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"curves": self.events(), "table": self.table(), "per_epoch": self.per_epoch()}

    def report(self) -> str:
        table = self.table()
        lines = [table.to_string(index=False) if not table.empty else self.status]
        return "\n".join([*lines, *self.notes(), self.verdict()])
