"""`python -m lrbs COMMAND`: every experiment of the app, on the command line.

`--out FILE.csv` writes the CSV the page offers; `--json` prints one JSON object of headline
figures as the last line of stdout. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

import pandas as pd

from lrbs.core.data import DATASETS, DataSpec, load
from lrbs.core.device import DEVICE_CHOICES, describe
from lrbs.core.errors import LrbsError, require
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

    p = sub.add_parser("lr-find", help="LR range test (with optional zoom-in rounds)")
    add_training_args(p, batch=64)
    p.add_argument("--lr-min", type=float, default=1e-7)
    p.add_argument("--lr-max", type=float, default=10.0)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--ramp", default="exp", choices=["exp", "linear"])
    p.add_argument("--beta", type=float, default=0.98, help="smoothing (EMA)")
    p.add_argument("--no-debias", action="store_true", help="torch-lr-finder style smoothing")
    p.add_argument("--stop-factor", type=float, default=4.0, help="0: never stop early")
    p.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds")
    p.add_argument(
        "--zoom",
        type=float,
        nargs=2,
        action="append",
        metavar=("LO", "HI"),
        help="a finer second test over [LO, HI]; repeatable",
    )
    add_output_args(p)

    p = sub.add_parser("lr-sweep", help="one run per learning rate, equal budgets")
    add_training_args(p, lr_grid=True)
    add_budget_args(p)
    p.add_argument(
        "--stacked",
        choices=["auto", "yes", "no"],
        default="auto",
        help="train the rates at once with torch.func (auto: on a GPU, for a budget in steps, "
        "epochs or samples and a model without dropout)",
    )
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


@command("lr-find")
def cmd_lr_find(a: argparse.Namespace) -> dict:
    from dataclasses import replace

    from lrbs.experiments.lr_finder import RangeTestConfig, range_test

    setup = setup_from(a)
    require(a.seeds >= 1, "--seeds must be at least 1")
    cfg = RangeTestConfig(
        a.lr_min,
        a.lr_max,
        a.iterations,
        a.ramp,
        a.batch_size,
        a.optimizer,
        a.momentum,
        a.beta,
        not a.no_debias,
        a.stop_factor or None,
        a.seed,
    )
    rounds = [cfg] + [cfg.zoom(lo, hi) for lo, hi in (a.zoom or [])]
    data = load_tensors(setup)
    bar, results = ProgressBar(), []
    total = sum(c.iterations for c in rounds) * a.seeds
    done = 0
    for r_no, round_cfg in enumerate(rounds):
        for k in range(a.seeds):
            seed_setup = replace(setup, seed=setup.seed + k)
            model = seed_setup.fresh_model(data)
            res = range_test(
                model,
                data,
                replace(round_cfg, seed=seed_setup.seed),
                round=r_no,
                on_point=lambda p, d=done: bar((d + p["iteration"] + 1) / total, "lr-find"),
            )
            done += round_cfg.iterations
            results.append(res)
    bar(1.0, "done")
    write_csv(pd.concat([r.frame() for r in results], ignore_index=True), a.out, a)
    out = {
        "dataset": a.dataset,
        "model": a.model,
        "optimizer": a.optimizer,
        "rounds": [r.headline() | {"round": r.round, "seed": r.config.seed} for r in results],
    }
    last = [r for r in results if r.round == len(rounds) - 1]
    if a.seeds > 1:
        from lrbs.experiments.lr_finder import spread

        out["spread"] = spread(last).to_dict(orient="records")
    first = results[0]
    out.update(first.headline())
    out["final_round_suggestions"] = last[0].headline()["suggestions"]
    if not a.json:
        for r in results:
            lr, loss = r.best
            print(
                f"round {r.round} seed {r.config.seed}: {r.status}, {len(r.lrs)} iterations, "
                f"lowest smoothed loss {loss:.4g} at lr {lr:.3g}"
            )
            for s in r.suggestions:
                print(f"  {s.title:<18} {s.lr:<10.3g} {s.meaning}")
    return out


@command("lr-sweep")
def cmd_lr_sweep(a: argparse.Namespace) -> dict:
    from lrbs.experiments.sweeps import LRSweepConfig, lr_sweep, sweep_table

    setup = setup_from(a)
    budget = budget_from(a, default=Budget(seconds=5))
    cfg = LRSweepConfig(tuple(a.grid), budget, a.batch_size, a.optimizer, a.momentum, a.seed)
    data = load_tensors(setup)
    bar, events, done = ProgressBar(), [], []

    def on_event(e):
        events.append(e.as_dict())
        bar((len(done) + budget.fraction(e)) / len(cfg.lrs), e.run_id)

    results = lr_sweep(
        lambda: setup.fresh_model(data),
        data,
        cfg,
        on_event=on_event,
        on_run_end=lambda lr, r: done.append(r),
        vectorize={"auto": None, "yes": True, "no": False}[a.stacked],
    )
    bar(1.0, "done")
    table = sweep_table(results, cfg.lrs)
    curves = pd.DataFrame(events, columns=EVENT_COLUMNS)
    write_csv(curves, a.out, a)
    if not a.json:
        print(table.to_string(index=False))
    best = table.loc[table.best, "lr"]
    return {
        "dataset": a.dataset,
        "model": a.model,
        "budget": budget.describe(),
        "best_lr": float(best.iloc[0]) if len(best) else None,
        "runs": table.to_dict(orient="records"),
    }


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
