"""`python -m lrbs COMMAND`: every experiment of the app, on the command line.

`--out FILE.csv` writes the CSV the page offers; `--json` prints one JSON object of headline
figures as the last line of stdout. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import pandas as pd

from lrbs.core.data import DATASETS, DataSpec, load
from lrbs.core.device import DEVICE_CHOICES, describe
from lrbs.core.errors import LrbsError, positive_int, require
from lrbs.core.loop import EVENT_COLUMNS, OPTIMIZERS, Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import MODELS, ModelSpec
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments import gd1d

log = logging.getLogger("lrbs")
COMMANDS: dict[str, Callable[[argparse.Namespace], dict]] = {}


from lrbs.cli.parser import Parser  # noqa: E402


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def add_training_args(
    p: argparse.ArgumentParser, lr: float = 0.1, batch: int = 128, lr_grid: bool = False
) -> None:
    g = add_setup_args(p, "data, model and optimizer (shared by every training command)")
    g.add_argument("--optimizer", default="sgd", help=f"one of: {', '.join(OPTIMIZERS)}")
    if lr_grid:
        g.add_argument(
            "--lr",
            "--lrs",
            dest="grid",
            type=float,
            nargs="+",
            default=[0.001, 0.01, 0.1, 1.0],
            help="the learning-rate grid",
        )
    else:
        g.add_argument("--lr", type=float, default=lr, help="learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="for --optimizer momentum")
    g.add_argument("--batch-size", type=int, default=batch)


def add_setup_args(p: argparse.ArgumentParser, title: str = "data and model"):
    g = p.add_argument_group(title)
    g.add_argument("--dataset", default="mnist1d", help=f"one of: {', '.join(DATASETS)}")
    g.add_argument("--dataset-size", type=int, default=None, help="samples to generate/keep")
    g.add_argument("--csv", default=None, help="CSV file, for --dataset csv")
    g.add_argument("--target", default=None, help="target column, for --dataset csv")
    g.add_argument("--data-root", default=None, help="torchvision root folder")
    g.add_argument("--model", default="mlp", help=f"one of: {', '.join(MODELS)}")
    g.add_argument("--hidden", type=int, nargs="+", default=[256], help="MLP hidden sizes")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help=f"one of: {', '.join(DEVICE_CHOICES)}")
    return g


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


class _Skip:
    """Sub-commands an experiment module now provides are not added here."""

    def __init__(self, sub, skip: set[str]) -> None:
        self.sub, self.skip = sub, skip

    def add_parser(self, name: str, **kw):
        if name in self.skip:
            return Parser(prog=name)
        p = self.sub.add_parser(name, **kw)
        p.set_defaults(handler=lambda a, name=name: _handle(name, a))
        return p


def _handle(name: str, a: argparse.Namespace) -> dict:
    out = COMMANDS[name](a)
    if hasattr(a, "frame"):  # an experiment that did not record as it went
        setup = setup_from(a) if hasattr(a, "dataset") else None
        rec = Recording(a, a.command, _config_of(a), setup)
        for row in a.frame.to_dict("records"):
            rec.emit("results", row)
        rec.finish(out.get("status", "finished"), out)
    return out


def add_commands(subparsers, skip: set[str]) -> None:
    sub = _Skip(subparsers, skip)

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

    p = sub.add_parser("bs-sweep", help="batch-size sweep at equal budgets")
    add_training_args(p)
    p.add_argument(
        "--batch-sizes",
        nargs="+",
        default=["64", "128", "256", "full"],
        help="whole numbers or 'full'",
    )
    p.add_argument("--scaling", default="fixed", choices=["fixed", "linear", "sqrt"])
    p.add_argument(
        "--base-batch",
        type=int,
        default=None,
        help="the batch --lr belongs to (default: the smallest)",
    )
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=1, help="seeds per batch size")
    add_budget_args(p)
    add_output_args(p)

    p = sub.add_parser("bs-scaling-check", help="seed 001: batch B0*k with lr0*k vs fixed lr")
    add_training_args(p, lr=0.001, batch=8)
    p.add_argument("--k-max", type=int, default=4)
    p.add_argument("--epochs", type=float, default=2.0)
    add_output_args(p)

    p = sub.add_parser("bs-probe", help="the largest batch that fits in memory")
    add_training_args(p)
    p.add_argument("--cap-mib", type=float, default=None, help="memory cap (CPU)")
    p.add_argument("--optim-states", type=int, default=1)
    add_output_args(p)

    p = sub.add_parser("bs-schedule", help="grow the batch instead of decaying the LR")
    add_training_args(p)
    p.set_defaults(optimizer="momentum")
    p.add_argument(
        "--regimes", nargs="+", default=["decay", "grow", "hybrid", "plateau", "constant"]
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--milestones", type=int, nargs="*", default=[5, 10])
    p.add_argument("--factor", type=float, default=5.0)
    p.add_argument("--patience", type=int, default=2, help="for the plateau regime")
    p.add_argument("--hybrid-grow", type=int, default=1)
    add_output_args(p)

    p = sub.add_parser("schedules", help="learning-rate schedules side by side, and HD")
    add_training_args(p, lr=0.5, batch=64)
    p.add_argument(
        "--schedules", nargs="+", default=["constant", "cosine", "onecycle", "clr", "hd"]
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--base-lr", type=float, default=0.25, help="cyclical lower bound")
    p.add_argument("--max-lr", type=float, default=1.0, help="cyclical upper bound, one-cycle peak")
    p.add_argument(
        "--bounds",
        choices=["given", "range-test", "history"],
        default="given",
        help="lr, base and max from the flags, from a quick range test run now, or from the "
        "newest range test in the run history for this dataset and model",
    )
    p.add_argument("--floor", type=float, default=0.0, help="cosine's end, fraction of --lr")
    p.add_argument("--step-epochs", type=float, default=10.0, help="step decay interval")
    p.add_argument("--gamma", type=float, default=0.1, help="step and plateau factor")
    p.add_argument("--final-factor", type=float, default=0.01, help="exponential: end / start")
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--restart-epochs", type=float, default=5.0)
    p.add_argument("--restart-mult", type=int, default=2)
    p.add_argument("--cycle-epochs", type=float, default=2.5, help="CLR step size (half cycle)")
    p.add_argument("--exp-range-end", type=float, default=0.01)
    p.add_argument("--onecycle-pct", type=float, default=0.3)
    p.add_argument("--onecycle-div", type=float, default=25.0)
    p.add_argument("--patience", type=int, default=2, help="for the plateau schedule")
    p.add_argument("--beta", type=float, default=None, help="HD's hypergradient rate")
    p.add_argument("--preview", action="store_true", help="only the planned lr per step")
    add_output_args(p)

    p = sub.add_parser("noise-scale", help="gradient noise scale B_simple during training")
    add_training_args(p)
    p.add_argument("--batch-small", type=int, default=32)
    p.add_argument("--batch-big", type=int, default=512)
    p.add_argument("--every", type=int, default=40, help="measure every k steps")
    p.add_argument("--beta", type=float, default=0.8)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument(
        "--check",
        type=int,
        nargs="*",
        default=None,
        metavar="B",
        help="also fit B_crit from steps-to-target at these batch sizes",
    )
    p.add_argument("--target-loss", type=float, default=None)
    add_output_args(p)

    p = sub.add_parser("autotune", help="tune lr and batch size together (Optuna)")
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    r = actions.add_parser("run", help="create a study and run its trials on this machine")
    add_setup_args(r)
    r.add_argument("--trials", type=int, default=20)
    r.add_argument("--workers", type=int, default=2, help="worker processes on this machine")
    r.add_argument("--seconds-per-trial", type=float, default=None, help="default 10")
    r.add_argument("--epochs-per-trial", type=float, default=None, help="instead, or as well")
    r.add_argument("--lr-min", type=float, default=1e-3)
    r.add_argument("--lr-max", type=float, default=3.0)
    r.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    r.add_argument("--optimizers", nargs="+", default=["sgd"])
    r.add_argument("--warmups", type=float, nargs="+", default=[0.0], help="warm-up epochs")
    r.add_argument("--momentum", type=float, default=0.9)
    r.add_argument("--pruner", default="median", help="median, hyperband or none")
    r.add_argument(
        "--objective",
        default="best",
        help="best: the lowest validation loss a trial reached; final: its last one",
    )
    r.add_argument(
        "--seed-space",
        action="store_true",
        help="lr: a decade around a quick range test's steepest descent; batches: powers of "
        "two up to the largest that fits (--cap-mib on the CPU) or the training set",
    )
    r.add_argument("--cap-mib", type=float, default=None, help="memory cap for the probe (CPU)")
    r.add_argument("--study", default=None, help="study name (default: dataset-model-time)")
    r.add_argument("--storage", default=None, help="Optuna URL or journal file")
    add_output_args(r)
    w = actions.add_parser("worker", help="run trials of an existing study (any machine)")
    w.add_argument("--study", required=True)
    w.add_argument("--storage", default=None, help="Optuna URL or journal file")
    w.add_argument("--trials", type=int, default=10, help="trials this worker runs")
    w.add_argument("--worker", type=int, default=0, help="this worker's index (sampler seed)")
    w.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    w.add_argument("--json", action="store_true")


def add_budget_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("budget (the first limit reached ends the run)")
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--samples", type=int, default=None)
    g.add_argument("--seconds", type=float, default=None)


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write the CSV the page offers")
    p.add_argument("--json", action="store_true", help="headline figures as JSON, last line")
    p.add_argument("--no-store", action="store_true", help="do not save the run in the history")
    p.add_argument("--db", default=None, help="run-history file (default: LRBS_DB or ~/.local)")


class Recording:
    """The CLI's side of the run history: a Recorder, or nothing with --no-store. A history
    that cannot be opened is a warning, not a failed experiment."""

    def __init__(self, a: argparse.Namespace, kind: str, config: dict, setup=None) -> None:
        from lrbs.runs.store import Recorder, default_path

        self.rec = None
        if a.no_store:
            return
        meta = {"name": "cli"}
        if setup is not None:
            meta.update(
                dataset=setup.data.name,
                model=setup.model.name,
                seed=setup.seed,
                device=setup.device,
            )
        try:
            self.rec = Recorder(a.db or default_path(), kind, config, meta)
            self.rec.start()
        except LrbsError as exc:
            log.warning("not saved in the run history: %s", exc)
            print(f"warning: not saved in the run history: {exc}", file=sys.stderr)
            self.rec = None

    def emit(self, channel: str, row: dict) -> None:
        if self.rec is not None:
            self.rec.emit(channel, row)

    def finish(self, status: str, results: dict) -> None:
        if self.rec is not None:
            self.rec.finish(status, results)
            results["run_id"] = self.rec.run_id


def write_csv(df: pd.DataFrame, path: str | None, a: argparse.Namespace | None = None) -> None:
    if a is not None:
        a.frame = df  # saved in the run history by main()
    if path:
        df.to_csv(path, index=False)
        log.info("wrote %d rows to %s", len(df), path)


class ProgressBar:
    """A text progress bar on stderr, so stdout keeps only results."""

    def __init__(self, width: int = 30) -> None:
        self.width, self.last, self.closed = width, -1, False

    def __call__(self, fraction: float, text: str = "") -> None:
        filled = int(self.width * min(1.0, fraction))
        if self.closed or (filled == self.last and fraction < 1):
            return
        self.last = filled
        self.closed = fraction >= 1 and text in ("done", "finished", "stopped", "diverged", "oom")
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if self.closed else "\r"
        print(f"[{bar}] {fraction:4.0%} {text}", end=end, file=sys.stderr, flush=True)


def runs_by_epoch(run: Callable, n_runs: int, epochs: float) -> tuple[dict, pd.DataFrame]:
    """A series of runs of `epochs` each (`run(on_event=, on_run_end=)`), with a progress bar;
    returns the results and every event as the curves' table."""
    bar, events, done = ProgressBar(), [], []

    def on_event(e):
        events.append(e.as_dict())
        bar((len(done) + min(1.0, e.epoch / epochs)) / n_runs, e.run_id)

    results = run(on_event=on_event, on_run_end=lambda n, r: done.append(n))
    bar(1.0, "done")
    return results, pd.DataFrame(events, columns=EVENT_COLUMNS)


@command("gd1d")
def cmd_gd1d(a: argparse.Namespace) -> dict:
    cfg = gd1d.GDConfig(a.loss, a.curvature, a.start, a.steps, tuple(a.lr), a.momentum)
    rec = Recording(a, "gd1d", {"gd1d": cfg})
    paths = gd1d.run(cfg)
    frame = gd1d.paths_frame(paths)
    write_csv(frame, a.out)
    for row in frame.to_dict("records"):
        rec.emit("paths", row)
    out = gd1d.summary(cfg, paths)
    rec.finish("finished", out)
    if not a.json:
        print(f"{cfg.loss}: stability limit lr < {out['stability_limit']:.4g}")
        for r in out["runs"]:
            print(f"  lr={r['lr']:<8g} {r['status']:<12} final loss {r['final_loss']:.4g}")
    return out


@command("train")
def cmd_train(a: argparse.Namespace) -> dict:
    setup = setup_from(a)
    budget = budget_from(a, default=Budget(epochs=1))
    cfg = TrainConfig(batch_size=a.batch_size, budget=budget, optim=optim_from(a), seed=a.seed)
    data = load_tensors(setup)
    model = setup.fresh_model(data)
    bar = ProgressBar()
    rec = Recording(a, "train", {"setup": setup, "train": cfg}, setup)

    def on_event(e):
        bar(cfg.budget.fraction(e), e.kind)
        rec.emit("events", e.as_dict())

    result = train(model, data, cfg, on_event=on_event)
    bar(1.0, result.status)
    write_csv(pd.DataFrame([e.as_dict() for e in result.events], columns=EVENT_COLUMNS), a.out)
    out = {"dataset": a.dataset, "model": a.model, "device": describe(data.x_train.device).name}
    out.update(result.headline())
    rec.finish(result.status, out)
    if not a.json:
        print(
            f"{result.status}: {result.steps} steps, {result.epochs:.2f} epochs, "
            f"val loss {result.val_loss}, val acc {result.val_acc}"
        )
    return out


@command("bs-sweep")
def cmd_bs_sweep(a: argparse.Namespace) -> dict:

    from lrbs.experiments import batch as bs

    setup = setup_from(a)
    budget = budget_from(a, default=Budget(seconds=10))
    cfg = bs.BatchSweepConfig(
        tuple(a.batch_sizes),
        budget,
        a.lr,
        a.base_batch,
        a.scaling,
        a.warmup_epochs,
        a.optimizer,
        a.momentum,
        a.seed,
        a.repeats,
    )
    data = load_tensors(setup)
    plan = cfg.plan(data.n_train)
    bar, events, rows = ProgressBar(), [], []
    n_runs = len(plan) * cfg.repeats

    def on_event(e):
        events.append(e.as_dict())
        bar((len(rows) + budget.fraction(e)) / n_runs, e.run_id)

    def on_run_end(run):
        rows.append(bs.run_row(run, data.n_train, cfg.effective_momentum))

    bs.batch_sweep(
        lambda s: setup.fresh_model(data, s),
        data,
        cfg,
        on_event=on_event,
        on_run_end=on_run_end,
    )
    bar(1.0, "done")
    write_csv(pd.DataFrame(events, columns=EVENT_COLUMNS), a.out, a)
    table = bs.sweep_table(rows)
    if not a.json:
        print(table.to_string(index=False))
    return {
        "dataset": a.dataset,
        "model": a.model,
        "budget": budget.describe(),
        "scaling": a.scaling,
        "n_train": data.n_train,
        "runs": table.to_dict(orient="records"),
    }


@command("bs-scaling-check")
def cmd_bs_scaling_check(a: argparse.Namespace) -> dict:

    from lrbs.experiments import batch as bs

    setup = setup_from(a)
    cfg = bs.ScalingCheckConfig(
        a.batch_size, a.lr, a.k_max, a.epochs, a.optimizer, a.momentum, a.seed
    )
    data = load_tensors(setup)
    plan = cfg.plan(data.n_train)
    bar, seen = ProgressBar(), []

    def on_event(e):
        if e.run_id not in seen:
            seen.append(e.run_id)
        bar((len(seen) - 1 + min(1.0, e.epoch / cfg.epochs)) / len(plan), e.run_id)

    curves = bs.scaling_check(lambda s: setup.fresh_model(data, s), data, cfg, on_event=on_event)
    bar(1.0, "done")
    write_csv(curves, a.out, a)
    agree = bs.agreement(curves)
    if not a.json:
        print(agree.to_string(index=False))
    final = curves[curves.epoch == curves.epoch.max()]
    return {
        "dataset": a.dataset,
        "agreement": agree.to_dict(orient="records"),
        "final_val_loss": final[["rule", "k", "batch", "lr", "val_loss"]].to_dict(orient="records"),
    }


@command("bs-probe")
def cmd_bs_probe(a: argparse.Namespace) -> dict:
    from lrbs.experiments import batch as bs

    setup = setup_from(a)
    data = load_tensors(setup)
    model = setup.fresh_model(data)
    cap = int(a.cap_mib * 2**20) if a.cap_mib else None
    if cap is None and data.x_train.device.type == "cpu":
        log.warning("no --cap-mib on the CPU: the probe stops at the training set size")
    r = bs.largest_batch(bs.make_fits(model, data, cap, a.optim_states), data.n_train)
    write_csv(pd.DataFrame(r.tried, columns=["batch", "fits"]), a.out, a)
    if not a.json:
        print(
            f"largest batch that fits: {r.largest} (safe: {r.safe}); "
            f"{'memory' if r.hit_limit else 'training set size'} was the limit"
        )
    return {
        "largest": r.largest,
        "safe": r.safe,
        "memory_limited": r.hit_limit,
        "tried": len(r.tried),
    }


@command("bs-schedule")
def cmd_bs_schedule(a: argparse.Namespace) -> dict:
    from lrbs.experiments import bs_schedule as bss

    setup = setup_from(a)
    cfg = bss.ScheduleConfig(
        tuple(a.regimes),
        a.epochs,
        tuple(a.milestones),
        a.factor,
        a.lr,
        a.batch_size,
        a.optimizer,
        a.momentum,
        a.hybrid_grow,
        a.patience,
        a.seed,
    )
    data = load_tensors(setup)
    results, frame = runs_by_epoch(
        lambda **kw: bss.run_regimes(lambda: setup.fresh_model(data), data, cfg, **kw),
        len(cfg.regimes),
        cfg.epochs,
    )
    write_csv(frame, a.out, a)
    table, verdict = bss.summary(results)
    if not a.json:
        print(table.to_string(index=False))
        print(verdict)
    return {
        "dataset": a.dataset,
        "n_train": data.n_train,
        "verdict": verdict,
        "regimes": table.to_dict(orient="records"),
    }


@command("schedules")
def cmd_schedules(a: argparse.Namespace) -> dict:
    from dataclasses import replace

    from lrbs.experiments import schedules as sch

    setup = setup_from(a)

    def config(lr: float, base: float, top: float) -> sch.SchedulesConfig:
        return sch.SchedulesConfig(
            tuple(a.schedules), a.epochs, a.batch_size, a.optimizer, a.momentum, lr, base, top,
            a.floor, a.step_epochs, a.gamma, a.final_factor, a.warmup_epochs, a.restart_epochs,
            a.restart_mult, a.cycle_epochs, a.exp_range_end, a.onecycle_pct, a.onecycle_div,
            a.patience, a.beta, a.seed,
        )  # fmt: skip

    cfg = config(a.lr, a.base_lr, a.max_lr)
    out: dict = {"dataset": a.dataset, "model": a.model, "optimizer": a.optimizer}
    if a.preview:
        arrays = load(setup.data)
        frame = sch.preview(cfg, arrays.n_train)
        write_csv(frame, a.out)
        if not a.json:
            print(frame.groupby("schedule", sort=False).lr.agg(["first", "min", "max", "last"]))
        return out | {"steps": int(frame.step.max()) + 1 if len(frame) else 0}
    data = load_tensors(setup)
    if a.bounds != "given":
        if a.bounds == "range-test":
            bounds = sch.quick_range_test(setup.fresh_model(data), data, cfg)
        else:
            from lrbs.runs.store import RunStore, default_path

            with RunStore(a.db or default_path()) as store:
                bounds = sch.bounds_from_history(store, a.dataset, a.model)
            require(bounds is not None, "no range test of this dataset and model in the history")
        cfg = replace(cfg, lr=bounds.lr, base_lr=bounds.base_lr, max_lr=bounds.max_lr)
        out["bounds"] = {"source": bounds.source, "lr": bounds.lr, "base_lr": bounds.base_lr,
                         "max_lr": bounds.max_lr}  # fmt: skip
        if not a.json:
            print(f"from {bounds.source}: lr {bounds.lr:.3g}, bounds {bounds.base_lr:.3g} to "
                  f"{bounds.max_lr:.3g}")  # fmt: skip
    results, frame = runs_by_epoch(
        lambda **kw: sch.run_schedules(lambda: setup.fresh_model(data), data, cfg, **kw),
        len(cfg.schedules),
        cfg.epochs,
    )
    write_csv(frame, a.out, a)
    table, verdict = sch.summary(frame, {k: r.status for k, r in results.items()})
    if not a.json:
        print(table.to_string(index=False))
        print(verdict.replace("**", ""))
    return out | {
        "lr": cfg.lr,
        "base_lr": cfg.base_lr,
        "max_lr": cfg.max_lr,
        "verdict": verdict.replace("**", ""),
        "schedules": table.to_dict(orient="records"),
    }


@command("noise-scale")
def cmd_noise_scale(a: argparse.Namespace) -> dict:
    from lrbs.experiments import noise_scale as ns

    setup = setup_from(a)
    cfg = ns.NoiseScaleConfig(
        a.batch_small,
        a.batch_big,
        a.every,
        a.beta,
        a.batch_size,
        a.lr,
        a.optimizer,
        a.momentum,
        a.steps,
        a.seed,
    )
    data = load_tensors(setup)
    bar = ProgressBar()
    model = setup.fresh_model(data)
    result = ns.measure(model, data, cfg, on_row=lambda r: bar(r["step"] / cfg.steps, "noise"))
    bar(1.0, "done")
    write_csv(result.rows, a.out, a)
    out = {
        "dataset": a.dataset,
        "model": a.model,
        **result.headline(),
        "smith_le_g": ns.smith_le_noise(
            a.lr, data.n_train, a.batch_size, cfg.momentum if a.optimizer == "momentum" else 0.0
        ),
    }
    if a.check:
        mid = float(result.rows.loss.iloc[len(result.rows) // 2])
        ccfg = ns.CheckConfig(
            tuple(a.check),
            a.target_loss or mid,
            3000,
            a.batch_size,
            a.lr,
            result.b_simple,
            a.optimizer,
            a.momentum,
            a.seed,
        )
        table = ns.steps_to_target(lambda: setup.fresh_model(data), data, ccfg)
        fit = ns.fit_tradeoff(table.batch, table.steps)
        out["check"] = {
            "target_loss": ccfg.target_loss,
            "s_min": fit.s_min,
            "e_min": fit.e_min,
            "b_crit": fit.b_crit,
            "runs": table.to_dict(orient="records"),
        }
    if not a.json:
        print(
            f"B_simple = {result.b_simple:,.0f} (last quarter {result.spread[0]:,.0f} to "
            f"{result.spread[1]:,.0f}); measuring cost {result.overhead:.1%} of training time"
        )
        if "check" in out:
            print(f"fitted B_crit = {out['check']['b_crit']:,.0f}")
    return out


@command("autotune")
def cmd_autotune(a: argparse.Namespace) -> dict:
    from lrbs.experiments import autotune as at

    if a.action == "worker":
        return autotune_worker(a)
    setup = setup_from(a)
    space = at.SearchSpace(a.lr_min, a.lr_max, tuple(a.batches), tuple(a.optimizers),
                           tuple(a.warmups), a.momentum)  # fmt: skip
    seconds = a.seconds_per_trial
    if seconds is None and a.epochs_per_trial is None:
        seconds = 10.0
    cfg = at.TuneConfig(space, seconds, a.epochs_per_trial, a.pruner, a.seed, a.objective)
    positive_int("workers", a.workers)
    out: dict = {"dataset": a.dataset, "model": a.model}
    if a.seed_space:
        data = load_tensors(setup)
        cap = int(a.cap_mib * 2**20) if a.cap_mib else None
        seeded, found = at.seed_space(setup, data, space, cap)
        cfg = replace(cfg, space=seeded)
        out["seeded_from"] = found
        if not a.json:
            batches = ", ".join(map(str, seeded.batches))
            print(f"search space from a range test: lr {seeded.lr_min:.3g} to "
                  f"{seeded.lr_max:.3g}, batches {batches}")  # fmt: skip
    else:
        cfg = replace(cfg, space=space.fit_to(load(setup.data).n_train))
    name = a.study or f"{a.dataset}-{a.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_url = a.storage or at.default_storage()
    storage = at.open_storage(storage_url)
    at.create_study(storage, name, setup, cfg)
    bar = ProgressBar()
    workers = at.launch_workers(storage_url, name, a.trials, a.workers, at.log_dir_for(storage_url))
    study = at.load_study(storage, name)[0]
    try:
        while not workers.wait(1.0):
            n = sum(t.state.name != "RUNNING" for t in study.get_trials(deepcopy=False))
            bar(n / a.trials, f"{n} of {a.trials} trials")
    except KeyboardInterrupt:
        workers.stop()
        workers.wait(60)
        raise
    failed = workers.failures()
    require(not failed, "a worker failed: " + "; ".join(failed))
    trials = at.trials_frame(study)
    bar(1.0, "done")
    write_csv(trials, a.out, a)
    best = at.best(trials)
    counts = trials.state.value_counts().to_dict()
    out |= {"study": name, "storage": at.safe_url(storage_url), "trials": counts,
            "best": best.as_dict() if best else None}  # fmt: skip
    if best is not None:
        out |= {"lr": best.lr, "batch_size": best.batch_size, "val_loss": best.value}
    if not a.json:
        print(trials.to_string(index=False))
        print(f"study {name!r}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        if best:
            print(f"best: trial {best.trial}, lr {best.lr:.4g}, batch {best.batch_size}, "
                  f"{best.optimizer}, val loss {best.value:.4f}")  # fmt: skip
    return out


def autotune_worker(a: argparse.Namespace) -> dict:
    import signal
    import threading

    from lrbs.experiments import autotune as at

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    n = at.run_worker(
        a.storage, a.study, a.trials, worker=a.worker, stop=stop, threads=a.threads or None
    )
    if not a.json:
        print(f"worker {a.worker}: ran {n} trial(s) of study {a.study!r}")
    return {"study": a.study, "worker": a.worker, "trials": n, "stopped": stop.is_set()}


def budget_from(a: argparse.Namespace, default: Budget) -> Budget:
    values = (a.steps, a.epochs, a.samples, a.seconds)
    return Budget(*values) if any(v is not None for v in values) else default


def _config_of(a: argparse.Namespace) -> dict:
    skip = {"out", "json", "no_store", "db", "frame", "verbose"}
    return {k: v for k, v in vars(a).items() if k not in skip}


def _clean(obj):
    """JSON without NaN/inf (they are not JSON): such floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
