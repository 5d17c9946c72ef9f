"""Auto-tune's trials read back from its Optuna study: one row per trial, the curves the
trials reported, the best trial and the band near it, parameter importances, and the Result
(lrbs.experiments.autotune streams these rows; a study read from its storage gives the same)."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Protocol

import pandas as pd

from lrbs.core.spread import spread
from lrbs.runs import experiment

log = logging.getLogger(__name__)


class Space(Protocol):
    """What a trial's row needs of its search space: the options a trial may not suggest
    (only one given) are read from it."""

    optimizers: tuple[str, ...]
    warmups: tuple[float, ...]


TRIAL_COLUMNS = [
    "trial",
    "state",
    "status",
    "value",
    "lr",
    "batch_size",
    "lr_over_batch",
    "optimizer",
    "warmup_epochs",
    "epochs",
    "updates",
    "val_acc",
    "seconds",
    "note",
]
CURVE_COLUMNS = ["trial", "state", "step", "val_loss"]


def trial_row(t, space: Space) -> dict:
    """One trial as a row of the trials table (any state)."""
    p = t.params
    last = max(t.intermediate_values) if t.intermediate_values else None
    value = t.value
    if value is None and last is not None:  # a pruned trial: the last loss it reported
        value = t.intermediate_values[last]
    both = "lr" in p and "batch_size" in p
    return {
        "trial": t.number,
        "state": t.state.name.lower(),
        "status": t.user_attrs.get("status", t.state.name.lower()),
        "value": value,
        "lr": p.get("lr"),
        "batch_size": p.get("batch_size"),
        "lr_over_batch": p["lr"] / p["batch_size"] if both else None,
        "optimizer": p.get("optimizer", space.optimizers[0]),
        "warmup_epochs": p.get("warmup_epochs", space.warmups[0]),
        "epochs": t.user_attrs.get("epochs"),
        "updates": t.user_attrs.get("updates"),
        "val_acc": t.user_attrs.get("val_acc"),
        "seconds": t.duration.total_seconds() if t.duration else None,
        "note": t.user_attrs.get("message", ""),
    }


def curve_rows(t) -> list[dict]:
    """Every validation loss a trial reported: step (percent of its budget), value."""
    state = t.state.name.lower()
    return [
        {"trial": t.number, "state": state, "step": s, "val_loss": v}
        for s, v in sorted(t.intermediate_values.items())
    ]


def curves_frame(study) -> pd.DataFrame:
    """Every reported validation loss: trial, step (percent of budget or epoch), value."""
    rows = [r for t in study.get_trials(deepcopy=False) for r in curve_rows(t)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


@dataclass(frozen=True)
class Best:
    trial: int
    value: float
    lr: float
    batch_size: int
    optimizer: str
    warmup_epochs: float

    def as_dict(self) -> dict:
        return asdict(self)


def best(trials: pd.DataFrame) -> Best | None:
    done = trials[(trials.state == "complete") & trials.value.notna()]
    done = done[done.value.apply(math.isfinite)]
    if done.empty:
        return None
    r = done.loc[done.value.idxmin()]
    return Best(
        trial=int(r.trial),
        value=float(r.value),
        lr=float(r.lr),
        batch_size=int(r.batch_size),
        optimizer=str(r.optimizer),
        warmup_epochs=float(r.warmup_epochs),
    )


def near_best(trials: pd.DataFrame, tolerance: float = 0.01) -> pd.DataFrame:
    """Finished trials within `tolerance` (relative) of the best: often a band of rates and
    batches rather than one point (with lr/B roughly constant: the SGD noise scale)."""
    b = best(trials)
    if b is None:
        return trials.iloc[0:0]
    done = trials[(trials.state == "complete") & trials.value.notna()]
    return done[done.value <= b.value * (1 + tolerance)].sort_values("value")


def importances(study, min_trials: int = 5) -> dict[str, float] | None:
    """Optuna's parameter importances (its default evaluator), once there are enough finished
    trials; 1 = the parameter explains all of the variation in the objective."""
    import optuna

    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.COMPLETE and math.isfinite(t.value)
    ]
    if len(done) < min_trials:
        return None
    worst = max(t.value for t in done)

    def finite(t) -> float:  # diverged trials count as the worst finished one
        return t.value if t.value is not None and math.isfinite(t.value) else worst

    try:
        with warnings.catch_warnings():  # a note that low target values count as good
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study, target=finite)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        log.info("no importances yet: %s", exc)
        return None


@dataclass(frozen=True)
class Result(experiment.Result):
    """From the streamed rows: "study" (its name, storage, space), "workers" (one per worker
    process), "trials" (one per ended trial), "curves" (what trials reported) and
    "importances" (the latest parameter importances)."""

    @cached_property
    def study(self) -> dict:
        found = self.rows.get("study", [])
        return dict(found[0]) if found else {}

    def trials(self) -> pd.DataFrame:
        return self.frame("trials", TRIAL_COLUMNS).sort_values("trial", ignore_index=True)

    def curves(self) -> pd.DataFrame:
        return self.frame("curves", CURVE_COLUMNS)

    def best(self) -> Best | None:
        return best(self.trials())

    def near_best(self, tolerance: float = 0.01) -> pd.DataFrame:
        return near_best(self.trials(), tolerance)

    def band_text(self, tolerance: float = 0.01) -> str:
        """The trials within `tolerance` of the best, in words ('' for fewer than two)."""
        near = self.near_best(tolerance)
        if len(near) < 2:
            return ""
        return (
            f"{len(near)} trials within {tolerance:.0%} of the best: lr {near.lr.min():.3g} to "
            f"{near.lr.max():.3g}, batch {near.batch_size.min():,} to "
            f"{near.batch_size.max():,}, lr/B {near.lr_over_batch.min():.2g} to "
            f"{near.lr_over_batch.max():.2g}. A band rather than a point: the rate and the "
            "batch trade off through the noise scale lr/B."
        )

    def noise_text(self) -> str:
        """How far the best's score can be trusted: the spread of the trials that ran its very
        settings (a repeat), else a note that one score per setting carries the noise of a
        reseeded, re-timed run."""
        b = self.best()
        if b is None:
            return ""
        done = self.trials()
        done = done[(done.state == "complete") & done.value.notna()]
        same = done[
            (done.lr == b.lr)
            & (done.batch_size == b.batch_size)
            & (done.optimizer == b.optimizer)
            & (done.warmup_epochs == b.warmup_epochs)
        ]
        if len(same) > 1:
            return (
                f"The best settings ran {len(same)} times here: validation loss "
                f"{spread(same.value).text()}; trials closer than that are within noise."
            )
        return (
            "Each setting ran once: the same settings trained again (another study, another "
            "seed, another load on the machine under a time budget) score differently, e.g. "
            "1.09 in one study and 1.16 in the next. That is noise, not a better setting: "
            "trials whose scores differ by less than it are ties. To measure it, repeat the "
            "best with the LR sweep's repeats (seeds per rate)."
        )

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.trials().state.value_counts().items()}

    def planned_trials(self) -> int:
        """The trials this run's workers were given (0 before they start, or when watched)."""
        return sum(int(w["trials"]) for w in self.rows.get("workers", []))

    def importances(self) -> dict[str, float] | None:
        found = self.rows.get("importances", [])
        if not found:
            return None
        return {k: float(v) for k, v in found[-1].items() if v is not None and v == v}

    def summary(self) -> dict:
        b = self.best()
        out = {
            "dataset": self.study.get("dataset"),
            "model": self.study.get("model"),
            "study": self.study.get("study"),
            "storage": self.study.get("storage"),
            "trials": self.counts(),
            "workers": len(self.rows.get("workers", [])),
            "best": b.as_dict() if b else None,
            "status": self.status,
            "message": self.message,
        }
        if self.study.get("seeded_from"):
            out["seeded_from"] = self.study["seeded_from"]
        if b is not None:
            out |= {"lr": b.lr, "batch_size": b.batch_size, "val_loss": b.value}
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"trials": self.trials(), "curves": self.curves()}

    def report(self) -> str:
        s = self.study
        lines = []
        if s.get("seeded_from"):
            batches = ", ".join(map(str, s.get("batches", [])))
            lines.append(
                f"search space from a range test: lr {s['lr_min']:.3g} to "
                f"{s['lr_max']:.3g}, batches {batches}"
            )
        lines.append(self.trials().to_string(index=False))
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        lines.append(f"study {s.get('study')!r}: {counts}")
        b = self.best()
        if b is not None:
            lines.append(
                f"best: trial {b.trial}, lr {b.lr:.4g}, batch {b.batch_size}, "
                f"{b.optimizer}, val loss {b.value:.4f}"
            )
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)
