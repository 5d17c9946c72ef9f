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
from lrbs.core.device import DEVICE_CHOICES
from lrbs.core.errors import LrbsError, positive_int, require
from lrbs.core.loop import EVENT_COLUMNS, OPTIMIZERS, Budget, OptimSpec
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
