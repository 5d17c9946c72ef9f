"""The app's pages, in one list: app.py builds the navigation from it, home links to it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str
    concept: str  # the few sentences home shows


PAGES = [
    PageInfo(
        "pages/gd1d.py",
        "Gradient descent in 1-D",
        ":material/show_chart:",
        "Every learning-rate question starts here. Watch gradient descent step down a 1-D loss "
        "with a rate that is too small (it crawls), one that is good (it lands), and one that "
        "is too large (it overshoots further each step and diverges). On a quadratic the "
        "boundary is exact: GD converges if and only if lr < 2 / curvature.",
    ),
    PageInfo(
        "pages/lr.py",
        "Find the learning rate",
        ":material/search:",
        "The LR range test (Leslie Smith's LR finder): train briefly while the rate grows from "
        "1e-7 to 10 and read off where the loss falls fastest and where it blows up; zoom into "
        "the interesting decade with a finer second pass. Or sweep an exponential grid of "
        "rates, each trained from the same weights for the same wall-clock budget.",
    ),
    PageInfo(
        "pages/schedules.py",
        "LR schedules",
        ":material/timeline:",
        "A rate that changes as training goes: step, exponential and cosine decay, warm "
        "restarts, warm-up, Smith's cyclical rates and one-cycle with their bounds read off the "
        "range test, reduce-on-plateau, and hypergradient descent, whose rate learns itself. "
        "Preview every schedule's rate, then train them side by side from the same weights.",
    ),
    PageInfo(
        "pages/batch.py",
        "Batch size",
        ":material/stacks:",
        "Sweep batch sizes at equal wall-clock, epoch or update budgets from the same initial "
        "weights, and see the generalization gap. Check the linear scaling rule (batch x k, "
        "lr x k) against a fixed rate, and probe the largest batch that fits in memory.",
    ),
    PageInfo(
        "pages/bs_schedule.py",
        "Batch-size scheduling",
        ":material/trending_up:",
        "Don't decay the learning rate, increase the batch size (Smith et al. 2017): decay, "
        "growing batches, a hybrid and seed 004's on-plateau recipe side by side from the same "
        "weights, with the lr, batch and noise scale each one used, and the updates it cost.",
    ),
    PageInfo(
        "pages/noise.py",
        "Noise scale & critical batch",
        ":material/blur_on:",
        "Measure the gradient noise scale B_simple = tr(Σ)/|G|² while a model trains: it "
        "predicts the critical batch size, beyond which a bigger batch no longer buys fewer "
        "updates. Then check the prediction against steps-to-target at several batch sizes.",
    ),
    PageInfo(
        "pages/autotune.py",
        "Auto-tune",
        ":material/tune:",
        "Let Optuna search the learning rate and the batch size together (TPE sampling, median "
        "or Hyperband pruning), seeded from the range test and the largest batch that fits; "
        "watch trials arrive, see which parameter mattered, take the best. Workers on several "
        "machines can share one study through a database.",
    ),
    PageInfo(
        "pages/history.py",
        "Run history",
        ":material/history:",
        "Every run from every page and from the command line, kept in a SQLite file: filter, "
        "overlay curves of several runs, open, rename, annotate, delete, export as CSV.",
    ),
]
