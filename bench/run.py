"""`make bench`: every benchmark, side by side in one run, written to bench/RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

import torch

from bench import (
    cold_start,
    finder,
    load,
    loop,
    profile,
    sessions,
    stacked,
    streaming,
    workloads,
)
from lrbs.core.device import describe, pick_device

OUT = Path(__file__).resolve().parent / "RESULTS.md"


def table(rows: list[dict], columns: dict[str, str]) -> str:
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "---|" * len(columns)
    lines = [head, rule]
    for r in rows:
        cells = []
        for key in columns:
            v = r.get(key)
            if isinstance(v, float):
                cells.append(f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}")
            else:
                cells.append("—" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    quick = "--quick" in sys.argv
    reps = 3 if quick else 5
    device = describe(pick_device("auto"))
    parts = [
        "# lrbs benchmarks",
        "",
        f"Run {dt.datetime.now():%Y-%m-%d %H:%M} with `make bench` on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, device: {device.label()}. "
        "Every ratio compares two things measured in the same process, alternating, "
        f"{reps} timed rounds after a warm-up round; the median is reported. Absolute times "
        "are context only.",
        "",
    ]
    lp = []
    for name in ("fashion-mnist", "mnist1d"):
        for r in loop.run(name, repeats=reps):
            lp.append({"dataset": name, **r})
    worst_min = min(r["vs_minimal"] for r in lp)
    fast = ", ".join(f"{r['dataset']} B={r['batch']}" for r in lp if r["vs_dataloader"] >= 2)
    parts += [
        "## 1. Training-loop throughput (CPU)",
        "",
        "lrbs's `train` (events every 10 steps) against a minimal hand-written loop (tensors in "
        "memory, index slicing, zero_grad/backward/step) and a `DataLoader(TensorDataset)` "
        "loop; MLP 784/40-256-10, SGD, same steps. Ratios > 1 mean lrbs is faster.",
        "",
        table(
            lp,
            {
                "dataset": "data",
                "batch": "batch",
                "steps": "steps",
                "lrbs_s": "lrbs s",
                "minimal_s": "minimal s",
                "dataloader_s": "DataLoader s",
                "vs_minimal": "lrbs vs minimal",
                "vs_dataloader": "lrbs vs DataLoader",
            },
        ),
        "",
        f"Target ≥ 0.95× the minimal loop: {verdict(worst_min >= 0.95)} (worst {worst_min:.3f}; "
        f"{sum(r['vs_minimal'] >= 0.95 for r in lp)} of {len(lp)} rows reach it). Where it is "
        "missed the steps are short (MNIST-1D: 0.25 ms at batch 32) and the gap is what lrbs "
        "does that the minimal loop does not: reading the loss (summed on the device, one host "
        "read every 10 steps: measured 2-3 % of such a step; the minimal loop never looks at "
        "its loss), the budget, stop and divergence checks and the lr record (about 10 µs a "
        "step), and a fixed ~0.1 ms per run (generator, shuffles, the scoring subset); "
        "section 6 takes it apart. Rows move by a few % from run to run. "
        f"Target ≥ 2× the DataLoader loop: {verdict(min(r['vs_dataloader'] for r in lp) >= 2)} "
        f"({fast} reach it). Where the model's own compute dominates (Fashion-MNIST's "
        "784-256-10 MLP at small batches) no loop can be 2× faster than the DataLoader one.",
        "",
    ]
    fd = finder.run(repeats=reps)
    parts += [
        "## 2. LR range test against torch-lr-finder",
        "",
        "Same fresh model, 100 iterations from 1e-7 to 10, batch 64, SGD. torch-lr-finder is "
        "driven as its README shows (a DataLoader; its default 5x divergence stop); lrbs stops "
        "at 4x its best smoothed loss. Suggestions side by side (torch-lr-finder's is its "
        "plot's steepest gradient). Time ratio < 1 means lrbs is faster.",
        "",
        table(
            fd,
            {
                "dataset": "data",
                "lrbs_s": "lrbs s",
                "torch_lr_finder_s": "torch-lr-finder s",
                "time_ratio": "time ratio",
                "floor_ratio": "bare loop ratio",
                "lrbs_iterations": "lrbs its",
                "tlf_iterations": "tlf its",
                "lrbs_steep": "lrbs steep",
                "lrbs_valley": "lrbs valley",
                "lrbs_min_div10": "lrbs min/10",
                "tlf_steepest": "tlf steepest",
            },
        ),
        "",
        f"Target ≤ 0.5×: {verdict(max(r['time_ratio'] for r in fd) <= 0.5)}. 'Bare loop "
        "ratio' is the floor: the same number of training steps as lrbs ran, in a hand loop "
        "that records nothing, against torch-lr-finder. Both tests run the same "
        "forward/backward passes, which are most of the time at this model size; lrbs saves "
        "torch-lr-finder's DataLoader and state caching, not the compute, and a test that "
        "reads every loss, smooths it, checks its stop rule and steps a LambdaLR cannot reach "
        "0.5× where even the bare loop is near it. fastai's `lr_find` was not measured: fastai "
        "pulls in a large stack (spaCy, fastcore, ...) not worth installing for one number.",
        "",
    ]
    st = streaming.run(repeats=reps)
    parts += [
        "## 3. Streaming overhead",
        "",
        "A page-like run: training on a worker thread (`LiveRun`), events buffered, a reader "
        "copying the buffer and rebuilding the chart every second as the page's fragment "
        "does, against the same worker-thread run with no reader. MNIST-1D, 6000 steps "
        "(about 4 s, a short page run).",
        "",
        table(
            st,
            {
                "main_thread_s": "main thread s",
                "worker_no_consumer_s": "worker s",
                "streamed_s": "worker + reader s",
                "overhead": "overhead",
                "streamed_vs_main_thread": "vs main thread",
            },
        ),
        "",
        f"Target ≤ 1.10×: {verdict(st[0]['overhead'] <= 1.10)} (0.98 to 1.04 over the runs "
        "made while writing it; a reader rebuilds a 600-point chart in about 20 ms, once a "
        "second). An earlier version of this benchmark reported 1.09-1.22: its reader slept a "
        "full period before noticing the run had ended, so up to a second of idle polling was "
        "counted as overhead; it now waits on the run itself. The page still shows the "
        "finished result at its next one-second tick. Found on the way: a worker "
        "thread with torch's default 2 threads trained this model 2-3x slower than the main "
        "thread (a second OpenMP team); `LiveRun` now runs torch single-threaded on its worker "
        "(the 'vs main thread' column is that one thread against the main thread's two).",
        "",
    ]
    cs = cold_start.run(repeats=3)
    parts += [
        "## 4. Cold start",
        "",
        table(
            cs,
            {
                "first_http_s": "`streamlit run` → first HTTP 200 (s)",
                "first_render_s": "→ home page rendered in chromium (s)",
            },
        ),
        "",
    ]
    sk = stacked.run("mnist1d", "cpu", repeats=reps)
    sk += stacked.run("fashion-mnist", "cpu", repeats=reps, ks=(8,))
    k8 = [r for r in sk if r["k"] == 8]
    k8_text = ", ".join(f"{r['dataset']} {r['stacked_vs_one']:.1f}×" for r in k8)
    parts += [
        "## 5. K learning rates at once (`torch.func`), and the GPU",
        "",
        "`lrbs.core.stacked.train_stacked`: the K models stacked with `stack_module_state`, one "
        "vmapped `functional_call` forward for all and one backward of the summed losses "
        "(measured 1.5-2x faster per step on the CPU than `vmap(grad(...))`), torch's "
        "optimizer over the stacked parameters with each model's update scaled by its own "
        "rate. Against one run and K "
        "runs in a row of the training loop; MLP, batch 128, 300 steps, SGD. Its curves equal "
        "the sequential sweep's within float tolerance (tests/test_stacked.py, every optimizer).",
        "",
        table(
            sk,
            {
                "dataset": "data",
                "device": "device",
                "k": "K",
                "one_s": "one run s",
                "stacked_s": "K stacked s",
                "sequential_s": "K in a row s",
                "stacked_vs_one": "stacked / one",
                "speedup_vs_sequential": "in a row / stacked",
            },
        ),
        "",
        "Target (for a GPU) K = 8 in ≤ 2× the time of one: "
        f"{verdict(all(r['stacked_vs_one'] <= 2 for r in k8))} on this CPU "
        f"({k8_text}). On 2 CPU "
        "cores a small model's step is compute-bound: 8 stacked models do 8 models' "
        "arithmetic (a hand-batched matmul version measured no better), and vmap's "
        "dispatch costs on top, so stacking pays only from K ≈ 4 (see the last column). On a "
        "GPU one small step is mostly launch latency, which K models share: "
        "that is where `lr_sweep` stacks by itself (a CUDA device, a budget in steps/epochs/"
        "samples, a model without dropout); on the CPU `python -m lrbs lr-sweep --stacked yes` "
        "asks for it.",
        "",
    ]
    if torch.cuda.is_available():
        gpu = stacked.run("mnist1d", "cuda", repeats=reps)
        parts += [
            table(
                gpu,
                {
                    "k": "K",
                    "one_s": "one run s",
                    "stacked_s": "K stacked s",
                    "stacked_vs_one": "stacked / one",
                    "speedup_vs_sequential": "in a row / stacked",
                },
            ),
            "",
        ]
    else:
        parts.append(
            "No GPU on this machine, and none was lent to the sessions that wrote this: the "
            "GPU rows of sections 1-3 and the stacked sweep on a GPU are not measured. "
            "`make bench` on a machine with CUDA adds the stacked table for the GPU."
        )
    pr = profile.run(repeats=max(reps, 7))
    parts += [
        "",
        "## 6. Where the time goes (the targets not met)",
        "",
        "By ablation: from a bare hand loop, one thing lrbs does is added at a time; each "
        "variant timed side by side (alternating, medians), per step. MNIST-1D's MLP, where "
        "steps are shortest and so any overhead shows most.",
        "",
        table(pr, {"case": "case", "variant": "variant", "us_per_step": "µs per step"}),
        "",
        "The loop: of lrbs's extra ~15 µs a step, about half is summing the loss on the device "
        "for the events (one `add_` a step; reading it to the host every 10 steps adds ~1 µs), "
        "the rest the budget, stop and divergence checks and the lr record. The range test: "
        "the LambdaLR ramp and a host read every step (the smoothed loss drives the stop rule) "
        "are ~20 µs, the smoothing, events, state save/restore and the four suggestions at the "
        "end ~30 µs; torch-lr-finder's DataLoader (a per-sample `__getitem__` and a collate "
        "per batch) costs it ~300 µs a step. The bare loop alone is about half of "
        "torch-lr-finder's time, so a range test that records anything cannot be at 0.5×.",
    ]
    ss = sessions.run()
    parts += [
        "",
        "## 7. Many sessions, one server",
        "",
        "N browser tabs (each its own session, headless chromium) start the default range "
        "test at the same moment on a freshly started app; the time until the last tab shows "
        "its result, against one session's. Training runs in the server's worker processes "
        "(one per core), so a session's reruns never share the interpreter lock with "
        f"training. Goal: every session finishes, the last within 1.5 × N × (one session's "
        f"time) / cores: {verdict(all(r['met'] for r in ss))}.",
        "",
        table(
            ss,
            {
                "sessions": "sessions",
                "last_result_s": "last result s",
                "vs_one": "× one session",
                "goal_s": "goal s",
                "met": "met",
            },
        ),
    ]
    parts += ["", *workloads.section(repeats=reps)]
    parts += ["", *load.section()]
    OUT.write_text("\n".join(parts) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
