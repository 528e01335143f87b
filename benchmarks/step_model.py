"""Accuracy and speed of the StepTimeModel on a realistic deployment.

DeepSeek-V3, EP16 with DP attention (FP8 dispatch, DeepEP low-latency) on two H200 HGX nodes
(``h200-hgx-2node``), flow backend, default :class:`StepGrid`. Measures and writes to JSON:

* cold fill: wall time of the grid simulation (one StepSimulator, network memo shared) and of
  the kernel-work tables;
* accuracy on **held-out** simulated steps (random, not grid points): decode steps with random
  batch (log-uniform 1..512) and context (log-uniform 1..131072), and mixed steps with random
  decode batch and context plus 1-4 prefill chunks (new tokens log-uniform 16..2048, prefixes
  0 or log-uniform up to 65536, at most 8192 tokens in all): relative error of the model against
  the direct simulation (same StepSimulator), median / p90 / max;
* warm query cost: single queries (``step_time``) and batch queries (``step_times``) per second;
* memory: saved JSON size, Python heap of a loaded model, save/load time.

    python benchmarks/step_model.py [--held-out 40] [--seed 0] [--out benchmarks/results/step_model.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cosim.engine.simulator import StepSimulator
from cosim.engine.step_model import StepGrid, StepTimeModel
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.topology import load_topology
from cosim.trace.builder import StepSpec


def log_uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def held_out_queries(rng: random.Random, n: int, grid: StepGrid):
    decode, mixed = [], []
    grid_points = {(b, c) for b in grid.decode_batches for c in grid.contexts}
    while len(decode) < n:
        q = (log_uniform_int(rng, 1, grid.decode_batches[-1]), log_uniform_int(rng, 1, grid.contexts[-1]))
        if q not in grid_points:
            decode.append(q)
    while len(mixed) < n:
        b = log_uniform_int(rng, 1, 256)
        c = log_uniform_int(rng, 1, 65536)
        chunks = []
        for _ in range(rng.randint(1, 4)):
            new = log_uniform_int(rng, 16, 2048)
            prefix = 0 if rng.random() < 0.3 else log_uniform_int(rng, 16, 65536)
            chunks.append((prefix, new))
        if b + sum(nw for _, nw in chunks) <= grid.mixed_tokens[-1]:
            mixed.append((b, c, chunks))
    return decode, mixed


def error_stats(errors: list[float]) -> dict:
    e = np.abs(np.asarray(errors))
    return {"n": int(len(e)), "median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
            "max": float(e.max()), "mean_signed": float(np.mean(errors))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", type=int, default=40, help="held-out decode and mixed steps (each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/step_model.json")
    args = ap.parse_args()
    console = Console()

    model = load_model("deepseek-ai/DeepSeek-V3")
    topo = load_topology("h200-hgx-2node")
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    base = StepSpec(model, Parallelism(tp=16, ep=16, dp_attention=True),
                    Precision.from_checkpoint(model, dispatch="fp8"), "generation", 1)
    grid = StepGrid()
    sim = StepSimulator(kernels, topo, "flow")

    console.print(f"filling the grid: {grid.simulations} simulated steps ...")
    t0 = time.perf_counter()
    step_model = StepTimeModel.build(base, sim, grid)
    fill_wall = time.perf_counter() - t0
    fill = step_model.fill
    stats = sim.stats

    rng = random.Random(args.seed)
    decode_q, mixed_q = held_out_queries(rng, args.held_out, grid)
    rows = []
    t1 = time.perf_counter()
    for b, c in decode_q:
        direct = sim.simulate(step_model.spec_for(b, c)).step_time_s
        st = step_model.step_time(b, c)
        rows.append({"kind": "decode", "batch": b, "context": c, "chunks": [], "direct_s": direct,
                     "model_s": st.seconds, "source": st.source, "error": st.seconds / direct - 1})
    for b, c, chunks in mixed_q:
        direct = sim.simulate(step_model.spec_for(b, c, chunks)).step_time_s
        st = step_model.step_time(b, c, chunks)
        rows.append({"kind": "mixed", "batch": b, "context": c, "chunks": chunks, "direct_s": direct,
                     "model_s": st.seconds, "source": st.source, "error": st.seconds / direct - 1})
    held_wall = time.perf_counter() - t1
    accuracy = {kind: error_stats([r["error"] for r in rows if r["kind"] == kind]) for kind in ("decode", "mixed")}
    accuracy["all"] = error_stats([r["error"] for r in rows])

    # warm query speed
    qrng = np.random.default_rng(args.seed)
    nq = 200_000
    qb = np.exp(qrng.uniform(0, np.log(512), nq)).round().astype(int)
    qc = np.exp(qrng.uniform(0, np.log(131072), nq)).round().astype(int)
    singles = list(zip(qb.tolist(), qc.tolist()))
    t = time.perf_counter()
    for b, c in singles:
        step_model.step_time(b, c)
    single_decode_qps = nq / (time.perf_counter() - t)
    mixed_singles = [(b, c, ch) for b, c, ch in (mixed_q * (20_000 // len(mixed_q) + 1))[:20_000]]
    t = time.perf_counter()
    for b, c, ch in mixed_singles:
        step_model.step_time(b, c, ch)
    single_mixed_qps = len(mixed_singles) / (time.perf_counter() - t)
    t = time.perf_counter()
    step_model.step_times(qb, qc)
    batch_decode_qps = nq / (time.perf_counter() - t)
    k = 4
    mn = np.zeros((nq, k))
    mp = np.zeros((nq, k))
    nchunks = qrng.integers(1, k + 1, nq)
    for j in range(k):
        on = j < nchunks
        mn[:, j] = np.where(on, np.exp(qrng.uniform(np.log(16), np.log(1024), nq)).round(), 0)
        mp[:, j] = np.where(on, np.exp(qrng.uniform(0, np.log(65536), nq)).round(), 0)
    mb = np.minimum(qb, 256)
    t = time.perf_counter()
    step_model.step_times(mb, qc, mp, mn)
    batch_mixed_qps = nq / (time.perf_counter() - t)

    # memory, save / load
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        t = time.perf_counter()
        step_model.save(path)
        save_s = time.perf_counter() - t
        size = path.stat().st_size
        tracemalloc.start()
        t = time.perf_counter()
        loaded = StepTimeModel.load(path, base, kernels, topo, "flow")
        load_s = time.perf_counter() - t
        heap = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        same = all(loaded.step_time(b, c) == step_model.step_time(b, c) for b, c in singles[:1000])

    result = {
        "deployment": "DeepSeek-V3, tp=16 ep=16 dp_attention, fp8 dispatch, h200-hgx-2node, flow backend, trtllm "
                      "kernels (h200_sxm)",
        "grid": {"decode_batches": list(grid.decode_batches), "contexts": list(grid.contexts),
                 "mixed_tokens": list(grid.mixed_tokens), "work_per_octave": grid.work_per_octave},
        "fill": {"simulated_steps": fill.steps, "network_simulations": fill.network_simulations,
                 "simulate_wall_s": fill.simulate_wall_s, "work_tables_wall_s": fill.work_wall_s,
                 "total_wall_s": fill_wall, "memo_hit_rate": stats.hit_rate},
        "accuracy": accuracy,
        "held_out_wall_s": held_wall,
        "queries_per_s": {"single_decode": single_decode_qps, "single_mixed": single_mixed_qps,
                          "batch_decode": batch_decode_qps, "batch_mixed_4_chunks": batch_mixed_qps},
        "memory": {"saved_json_bytes": size, "loaded_model_heap_bytes": heap, "save_s": save_s, "load_s": load_s,
                   "reload_identical": same},
        "held_out": rows,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    table = Table(title="StepTimeModel on held-out simulated steps (|model / direct - 1|)")
    for col in ("steps", "n", "median", "p90", "max"):
        table.add_column(col, justify="right")
    for kind, a in accuracy.items():
        table.add_row(kind, str(a["n"]), f"{a['median']:.2%}", f"{a['p90']:.2%}", f"{a['max']:.2%}")
    console.print(table)
    console.print(f"cold fill: {fill.steps} steps, {fill.network_simulations} network simulations, "
                  f"{fill.simulate_wall_s:.1f} s simulating + {fill.work_wall_s:.1f} s kernel-work tables "
                  f"(memo hit rate {stats.hit_rate:.1%})")
    console.print(f"queries/s: single decode {single_decode_qps:,.0f}, single mixed {single_mixed_qps:,.0f}, "
                  f"batch decode {batch_decode_qps:,.0f}, batch mixed (<=4 chunks) {batch_mixed_qps:,.0f}")
    console.print(f"memory: JSON {size / 1e3:.0f} kB, loaded model {heap / 1e6:.1f} MB heap, save {save_s * 1e3:.0f} ms, "
                  f"load {load_s * 1e3:.0f} ms, reload identical: {same}")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
