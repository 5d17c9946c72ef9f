"""A user's own model, data, loss, optimizer and metric: a workload.

A workload FILE is plain Python defining

    model() -> nn.Module
    data() -> (train, val)       # each a torch Dataset, a DataLoader or an (x, y) pair of tensors
    loss() -> callable(output, target) -> scalar tensor     # optional; default cross-entropy
    optimizer(params, lr) -> torch.optim.Optimizer          # optional; default the experiment's
    metric(output, target) -> float                         # optional; default accuracy where
                                                            # it applies (integer class targets)

A sample of train or val is (input, target, *rest) or a dict with known keys
(`lrbs.core.stream.SAMPLE_CONVENTION`). `load_workload(path)` imports it fresh and checks that
shape; `Workload.of(...)` makes one from objects (the notebook API). Before any training one
forward pass and loss on two samples checks the contract (`check_step`: the classes, the output's
shape against the targets', a scalar loss), and `optimizer()` must give an Optimizer over the
parameters it is given. An error inside the user's code (a `sys.exit()` too) becomes a
`WorkloadError` naming the file and line, with the user's own traceback lines (and never
lrbs's) in `user_traceback`; messages about objects name what was given, never a file.
The app lists workloads only from the folder named by `LRBS_WORKLOADS` (a workload is code
that runs), never from a path typed into a page.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import itertools
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrbs.core.errors import LrbsError
from lrbs.core.task import Compute, Task, default_task

ENV_FOLDER = "LRBS_WORKLOADS"
CLASS_LOSSES = (nn.functional.cross_entropy, nn.functional.nll_loss)
CLASS_LOSS_MODULES = (nn.CrossEntropyLoss, nn.NLLLoss)
# element-wise losses, which broadcast an output and a target of different shapes silently
POINT_LOSSES = (
    nn.functional.mse_loss,
    nn.functional.l1_loss,
    nn.functional.smooth_l1_loss,
    nn.functional.huber_loss,
)
POINT_LOSS_MODULES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
OUT_OF_BOUNDS = re.compile(r"Target (-?\d+) is out of bounds")
REQUIRED = ("model", "data")
OPTIONAL = ("loss", "optimizer", "metric")
_LOADS = itertools.count()
LRBS_ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


class WorkloadError(LrbsError):
    """A workload that cannot be used: the message is one line naming the file (and line);
    `user_traceback` holds the traceback lines of the user's own file, if any."""

    def __init__(self, message: str, user_traceback: str = "") -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


class Workload:
    """The factories of a user's run. `model()` builds a fresh model; `data()` gives (train,
    val); `loss()` gives the loss function; `optimizer(params, lr)` and `metric(out, y)` are
    used as they are. Stored in the run history by its name (`str(workload)`): its path."""

    __slots__ = ("name", "path", "model", "data", "loss", "optimizer", "metric")

    def __init__(
        self,
        *,
        name: str,
        model: Callable[[], nn.Module],
        data: Callable[[], Any],
        loss: Callable[[], Callable] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        metric: Callable | None = None,
        path: Path | None = None,
    ) -> None:
        self.name, self.path = name, path
        self.model, self.data, self.loss = model, data, loss
        self.optimizer, self.metric = optimizer, metric

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"python:{self.name}"

    def __repr__(self) -> str:
        return f"Workload({str(self)!r})"

    @classmethod
    def of(
        cls,
        model: nn.Module,
        train,
        *,
        val=None,
        loss: Callable | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        metric: Callable | None = None,
        name: str | None = None,
    ) -> Workload:
        """A workload from objects: every run starts from a copy of `model` as it is now (the
        model itself is never trained), with an optimizer like `optimizer` (same class, groups,
        hyperparameters and state) over the copy's parameters. Without `val`, the training
        data are scored."""
        require_module(model, "the model")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise WorkloadError(
                "optimizer must be a torch optimizer over the model's parameters (e.g. "
                f"torch.optim.SGD(model.parameters(), lr=0.1)), got {describe(optimizer)}"
            )
        for role, fn in (("loss", loss), ("metric", metric)):
            if fn is not None and not callable(fn):
                raise WorkloadError(
                    f"{role} must be a function {role}(output, target), got {describe(fn)}"
                )
        initial = copy.deepcopy(model).cpu()

        def make_model() -> nn.Module:
            return copy.deepcopy(initial)

        make_optimizer = optimizer_like(model, optimizer) if optimizer is not None else None
        return cls(
            name=name or type(model).__name__,
            model=make_model,
            data=lambda: (train, train if val is None else val),
            loss=(lambda: loss) if loss is not None else None,
            optimizer=make_optimizer,
            metric=metric,
        )

    # -- calls into the user's code, each turned into one clear error

    def build_model(self, seed: int) -> nn.Module:
        """model() with torch's global RNG seeded by `seed` (and restored after): one seed,
        bit-equal initial weights."""
        with self.user_code("model()"), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.model()
        require_module(model, f"model() in {self.where()}")
        return model

    def build_data(self, device: torch.device, compute: Compute):
        """data() checked and placed (`lrbs.core.stream.build_data`): in memory or streamed."""
        from lrbs.core.stream import build_data

        with self.user_code("data()"):
            parts = self.data()
        if not (isinstance(parts, tuple | list) and len(parts) == 2):
            raise WorkloadError(
                f"data() in {self.where()} must return (train, val), got {describe(parts)}"
            )
        try:
            with self.user_code("data()"):
                return build_data(
                    parts[0],
                    parts[1],
                    device=device,
                    compute=compute,
                    task_of=self.task_of,
                    name=self.name,
                    workload=self,
                    source=f"data() in {self.path.name}: " if self.path is not None else "",
                )
        except WorkloadError:
            raise
        except LrbsError as exc:  # the shape of what data() gave, named by build_data
            raise WorkloadError(str(exc)) from None

    def task_of(self, targets: torch.Tensor) -> Task:
        loss = None
        if self.loss is not None:
            with self.user_code("loss()"):
                loss = self.loss()
            if not callable(loss):
                raise WorkloadError(
                    f"loss() in {self.where()} must return a function loss(output, target), "
                    f"got {describe(loss)}"
                )
        task = default_task(targets, loss, self.metric)
        optimizer = self.build_optimizer if self.optimizer is not None else None
        return Task(task.loss, task.metric, task.name, optimizer)

    def build_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """optimizer(params, lr), checked: a torch Optimizer over some of `params`."""
        params = list(params)
        with self.user_code("optimizer()"):
            opt = self.optimizer(params, lr)
        what = self.named("optimizer")
        if not isinstance(opt, torch.optim.Optimizer):
            raise WorkloadError(
                f"{what} must return a torch.optim.Optimizer over the params it is given (e.g. "
                f"torch.optim.SGD(params, lr=lr)), got {describe(opt)}"
            )
        given = {id(p) for p in params}
        if given and not any(id(p) in given for g in opt.param_groups for p in g["params"]):
            raise WorkloadError(
                f"{what} returned an optimizer over other parameters than the model's: build it "
                "over the params it is given"
            )
        return opt

    def check_step(self, model: nn.Module, data) -> None:
        """The contract, with one forward pass on two training samples before any training:
        the output fits the targets (classes, shape), the loss is a scalar and the metric a
        number, else one clear error naming what is expected and what was got."""
        with self.user_code("reading the training data"):
            x, y = data.take(torch.arange(min(2, data.n_train)))
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), self.user_code("the model's forward pass"):
                out = model(x)
            self.check_output(out, y, data)
            with torch.no_grad(), self.user_code("the loss"):
                loss = data.task.loss(out, y)
            with torch.no_grad(), self.user_code("the metric"):
                value = data.task.metric(out, y) if data.task.metric is not None else 0.0
        finally:
            model.train(was)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else describe(loss)
            raise WorkloadError(
                f"{self.named('loss')} must return a scalar (the batch's mean), got "
                f"{shape}; reduce it, e.g. with .mean()"
            )
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise WorkloadError(
                f"{self.named('metric')} must return one number, got shape {tuple(value.shape)}"
            )

    def check_output(self, out, y: torch.Tensor, data) -> None:
        """The model's output on a batch against its targets, for the losses whose contract
        lrbs knows: class scores for cross-entropy, the targets' shape for element-wise ones."""
        loss = data.task.loss
        model = self.the("model")
        if not isinstance(out, torch.Tensor):
            if is_class_loss(loss) or is_point_loss(loss):
                raise WorkloadError(
                    f"{model} returns {describe(out)}; {loss_name(loss)} needs a tensor: return "
                    "the output tensor from forward(), or give a loss that reads it"
                )
            return
        integer = not (y.is_floating_point() or y.is_complex())
        got, n = tuple(out.shape), len(y)
        if is_class_loss(loss) and integer:
            scores = (n, "n_classes", *y.shape[1:])  # what cross-entropy takes for y
            if out.dim() != y.dim() + 1 or out.shape[0] != n or out.shape[2:] != y.shape[1:]:
                raise WorkloadError(
                    f"{model} outputs shape {got} for a batch of {n} but class targets of shape "
                    f"{tuple(y.shape)} need scores of shape ({', '.join(map(str, scores))}) "
                    f"for {loss_name(loss)}"
                )
            classes = out.shape[1]
            ignore = getattr(loss, "ignore_index", -100)
            lo, hi = target_range(y, data, ignore)
            if hi >= classes:
                raise WorkloadError(
                    f"{model} outputs {classes} classes but the targets go up to {hi}: make it "
                    f"output {hi + 1} (one score per class) or check the targets"
                )
            if lo < 0:
                raise WorkloadError(
                    f"the targets must be class indices 0..{classes - 1}, got {lo} (a negative "
                    f"target other than ignore_index={ignore})"
                )
        elif is_class_loss(loss) and out.shape != y.shape:  # float targets: probabilities
            raise WorkloadError(
                f"{model} outputs shape {got} but the targets are floats of shape "
                f"{tuple(y.shape)}: {loss_name(loss)} reads float targets as class "
                "probabilities of the output's shape; give integer class targets, or a loss "
                "(e.g. mse_loss) for a regression"
            )
        elif is_point_loss(loss) and out.shape != y.shape:
            raise WorkloadError(
                f"{model} outputs shape {got} for a batch of {n} but the targets have shape "
                f"{tuple(y.shape)}: {loss_name(loss)} would broadcast them and compare every "
                "output with every target; make them match (e.g. out.squeeze(-1) in forward, "
                "or targets of the output's shape)"
            )

    def named(self, role: str) -> str:
        """How a message names the user's `role` function: "loss() in wl.py", or "the loss
        you gave" for objects."""
        if self.path is not None:
            return f"{role}() in {self.path.name}"
        return f"the {role} you gave"

    def the(self, role: str) -> str:
        """ "the model of wl.py", or "the model you gave (MLP)" for objects."""
        if self.path is not None:
            return f"the {role} of {self.path.name}"
        return f"the {role} you gave" + (f" ({self.name})" if role == "model" else "")

    def where(self) -> str:
        return self.path.name if self.path is not None else f"the {self.name} you gave"

    @contextlib.contextmanager
    def user_code(self, what: str) -> Iterator[None]:
        try:
            yield
        except LrbsError:
            raise
        except (Exception, SystemExit) as exc:  # never KeyboardInterrupt: that is the user's
            raise self.error(exc, what) from None

    def error(self, exc: BaseException, what: str = "the workload") -> WorkloadError:
        """`exc`, raised in the user's code, as one line naming their file and line, with
        their traceback lines (only theirs)."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if self.owns(f.filename)]
        kind = type(exc).__name__
        tail = f"{kind}: {exc}"
        if isinstance(exc, SystemExit):
            code = "" if exc.code is None else repr(exc.code)
            tail = f"it called sys.exit({code}); a workload returns or raises, it never exits"
        if frames:
            last = frames[-1]
            where = f"{Path(last.filename).name}, line {last.lineno}"
            text = "".join(traceback.format_list(frames)) + tail + "\n"
            return WorkloadError(f"{what} failed in {where}: {tail}", text)
        return WorkloadError(f"{what} of {self.where()} failed: {tail}", tail + "\n")

    @staticmethod
    def the_output_error(exc: BaseException, who: str) -> WorkloadError | None:
        """Cross-entropy's "target out of bounds" (a class the model has no score for, met in
        training) as one clear line; None for any other error."""
        found = OUT_OF_BOUNDS.search(str(exc)) if isinstance(exc, IndexError) else None
        if found is None:
            return None
        return WorkloadError(
            f"{who}: a target is {found.group(1)}, a class the model has no output for "
            "(cross-entropy needs one score per class, targets 0..n_classes-1): widen the "
            "model's last layer or check the targets"
        )

    def owns(self, filename: str) -> bool:
        """Whether a traceback frame is the user's: their file, or (for objects) any code
        outside lrbs and the installed libraries."""
        if self.path is not None:
            return same_file(filename, self.path)
        p = Path(filename)
        return not (
            filename.startswith("<")
            or LRBS_ROOT in p.parents
            or STDLIB in p.parents
            or "site-packages" in p.parts
        )


def same_file(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def is_class_loss(loss) -> bool:
    return loss in CLASS_LOSSES or isinstance(loss, CLASS_LOSS_MODULES)


def is_point_loss(loss) -> bool:
    return loss in POINT_LOSSES or isinstance(loss, POINT_LOSS_MODULES)


def loss_name(loss) -> str:
    return getattr(loss, "__name__", type(loss).__name__)


def target_range(y: torch.Tensor, data, ignore: int) -> tuple[int, int]:
    """The smallest and largest class target (`ignore` left out): of every target for data
    held in memory, of this batch for streamed data (a later one is caught as it trains)."""
    ys = [data.y_train, data.y_val] if hasattr(data, "y_train") else [y]
    kept = [t[t != ignore] for t in ys]
    kept = [t for t in kept if t.numel()]
    if not kept:
        return 0, -1
    return min(int(t.min()) for t in kept), max(int(t.max()) for t in kept)


def require_module(model: Any, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise WorkloadError(f"{what} must be a torch nn.Module, got {describe(model)}")


def optimizer_like(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    """optimizer(params, lr) building `optimizer`'s twin over another copy of `model`'s
    parameters: its class, its groups (their rates scaled by lr / the first group's rate, so
    their ratios hold), its other hyperparameters and its state."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    groups = []
    for g in optimizer.param_groups:
        missing = [p for p in g["params"] if id(p) not in index]
        if missing:
            raise WorkloadError("the optimizer holds parameters that are not the model's")
        hyper = {k: v for k, v in g.items() if k != "params"}
        groups.append((hyper, [index[id(p)] for p in g["params"]]))
    state = copy.deepcopy(optimizer.state_dict())
    cls, defaults = type(optimizer), dict(optimizer.defaults)
    # defaults may hold keys the constructor does not take (AdamW's decoupled_weight_decay)
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        defaults = {k: v for k, v in defaults.items() if k in accepted}
    base = groups[0][0]["lr"] if groups else defaults.get("lr", 1.0)

    def make(params, lr: float) -> torch.optim.Optimizer:
        params = list(params)
        built = [
            {**hyper, "lr": hyper["lr"] * lr / base, "params": [params[i] for i in ids]}
            for hyper, ids in groups
        ]
        opt = cls(built, **{k: v for k, v in defaults.items() if k != "lr"}, lr=lr)
        opt.load_state_dict(state)
        for g, (hyper, _) in zip(opt.param_groups, groups, strict=True):
            g["lr"] = hyper["lr"] * lr / base
        return opt

    return make


# ---------------------------------------------------------------------------- from a file


def load_workload(path: str | os.PathLike) -> Workload:
    """Import a workload file afresh and check its shape (see the module's docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise WorkloadError(f"workload {path}: no such file")
    if p.is_dir():
        raise WorkloadError(f"workload {path} is a folder; give a .py file")
    if p.suffix != ".py":
        raise WorkloadError(f"workload {path} is not a Python file (.py)")
    p = p.resolve()
    name = f"lrbs_workload_{next(_LOADS)}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise WorkloadError(f"workload {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    folder = str(p.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its own helper modules beside it
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        text = "".join(traceback.format_exception_only(exc))
        raise WorkloadError(f"{p.name}, line {exc.lineno}: SyntaxError: {exc.msg}", text) from None
    except (Exception, SystemExit) as exc:  # KeyboardInterrupt stays the user's
        sys.modules.pop(name, None)
        stub = Workload(name=p.stem, model=object, data=object, path=p)
        raise stub.error(exc, "importing the workload") from None
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise WorkloadError(
            f"{p.name} defines no {' and no '.join(f + '()' for f in missing)}: a workload "
            "defines model() -> nn.Module and data() -> (train, val)"
        )
    for f in OPTIONAL:
        if hasattr(module, f) and not callable(getattr(module, f)):
            raise WorkloadError(f"{p.name}: {f} must be a function")
    return Workload(
        name=p.stem,
        model=module.model,
        data=module.data,
        loss=getattr(module, "loss", None),
        optimizer=getattr(module, "optimizer", None),
        metric=getattr(module, "metric", None),
        path=p,
    )


def workload_folder() -> Path | None:
    """The folder named by LRBS_WORKLOADS, if it is set and is a folder."""
    text = os.environ.get(ENV_FOLDER, "").strip()
    if not text:
        return None
    folder = Path(text).expanduser()
    return folder.resolve() if folder.is_dir() else None


def list_workloads(folder: str | os.PathLike | None) -> list[Path]:
    """The workload files (*.py, not _private ones) in `folder`, sorted by name; a link that
    leads out of the folder is not listed."""
    if folder is None or not Path(folder).is_dir():
        return []
    root = Path(folder).resolve()
    found = []
    for p in Path(folder).glob("*.py"):
        target = p.resolve()
        if p.name.startswith("_") or not target.is_file() or target.parent != root:
            continue
        found.append(target)
    return sorted(found)


def is_listed(path: str | os.PathLike, folder: str | os.PathLike | None) -> bool:
    """Whether `path` is one of the workloads listed in `folder` (links resolved: a path
    leading out of the folder is not)."""
    if folder is None:
        return False
    try:
        target = Path(path).expanduser().resolve()
    except OSError:
        return False
    return target in list_workloads(folder)


def check_listed(path: str | os.PathLike, folder: str | os.PathLike | None) -> Path:
    """`path` resolved, or a WorkloadError if it is not a workload listed in `folder`."""
    if folder is None:
        raise WorkloadError(
            f"no workload folder: start the app with {ENV_FOLDER}=<folder> to offer workloads"
        )
    if not is_listed(path, folder):
        raise WorkloadError(f"workload {path} is not one of the files in {folder}")
    return Path(path).expanduser().resolve()


def as_workload_error(exc: BaseException, workload: Workload | str | None) -> WorkloadError | None:
    """An exception a run raised from inside the user's code (a Workload, or a file's path),
    as a WorkloadError naming their file and line; None if none of its frames is theirs."""
    if workload is None or isinstance(exc, LrbsError):
        return None
    if not isinstance(workload, Workload):  # a path: read the traceback, import nothing
        p = Path(workload).expanduser()
        workload = Workload(name=p.stem, model=object, data=object, path=p.resolve())
    known = Workload.the_output_error(exc, f"training {workload.the('model')}")
    if known is not None:
        return known
    if not any(workload.owns(f.filename) for f in traceback.extract_tb(exc.__traceback__)):
        return None
    return workload.error(exc, "training")
