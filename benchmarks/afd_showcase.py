"""AFD showcase: DeepSeek-V3.2 decode on a GB200 NVL72 rack and on a 128-GPU HGX B200 cluster,
attention-FFN disaggregated next to the colocated deployment on the same GPUs, both backends.

    python benchmarks/afd_showcase.py [--quick] [--no-packet] [--out benchmarks/results/afd_showcase.json]

Prints a table and writes JSON: step time, per-group busy/idle, A2F/F2A time and exposed part,
memory per group, tokens/s per GPU, and the wall time of every run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cosim.engine.step import simulate_step
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.report import step_summary
from cosim.topology import load_topology
from cosim.trace.builder import AfdSpec, StepSpec

MODEL = "deepseek-ai/DeepSeek-V3.2"
BATCH, CONTEXT = 64, 4096  # requests per attention instance (AFD) or per rank (colocated)


def cases(quick: bool):
    nvl = [("gb200-nvl72", "gb200", a, f, m, None) for a, f in ((8, 64), (16, 56)) for m in ((3,) if quick else (2, 3, 4))]
    # attention-heavier splits, towards the balance point of this attention-bound model
    nvl += [("gb200-nvl72", "gb200", a, f, 2, None) for a, f in ((36, 36), (48, 24), (56, 16))] if not quick else []
    # B200 cluster: attention on node 0 (8 GPUs), FFN on nodes 1-8 (64 GPUs over RDMA)
    b200 = [("b200-hgx-16node", "b200_sxm", 8, 64, m, tuple(range(72))) for m in ((3,) if quick else (2, 3, 4))]
    return nvl + b200


def run(backends, quick):
    model = load_model(MODEL)
    prec = Precision.from_checkpoint(model)
    rows = []
    kernels_cache, topo_cache = {}, {}
    for topo_name, system, n_a, n_f, m, gpus in cases(quick):
        topo = topo_cache.setdefault(topo_name, load_topology(topo_name))
        k = kernels_cache.setdefault(system, KernelTables.load(system, framework="trtllm"))
        afd = StepSpec(model, Parallelism(tp=1), prec, "generation", BATCH, prefix_tokens=CONTEXT, layout="afd",
                       afd=AfdSpec(n_a, n_f, micro_batches=m), gpus=gpus)
        # colocated on the same 72 GPUs: DP attention + EP72 with 32 redundant experts (EPLB: 288
        # slots, 4 per GPU), the same total requests (BATCH x n_A) spread over the 72 ranks
        # (rounded down); NVLink all-to-all inside the rack, DeepEP low-latency across B200 nodes.
        n = n_a + n_f
        colo = StepSpec(model, Parallelism(tp=n, ep=n, dp_attention=True), prec, "generation",
                        max(1, BATCH * n_a // n), prefix_tokens=CONTEXT, gpus=gpus, redundant_experts=32,
                        moe_library="nvlink_a2a" if topo_name.startswith("gb200") else "auto")
        for backend in backends:
            for label, spec in (("afd", afd), ("colocated", colo)):
                if label == "colocated" and m != (3 if quick else 2):
                    continue  # one colocated run per topology and split (the same for every split)
                t0 = time.perf_counter()
                r = simulate_step(spec, k, topo, backend)
                wall = time.perf_counter() - t0
                s = step_summary(r)
                s.update(topology=topo_name, layout=label, num_gpus=r.num_gpus, requests=r.tokens_per_step, attention_gpus=n_a if label == "afd" else None,
                         ffn_gpus=n_f if label == "afd" else None, micro_batches=m if label == "afd" else None,
                         backend=backend, run_wall_s=wall)
                rows.append(s)
                print(f"{topo_name} {label} {n_a}A+{n_f}F m={m} {backend}: {r.step_time_s * 1e3:.2f} ms, "
                      f"{r.tokens_per_s_per_gpu:.1f} tok/s/GPU, wall {wall:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "afd_showcase.json"))
    ap.add_argument("--quick", action="store_true", help="m = 3 only")
    ap.add_argument("--no-packet", action="store_true")
    args = ap.parse_args()
    rows = run(["flow"] if args.no_packet else ["flow", "packet"], args.quick)
    table = Table(title=f"{MODEL} decode, {BATCH} requests per attention instance, context {CONTEXT}")
    for col in ("topology", "deployment", "backend", "step", "tok/s/GPU", "attn busy/idle", "FFN busy/idle",
                "A2F / F2A (exposed on attention)", "mem attn / FFN", "wall"):
        table.add_column(col)
    for s in rows:
        g = s["groups"]
        if s["layout"] == "afd":
            a, f = g["attention"], g["ffn"]
            ex = a["exposed_comm_by_collective_s"]
            comm = (f"{a['comm_by_collective_s'].get('a2f', 0) * 1e3:.2f} / {a['comm_by_collective_s'].get('f2a', 0) * 1e3:.2f} ms"
                    f" ({(ex.get('a2f', 0) + ex.get('f2a', 0)) * 1e3:.2f} ms)")
            dep = f"AFD {s['attention_gpus']}A+{s['ffn_gpus']}F m={s['micro_batches']}"
            busy = (f"{a['busy_s'] * 1e3:.1f}/{a['idle_s'] * 1e3:.1f}", f"{f['busy_s'] * 1e3:.1f}/{f['idle_s'] * 1e3:.1f}")
            mem = f"{a['memory']['total_bytes'] / 2**30:.0f} / {f['memory']['total_bytes'] / 2**30:.0f} GiB"
        else:
            dep, busy, comm = f"colocated DP{s['num_gpus']} EP{s['num_gpus']} (+32 redundant)", ("-", "-"), "-"
            mem = f"{s['memory']['total_bytes'] / 2**30:.0f} GiB"
        table.add_row(s["topology"], dep, s["backend"], f"{s['step_time_s'] * 1e3:.2f} ms",
                      f"{s['tokens_per_s_per_gpu']:.0f}", busy[0], busy[1], comm, mem, f"{s['run_wall_s']:.1f} s")
    Console(width=200).print(table)
    Path(args.out).write_text(json.dumps({"model": MODEL, "batch": BATCH, "context": CONTEXT, "rows": rows},
                                         indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
