"""The notebook API: lrbs's experiments on your own model, data, loss and optimizer.

    import lrbs
    found = lrbs.find_lr(model, train_loader, optimizer=opt, loss=nn.CrossEntropyLoss())
    found.suggestions()      # {"steep": ..., "valley": ..., "min_div10": ..., "max_usable": ...}
    found.curve()            # the curve, one row per iteration (a DataFrame)
    found.chart()            # the page's chart (Altair)

`model` is an `nn.Module` (each run starts from a copy of it as it is now: your model, your
optimizer's state, BatchNorm buffers and torch's RNG are as they were afterwards), or the path
of a workload file (then `train` and the rest come from the file). `train` and `val` are each a
torch Dataset, a DataLoader or an (x, y) pair of tensors; without `val`, the training data are
scored. A sample (or a DataLoader's collated batch) is (input, target, *rest), a tuple or a
list whose rest is ignored, or a dict with its input under "input", "inputs", "x", "image",
"images", "pixel_values", "input_ids" or "features" and its target under "target", "targets",
"y", "label" or "labels" (`lrbs.core.stream.SAMPLE_CONVENTION`). Before any training one forward
pass and loss on two samples checks that the model's output fits the targets (its classes, its
shape), and data holding a NaN or an infinity are refused, naming the sample.
`loss(output, target)` defaults to cross-entropy; `metric(output, target)` to accuracy
for integer class targets (none for anything else). `optimizer` is a torch optimizer over
`model`'s parameters: its class, parameter groups (their rate ratios kept), hyperparameters and
state are used, the experiment setting the rate; without one, the experiment's optimizer. A
DataLoader gives its dataset, collate function and workers; lrbs draws its own seeded order
and batches at the experiment's batch size.

Every function builds a `Setup` holding the objects (a `Workload`) and a `Config`, and runs the
experiment through `lrbs.runs.experiment.execute`, the path the page and the CLI take, so the
same settings give the same numbers. `store=True` (or a file's path) also records the run in the
history, under the model's class name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrbs.core.errors import ConfigError
from lrbs.core.loop import Budget
from lrbs.core.setup import Setup
from lrbs.core.task import Compute
from lrbs.core.workload import Workload

BUDGET_KEYS = ("steps", "epochs", "samples", "seconds")


def make_setup(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    val=None,
    loss: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    metric: Callable | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    accumulate: int = 1,
    data_path: str = "auto",
    loader_workers: int = 0,
) -> Setup:
    """The Setup of an API call: a workload file's path, or objects wrapped in a Workload."""
    compute = Compute(
        precision=precision,
        accumulate=accumulate,
        data_path=data_path,
        loader_workers=loader_workers,
    )
    if isinstance(model, str | os.PathLike):
        given = [k for k, v in {"train": train, "val": val, "loss": loss}.items() if v is not None]
        if given or optimizer is not None or metric is not None:
            raise ConfigError(
                "a workload file brings its own data, loss, optimizer and metric: give the "
                "file alone"
            )
        workload: str | Workload = os.fspath(model)
    else:
        if train is None:
            raise ConfigError("give the training data: a Dataset, a DataLoader or (x, y)")
        workload = Workload.of(model, train, val=val, loss=loss, optimizer=optimizer, metric=metric)
    return Setup(seed=seed, device=device, compute=compute, workload=workload)


def run_experiment(exp: ModuleType, setup: Setup, config: Any, store: bool | str = False) -> Any:
    """`exp` through `execute` with torch's global RNG restored afterwards; recorded in the run
    history when `store` is True or a history file's path."""
    from lrbs.runs.experiment import execute
    from lrbs.runs.store import recorder

    rec = None
    if store:
        rec = recorder(exp.KIND, setup, config, path=None if store is True else store, name="api")
        rec.start()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        return execute(exp, setup, config, recorder=rec)


def config_of(exp: ModuleType, settings: dict) -> Any:
    """The experiment's Config from keyword settings; `steps=`, `epochs=`, `samples=` or
    `seconds=` make its budget, `lr=` (where the Config has an optimizer with a rate) its rate."""
    fields = {f.name for f in dataclasses.fields(exp.Config)}
    budget = {k: settings.pop(k) for k in BUDGET_KEYS if k in settings and k not in fields}
    if budget:
        if "budget" not in fields:
            raise ConfigError(f"{exp.KIND} takes no budget ({', '.join(budget)})")
        settings["budget"] = Budget(**budget)
    optim_keys = {"optimizer_name": "name", "lr": "lr", "momentum": "momentum"}
    optim = {v: settings.pop(k) for k, v in optim_keys.items() if k in settings}
    if optim:
        if "optim" not in fields:
            raise ConfigError(f"{exp.KIND} takes no optimizer settings ({', '.join(optim)})")
        base = exp.Config().optim
        settings["optim"] = dataclasses.replace(base, **optim)
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ConfigError(
            f"{exp.KIND} has no setting {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    return exp.Config(**settings)


SETUP_KEYS = ("seed", "device", "precision", "accumulate", "data_path", "loader_workers")


def _call(exp: ModuleType, model, train, objects: dict, settings: dict, store) -> Any:
    setup_kw = {k: settings.pop(k) for k in SETUP_KEYS if k in settings}
    has_seed = any(f.name == "seed" for f in dataclasses.fields(exp.Config))
    if "seed" in setup_kw and has_seed:  # one seed for both, as the CLI's --seed
        settings["seed"] = setup_kw["seed"]
    setup = make_setup(model, train, **objects, **setup_kw)
    return run_experiment(exp, setup, config_of(exp, settings), store)


def find_lr(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val=None,
    metric: Callable | None = None,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    iterations: int = 100,
    batch_size: int | None = None,
    follow: str = "train",
    store: bool | str = False,
    **settings,
):
    """The learning-rate range test (lr-find): `follow="val"` follows the validation loss
    (torch-lr-finder's val_loader). Other settings: `lr_find.Config`'s (`ramp`, `beta`,
    `stop_factor`, `seeds`, `zoom`, ...) and the setup's (`seed`, `device`, `precision`,
    `accumulate`, `data_path`, `loader_workers`). Returns lr_finder.Result: `.suggestions()`,
    `.curve()`, `.chart()`, `.summary()`. `batch_size` defaults to a DataLoader's own (else
    64). On a DistributedDataParallel model, call it on every rank: see
    lrbs/methods/distributed.py."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        from lrbs.methods import distributed

        objects = {"optimizer": optimizer, "loss": loss, "val": val, "metric": metric}
        settings.update(lr_min=lr_min, lr_max=lr_max, iterations=iterations, follow=follow)
        return distributed.find_lr(
            model, train, batch_size=batch_size, store=store, **objects, **settings
        )
    from lrbs.experiments import lr_finder

    if batch_size is None:
        batch_size = getattr(train, "batch_size", None) if isinstance(train, DataLoader) else None
        batch_size = batch_size or 64

    settings.update(
        lr_min=lr_min, lr_max=lr_max, iterations=iterations, batch_size=batch_size, follow=follow
    )
    objects = {"val": val, "loss": loss, "optimizer": optimizer, "metric": metric}
    return _call(lr_finder, model, train, objects, settings, store)


def probe_batch(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    target_batch: int | None = None,
    store: bool | str = False,
    **settings,
):
    """The largest batch that fits in memory (bs-probe); with `target_batch`, the micro-batch
    and gradient-accumulation steps that reach it (`.accumulation()`). Settings: `cap_mib`,
    `optim_states` and the setup's."""
    from lrbs.experiments import bs_probe

    settings["target_batch"] = target_batch
    objects = {"loss": loss, "optimizer": optimizer}
    return _call(bs_probe, model, train, objects, settings, store)


def noise_scale(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val=None,
    store: bool | str = False,
    **settings,
):
    """The gradient noise scale B_simple measured while training (noise-scale). Settings:
    `noise_scale.Config`'s (`batch_small`, `batch_big`, `steps`, `every`, `check`, `lr`, ...)
    and the setup's."""
    from lrbs.experiments import noise_scale as exp

    objects = {"val": val, "loss": loss, "optimizer": optimizer}
    return _call(exp, model, train, objects, settings, store)


def batch_sweep(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val=None,
    metric: Callable | None = None,
    batch_sizes: tuple = (32, 64, 128, 256),
    store: bool | str = False,
    **settings,
):
    """The batch-size sweep at an equal budget (bs-sweep): `epochs=`, `steps=`, `samples=`
    or `seconds=`; `scaling`, `repeats`, `lr` and the setup's settings."""
    from lrbs.experiments import bs_sweep

    settings["batch_sizes"] = tuple(batch_sizes)
    objects = {"val": val, "loss": loss, "optimizer": optimizer, "metric": metric}
    return _call(bs_sweep, model, train, objects, settings, store)


def compare_schedules(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val=None,
    metric: Callable | None = None,
    schedules: tuple[str, ...] = ("constant", "cosine", "onecycle"),
    store: bool | str = False,
    **settings,
):
    """Learning-rate schedules trained side by side from the same weights (schedules).
    Settings: `schedules.Config`'s (`epochs`, `bounds`, `lr_max`, ...) and the setup's."""
    from lrbs.experiments import schedules as exp

    settings["schedules"] = tuple(schedules)
    objects = {"val": val, "loss": loss, "optimizer": optimizer, "metric": metric}
    return _call(exp, model, train, objects, settings, store)


def recommend(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val=None,
    metric: Callable | None = None,
    budget: str = "quick",
    train_epochs: float | None = 10.0,
    store: bool | str = False,
    **settings,
):
    """The answer (recommend): one learning rate and batch size with their evidence and
    confidence. `budget="quick"` or `"thorough"`; `train_epochs`: the training you plan, in
    epochs at the base batch, the length the rate is confirmed for (recommend.TRAIN_EPOCHS;
    0 or None: the sweep's own length); `recommend.Config`'s settings (`rates`, `seeds`,
    `sweep_steps`, `batch_size`, `optimizer_name`, ...) and the setup's. Returns
    recommend.Result: `.summary()` is the answer card, `.tables()` the evidence."""
    from lrbs.experiments import recommend as exp

    settings |= {"budget": budget, "train_epochs": train_epochs}
    objects = {"val": val, "loss": loss, "optimizer": optimizer, "metric": metric}
    return _call(exp, model, train, objects, settings, store)


def lr_batch_map(
    model: nn.Module | str | os.PathLike,
    train=None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss: Callable | None = None,
    val=None,
    metric: Callable | None = None,
    store: bool | str = False,
    **settings,
):
    """The learning-rate x batch-size map (lr-batch-map): the ridge of best rates, the fitted
    exponent of lr_opt ~ B^alpha, steps-to-target and B_crit. Settings: `lr_batch_map.Config`'s
    (`batch_sizes`, `base_lr`, `base_batch`, `rates`, `decades`, `budget`, `steps`, `seeds`,
    ...) and the setup's."""
    from lrbs.experiments import lr_batch_map as exp

    objects = {"val": val, "loss": loss, "optimizer": optimizer, "metric": metric}
    return _call(exp, model, train, objects, settings, store)


# lrbs.__init__ re-exports these
API = (
    "find_lr",
    "probe_batch",
    "noise_scale",
    "batch_sweep",
    "compare_schedules",
    "recommend",
    "lr_batch_map",
)
