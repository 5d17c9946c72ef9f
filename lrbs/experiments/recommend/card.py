"""Recommend's Result: the evidence (`result.Evidence`) made a card: the confidence and why,
the card itself, its texts (the rate, the band, the horizon, the plan) and the report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrbs.experiments.recommend.result import Evidence
from lrbs.experiments.recommend.rules import CAP_NAMES, SCALING_RULE, snippet
from lrbs.experiments.recommend.steps import STEP_TITLES, STEPS


@dataclass(frozen=True)
class Result(Evidence):
    """Every step rebuilt from its channels; the card from the finished steps."""

    def rate_text(self) -> str:
        """How the card's rate came from the sweep: the rules, the cap, what decided."""
        f, best, base = self.final(), self.confirmed, self.config.batch_size
        out = f"confirmed {best.lr:.3g} at batch {base} by the sweep"
        if self.carried:
            out += f"; x{self.carry_factor:.3g} to the planned {self.horizon_steps:,} updates"
        if f["batch"] != base:
            rule = SCALING_RULE[self.optimizer]
            out += f"; rescaled to batch {f['batch']} by the {rule} rule"
        if f["rate_rule"] != "none":
            out += f": {f['rule_lr']:.3g}"
        if f["capped_by"]:
            out += f", capped at {f['cap']:.3g} by {CAP_NAMES[f['capped_by']]}"
            s = self.stability
            if f["capped_by"] == "sweep" and s.diverged is not None:
                out += f" at batch {base} ({s.diverged:.3g} diverged)"
            elif f["capped_by"] == "range_test" and s.max_usable is not None:
                out += f" ({s.max_usable:.3g} at batch {base}, scaled by the same rule)"
        elif f["rate_rule"] != "none":
            out += f", under the stability cap {f['cap']:.3g}"
        return out

    def band_text(self) -> str:
        """Both bands, each named by its batch: as swept, and where the card's batch differs
        or the rate was carried, as rescaled (and capped) there."""
        f, best, base = self.final(), self.confirmed, self.config.batch_size
        out = f"at batch {base}, as swept: {best.band_lo:.3g} to {best.band_hi:.3g}"
        if f["band_rescaled"]:
            lo, hi = f["band_at_batch"]
            how = "rescaled" if f["batch"] != base else "carried"
            cap = f", capped at {f['cap']:.3g}" if f["capped_by"] else ""
            out += f"; at batch {f['batch']}, {how}{cap}: {lo:.3g} to {hi:.3g}"
        return out

    # ------------------------------------------------------------------ 3. the card

    def confidence(self) -> tuple[str, list[str]]:
        """high / medium / low from the evidence, and why: each issue lowers it a level (one:
        medium, two or more: low); a best at the sweep's edge is low, and a band of a single
        swept rate (the grid too coarse to show a flat optimum) medium at most."""
        best = self.confirmed
        if best is None:
            return "low", ["no rate was confirmed"]
        f, base = self.final(), self.config.batch_size
        issues, notes, ceiling = [], [], 2
        if best.at_edge:
            issues.append("the best rate is at the edge of the sweep: the optimum may lie beyond")
            ceiling = 0
        seeds = self.seed_bests()
        if len(seeds) < 2:
            issues.append("one seed: the spread between seeds was not measured")
        else:
            off = [s for s, lr in seeds.items() if not best.band_lo <= lr <= best.band_hi]
            if off:
                issues.append(
                    f"seeds disagree: {len(off)} of {len(seeds)} put the best outside the band "
                    f"at batch {base}"
                )
            else:
                notes.append(
                    f"all {len(seeds)} seeds put their best inside the band at batch {base}"
                )
        where = "at the sweep's length, " if self.carried else ""
        if best.band_lo == best.band_hi:
            grid = np.sort(self.sweep_runs().lr.dropna().unique())
            step = f" (x{grid[1] / grid[0]:.3g} between rates)" if len(grid) > 1 else ""
            issues.append(
                f"{where}the band at batch {base} is one swept rate ({best.lr:.3g}): the grid"
                f"{step} is too coarse to show how flat the optimum is"
            )
            ceiling = min(ceiling, 1)
        else:
            notes.append(
                f"{where}at batch {base}, as swept, the band spans {best.band_width:.3g}x "
                f"({best.band_lo:.3g} to {best.band_hi:.3g})"
            )
        if self.carried:
            issues.append(
                f"the rate was swept at {self.effort.sweep_steps:,} updates and carried to the "
                f"planned {self.horizon_steps:,} by {self.rule_name()} "
                f"(x{self.carry_factor:.3g}), not swept at that length"
            )
            held = self.held()
            if held is not None:
                (notes if held[0] else issues).append(held[1])
            over = self.overfitting()
            if over is not None:
                issues.append(
                    f"the model overfits inside the sweep (the best rate's validation loss rose "
                    f"from {over[0]:.4g} to {over[1]:.4g}): a longer training overfits more "
                    "whatever its rate; keep the best checkpoint, or train shorter"
                )
        if f["batch"] != base:
            trained = (
                "one run of one seed there at the card's rate"
                if self.hold_run()
                else "one short run of one seed there reached the target"
            )
            issues.append(
                f"the rate was rescaled from batch {base} to batch {f['batch']} by the "
                f"{SCALING_RULE[self.optimizer]} rule: "
                + (
                    trained + ", the only check at that batch"
                    if f["trained_at_batch"]
                    else "that rate was not trained at that batch"
                )
            )
        if f["capped_by"]:
            issues.append(
                f"the rules' rate ({f['rule_lr']:.3g}) exceeds the stability measured: capped at "
                f"{f['cap']:.3g} by {CAP_NAMES[f['capped_by']]}"
            )
        reached = self.reached()
        if reached is False:
            issues.append("the short run at the chosen batch missed the target: batch kept at base")
        elif reached and f["batch"] == base:
            notes.append("the short run at the chosen batch reached the target")
        if "confirm" in self.missing:
            issues.append("the batch was not confirmed (missing: " + ", ".join(self.missing) + ")")
        if f["trained_at_batch"] and f["batch"] == base and not self.carried:
            notes.append(f"the rate was trained at batch {base} over every seed of the sweep")
        level = min(ceiling, max(0, 2 - len(issues)))
        return ("low", "medium", "high")[level], issues + notes

    def card(self) -> dict:
        """The answer, as far as the finished steps give it; `missing` names the others."""
        opt = self.config.optim
        name = self.optimizer
        out: dict = {
            "status": self.status,
            "message": self.message,
            "dataset": self.info.get("dataset"),
            "model": self.info.get("model"),
            "optimizer": name,
            "momentum": opt.momentum if name == "momentum" else None,
            "steps_done": [s for s in STEPS if self.done(s)],
            "missing": self.missing,
            "suggestions": self.suggestions(),
            "seconds": self.step_seconds,
            "plan": self.budget_plan,
            "train_epochs": self.config.train_epochs,
        }
        best = self.confirmed if self.done("sweep") else None
        base = self.config.batch_size
        out |= {"base_batch": base, "batch": base, "lr": None, "rule": SCALING_RULE[name]}
        if best is None:
            out["confidence"], out["confidence_reasons"] = "low", ["no rate was confirmed"]
            return out
        audit_ = self.audit()
        closest = audit_[audit_.closest]
        carry = self.carry_factor
        s = self.stability
        out |= {
            "base_lr": best.lr * carry,
            "swept_lr": best.lr,
            "band": [best.band_lo, best.band_hi],
            "band_batch": base,  # the batch the band was swept at
            "target_loss": best.loss,
            "loss_noise": best.noise,
            "closest_rule": str(closest.rule.iloc[0]) if not closest.empty else None,
            "audit": audit_.to_dict(orient="records"),
            # the best rate depends on how long one trains (bench/RESULTS.md, section 8): the
            # planned training's updates at the base batch, and those the sweep trained
            "horizon_steps": self.horizon_steps,
            "swept_steps": int(self.effort.sweep_steps),
            "horizon_rule": (
                {
                    "exponent": self.exponent,
                    "factor": carry,
                    "from_steps": self.carry_start,
                    "measured_exponent": self.measured_exponent,
                }
                if self.carried
                else None
            ),
            "stability": {
                "max_usable": s.max_usable,
                "smallest_diverged": s.diverged,
                "largest_stable": s.stable,
                "at_batch": base,
            },
        }
        if self.done("probe"):
            out |= {"largest_batch": self.probe.largest, "safe_batch": self.probe.safe}
        if self.done("noise"):
            out["b_simple"] = self.b_simple
        if self.done("throughput") and self.done("noise"):
            out["estimated_batch"] = self.plan()["batch"]
            if self.done("confirm"):
                out["confirm_val_loss"] = self.confirm_run().get("val_loss")
                hold, held = self.hold_run(), self.held()
                if hold:
                    out["hold"] = {
                        k: hold.get(k) for k in ("batch", "lr", "steps", "val_loss", "status")
                    } | {"held": held[0] if held else None, "text": held[1] if held else ""}
        out |= self.final()
        out["rate_text"] = self.rate_text()
        out["band_text"] = self.band_text()
        steps = out["expected_steps"]
        sched = "one-cycle" if self.optimizer in ("sgd", "momentum") else "warm-up + cosine"
        out["schedule"] = {
            "name": sched,
            "peak_lr": out["band_at_batch"][1],
            "total_steps": steps,
            "warmup_steps": max(1, steps // 20),
        }
        out["confidence"], out["confidence_reasons"] = self.confidence()
        out["snippet"] = snippet(out)
        return out

    def horizon_text(self) -> str:
        """For how long a training the rate holds, and how it got there."""
        h, planned, base = self.effort.sweep_steps, self.horizon_steps, self.config.batch_size
        if not self.budget_plan.get("horizon_steps"):
            return (
                f"confirmed for the sweep's own length, {h:,} updates at batch {base} (no "
                "planned training); the best rate depends on how long one trains: give yours "
                "(--train-epochs) to have it confirmed for that length"
            )
        if not self.carried:
            return f"swept at the planned training's length, {planned:,} updates at batch {base}"
        seen = self.measured_exponent
        inside = (
            f" (over the sweep's own checkpoints the best rate moved as t^{seen:.2f})"
            if seen is not None
            else ""
        )
        start = self.carry_start
        epoch = (
            f" from one epoch ({start:,.0f} updates: within the first epoch the best rate barely "
            "moves)"
            if start > h
            else ""
        )
        return (
            f"swept at {h:,} updates at batch {base} (the budget's longest) and carried to the "
            f"planned {planned:,}{epoch} by {self.rule_name()}, lr ~ t^{self.exponent:.2f}"
            f"{inside}: x{self.carry_factor:.3g}"
        )

    def explain(self) -> str:
        if self.stopped:
            return "stopped: missing " + ", ".join(self.missing)
        failed = [f"{s}: {v}" for s, v in self.step_status.items() if v.startswith("failed")]
        return "; ".join(failed)

    def status_text(self) -> str:
        """A stopped or failed run in a sentence: the steps that finished, those that did not
        (empty for a finished run)."""
        if self.status == "finished" and not self.missing:
            return ""
        done = [STEP_TITLES[s].lower() for s in STEPS if self.done(s)]
        rest = [
            f"{STEP_TITLES[s].lower()} ({self.step_status.get(s, 'not run')})" for s in self.missing
        ]
        head = f"{self.status.capitalize()} after {len(done)} of {len(STEPS)} steps"
        return (
            head
            + (": finished " + ", ".join(done) if done else ": none finished")
            + ("; not done: " + ", ".join(rest) if rest else "")
        )

    def summary(self) -> dict:
        return self.card()

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "sweep": self.sweep_table(),
            "audit": self.audit(),
            "range": self.range_result.points(),
            "sweep_runs": self.sweep_runs(),
            "checkpoints": self.checkpoints(),
            "batches": self.batch_table(),
            "probe": self.probe.tried(),
            "noise": self.noise_result.measurements(),
            "confirm": pd.DataFrame(self.rows.get("confirm/runs", [])),
        }

    def report(self) -> str:
        c = self.card()
        if c["lr"] is None:
            return f"{self.status}: no rate confirmed (missing: {', '.join(c['missing'])})"
        lines = [
            *([f"{self.status}: missing {', '.join(c['missing'])}"] if self.stopped else []),
            *([self.plan_text()] if self.budget_plan else []),
            f"lr {c['lr']:.3g} at batch {c['batch']} ({c['optimizer']}): {c['rate_text']}",
            f"band within noise {c['band_text']}",
            f"schedule: {c['schedule']['name']}, peak {c['schedule']['peak_lr']:.3g}, "
            f"{c['expected_steps']} steps to val loss {c['target_loss']:.4g}",
            self.horizon_text(),
            f"confidence: {c['confidence']} ({'; '.join(c['confidence_reasons'])})",
        ]
        if c["missing"]:
            lines.append("missing: " + ", ".join(c["missing"]))
        audit_ = self.audit()
        if not audit_.empty:
            lines.append(audit_.to_string(index=False))
        lines.append(c["snippet"])
        return "\n".join(lines)
