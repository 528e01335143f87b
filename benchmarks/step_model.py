"""Accuracy and speed of the StepTimeModel on realistic deployments.

Two deployments (``--deployment``; both by default, about 4 minutes on 2 cores), each with the
default :class:`StepGrid` and the flow backend:

* ``colocated``: DeepSeek-V3, EP16 with DP attention (FP8 dispatch, DeepEP low-latency) on two
  H200 HGX nodes (``h200-hgx-2node``), trtllm kernels (h200_sxm); decode and mixed steps.
* ``afd``: DeepSeek-V3, attention-FFN disaggregation 16 attention + 56 FFN GPUs, m = 2
  micro-batches, routed A2F, on ``gb200-nvl72``, gb200 kernels; decode steps only (the layout).

Measures and writes to JSON (one section per deployment):

* cold fill: wall time of the grid simulation (one StepSimulator, network memo shared) and of
  the kernel-work tables;
* accuracy on **held-out** simulated steps (random, not grid points): decode steps with random
  batch (log-uniform from the smallest grid batch to 512) and context (log-uniform 1..131072),
  and (colocated) mixed steps with random decode batch and context plus 1-4 prefill chunks (new
  tokens log-uniform 16..2048, prefixes 0 or log-uniform up to 65536, at most 8192 tokens in
  all): relative error of the model against the direct simulation (same StepSimulator),
  median / p90 / max;
* warm query cost: single queries (``step_time``) and batch queries (``step_times``) per second;
* memory: saved JSON size, Python heap of a loaded model, save/load time.

    python benchmarks/step_model.py [--deployment colocated|afd|all] [--held-out 40] [--seed 0]
                                    [--out benchmarks/results/step_model.json]

With one ``--deployment``, the other section of an existing ``--out`` file is kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from cosim.engine.simulator import StepSimulator
from cosim.engine.step_model import StepGrid, StepTimeModel
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.topology import load_topology
from cosim.trace.builder import AfdSpec, StepSpec


@dataclass(frozen=True)
class Deployment:
    """One benchmarked deployment: its base spec, kernels and topology, and whether mixed
    (chunked-prefill) steps are part of it."""

    description: str
    base: StepSpec
    kernels: object
    topology: object
    mixed: bool


DEPLOYMENTS: dict[str, Callable[[], Deployment]] = {}


def deployment(name: str):
    def register(fn):
        DEPLOYMENTS[name] = fn
        return fn
    return register


@deployment("colocated")
def _colocated() -> Deployment:
    model = load_model("deepseek-ai/DeepSeek-V3")
    base = StepSpec(model, Parallelism(tp=16, ep=16, dp_attention=True),
                    Precision.from_checkpoint(model, dispatch="fp8"), "generation", 1)
    return Deployment("DeepSeek-V3, tp=16 ep=16 dp_attention, fp8 dispatch, h200-hgx-2node, flow backend, trtllm "
                      "kernels (h200_sxm)", base, KernelTables.load("h200_sxm", framework="trtllm"),
                      load_topology("h200-hgx-2node"), mixed=True)


@deployment("afd")
def _afd() -> Deployment:
    model = load_model("deepseek-ai/DeepSeek-V3")
    base = StepSpec(model, Parallelism(tp=1), Precision.from_checkpoint(model, dispatch="fp8"), "generation", 2,
                    layout="afd", afd=AfdSpec(16, 56, micro_batches=2))
    return Deployment("DeepSeek-V3, AFD 16 attention + 56 FFN GPUs, m=2 micro-batches, routed A2F, fp8, "
                      "gb200-nvl72, flow backend, gb200 kernels", base, KernelTables.load("gb200"),
                      load_topology("gb200-nvl72"), mixed=False)


def log_uniform_int(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def held_out_queries(rng: random.Random, n: int, grid: StepGrid, min_batch: int, mixed: bool):
    decode, mixed_q = [], []
    grid_points = {(b, c) for b in grid.decode_batches for c in grid.contexts}
    while len(decode) < n:
        q = (log_uniform_int(rng, min_batch, grid.decode_batches[-1]), log_uniform_int(rng, 1, grid.contexts[-1]))
        if q not in grid_points:
            decode.append(q)
    while mixed and len(mixed_q) < n:
        b = log_uniform_int(rng, 1, 256)
        c = log_uniform_int(rng, 1, 65536)
        chunks = []
        for _ in range(rng.randint(1, 4)):
            new = log_uniform_int(rng, 16, 2048)
            prefix = 0 if rng.random() < 0.3 else log_uniform_int(rng, 16, 65536)
            chunks.append((prefix, new))
        if b + sum(nw for _, nw in chunks) <= grid.mixed_tokens[-1]:
            mixed_q.append((b, c, chunks))
    return decode, mixed_q


def error_stats(errors: list[float]) -> dict:
    e = np.abs(np.asarray(errors))
    return {"n": int(len(e)), "median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
            "max": float(e.max()), "mean_signed": float(np.mean(errors))}


def measure(dep: Deployment, held_out: int, seed: int, console: Console) -> dict:
    """Fill, held-out accuracy, query speed and memory of one deployment's StepTimeModel."""
    base, kernels, topo = dep.base, dep.kernels, dep.topology
    grid = StepGrid() if dep.mixed else StepGrid(mixed_tokens=())
    sim = StepSimulator(kernels, topo, "flow")

    console.print(f"[bold]{dep.description}[/]\nfilling the grid ...")
    t0 = time.perf_counter()
    step_model = StepTimeModel.build(base, sim, grid)
    fill_wall = time.perf_counter() - t0
    fill = step_model.fill
    stats = sim.stats
    grid = step_model.grid
    min_batch = step_model.min_batch

    rng = random.Random(seed)
    decode_q, mixed_q = held_out_queries(rng, held_out, grid, min_batch, dep.mixed)
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
    kinds = ("decode", "mixed") if dep.mixed else ("decode",)
    accuracy = {kind: error_stats([r["error"] for r in rows if r["kind"] == kind]) for kind in kinds}
    accuracy["all"] = error_stats([r["error"] for r in rows])

    # warm query speed
    qrng = np.random.default_rng(seed)
    nq = 200_000
    qb = np.exp(qrng.uniform(np.log(min_batch), np.log(512), nq)).round().astype(int)
    qc = np.exp(qrng.uniform(0, np.log(131072), nq)).round().astype(int)
    singles = list(zip(qb.tolist(), qc.tolist()))
    t = time.perf_counter()
    for b, c in singles:
        step_model.step_time(b, c)
    qps = {"single_decode": nq / (time.perf_counter() - t)}
    if dep.mixed:
        mixed_singles = [(b, c, ch) for b, c, ch in (mixed_q * (20_000 // len(mixed_q) + 1))[:20_000]]
        t = time.perf_counter()
        for b, c, ch in mixed_singles:
            step_model.step_time(b, c, ch)
        qps["single_mixed"] = len(mixed_singles) / (time.perf_counter() - t)
    t = time.perf_counter()
    step_model.step_times(qb, qc)
    qps["batch_decode"] = nq / (time.perf_counter() - t)
    if dep.mixed:
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
        qps["batch_mixed_4_chunks"] = nq / (time.perf_counter() - t)

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
        "deployment": dep.description,
        "method": step_model.method,
        "grid": {"decode_batches": list(grid.decode_batches), "contexts": list(grid.contexts),
                 "mixed_tokens": list(grid.mixed_tokens), "work_per_octave": grid.work_per_octave},
        "fill": {"simulated_steps": fill.steps, "network_simulations": fill.network_simulations,
                 "simulate_wall_s": fill.simulate_wall_s, "work_tables_wall_s": fill.work_wall_s,
                 "total_wall_s": fill_wall, "memo_hit_rate": stats.hit_rate},
        "accuracy": accuracy,
        "held_out_wall_s": held_wall,
        "queries_per_s": qps,
        "memory": {"saved_json_bytes": size, "loaded_model_heap_bytes": heap, "save_s": save_s, "load_s": load_s,
                   "reload_identical": same},
        "held_out": rows,
    }

    table = Table(title=f"StepTimeModel ({step_model.method}) on held-out simulated steps (|model / direct - 1|)")
    for col in ("steps", "n", "median", "p90", "max"):
        table.add_column(col, justify="right")
    for kind, a in accuracy.items():
        table.add_row(kind, str(a["n"]), f"{a['median']:.2%}", f"{a['p90']:.2%}", f"{a['max']:.2%}")
    console.print(table)
    console.print(f"cold fill: {fill.steps} steps, {fill.network_simulations} network simulations, "
                  f"{fill.simulate_wall_s:.1f} s simulating + {fill.work_wall_s:.1f} s kernel-work tables "
                  f"(memo hit rate {stats.hit_rate:.1%})")
    console.print("queries/s: " + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in qps.items()))
    console.print(f"memory: JSON {size / 1e3:.0f} kB, loaded model {heap / 1e6:.1f} MB heap, save {save_s * 1e3:.0f} ms, "
                  f"load {load_s * 1e3:.0f} ms, reload identical: {same}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deployment", choices=[*DEPLOYMENTS, "all"], default="all")
    ap.add_argument("--held-out", type=int, default=40, help="held-out decode (and mixed) steps, each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/step_model.json")
    args = ap.parse_args()
    console = Console()
    out = Path(args.out)
    result = {}
    if args.deployment != "all" and out.exists():
        result = {k: v for k, v in json.loads(out.read_text()).items() if k in DEPLOYMENTS}
    names = list(DEPLOYMENTS) if args.deployment == "all" else [args.deployment]
    for name in names:
        result[name] = measure(DEPLOYMENTS[name](), args.held_out, args.seed, console)
    result = {k: result[k] for k in DEPLOYMENTS if k in result}
    result["machine"] = {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
