"""What earlier runs in the run history found, for a later run to start from."""

from __future__ import annotations

RANGE_TEST_KIND = "lr-find"  # lrbs.experiments.lr_finder.KIND


def stored_range_test(
    store, dataset: str | None = None, model: str | None = None
) -> tuple[dict[str, float], int] | None:
    """(suggestions, run id) of the newest range test in a RunStore on this dataset and model
    that found a maximum usable rate, or None. Its suggestions are the record's
    results["suggestions"] (the last round's, the median over seeds)."""
    for run_id in store.ids([RANGE_TEST_KIND], dataset, model):
        found = (store.run(run_id).get("results") or {}).get("suggestions")
        if found and found.get("max_usable"):
            return found, run_id
    return None
