"""The learning-rate x batch-size map: which scaling rule holds, and where the critical batch is.

A grid of cells, each a (batch size, learning rate, seed): batch sizes are powers of two (or a
given list), and each batch gets its own log-spaced rates centred where the scaling rules point
from a base rate at a base batch. Every cell trains from the seed's initial weights at an equal
budget (equal updates, equal epochs, or until a target loss), so only the rate and the batch
differ. From the cells (lrbs.methods.critical_batch):
- the ridge (the best rate per batch, with the band of rates within noise of it over seeds);
- the exponent alpha of lr_opt ~ B^alpha where a power law holds, with its interval, beside the
  rules' 1 (linear) and 0.5 (square root), and the batch where the ridge bends away;
- McCandlish et al.'s eps_opt(B) = eps_max / (1 + B_noise / B) fitted to the ridge;
- steps-to-target S(B) at each batch's fastest rate, fitted by S = S_min (1 + B_noise / B):
  B_crit, beside B_simple measured by the noise meter on the same model.

Cells run in this process (the rates of one batch and seed stacked with torch.func where that
pays), or as an Optuna study with a grid sampler on the auto-tune storage, shared by worker
processes: `python -m lrbs autotune worker --study NAME --storage URL` on any machine runs
cells of a map study until every cell has run exactly once (the storage and the worker
processes are lrbs.methods.study's, shared with auto-tune). The Result, the fits read from the
cells, is in lrbs.experiments.lr_batch_map.result.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from lrbs.core.config import check, from_dict, option
from lrbs.core.data import TensorData
from lrbs.core.errors import LrbsError, positive_int, require
from lrbs.core.kept import load_data
from lrbs.core.loop import Budget, Event, OptimSpec, RunResult, TrainConfig, train
from lrbs.core.optim import optim_at
from lrbs.core.setup import Setup
from lrbs.experiments.lr_batch_map.result import CELL_COLUMNS, CURVE_COLUMNS, Result  # noqa: F401
from lrbs.methods import critical_batch as cb
from lrbs.methods import noise
from lrbs.methods import study as studies
from lrbs.methods.memory import largest_batch, make_fits, optimizer_states
from lrbs.methods.scaling import parse_batches, resolve_batches
from lrbs.runs import instruments
from lrbs.runs.experiment import collect
from lrbs.runs.sink import Sink

log = logging.getLogger(__name__)

KIND = "lr-batch-map"
BUDGETS = ("steps", "epochs", "target")
METRICS = ("val", "train")
STACKED = ("auto", "yes", "no")
MAP_ATTR = "lrbs-map"  # the study's user attribute holding a map's settings and cells
EMA_BETA = 0.8  # smoothing of the per-step training loss for steps-to-target


@dataclass(frozen=True, kw_only=True)
class Config:
    batch_sizes: tuple[int | str, ...] = option(
        (),
        help="batch sizes (whole numbers or 'full'); default: powers of two from "
        "--batch-min to the training set",
    )
    batch_min: int = option(16, low=1, help="the smallest batch of the default powers of two")
    batch_max: int | None = option(
        None, low=1, help="the largest batch of the default powers of two (default: the data)"
    )
    base_lr: float = option(0.1, help="a rate known to train at the base batch")
    base_batch: int = option(32, low=1, help="the batch the base rate belongs to")
    centre: str = option(
        "between",
        choices=cb.CENTRES,
        help="where each batch's rates are centred: the linear rule, the sqrt rule, between "
        "them (k^0.75), or fixed",
    )
    rates: int = option(7, low=1, high=25, help="rates per batch size")
    decades: float = option(2.0, low=0.1, high=8, help="how many decades each batch's rates span")
    optim: OptimSpec = option(factory=OptimSpec, help="the optimizer (its rate is the grid's)")
    budget: str = option(
        "steps", choices=BUDGETS, help="equal budget per cell: updates, epochs, or to a target"
    )
    steps: int = option(300, low=1, help="updates per cell (--budget steps)")
    epochs: float = option(2.0, low=0.01, help="epochs per cell (--budget epochs)")
    target_loss: float | None = option(
        None,
        low=1e-9,
        help="training loss for steps-to-target (needed by --budget target; else default: the "
        "loss every batch's best rate reached)",
    )
    max_steps: int = option(3000, low=1, help="most updates a cell trains (--budget target)")
    metric: str = option("val", choices=METRICS, help="the map's loss: validation or training")
    seeds: int = option(2, low=1, high=10, help="repeats per cell (seeds seed, seed+1, ...)")
    seed: int = option(0, low=0, help="the first seed (initial weights and batches)")
    stacked: str = option(
        "auto",
        choices=STACKED,
        help="train each batch's rates at once with torch.func (auto: on a GPU, equal budgets)",
    )
    noise_steps: int = option(
        200, low=0, help="steps of the noise meter's run for B_simple at the base batch (0: skip)"
    )
    cap_mib: float | None = option(
        None,
        low=0.001,
        help="the largest batch is the largest whose training step fits in this many MiB (the "
        "memory probe; on a GPU the probe always runs, against the device's memory)",
    )
    workers: int = option(
        0,
        low=0,
        high=64,
        help="worker processes sharing the cells through an Optuna study (0: none)",
    )
    storage: str | None = option(None, help="Optuna storage for --workers (default: auto-tune's)")
    study: str = option("", help="the study's name for --workers (default: made up)")

    def __post_init__(self) -> None:
        check(self)
        if self.batch_sizes:  # 64.0 -> 64, 'FULL' -> 'full': one spelling
            object.__setattr__(self, "batch_sizes", parse_batches(self.batch_sizes))
        optim_at(self.optim, self.base_lr)  # a base rate past the optimizer's limit is said
        require(
            self.rates >= 3,
            f"{self.rates} rate(s) per batch: a best rate needs at least three (one either side)",
        )
        if self.budget == "target":
            require(self.target_loss is not None, "--budget target needs a --target-loss")
            require(self.stacked != "yes", STACKED_TARGET)
        if self.batch_max is not None:
            require(
                self.batch_max >= self.batch_min,
                f"the largest batch ({self.batch_max}) is below the smallest ({self.batch_min})",
            )

    def batches(self, n_train: int, fitting: int | None = None) -> tuple[int, ...]:
        """The map's batch sizes for a training set of `n_train` (at least two); the default
        powers of two stop at `fitting`, the largest batch that fits in memory, when known."""
        if self.batch_sizes:
            out = resolve_batches(self.batch_sizes, n_train)
        else:
            hi = min(self.batch_max or n_train, n_train, fitting or n_train)
            require(
                self.batch_min <= n_train,
                f"the smallest batch ({self.batch_min}) is larger than the training set "
                f"({n_train})",
            )
            out = cb.power_batches(self.batch_min, hi)
        require(
            len(out) >= 2,
            f"a map needs at least two batch sizes, got {', '.join(map(str, out))}: one batch "
            "gives no ridge to fit (a grid of one column)",
        )
        return out

    def cells(self, n_train: int, fitting: int | None = None) -> list[dict]:
        """Every cell: batch by batch, rate by rate, seed by seed."""
        out = []
        for b in self.batches(n_train, fitting):
            grid = cb.lr_grid(
                self.base_lr,
                self.base_batch,
                b,
                centre=self.centre,
                rates=self.rates,
                decades=self.decades,
            )
            for lr in grid:
                optim_at(self.optim, lr)  # a rate past the optimizer's limit is said here
                for s in range(self.seed, self.seed + self.seeds):
                    out.append({"cell": cell_name(b, lr, s), "batch": b, "lr": lr, "seed": s})
        return out

    def train_config(self, batch: int, lr: float, seed: int) -> TrainConfig:
        budget = {
            "steps": Budget(steps=self.steps),
            "epochs": Budget(epochs=self.epochs),
            "target": Budget(steps=self.max_steps),
        }[self.budget]
        return TrainConfig(
            batch_size=batch,
            budget=budget,
            optim=optim_at(self.optim, lr),
            seed=seed,
            log_every=1,  # every step's loss: steps-to-target at the step it happens
            eval_each_epoch=False,
            eval_at_end=True,
        )

    def describe_budget(self) -> str:
        if self.budget == "steps":
            return f"{self.steps} updates"
        if self.budget == "epochs":
            return f"{self.epochs:g} epochs"
        return f"to training loss {self.target_loss:g} (at most {self.max_steps} updates)"


STACKED_TARGET = (
    "stacked cells need an equal budget (steps or epochs): a target loss ends each rate at "
    "its own step"
)


def cell_name(batch: int, lr: float, seed: int) -> str:
    return f"B={batch} lr={lr:.4g} seed={seed}"


# ------------------------------------------------------------------ one cell's curve


class Tracker:
    """Per run, the smoothed (debiased EMA) training loss, kept at log-spaced steps (every
    step up to 20, then every 3 %) and at its last step, and whether it reached the target."""

    def __init__(self, target: float | None = None) -> None:
        self.target = target
        self.ema: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.points: dict[str, list[tuple[int, int, float]]] = {}
        self.latest: dict[str, tuple[int, int, float]] = {}

    def observe(self, ev: Event) -> str | None:
        """Feed a train event; returns "reached" when the run's smoothed loss is at or below
        the target (the training loop's stop_rule under the target budget)."""
        if ev.kind != "train" or ev.loss is None:
            return None
        k = ev.run_id
        self.n[k] = self.n.get(k, 0) + 1
        self.ema[k] = EMA_BETA * self.ema.get(k, 0.0) + (1 - EMA_BETA) * ev.loss
        point = (ev.step, ev.samples, self.ema[k] / (1 - EMA_BETA ** self.n[k]))
        self.latest[k] = point
        pts = self.points.setdefault(k, [])
        reached = self.target is not None and point[2] <= self.target
        if not pts or ev.step <= 20 or ev.step >= pts[-1][0] * 1.03 or reached:
            pts.append(point)
        return "reached" if reached else None

    def curve(self, name: str, cell: dict) -> list[dict]:
        pts = list(self.points.get(name, []))
        if name in self.latest and (not pts or pts[-1] != self.latest[name]):
            pts.append(self.latest[name])
        keys = ("batch", "lr", "seed")
        return [
            {"cell": name, **{k: cell[k] for k in keys}, "step": s, "samples": m, "loss": v}
            for s, m, v in pts
        ]


def cell_row(cell: dict, r: RunResult, config: Config) -> dict:
    """One finished cell: how it ended, its losses, and `loss`, the map's value: the final
    validation or training loss, or under the target budget the updates it took (None where
    it diverged or never reached the target)."""
    ok = r.status in ("finished", "reached")
    if config.budget == "target":
        loss = float(r.steps) if r.status == "reached" else None
    else:
        loss = r.val_loss if config.metric == "val" else r.train_eval_loss
    if not ok or loss is None or not math.isfinite(loss):
        loss = None
    return {
        **cell,
        "status": r.status,
        "loss": loss,
        "val_loss": r.val_loss if ok else None,
        "val_acc": r.val_acc if ok else None,
        "train_loss": r.train_eval_loss if ok else None,
        "steps": r.steps,
        "epochs": r.epochs,
        "seconds": r.elapsed,
        "message": r.message,
    }


def train_cell(
    setup: Setup, data: TensorData, config: Config, cell: dict, stop=None
) -> tuple[dict, list[dict]]:
    """Train one cell from its seed's initial weights: its row and its curve."""
    tracker = Tracker(config.target_loss)
    tc = config.train_config(cell["batch"], cell["lr"], cell["seed"])

    def rule(ev: Event) -> str | None:
        hit = tracker.observe(ev)
        return hit if config.budget == "target" else None

    model = setup.fresh_model(data, cell["seed"])
    r = train(model, data, tc, run_id=cell["cell"], stop=stop, stop_rule=rule)
    return cell_row(cell, r, config), tracker.curve(cell["cell"], cell)


# ------------------------------------------------------------------ in this process


def should_stack(setup: Setup, data: TensorData, config: Config) -> bool:
    """As the LR sweep decides: on a GPU, for an equal budget, a model that can be stacked."""
    from lrbs.core.stacked import stackable

    if config.stacked == "no" or config.budget == "target":
        return False
    if config.stacked == "yes":
        why = stackable(setup.fresh_model(data, config.seed))
        require(why is None, f"this model cannot be stacked: {why}")
        return True
    return data.device.type == "cuda" and stackable(setup.fresh_model(data)) is None


def run_here(
    setup: Setup, data: TensorData, config: Config, cells: list[dict], sink: Sink, stop
) -> None:
    """Every cell in this process, a "cells" row and its "curves" as each ends; the rates of
    one batch and seed stacked when `should_stack`."""
    n = len(cells)
    done = 0
    if should_stack(setup, data, config):
        from lrbs.core.stacked import train_stacked

        groups: dict[tuple[int, int], list[dict]] = {}
        for c in cells:
            groups.setdefault((c["batch"], c["seed"]), []).append(c)
        for (batch, seed), group in groups.items():
            if stop is not None and stop.is_set():
                return
            tracker = Tracker(config.target_loss)
            results = train_stacked(
                lambda seed=seed: setup.fresh_model(data, seed),
                data,
                config.train_config(batch, group[0]["lr"], seed),
                [c["lr"] for c in group],
                run_ids=[c["cell"] for c in group],
                on_event=tracker.observe,
                stop=stop,
            )
            for c, r in zip(group, results, strict=True):
                for row in tracker.curve(c["cell"], c):
                    sink.emit("curves", row)
                sink.emit("cells", cell_row(c, r, config))
            done += len(group)
            sink.progress(done / n, f"{done} of {n} cells")
        return
    for c in cells:
        if stop is not None and stop.is_set():
            return
        row, curve = train_cell(setup, data, config, c, stop)
        for point in curve:
            sink.emit("curves", point)
        sink.emit("cells", row)
        done += 1
        sink.progress(done / n, f"{done} of {n} cells")


# ------------------------------------------------------------------ as an Optuna grid study


def map_settings(setup: Setup, config: Config, cells: list[dict]) -> dict:
    from lrbs.runs.store import jsonable

    return jsonable({"setup": setup, "config": config, "cells": cells})


def is_map_study(storage, name: str) -> bool:
    """Whether study `name` in `storage` is a map's (its cells are what workers run)."""
    return studies.study_attr(storage, name, MAP_ATTR) is not None


def create_map_study(storage, name: str, setup: Setup, config: Config, cells: list[dict]):
    """The map's study, with a grid sampler over its cells (one grid point per cell). A study
    of that name with the same settings is joined; with others, refused."""
    mine = map_settings(setup, config, cells)
    return studies.create_or_join(storage, name, MAP_ATTR, mine, sampler=cell_sampler(len(cells)))


def cell_sampler(n_cells: int):
    """Optuna's grid sampler over the cells' indices (trial k < n_cells runs cell k). Its
    after_trial, which stops an `optimize` loop once the grid is done, is left out: the
    workers ask and tell, and stop by themselves."""
    import optuna

    class CellSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return CellSampler({"cell": list(range(n_cells))}, seed=0)


def _claimed(study, exclude: int) -> set[int]:
    """Cells already run (complete) or being run (running) by trials other than `exclude`."""
    from optuna.trial import TrialState

    out = set()
    for t in study.get_trials(deepcopy=False):
        if t.number != exclude and t.state in (TrialState.COMPLETE, TrialState.RUNNING):
            if "cell" in t.params:
                out.add(int(t.params["cell"]))
    return out


def run_cells(storage, name: str, max_cells: int, *, stop: threading.Event | None = None) -> int:
    """A worker: run cells of map study `name` (at most `max_cells`) until every cell has a
    complete trial. Each cell is one grid point; a point another trial holds already (two
    workers that asked at once, or a grid whose points have all been tried) is given back as
    a failed "duplicate" trial, untrained, and a cell still missing (one a stop cut short) is
    queued by name. Returns the cells this worker trained."""
    import optuna
    from optuna.trial import TrialState

    positive_int("cells", max_cells)
    study = optuna.load_study(study_name=name, storage=storage)
    attrs = study.user_attrs[MAP_ATTR]
    setup = from_dict(Setup, attrs["setup"])
    config = from_dict(Config, attrs["config"])
    cells = attrs["cells"]
    study = optuna.load_study(study_name=name, storage=storage, sampler=cell_sampler(len(cells)))
    data = load_data(setup)
    done = 0
    while done < max_cells and not (stop is not None and stop.is_set()):
        missing = sorted(set(range(len(cells))) - _claimed(study, -1))
        if not missing:
            break
        if len(study.get_trials(deepcopy=False)) >= len(cells):
            # the grid's own points are all taken and the sampler counts a failed (stopped)
            # cell as visited: ask for a missing cell by name
            study.enqueue_trial({"cell": missing[0]})
        trial = study.ask()
        k = int(trial.suggest_categorical("cell", list(range(len(cells)))))
        if k in _claimed(study, trial.number):
            trial.set_user_attr("status", "duplicate")
            study.tell(trial, state=TrialState.FAIL)
            continue
        row, curve = train_cell(setup, data, config, cells[k], stop)
        trial.set_user_attr("row", row)
        trial.set_user_attr("curve", curve)
        if row["status"] == "stopped":
            study.tell(trial, state=TrialState.FAIL)
            break
        study.tell(trial, row["loss"] if row["loss"] is not None else math.inf)
        done += 1
    return done


def run_workers(setup: Setup, config: Config, cells: list[dict], sink: Sink, stop) -> str:
    """Create the map's study and let `config.workers` worker processes (each `python -m lrbs
    autotune worker`) share out its cells; stream each finished cell. Returns the status."""
    from optuna.trial import TrialState

    name = config.study.strip() or f"map-{setup.data_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    url = config.storage or studies.default_storage()
    study = create_map_study(studies.open_storage(url), name, setup, config, cells)
    sink.emit("study", {"study": name, "storage": studies.safe_url(url), "workers": config.workers})
    n = len(cells)
    workers = studies.launch_workers(
        url, name, n * config.workers, config.workers, studies.log_dir_for(url)
    )
    seen: set[int] = set()

    def poll() -> None:
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE and t.number not in seen and "row" in t.user_attrs:
                seen.add(t.number)
                for point in t.user_attrs.get("curve", []):
                    sink.emit("curves", point)
                sink.emit("cells", t.user_attrs["row"])
        sink.progress(len(seen) / n, f"{len(seen)} of {n} cells")

    return "stopped" if workers.supervise(poll, stop) else "finished"


# ------------------------------------------------------------------ the experiment


def run(
    setup: Setup, config: Config, sink: Sink | None = None, stop: threading.Event | None = None
) -> Result:
    """The noise meter's B_simple on the same model first (if asked), then every cell, here or
    on worker processes; each cell streams as it ends."""
    rows, sink = collect(sink)
    data = load_data(setup)
    n = data.n_train
    config.batches(n)  # bad batches are said before any probing
    fitting = largest_fitting(setup, data, config, stop)
    cells = config.cells(n, fitting)
    if config.stacked == "yes":
        should_stack(setup, data, config)  # a model that cannot be stacked is said first
    batches = config.batches(n, fitting)
    sink.emit(
        "info",
        {
            "dataset": setup.data_name,
            "model": setup.model_name,
            "n_train": n,
            "optimizer": config.optim.name,
            "cells": len(cells),
            "batches": list(batches),
            "device": data.device.type,
            "largest_fitting": fitting,
        },
    )
    t0 = time.perf_counter()
    if config.noise_steps and not (stop is not None and stop.is_set()):
        measure_noise(setup, data, config, batches, sink, stop)
    status = "finished"
    if config.workers:
        status = run_workers(setup, config, cells, sink, stop)
    else:
        run_here(setup, data, config, cells, sink, stop)
    if stop is not None and stop.is_set():
        status = "stopped"
    sink.emit("timing", {"seconds": time.perf_counter() - t0})
    return Result(config, rows.rows, status)


def largest_fitting(setup: Setup, data: TensorData, config: Config, stop=None) -> int | None:
    """The largest batch whose training step fits (lrbs.methods.memory), for the default
    powers of two: under --cap-mib, or on a GPU; None where nothing limits the batch but the
    data (a CPU without a cap) or the batches are listed."""
    if config.batch_sizes or (config.cap_mib is None and data.device.type != "cuda"):
        return None
    cap = int(config.cap_mib * 2**20) if config.cap_mib else None
    states = optimizer_states(config.optim)
    fits = make_fits(setup.fresh_model(data, config.seed), data, cap, states)
    upper = min(config.batch_max or data.n_train, data.n_train)
    return largest_batch(fits, upper, start=config.batch_min, stop=stop).largest


def measure_noise(
    setup: Setup, data: TensorData, config: Config, batches, sink: Sink, stop
) -> None:
    """B_simple = tr(Sigma)/|G|^2 from the noise meter's measuring run
    (`lrbs.runs.instruments.measure_noise`), at the base batch and rate, between the map's
    smallest and largest batches; its measurements go to the "noise" channel."""
    small, big = min(batches), max(batches)
    if small == big:
        return

    class Noise(Sink):
        def emit(self, channel: str, row: dict) -> None:
            if channel == "rows":
                sink.emit("noise", row)

    ncfg = noise.Config(
        batch_small=small,
        batch_big=big,
        every=max(1, config.noise_steps // 20),
        batch_size=min(config.base_batch, max(batches)),
        optim=optim_at(config.optim, config.base_lr),
        steps=config.noise_steps,
        seed=config.seed,
    )
    try:
        instruments.measure_noise(setup, data, ncfg, Noise(), stop)
    except LrbsError as exc:
        log.warning("no B_simple: %s", exc)
