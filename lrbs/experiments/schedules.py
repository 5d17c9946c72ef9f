"""Learning-rate schedules side by side, and a rate that adapts itself.

Every schedule that torch has comes from `torch.optim.lr_scheduler`, stepped once per update
(so "2 epochs" means 2 x steps-per-epoch updates); reduce-on-plateau acts at epoch ends on the
validation loss. Hypergradient descent (Baydin et al. 2018) is ours: torch has no such thing.
The bounds of the cyclical and one-cycle schedules come from the LR range test (seed 002):
the lower bound where the loss falls fastest, the upper one where it turns ragged.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from lrbs.core.data import TensorData
from lrbs.core.errors import ConfigError, positive_int, positive_number, require
from lrbs.core.loop import Budget, Event, OptimSpec, RunResult, TrainConfig
from lrbs.experiments.sweeps import run_named

SCHEDULES = {
    "constant": "constant rate",
    "step": "step decay: x gamma every k epochs (StepLR)",
    "exponential": "exponential decay to lr x final factor (ExponentialLR)",
    "cosine": "cosine annealing to the floor (CosineAnnealingLR)",
    "cosine-restarts": "cosine with warm restarts, SGDR (CosineAnnealingWarmRestarts)",
    "warmup-cosine": "linear warm-up, then cosine (LinearLR, CosineAnnealingLR)",
    "clr": "cyclical, triangular between the bounds (CyclicLR)",
    "clr2": "cyclical, triangular2: the amplitude halves every cycle (CyclicLR)",
    "clr-exp": "cyclical, exp_range: the amplitude decays exponentially (CyclicLR)",
    "onecycle": "one cycle: up to the upper bound and far down (OneCycleLR)",
    "plateau": "divide by 1/gamma when the validation loss stalls (ReduceLROnPlateau)",
    "hd": "hypergradient descent: the rate learns itself (Baydin et al. 2018)",
}
REACTIVE = ("plateau", "hd")  # their rate depends on training, so they have no preview

# Baydin et al. used beta = 1e-3 with SGD and 1e-7 with Adam: the hypergradient is a dot
# product of a gradient with the previous step direction, and Adam's direction has every
# coordinate near +-1, so its products are far larger than SGD's gradient products.
HD_BETA = {"sgd": 1e-3, "momentum": 1e-3, "adam": 1e-7, "adamw": 1e-7}


@dataclass(frozen=True)
class SchedulesConfig:
    schedules: tuple[str, ...] = (
        "constant", "step", "cosine", "warmup-cosine", "clr", "onecycle", "plateau", "hd"
    )  # fmt: skip
    epochs: int = 30
    batch: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    lr: float = 0.5  # the constant rate, where the decays, plateau and HD start
    base_lr: float = 0.25  # cyclical lower bound
    max_lr: float = 1.0  # cyclical upper bound; one-cycle's peak
    floor: float = 0.0  # cosine's end, as a fraction of lr
    step_epochs: float = 10.0  # step decay: every k epochs ...
    gamma: float = 0.1  # ... multiply by gamma (also plateau's factor)
    final_factor: float = 0.01  # exponential: lr at the end = lr x final_factor
    warmup_epochs: float = 2.0
    restart_epochs: float = 5.0  # SGDR's first period
    restart_mult: int = 2  # each period this many times the last
    cycle_epochs: float = 2.5  # CLR step size: half a cycle, in epochs
    exp_range_end: float = 0.01  # exp_range: the amplitude at the end, as a fraction
    onecycle_pct: float = 0.3  # share of one-cycle spent going up
    onecycle_div: float = 25.0  # one-cycle starts at max_lr / div
    patience: int = 2
    hd_beta: float | None = None  # None: HD_BETA for the optimizer
    seed: int = 0

    def __post_init__(self) -> None:
        require(len(self.schedules) > 0, "choose at least one schedule")
        for s in self.schedules:
            require(s in SCHEDULES, f"unknown schedule {s!r}; known: {', '.join(SCHEDULES)}")
        require(len(set(self.schedules)) == len(self.schedules), "a schedule is listed twice")
        positive_int("epochs", self.epochs)
        require(self.epochs <= 1000, "epochs is at most 1000")
        positive_int("batch size", self.batch)
        OptimSpec(self.optimizer, self.lr, self.momentum)
        positive_number("the lower bound (base lr)", self.base_lr)
        positive_number("the upper bound (max lr)", self.max_lr)
        require(
            self.base_lr < self.max_lr,
            f"the lower bound {self.base_lr:g} must be below the upper bound {self.max_lr:g}",
        )
        require(0 <= self.floor < 1, f"the cosine floor must be in [0, 1), got {self.floor}")
        positive_number("the step-decay interval (epochs)", self.step_epochs)
        require(0 < self.gamma < 1, f"gamma must be between 0 and 1, got {self.gamma}")
        require(
            0 < self.final_factor < 1,
            f"the exponential final factor must be between 0 and 1, got {self.final_factor}",
        )
        require(self.warmup_epochs >= 0, "the warm-up must be >= 0 epochs")
        if "warmup-cosine" in self.schedules:
            require(
                self.warmup_epochs < self.epochs,
                f"the warm-up ({self.warmup_epochs:g} epochs) must be shorter than the run "
                f"({self.epochs} epochs)",
            )
        positive_number("the restart period (epochs)", self.restart_epochs)
        positive_int("the restart multiplier", self.restart_mult)
        positive_number("the cycle step size (epochs)", self.cycle_epochs)
        require(0 < self.exp_range_end <= 1, "the exp_range end amplitude must be in (0, 1]")
        require(0 < self.onecycle_pct < 1, "one-cycle's rising share must be in (0, 1)")
        require(self.onecycle_div > 1, "one-cycle's divisor must be above 1")
        positive_int("patience", self.patience)
        if self.hd_beta is not None:
            require(
                isinstance(self.hd_beta, int | float) and math.isfinite(self.hd_beta),
                "the hypergradient rate beta must be a number",
            )
            require(
                self.hd_beta >= 0, f"the hypergradient rate beta must be >= 0, got {self.hd_beta}"
            )

    @property
    def beta(self) -> float:
        return HD_BETA[self.optimizer] if self.hd_beta is None else self.hd_beta

    def optim(self) -> OptimSpec:
        return OptimSpec(self.optimizer, self.lr, self.momentum)


def steps_per_epoch(n_train: int, batch: int) -> int:
    return math.ceil(n_train / batch)


# ------------------------------------------------------------------ the per-update schedules


def _updates(epochs: float, spe: int) -> int:
    """A number of epochs in updates (at least one)."""
    return max(1, round(epochs * spe))


def build_scheduler(
    name: str, cfg: SchedulesConfig, opt: torch.optim.Optimizer, spe: int
) -> sched.LRScheduler | None:
    """The torch scheduler of a per-update schedule (None for constant and the reactive ones).
    Built on `opt`, whose rate is cfg.lr."""
    total = cfg.epochs * spe
    if name == "step":
        return sched.StepLR(opt, _updates(cfg.step_epochs, spe), cfg.gamma)
    if name == "exponential":
        return sched.ExponentialLR(opt, cfg.final_factor ** (1 / total))
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, total, eta_min=cfg.lr * cfg.floor)
    if name == "cosine-restarts":
        period = _updates(cfg.restart_epochs, spe)
        return sched.CosineAnnealingWarmRestarts(
            opt, period, cfg.restart_mult, eta_min=cfg.lr * cfg.floor
        )
    if name == "warmup-cosine":
        warm = _updates(cfg.warmup_epochs, spe) if cfg.warmup_epochs > 0 else 0
        cosine = sched.CosineAnnealingLR(opt, total - warm, eta_min=cfg.lr * cfg.floor)
        if warm == 0:
            return cosine
        up = sched.LinearLR(opt, start_factor=1 / warm, end_factor=1.0, total_iters=warm)
        return sched.SequentialLR(opt, [up, cosine], milestones=[warm])
    if name in ("clr", "clr2", "clr-exp"):
        step = cfg.cycle_epochs * spe  # a float: whole cycles end exactly where they should
        mode = {"clr": "triangular", "clr2": "triangular2", "clr-exp": "exp_range"}[name]
        return sched.CyclicLR(
            opt,
            cfg.base_lr,
            cfg.max_lr,
            step_size_up=step,
            mode=mode,
            gamma=cfg.exp_range_end ** (1 / total),
            cycle_momentum=False,
        )
    if name == "onecycle":
        # one-cycle also cycles momentum (Adam's beta1) against the rate, as Smith proposes;
        # plain SGD has none to cycle
        return sched.OneCycleLR(
            opt,
            cfg.max_lr,
            total_steps=total,
            pct_start=cfg.onecycle_pct,
            div_factor=cfg.onecycle_div,
            cycle_momentum=cfg.optimizer != "sgd",
        )
    if name in ("constant", *REACTIVE):
        return None
    raise ConfigError(f"unknown schedule {name!r}")


def preview(cfg: SchedulesConfig, n_train: int, max_points: int = 1500) -> pd.DataFrame:
    """The rate each per-update schedule will use at every update, without training: the same
    torch schedulers stepped on a dummy parameter. Long runs are thinned to `max_points` per
    schedule (first and last kept)."""
    spe = steps_per_epoch(n_train, cfg.batch)
    total = cfg.epochs * spe
    keep = set(range(0, total, max(1, total // max_points))) | {total - 1}
    frames = []
    for name in cfg.schedules:
        if name in REACTIVE:
            continue
        p = nn.Parameter(torch.zeros(1))
        opt = cfg.optim().build([p])
        s = build_scheduler(name, cfg, opt, spe)
        lrs = []
        with warnings.catch_warnings():
            # the schedulers warn when stepped without an optimizer step: nothing trains here
            # (and stepping the optimizer too took 60x longer)
            warnings.simplefilter("ignore", UserWarning)
            for i in range(total):
                if i in keep:
                    lrs.append((i, opt.param_groups[0]["lr"]))
                if s is not None:
                    s.step()
        df = pd.DataFrame(lrs, columns=["step", "lr"])
        df.insert(0, "schedule", name)
        df["epoch"] = (df.step + 1) / spe
        frames.append(df)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["schedule", "step", "lr", "epoch"])
    )


# ------------------------------------------------------------------ hypergradient descent


class Hypergradient:
    """Hypergradient descent on any torch optimizer (SGD-HD, SGDN-HD, Adam-HD).

    Before each update the rate moves against df/d(rate): with u the previous update per unit
    of rate (u = -g for plain SGD, Adam's -m/(sqrt(v)+eps)), theta_t = theta_{t-1} + rate u,
    so df(theta_t)/d(rate) = g_t . u and  rate_t = rate_{t-1} - beta g_t . u_{t-1}; for SGD
    that is rate_{t-1} + beta g_t . g_{t-1}. u is read off the parameters' change, so the
    wrapped optimizer's own rule (momentum, Adam, weight decay) is honoured. The rate is kept
    above `floor` x its start, so it stays a rate."""

    def __init__(self, opt: torch.optim.Optimizer, beta: float, floor: float = 1e-6) -> None:
        require(beta >= 0, f"the hypergradient rate beta must be >= 0, got {beta}")
        self.opt, self.beta = opt, beta
        self.min_lr = opt.param_groups[0]["lr"] * floor
        self.params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        self.direction: list[torch.Tensor] | None = None
        self.before: list[torch.Tensor] = []
        self.handles = [
            opt.register_step_pre_hook(self._before_step),
            opt.register_step_post_hook(self._after_step),
        ]

    def hypergradient(self) -> float | None:
        """g_t . u_{t-1}, from the gradients now in .grad (None before the second update)."""
        if self.direction is None:
            return None
        pairs = zip(self.params, self.direction, strict=True)
        dots = [torch.sum(p.grad * u) for p, u in pairs if p.grad is not None]
        return float(torch.stack(dots).sum()) if dots else 0.0

    def _before_step(self, opt, args, kwargs) -> None:
        h = self.hypergradient()
        if h is not None:
            for group in opt.param_groups:
                group["lr"] = max(self.min_lr, group["lr"] - self.beta * h)
        self.before = [p.detach().clone() for p in self.params]

    def _after_step(self, opt, args, kwargs) -> None:
        lr = opt.param_groups[0]["lr"]
        self.direction = [
            (p.detach() - b) / lr for p, b in zip(self.params, self.before, strict=True)
        ]
        self.before = []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------ training them


@dataclass(frozen=True)
class RangeBounds:
    """What the range test says for schedules: a rate to hold, and the cyclical bounds."""

    lr: float
    base_lr: float
    max_lr: float
    source: str

    @classmethod
    def from_suggestions(
        cls, suggestions: dict[str, float], source: str = "the range test"
    ) -> RangeBounds:
        """The upper bound is the maximum usable rate, where the loss turns ragged; the lower
        one the steepest-descent rate (as the CLR paper reads the test), but at most a quarter
        of the upper one, so a cycle spans at least 4x. The rate to hold is the steepest."""
        top = suggestions.get("max_usable")
        if top is None or not top > 0:
            raise ConfigError(f"{source} has no maximum usable rate to bound a cycle with")
        steep = suggestions.get("steep")
        hold = steep if steep is not None and 0 < steep < top else top / 4
        return cls(hold, min(hold, top / 4), top, source)


def bounds_from_history(store, dataset: str | None = None, model: str | None = None):
    """RangeBounds from the newest range test in the run history (page or CLI) on this dataset
    and model, or None when there is none."""
    from lrbs.experiments.lr_finder import stored_range_test

    found = stored_range_test(store, dataset, model)
    if found is None:
        return None
    suggestions, run_id = found
    return RangeBounds.from_suggestions(suggestions, f"range test #{run_id} in the history")


def quick_range_test(model: nn.Module, data: TensorData, cfg: SchedulesConfig) -> RangeBounds:
    """A 100-iteration range test with this optimizer and batch size, for bounds right now."""
    from lrbs.experiments.lr_finder import RangeTestConfig, range_test

    rt = RangeTestConfig(
        lr_min=1e-6,
        batch_size=min(cfg.batch, data.n_train),
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        seed=cfg.seed,
    )
    result = range_test(model, data, rt)
    found = {s.name: s.lr for s in result.suggestions}
    return RangeBounds.from_suggestions(found, "a quick range test")


def run_schedules(
    make_model: Callable[[], nn.Module],
    data: TensorData,
    cfg: SchedulesConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_run_end: Callable[[str, RunResult], None] | None = None,
    log_every: int = 5,
) -> dict[str, RunResult]:
    """Every schedule from the same initial weights, for the same epochs and batch size."""
    if cfg.batch > data.n_train:
        raise ConfigError(
            f"batch size {cfg.batch} is larger than the training set ({data.n_train})"
        )
    spe = steps_per_epoch(data.n_train, cfg.batch)

    def prepare(name: str):
        model = make_model()
        opt = cfg.optim().build(model.parameters())
        extra: dict = {"optimizer": opt}
        per_update = build_scheduler(name, cfg, opt, spe)
        if per_update is not None:
            extra["lr_scheduler"] = lambda _opt: per_update
        if name == "hd":
            Hypergradient(opt, cfg.beta)  # hooks on this run's own optimizer
        if name == "plateau":
            reducer = sched.ReduceLROnPlateau(
                opt, factor=cfg.gamma, patience=cfg.patience - 1, threshold=0
            )

            def on_epoch_end(p, ev, o) -> None:
                if ev is not None and ev.val_loss is not None:
                    reducer.step(ev.val_loss)

            extra["on_epoch_end"] = on_epoch_end
        tc = TrainConfig(
            batch_size=cfg.batch,
            budget=Budget(epochs=cfg.epochs),
            optim=cfg.optim(),
            seed=cfg.seed,
            log_every=log_every,
            eval_at_start=True,
        )
        return model, tc, extra

    return run_named(
        cfg.schedules, prepare, data, on_event=on_event, stop=stop, on_run_end=on_run_end
    )


def summary(events: pd.DataFrame, statuses: dict[str, str]) -> tuple[pd.DataFrame, str]:
    """One row per schedule, from its events (the curves' CSV) and how it ended: final and
    best validation loss, accuracy, the rates it used; and a sentence naming the winner."""
    rows = []
    for name, status in statuses.items():
        ev = events[events.run_id == name]
        evals = ev[(ev.kind == "eval") & ev.val_loss.notna()]
        trains = ev[ev.kind == "train"]
        last = evals.iloc[-1] if len(evals) else None
        best = evals.loc[evals.val_loss.idxmin()] if len(evals) else None
        rows.append(
            {
                "schedule": name,
                "status": status,
                "train_loss": last.train_eval_loss if last is not None else None,
                "val_loss": last.val_loss if last is not None else None,
                "val_acc": last.val_acc if last is not None else None,
                "best_val_loss": best.val_loss if best is not None else None,
                "best_epoch": best.epoch if best is not None else None,
                "lr_min": trains.lr.min() if len(trains) else None,
                "lr_max": trains.lr.max() if len(trains) else None,
                "lr_final": trains.lr.iloc[-1] if len(trains) else None,
                "updates": int(ev.step.max()) if len(ev) else 0,
                "seconds": float(ev.elapsed.max()) if len(ev) else 0.0,
            }
        )
    df = pd.DataFrame(rows)
    ok = df[(df.status == "finished") & df.val_loss.notna()] if not df.empty else df
    if ok.empty:
        return df, "No schedule finished its budget."
    win = ok.loc[ok.val_loss.idxmin()]
    verdict = (
        f"Lowest final validation loss: **{win.schedule}** at {win.val_loss:.4f} "
        f"(accuracy {win.val_acc:.3f})"
    )
    const = df[(df.schedule == "constant") & df.val_loss.notna()]
    if win.schedule != "constant" and not const.empty:
        verdict += f", against {const.val_loss.iloc[0]:.4f} for the constant rate"
    bad = df[df.status != "finished"]
    if not bad.empty:
        verdict += ". Did not finish: " + ", ".join(
            f"{r.schedule} ({r.status})" for r in bad.itertuples()
        )
    return df, verdict + "."
