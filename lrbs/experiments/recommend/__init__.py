"""Recommend: one learning rate and one batch size, with the evidence and its confidence.

The pipeline composes lrbs's methods (lrbs.methods, driven by lrbs.runs), each step streaming
on its own channels ("<step>/<channel>") so that the Result, the page and the run history all
rebuild every step from the same rows:

1. range      the range test over several seeds: each rule's suggestion, its spread;
2. sweep      a confirmation sweep at equal budget (stacked where it pays) over rates
              spanning the suggestions and a decade around them, repeated over seeds: the
              confirmed best rate and the band of rates within noise of it; the rules audited;
3. probe      the largest batch that fits (the memory probe), with its safety margin;
4. throughput seconds per step at each candidate batch (the series runner);
5. noise      B_simple at the confirmed rate (the gradient-noise meter);
6. confirm    the batch that minimises the estimated time to the target loss, the rate rescaled
              to it (linear for SGD up to B_crit, square root for Adam) and capped by the
              stability the range test and the sweep measured (cap_rate), one short run there;
              where the rate was carried to a longer planned training, a second run at the
              card's own rate and batch, HOLD_SAMPLES x a sweep run's samples, which must end
              below the sweep's best loss and still be falling (`held`).

A budget is a time: before the first step the pipeline times this model's updates at the base
batch (after the one-time costs of a process's first updates, `time_updates`) and plans each
step's seeds, rates and updates to it (`fit_effort`): lowered to fit, never below the floor a
meaningful answer needs, or raised to use it; the plan is a row of its own, on the card.

Steps to the target follow McCandlish et al. (2018): S(B) = S_min (1 + B_noise / B), with
S_min from the steps the best sweep run took at the base batch; time = S(B) x seconds per step.
A stop keeps every finished step; the card says which are missing.

The best rate depends on how long one trains (bench/RESULTS.md, section 8): for the planned
training (`train_epochs`, TRAIN_EPOCHS unless given; 0 asks for the sweep's own length) the
sweep trains each rate for that length when the budget allows it; when it does not, the sweep
trains as long as it can, scores every run at LAW_POINTS common checkpoints and carries the
confirmed rate to the planned length by the square-root rule (HORIZON_EXPONENT), or by the fall
the checkpoints measured where it is steeper (horizon_exponent), from the sweep's end or from
one epoch where the sweep was shorter (carried_from): lrbs.methods.horizon.

The modules: `plan` (the budget's plan and the settings), `rules` (the pure rules), `steps` and
`pipeline` (the steps and `run`), `result` (the evidence) and `card` (the Result: the card and
its texts). Their public names are all offered here.
"""

from __future__ import annotations

from lrbs.experiments.recommend.card import Result
from lrbs.experiments.recommend.pipeline import run
from lrbs.experiments.recommend.plan import (
    BLOCK_SECONDS,
    BUDGET_SECONDS,
    BUDGETS,
    CEILING,
    EFFORT,
    FILL,
    FLOOR,
    GROW_ORDER,
    HOLD_EVALUATIONS,
    HOLD_SAMPLES,
    LAW_POINTS,
    MAX_BLOCKS,
    MIN_BLOCKS,
    NOISE_MEASUREMENTS,
    SHRINK_ORDER,
    STABLE_WITHIN,
    THROUGHPUT_BATCHES,
    TIMING_SECONDS,
    TRAIN_EPOCHS,
    WARMUP_UPDATES,
    Config,
    Costs,
    Effort,
    estimated_seconds,
    fit_effort,
    measure_costs,
    noise_steps,
    per_update,
    plan_budget,
    time_updates,
)
from lrbs.experiments.recommend.result import Evidence
from lrbs.experiments.recommend.rules import (
    AUDIT_COLUMNS,
    CAP_NAMES,
    SCALING_RULE,
    Capped,
    Confirmed,
    Stability,
    audit,
    batch_choice,
    candidate_batches,
    cap_rate,
    confirm,
    loss_at,
    loss_table,
    optimizer_family,
    rescale,
    snippet,
    stability_of,
    sweep_grid,
)
from lrbs.experiments.recommend.steps import (
    SPANS,
    STEP_TITLES,
    STEPS,
    WEIGHTS,
    Stage,
    step_progress,
)
from lrbs.methods.horizon import (
    HORIZON_EXPONENT,
    carry_factor,
    checkpoint_bests,
    horizon_exponent,
    measured_exponent,
    refined_best,
)

KIND = "recommend"

__all__ = [
    "AUDIT_COLUMNS",
    "BLOCK_SECONDS",
    "BUDGETS",
    "BUDGET_SECONDS",
    "CAP_NAMES",
    "CEILING",
    "Capped",
    "Config",
    "Confirmed",
    "Costs",
    "EFFORT",
    "Effort",
    "Evidence",
    "FILL",
    "FLOOR",
    "GROW_ORDER",
    "HOLD_EVALUATIONS",
    "HOLD_SAMPLES",
    "HORIZON_EXPONENT",
    "KIND",
    "LAW_POINTS",
    "MAX_BLOCKS",
    "MIN_BLOCKS",
    "NOISE_MEASUREMENTS",
    "Result",
    "SCALING_RULE",
    "SHRINK_ORDER",
    "SPANS",
    "STABLE_WITHIN",
    "STEPS",
    "STEP_TITLES",
    "Stability",
    "Stage",
    "THROUGHPUT_BATCHES",
    "TIMING_SECONDS",
    "TRAIN_EPOCHS",
    "WARMUP_UPDATES",
    "WEIGHTS",
    "audit",
    "batch_choice",
    "candidate_batches",
    "cap_rate",
    "carry_factor",
    "checkpoint_bests",
    "confirm",
    "estimated_seconds",
    "fit_effort",
    "horizon_exponent",
    "loss_at",
    "loss_table",
    "measure_costs",
    "measured_exponent",
    "noise_steps",
    "optimizer_family",
    "per_update",
    "plan_budget",
    "refined_best",
    "rescale",
    "run",
    "snippet",
    "stability_of",
    "step_progress",
    "sweep_grid",
    "time_updates",
]
