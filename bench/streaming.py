"""3. Streaming overhead: a page-like run (worker thread, events buffered, a reader redrawing
the chart every second as the page's fragment does) against the same run with no consumer."""

from __future__ import annotations

import pandas as pd

from bench.common import alternate, median, ratio
from lrbs import charts
from lrbs.core.data import DataSpec, TensorData, load
from lrbs.core.loop import EVENT_COLUMNS, Budget, OptimSpec, TrainConfig, train
from lrbs.core.models import ModelSpec, build_model
from lrbs.runs.live import LiveRun

REFRESH_SECONDS = 1.0  # as pages/common/live.py (not imported: bench stays UI-free)


def run(dataset: str = "mnist1d", steps: int = 6000, repeats: int = 3) -> list[dict]:
    arrays = load(DataSpec(dataset))
    data = TensorData.from_arrays(arrays, "cpu")
    cfg = TrainConfig(
        batch_size=128, budget=Budget(steps=steps), optim=OptimSpec("sgd", 0.1), log_every=10
    )

    def fresh():
        return build_model(ModelSpec("mlp"), arrays.input_shape, arrays.n_classes, 0)

    def work(emit, stop, progress):
        return train(fresh(), data, cfg, on_event=lambda e: emit("events", e.as_dict()), stop=stop)

    def main_thread():
        train(fresh(), data, cfg)

    def no_consumer():  # the same worker-thread run, its buffer never read
        LiveRun(work).start().join()

    def streamed(period: float = REFRESH_SECONDS):
        job = LiveRun(work)
        job.start()
        # as the page's fragment: every period, copy the buffer and rebuild the chart. The
        # wait is a join, so the measured time ends with the run, not at the next tick (an
        # earlier version of this benchmark counted up to a second of idle polling at the end
        # as "overhead")
        while not job.join(period):
            snap = job.snapshot()
            events = pd.DataFrame(snap.rows.get("events", []), columns=EVENT_COLUMNS)
            rows = events[events.kind == "train"]
            if not rows.empty:
                charts.runs_chart(rows, x="elapsed", y="loss").to_dict(validate=False)

    times = alternate(
        {"main": main_thread, "worker": no_consumer, "streamed": streamed}, repeats=repeats
    )
    return [
        {
            "dataset": dataset,
            "steps": steps,
            "main_thread_s": median(times["main"]),
            "worker_no_consumer_s": median(times["worker"]),
            "streamed_s": median(times["streamed"]),
            "overhead": 1 / ratio(times, "streamed", "worker"),
            "streamed_vs_main_thread": 1 / ratio(times, "streamed", "main"),
        }
    ]


if __name__ == "__main__":
    print(run())
