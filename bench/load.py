"""8. A machine doing something else: `train` on MNIST-1D, batch 32, a 3 s budget, on the idle
machine and beside one busy process per core (spawned here, ended after), with torch's default
threads (`--threads torch`, lrbs before the thread choice) and with lrbs's choice (`auto`).
The updates each run made, and busy / idle per policy, measured in one process."""

from __future__ import annotations

import time

import torch

from lrbs.core import machine, threads
from lrbs.core.loop import Budget, OptimSpec, TrainConfig, train
from lrbs.core.machine import Meter
from lrbs.core.setup import Setup, load_tensors


def run(seconds: float = 3.0, batch: int = 32) -> list[dict]:
    setup = Setup()  # MNIST-1D, the default MLP
    data = load_tensors(setup)  # once: generating MNIST-1D takes seconds
    cfg = TrainConfig(batch_size=batch, budget=Budget(seconds=seconds), optim=OptimSpec("sgd", 0.1))
    default = torch.get_num_threads()

    def one(policy: str, load: str) -> dict:
        # the pieces `execute` puts together: the meter, the thread record, the loop
        meter = Meter()
        with threads.using(policy), threads.recording() as used:
            r = train(setup.fresh_model(data, 0), data, cfg)
        m = meter.finish(threads=max(used), timed=True)
        return {
            "load": load,
            "policy": policy,
            "threads": m.threads,
            "updates": r.steps,
            "other_cpu": m.other_cpu,
            "busy": m.busy,
        }

    train(setup.fresh_model(data, 0), data, TrainConfig(batch_size=batch, budget=Budget(steps=50)))
    rows = [one(p, "idle") for p in ("torch", "auto")]
    # detached spinners: this process's own children would count as its own CPU
    pids = machine.spin(machine.cores(), seconds=30)
    try:
        time.sleep(0.5)
        rows += [one(p, "busy") for p in ("torch", "auto")]
    finally:
        machine.unspin(pids)
    idle = {r["policy"]: r["updates"] for r in rows if r["load"] == "idle"}
    for r in rows:
        r["vs_idle"] = r["updates"] / idle[r["policy"]] if idle[r["policy"]] else None
        r["vs_idle_default"] = r["updates"] / idle["torch"] if idle["torch"] else None
        r["torch_default_threads"] = default
    return rows


def section() -> list[str]:
    from bench.run import table

    rows = run()
    return [
        "## 8. Beside one busy process per core",
        "",
        "`train` on MNIST-1D, batch 32, a 3 s budget, in one process: idle, then beside one "
        "spinning process per core (spawned by the benchmark), with torch's default threads "
        "and with lrbs's choice (timed per model and batch on the cores others leave free). "
        "'vs idle' is the updates against the same policy's idle run; 'other CPU' the cores' "
        "worth other processes used during the run (the run record's `machine.other_cpu`), "
        "'busy' the flag its --json carries. On a shared machine 'idle' is not truly idle.",
        "",
        table(
            rows,
            {
                "load": "machine",
                "policy": "threads",
                "threads": "threads used",
                "updates": "updates",
                "vs_idle": "vs idle",
                "vs_idle_default": "vs idle (default threads)",
                "other_cpu": "other CPU",
                "busy": "busy",
            },
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
