"""The LR x batch map's Result: from its streamed cells and curves, the map (mean and spread
over seeds per cell), the ridge of best rates, alpha, eps_opt(B), steps-to-target S(B) and
B_crit beside B_simple, with what the data do not support (lrbs.experiments.lr_batch_map
runs the cells)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd

from lrbs.core.errors import LrbsError
from lrbs.methods import critical_batch as cb
from lrbs.methods.noise import last_quarter
from lrbs.runs import experiment

CELL_COLUMNS = [
    *("cell", "batch", "lr", "seed", "status", "loss", "val_loss", "val_acc"),
    *("train_loss", "steps", "epochs", "seconds", "message"),
]
CURVE_COLUMNS = ["cell", "batch", "lr", "seed", "step", "samples", "loss"]


@dataclass(frozen=True)
class Result(experiment.Result):
    """From the streamed rows: "info", "noise" (the meter's measurements), "cells" (one per
    finished cell), "curves" (each cell's smoothed training loss), "timing"."""

    @cached_property
    def info(self) -> dict:
        return dict((self.rows.get("info") or [{}])[0])

    def cells(self) -> pd.DataFrame:
        d = self.frame("cells", CELL_COLUMNS)
        return d.sort_values(["batch", "lr", "seed"], ignore_index=True) if not d.empty else d

    def curves(self) -> pd.DataFrame:
        return self.frame("curves", CURVE_COLUMNS)

    @property
    def value_name(self) -> str:
        """What the map's `loss` column holds."""
        if self.config.budget == "target":
            return "updates to target"
        return "val loss" if self.config.metric == "val" else "train loss"

    def cell_means(self) -> pd.DataFrame:
        """Per (batch, rate): the mean and sd of the map's value over seeds, the seeds run,
        and how many diverged (or never reached the target); the map's picture."""
        cols = ["batch", "lr", "mean", "sd", "seeds", "diverged"]
        c = self.cells()
        if c.empty:
            return pd.DataFrame(columns=cols)
        c = c.assign(loss=pd.to_numeric(c.loss, errors="coerce"))
        g = c.groupby(["batch", "lr"])
        out = (
            g.loss.agg(mean="mean", sd="std")
            .join(g.size().rename("seeds"))
            .join(g.loss.apply(lambda v: int(v.isna().sum())).rename("diverged"))
        )
        return out.reset_index().reindex(columns=cols)

    @cached_property
    def ridge(self) -> pd.DataFrame:
        c = self.cells()
        if c.empty:
            return cb.ridge(pd.DataFrame(columns=["batch", "lr", "seed", "loss"]))
        return cb.ridge(c.assign(loss=pd.to_numeric(c.loss, errors="coerce")))

    @cached_property
    def alpha(self) -> cb.AlphaFit | None:
        fit = cb.fit_alpha(self.ridge)
        if fit is None or fit.points < 2:
            return fit
        c = self.cells()
        boot = cb.bootstrap_alpha(c.assign(loss=pd.to_numeric(c.loss, errors="coerce")), fit)
        if boot is not None:  # the wider of the two: a few seeds make a narrow bootstrap
            lo = boot[0] if not math.isfinite(fit.lo) else min(fit.lo, boot[0])
            hi = boot[1] if not math.isfinite(fit.hi) else max(fit.hi, boot[1])
            fit = replace(
                fit, lo=lo, hi=hi, method="95 %, the wider of regression and seed bootstrap"
            )
        return fit

    @cached_property
    def eps(self) -> cb.EpsFit | None:
        ok = self.ridge[self.ridge.status == "ok"]
        return cb.fit_eps_opt(ok.batch, ok.lr_opt) if not ok.empty else None

    @cached_property
    def target(self) -> float | None:
        """The steps-to-target's target: the configured one, else the highest of the batches'
        best final smoothed losses (so that every batch's best rate reached it)."""
        if self.config.target_loss is not None:
            return float(self.config.target_loss)
        cur = self.curves()
        if cur.empty:
            return None
        ends = cur.groupby(["batch", "lr", "seed"]).loss.last().groupby(["batch", "lr"]).mean()
        best = ends.groupby("batch").min()
        return float(best.max()) if best.notna().any() else None

    def steps_table(self) -> pd.DataFrame:
        """Per batch: steps-to-target at its fastest rate (seed mean), that rate, and S's
        spread over seeds; the fitted S(B) and the regime once fitted."""
        cols = ["batch", "lr", "steps", "steps_sd", "seeds_reached"]
        cur, target = self.curves(), self.target
        if cur.empty or target is None:
            return pd.DataFrame(columns=cols)
        per = (
            cur.groupby(["batch", "lr", "seed"])
            .apply(lambda g: cb.steps_to_target(g.step, g.loss, target), include_groups=False)
            .rename("s")
            .reset_index()
        )
        out = []
        for b, g in per.groupby("batch"):
            stats = g.groupby("lr").s.agg(mean="mean", sd="std", n="count", size="size")
            stats = stats[stats.n == stats["size"]]  # every seed reached the target
            if stats.empty:
                out.append(
                    {
                        "batch": b,
                        "lr": math.nan,
                        "steps": math.nan,
                        "steps_sd": math.nan,
                        "seeds_reached": 0,
                    }
                )
                continue
            lr = stats["mean"].idxmin()
            s = stats.loc[lr]
            out.append(
                {
                    "batch": b,
                    "lr": lr,
                    "steps": s["mean"],
                    "steps_sd": s["sd"],
                    "seeds_reached": int(s.n),
                }
            )
        return pd.DataFrame(out, columns=cols)

    @cached_property
    def steps_fit(self) -> cb.StepsFit | str:
        """The S(B) fit, or why there is none."""
        t = self.steps_table()
        try:
            return cb.fit_steps(t.batch, t.steps)
        except LrbsError as exc:
            return str(exc)

    @cached_property
    def b_simple(self) -> float:
        tail = last_quarter([r.get("b_simple") for r in self.rows.get("noise", [])])
        return tail[-1] if tail else math.nan

    @property
    def seconds(self) -> float:
        t = self.rows.get("timing")
        return float(t[-1]["seconds"]) if t else math.nan

    def warnings(self) -> list[str]:
        """What the data do not support, in words (a grid that misses the ridge, say)."""
        out = []
        r = self.ridge
        for _, row in r.iterrows():
            if row.status != "ok":
                out.append(f"B={row.batch}: every rate diverged; lower the grid for this batch")
            elif row.edge:
                side = "largest" if row.edge == "high" else "smallest"
                out.append(
                    f"B={row.batch}: the best rate ({row.lr_best:.3g}) is the {side} of its grid, "
                    f"so the ridge may lie beyond it: widen the grid (--decades) or move its "
                    "centre; this batch is left out of the fits"
                )
        c = self.cells()
        planned = self.info.get("cells")
        if planned and len(c) < planned:
            again = " (with the same --study to finish it)" if self.config.workers else ""
            out.append(
                f"{len(c)} of {planned} cells ran ({self.status}): the fits rest on those; "
                f"run the map again{again}"
            )
        if not c.empty and c.seed.nunique() < 2:
            out.append(
                "one seed: no spread over seeds, so the ridge's band is the best rate alone and "
                "alpha's interval comes from the regression"
            )
        diverged = int((c.status == "diverged").sum()) if not c.empty else 0
        if diverged:
            out.append(f"{diverged} cell(s) diverged (marked on the map)")
        a = self.alpha
        if a is None and not c.empty:
            out.append("no alpha: fewer than two batches have a best rate inside their grid")
        elif a is not None and a.points < 3:
            out.append(f"alpha rests on {a.points} batches only: no interval")
        if self.eps is not None and self.eps.note:
            out.append(f"eps_opt(B): {self.eps.note}")
        if isinstance(self.steps_fit, str) and not c.empty:
            out.append(f"no B_crit: {self.steps_fit}")
        return out

    def fitted_curves(self) -> pd.DataFrame:
        """The fitted lines over the batches: the power law, eps_opt(B), the rules from the
        smallest batch's ridge, and S(B)."""
        r = self.ridge[self.ridge.status == "ok"]
        if r.empty:
            return pd.DataFrame(columns=["batch", "curve", "lr", "steps"])
        bb = np.geomspace(r.batch.min(), r.batch.max(), 60)
        parts = []
        a = self.alpha
        if a is not None:
            inside = bb[(bb >= a.b_first) & (bb <= a.b_last)]
            parts.append(
                pd.DataFrame(
                    {"batch": inside, "curve": f"fit B^{a.alpha:.2f}", "lr": a.lr_at(inside)}
                )
            )
        if self.eps is not None:
            parts.append(
                pd.DataFrame({"batch": bb, "curve": "eps_opt(B)", "lr": self.eps.lr_at(bb)})
            )
        first = r.iloc[0]
        for rule, alpha in cb.RULE_ALPHAS.items():
            parts.append(
                pd.DataFrame(
                    {
                        "batch": bb,
                        "curve": f"{rule} rule (alpha {alpha:g})",
                        "lr": first.lr_opt * (bb / first.batch) ** alpha,
                    }
                )
            )
        fit = self.steps_fit
        if isinstance(fit, cb.StepsFit):
            parts.append(
                pd.DataFrame({"batch": bb, "curve": "S(B) fit", "steps": fit.steps_at(bb)})
            )
        return pd.concat(parts, ignore_index=True).reindex(
            columns=["batch", "curve", "lr", "steps"]
        )

    def summary(self) -> dict:
        a, e, s = self.alpha, self.eps, self.steps_fit
        b_crit = s.b_crit if isinstance(s, cb.StepsFit) else None
        out = {
            **{k: self.info.get(k) for k in ("dataset", "model", "optimizer", "n_train")},
            "cells": len(self.cells()),
            "planned_cells": self.info.get("cells"),
            "budget": self.config.describe_budget(),
            "alpha": a.alpha if a else None,
            "alpha_lo": a.lo if a else None,
            "alpha_hi": a.hi if a else None,
            "alpha_interval": a.method if a else None,
            "alpha_batches": [a.b_first, a.b_last] if a else None,
            "alpha_rule": a.nearest_rule() if a else None,
            "bend": a.bend if a else None,
            "eps_max": e.eps_max if e else None,
            "b_noise": e.b_noise if e else None,
            "target_loss": self.target,
            "s_min": s.s_min if isinstance(s, cb.StepsFit) else None,
            "b_crit": b_crit,
            "b_simple": self.b_simple,
            "b_crit_vs_b_simple": cb.agreement(b_crit or math.nan, self.b_simple),
            "seconds": self.seconds,
            "warnings": self.warnings(),
            "status": self.status,
            "message": self.message,
        }
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "cells": self.cells(),
            "ridge": self.ridge,
            "steps": self.steps_table(),
            "fits": self.fitted_curves(),
            "curves": self.curves(),
            "noise": self.frame("noise"),
        }

    def report(self) -> str:
        s = self.summary()
        lines = [self.ridge.to_string(index=False)]
        a = self.alpha
        if a is not None:
            lines.append(
                f"alpha = {a.alpha:.3f} [{a.lo:.3f}, {a.hi:.3f}] ({a.method}) over B = "
                f"{a.b_first}..{a.b_last}: {a.nearest_rule()}"
                + (f"; the ridge bends at B = {a.bend}" if a.bend else "")
            )
        if self.eps is not None:
            lines.append(
                f"eps_opt(B): eps_max = {self.eps.eps_max:.3g}, B_noise = {self.eps.b_noise:,.0f}"
            )
        if s["b_crit"] is not None:
            lines.append(
                f"steps to loss {s['target_loss']:.3g}: S_min = {s['s_min']:,.0f}, B_crit = "
                f"{s['b_crit']:,.0f}; B_simple = {self.b_simple:,.0f}: {s['b_crit_vs_b_simple']}"
            )
        lines += [f"warning: {w}" for w in s["warnings"]]
        lines.append(f"{s['cells']} cells in {self.seconds:.1f} s ({self.status})")
        return "\n".join(lines)
