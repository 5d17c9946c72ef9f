"""Recommend's evidence, every step rebuilt from its channels: the range tests, the sweep and
its verdict, the probe, the throughput, the noise scale, the batch and rate they choose, the
runs at the chosen batch. The card and its texts are `card.Result`, built on this."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from lrbs.experiments.recommend.plan import HOLD_SAMPLES, Effort
from lrbs.experiments.recommend.rules import (
    AUDIT_COLUMNS,
    SCALING_RULE,
    Capped,
    Confirmed,
    Stability,
    audit,
    batch_choice,
    cap_rate,
    confirm,
    loss_table,
    rescale,
    stability_of,
)
from lrbs.experiments.recommend.steps import STEPS
from lrbs.methods import horizon
from lrbs.methods.horizon import HORIZON_EXPONENT, checkpoint_bests, horizon_exponent
from lrbs.methods.suggestions import SUGGESTIONS
from lrbs.runs import experiment
from lrbs.runs.views import NoiseView, ProbeView, RangeView


@dataclass(frozen=True)
class Evidence(experiment.Result):
    """Every step rebuilt from its channels."""

    def sub(self, step: str) -> dict[str, list[dict]]:
        prefix = step + "/"
        return {k[len(prefix) :]: v for k, v in self.rows.items() if k.startswith(prefix)}

    @cached_property
    def step_status(self) -> dict[str, str]:
        return {r["step"]: r["status"] for r in self.rows.get("steps", [])}

    @cached_property
    def step_seconds(self) -> dict[str, float]:
        return {r["step"]: float(r["seconds"] or 0.0) for r in self.rows.get("steps", [])}

    def done(self, step: str) -> bool:
        return self.step_status.get(step) == "finished"

    @property
    def missing(self) -> list[str]:
        return [s for s in STEPS if not self.done(s)]

    @property
    def info(self) -> dict:
        return (self.rows.get("info") or [{}])[0]

    @property
    def budget_plan(self) -> dict:
        """The budget's plan (a row written before the first step; {} for older runs)."""
        return (self.rows.get("plan") or [{}])[0]

    def plan_text(self) -> str:
        """The budget's plan in a sentence: the measured update, what each step got."""
        p, e = self.budget_plan, self.effort
        if not p:
            return ""
        timed = ""
        if p.get("timed_updates"):
            timed = (
                f" (the median of {p['timed_updates']:,} timed after "
                f"{p.get('warmup_seconds') or 0.0:.2g} s of one-time warm-up)"
            )
        head = (
            f"{p['budget']} budget ({p['budget_seconds']:.0f} s): one update at batch "
            f"{self.config.batch_size} took {p['seconds_per_step'] * 1e3:.3g} ms{timed}, so "
            f"range test {e.range_seeds} seeds x {e.range_iterations} steps, sweep {e.rates} "
            f"rates x {e.sweep_seeds} seeds x {e.sweep_steps} updates, noise meter "
            f"{e.noise_steps} updates; estimated {p['estimated_seconds']:.0f} s"
        )
        if p.get("over_budget"):
            head += " (over the budget: these are the floors below which the answer means little)"
        elif p.get("shrunk"):
            head += " (shrunk to fit)"
        elif p.get("grown"):
            head += " (raised to use the budget)"
        load = p.get("load") or {}
        if p.get("machine_busy"):
            head += (
                f"; the machine was busy while it timed (other processes used "
                f"{load.get('other_cpu', 0.0):.1f} of its {load.get('cores')} cores): "
                "the timing, and so the plan, may be off"
            )
        return head

    @property
    def effort(self) -> Effort:
        """What the pipeline ran: its plan's effort, or the budget's for a run without one."""
        p = self.budget_plan
        if not p:
            return self.config.effort
        return Effort(**{k: p[k] for k in Effort.__dataclass_fields__})

    @property
    def horizon_steps(self) -> int:
        """The planned training in updates at the base batch: the sweep's own for none."""
        return int(self.budget_plan.get("horizon_steps") or self.effort.sweep_steps)

    @property
    def carried(self) -> bool:
        """Whether the rate is carried from a shorter sweep to the planned training."""
        return self.horizon_steps > self.effort.sweep_steps

    @property
    def optimizer(self) -> str:
        """The optimizer the runs used (a workload's own, where it brings one)."""
        return self.info.get("optimizer") or self.config.optim.name

    # ------------------------------------------------------------------ 1. the rate

    @cached_property
    def range_result(self) -> RangeView:
        return RangeView(self.config.range_test(self.effort), self.sub("range"))

    def suggestions(self) -> dict[str, float]:
        return self.range_result.suggestions() if self.range_result.rounds else {}

    def range_spread(self) -> pd.DataFrame:
        return self.range_result.spread() if self.range_result.rounds else pd.DataFrame()

    def sweep_runs(self) -> pd.DataFrame:
        cols = ["seed", "lr", "status", "train_loss", "val_loss", "val_acc", "steps", "seconds"]
        return self.frame("sweep/runs").reindex(columns=cols)

    def sweep_table(self) -> pd.DataFrame:
        """Per rate: mean and spread of the final validation loss over seeds, the band."""
        table = loss_table(self.sweep_runs())
        best = confirm(table)
        table["best"] = table.lr == (best.lr if best else None)
        table["in_band"] = (
            table.lr.between(best.band_lo, best.band_hi) if best else [False] * len(table)
        )
        return table

    @cached_property
    def confirmed(self) -> Confirmed | None:
        return confirm(loss_table(self.sweep_runs()))

    def sweep_curves(self) -> pd.DataFrame:
        """Every sweep run's evaluations: seed, lr, step, val_loss."""
        cols = ["seed", "lr", "step", "val_loss"]
        runs, events = self.frame("sweep/runs"), self.frame("sweep/events")
        if runs.empty or events.empty or "seed" not in events:
            return pd.DataFrame(columns=cols)
        ev = events[events.kind == "eval"].rename(columns={"run_id": "run", "lr": "run_lr"})
        return ev.merge(runs[["seed", "run", "lr"]], on=["seed", "run"])[cols]

    def checkpoints(self) -> pd.DataFrame:
        """The best rate at each checkpoint of the sweep (when the rate is carried)."""
        if not self.carried:
            return pd.DataFrame(columns=["step", "lr"])
        return checkpoint_bests(self.sweep_curves(), self.effort.sweep_steps)

    @cached_property
    def measured_exponent(self) -> float | None:
        """How the best rate moved over the sweep's checkpoints (when it is carried)."""
        return horizon.measured_exponent(self.checkpoints()) if self.carried else None

    @property
    def exponent(self) -> float:
        """The exponent the rate is carried by (horizon_exponent)."""
        return horizon_exponent(self.measured_exponent)

    @property
    def carry_factor(self) -> float:
        """What the confirmed rate is multiplied by for the planned training (1: swept at it)."""
        if not self.carried:
            return 1.0
        return horizon.carry_factor(self.carry_start, self.horizon_steps, self.exponent)

    @property
    def epoch_steps(self) -> float | None:
        """Updates of one epoch at the base batch (None without a planned training)."""
        epochs = self.budget_plan.get("train_epochs")
        return self.horizon_steps / epochs if epochs else None

    @property
    def carry_start(self) -> float:
        """Where the carry starts: the sweep's length, or one epoch (horizon.carried_from)."""
        return horizon.carried_from(self.effort.sweep_steps, self.horizon_steps, self.epoch_steps)

    def overfitting(self) -> tuple[float, float] | None:
        """(lowest, last) mean validation loss of the confirmed rate over the sweep's
        checkpoints, when the last lies above the lowest by more than the noise between seeds
        (or 2 %): the model overfits inside the sweep, and a longer training overfits more."""
        best = self.confirmed
        curves = self.sweep_curves() if self.carried and best is not None else None
        if curves is None or curves.empty:
            return None
        mine = curves[curves.lr == best.lr].copy()
        mine["val_loss"] = pd.to_numeric(mine.val_loss, errors="coerce")
        mean = mine.groupby("step").val_loss.mean().sort_index()
        if len(mean) < 3 or not np.isfinite(mean).all():
            return None
        low, last = float(mean.min()), float(mean.iloc[-1])
        return (low, last) if last > low + max(best.noise, 0.02 * low) else None

    def rule_name(self) -> str:
        if self.exponent == HORIZON_EXPONENT:
            return "the square-root rule"
        return "the fall the sweep measured, steeper than the square-root rule"

    def seed_bests(self) -> dict[int, float]:
        """Each seed's own best rate (lowest final validation loss among its runs)."""
        out = {}
        for seed, part in self.sweep_runs().groupby("seed"):
            table = loss_table(part)
            found = confirm(table)
            if found is not None:
                out[int(seed)] = found.lr
        return out

    def audit(self) -> pd.DataFrame:
        best = self.confirmed
        spread = self.range_spread()
        if best is None or spread.empty:
            return pd.DataFrame(columns=AUDIT_COLUMNS)
        names = {r.title: r.name for r in SUGGESTIONS}
        return audit(spread, names, loss_table(self.sweep_runs()), best)

    # ------------------------------------------------------------------ 2. the batch

    @cached_property
    def probe(self) -> ProbeView:
        return ProbeView(self.sub("probe"))

    def throughput(self) -> pd.DataFrame:
        """Per candidate batch: seconds per step, the median over its logging intervals (robust
        to the first steps' warm-up and to other work on the machine), and samples/s."""
        cols = ["batch", "steps", "seconds", "seconds_per_step", "samples_per_s"]
        runs = self.frame("throughput/runs")
        events = self.frame("throughput/events")
        if runs.empty or events.empty:
            return pd.DataFrame(columns=cols)
        out = []
        for _, r in runs.iterrows():
            ev = events[(events.run_id == r.run) & (events.kind == "train")]
            steps = np.diff(np.concatenate([[0], ev.step.to_numpy(float)]))
            secs = np.diff(np.concatenate([[0], ev.elapsed.to_numpy(float)]))
            per = secs[steps > 0] / steps[steps > 0]
            if len(per) == 0:
                continue
            sps = float(np.median(per[1:] if len(per) > 2 else per))
            b = int(r.batch)
            out.append(
                {
                    "batch": b,
                    "steps": int(r.steps),
                    "seconds": float(r.seconds),
                    "seconds_per_step": sps,
                    "samples_per_s": b / sps,
                }
            )
        return pd.DataFrame(out, columns=cols).sort_values("batch", ignore_index=True)

    @cached_property
    def noise_result(self) -> NoiseView:
        return NoiseView(self.sub("noise"))

    @property
    def b_simple(self) -> float:
        return self.noise_result.b_simple if self.rows.get("noise/rows") else math.nan

    def batch_table(self, swept: bool = False) -> pd.DataFrame:
        """Per candidate batch: measured throughput, estimated steps and seconds to the loss
        the base batch reaches in the planned training (`swept`: in the sweep's)."""
        t, best = self.throughput(), self.confirmed
        if t.empty or best is None:
            return pd.DataFrame()
        caps = [self.rate_at(int(b), carry=not swept) for b in t.batch]
        return batch_choice(
            t.batch,
            t.seconds_per_step,
            self.b_simple,
            self.config.batch_size,
            self.effort.sweep_steps if swept else self.horizon_steps,
            shortfall=[c.rule_lr / c.lr for c in caps],
        )

    @cached_property
    def stability(self) -> Stability:
        """What the range test and the sweep measured about stability (at the base batch)."""
        return stability_of(loss_table(self.sweep_runs()), self.suggestions().get("max_usable"))

    def rate_at(self, batch: int, carry: bool = True) -> Capped:
        """The confirmed rate carried to `batch` by the optimizer's rule (up to B_crit) and, with
        `carry`, to the planned training by the horizon rule; capped by the stability measured
        (cap_rate)."""
        best = self.confirmed
        scale = rescale(1.0, self.config.batch_size, batch, self.optimizer, self.b_simple)
        factor = self.carry_factor if carry else 1.0
        return cap_rate(best.lr * factor * scale, best.lr, scale, self.stability)

    def plan(self, swept: bool = False) -> dict:
        """The chosen batch, its rescaled (and capped) rate and the expected steps to the
        target. With `swept`, at the sweep's own length (the rate as confirmed, the loss the
        best sweep run reached): what the confirming run trains; else for the planned
        training."""
        table, best = self.batch_table(swept), self.confirmed
        row = table[table.best].iloc[0]
        batch = int(row.batch)
        return {
            "batch": batch,
            "lr": self.rate_at(batch, carry=not swept).lr,
            "expected_steps": float(row.steps_to_target),
            "target_loss": best.loss,
        }

    def final(self) -> dict:
        """The card's batch and rate: the chosen batch where the short run there reached the
        target, else the base batch; the rules that carried the rate there, the cap, and
        whether that very rate was trained at that batch."""
        base, best = self.config.batch_size, self.confirmed
        batch, steps = base, self.horizon_steps
        if self.confirm_run() and self.reached():  # also while the run at the card's rate trains
            plan = self.plan()
            batch, steps = plan["batch"], int(math.ceil(plan["expected_steps"]))
        capped = self.rate_at(batch)
        trained = (batch == base and not self.carried) or any(
            run.get("batch") == batch and math.isclose(run.get("lr", 0.0), capped.lr)
            for run in (self.confirm_run(), self.hold_run())
        )
        rules = ([SCALING_RULE[self.optimizer]] if batch != base else []) + (
            ["horizon"] if self.carried else []
        )
        k = capped.rule_lr / best.lr  # the rules' factor, before the cap
        band = [min(v * k, max(capped.cap, v)) for v in (best.band_lo, best.band_hi)]
        return {
            "batch": batch,
            "lr": capped.lr,
            "expected_steps": steps,
            "rate_rule": "+".join(rules) or "none",
            "rule_lr": capped.rule_lr,
            "cap": capped.cap,
            "capped_by": capped.capped_by,
            "caps": capped.caps,
            "band_at_batch": band,
            "band_rescaled": k != 1.0,
            "trained_at_batch": trained,
        }

    def confirm_run(self) -> dict:
        """The short run at the chosen batch and the swept rate (its `run` is "confirm")."""
        runs = [r for r in self.rows.get("confirm/runs") or [] if r.get("run") != "hold"]
        return runs[0] if runs else {}

    def hold_run(self) -> dict:
        """The run at the card's own rate and batch, where the rate was carried (else {})."""
        runs = [r for r in self.rows.get("confirm/runs") or [] if r.get("run") == "hold"]
        return runs[0] if runs else {}

    def hold_curve(self) -> pd.DataFrame:
        """That run's evaluations (step, val_loss)."""
        ev = self.frame("confirm/events")
        if ev.empty or "run_id" not in ev:
            return pd.DataFrame(columns=["step", "val_loss"])
        ev = ev[(ev.run_id == "hold") & (ev.kind == "eval")]
        return ev[["step", "val_loss"]].astype(float).sort_values("step", ignore_index=True)

    def held(self) -> tuple[bool, str] | None:
        """Whether the card's rate, trained at the card's batch for HOLD_SAMPLES x the sweep's
        samples, ended below the sweep's best loss (within its noise, or 2 %) and was still
        falling over its last third (its last loss no more than that noise above the loss a
        third from its end), and why; None where no such run was made."""
        run, best = self.hold_run(), self.confirmed
        if not run or best is None:
            return None
        what = (
            f"the card's rate, trained at batch {run['batch']} for {run.get('steps', 0):,} "
            f"updates ({HOLD_SAMPLES:g}x the sweep's samples)"
        )
        loss = run.get("val_loss")
        if run.get("status") == "diverged" or loss is None or not math.isfinite(loss):
            return False, what + " diverged"
        if run.get("status") == "stopped":
            return None
        slack = max(best.noise, 0.02 * best.loss)
        curve = self.hold_curve()
        late = curve[curve.step <= curve.step.max() * 2 / 3].val_loss
        before = float(late.iloc[-1]) if len(late) else math.inf
        text = f"{what}, ended at {loss:.4g} against the sweep's best {best.loss:.4g}"
        if loss > best.loss + slack:
            return False, text + ": it did not reach the sweep's best loss"
        if loss > before + slack:
            return False, text + f", but rose over its last third (from {before:.4g})"
        return True, text + " and still fell over its last third"

    def reached(self) -> bool | None:
        """Whether the short run at the chosen batch reached the target loss (within the
        sweep's noise, or 2 %)."""
        run = self.confirm_run()
        if not run:
            return None
        loss, target = run.get("val_loss"), run.get("target_loss")
        if loss is None or target is None or run.get("status") == "diverged":
            return False
        noise = self.confirmed.noise if self.confirmed else 0.0
        return bool(loss <= target + max(noise, 0.02 * target))
