"""Expert placement and domain grouping in serving (issue 11): what each policy does to the
decode step, to TPOT and to tokens/s per GPU of a served workload.

Qwen3-30B-A3B aggregated on two HGX H200 nodes (``h200-hgx-2node``): one TP16/EP16 replica with
DP attention (16 attention ranks, 128 experts over 16 GPUs, DeepEP across the two nodes), chunked
prefill; the chat preset with 4 request domains of equal share, closed loop. The pool's
``routing:`` (a deployment field, docs/serving.md) is ``domain_mixture`` (4 domains, overlap 0.3)
under each placement policy (EPLB: 16 redundant experts, one more slot per GPU), with and
without domain grouping, against the default routing sample. Grouping is served twice: with
the least-loaded router (requests land regardless of their domain) and with the ``domain``
router (requests go to the ranks of their domain; its imbalance bound ``domain_slack`` 0.1, and
0 as ``domain:0``); ``serve`` re-prices the grouped step at the
purity the router achieved (``ServeResult.grouping``). For each: the decode step at 32 requests
per rank and 4.6k context (flow backend, with its inter-node MoE bytes and straggler factor, at
the purity of the final run), then the served run (TPOT p50/p90, TTFT p90, output tokens/s per
GPU). Step-time models are built per policy (the routing is part of their fingerprint). Prints a
table and writes ``benchmarks/results/placement_serving.json``.

    python benchmarks/placement_serving.py [--users 128] [--requests 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cosim.engine.step import simulate_step
from cosim.engine.summary import moe_traffic_summary
from cosim.kernels import KernelTables
from cosim.serving.deployment import deployment_from_dict, with_pool
from cosim.serving.run import serve
from cosim.serving.simulator import ServingOptions
from cosim.serving.workload import ClosedLoop, generate_requests, preset

OUT = Path(__file__).parent / "results" / "placement_serving.json"
ROUTING = "domain_mixture:domains=4,overlap=0.3"
#: (placement, grouping, router); None: the default routing sample
POLICIES = ((None, False, "least_loaded"), ("contiguous", False, "least_loaded"), ("balanced", False, "least_loaded"),
            ("eplb", False, "least_loaded"), ("locality", False, "least_loaded"), ("domain", False, "least_loaded"),
            ("domain", True, "least_loaded"), ("domain", True, "domain"), ("domain", True, "domain:0"))


def deployment(policy: str | None, grouping: bool):
    par = {"tp": 16, "ep": 16, "dp_attention": True, "redundant_experts": 16 if policy == "eplb" else 0}
    pool = {"name": "agg", "role": "mixed", "replicas": 1, "parallel": par,
            "batching": {"policy": "chunked_prefill", "token_budget": 2048, "max_batch": 32}}
    if policy is not None:
        pool["routing"] = {"model": ROUTING, "placement": policy, "grouping": grouping}
    return deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-2node", "pools": [pool]},
                                "placement_serving")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=128)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    console = Console()
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    wl = preset("chat").with_domains(4)
    reqs = generate_requests(wl.with_arrival(ClosedLoop(args.users)), num_requests=args.requests, seed=0)
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        for policy, grouping, router in POLICIES:
            dep = deployment(policy, grouping)
            t0 = time.perf_counter()
            name_, _, slack = router.partition(":")  # domain:0 = the domain router with domain_slack 0
            res = serve(dep, reqs, slo=wl.slo, cache_dir=cache, link_load=False, kernels=kernels,
                        options=ServingOptions(router=name_, domain_slack=float(slack) if slack else 0.1))
            g = res.grouping.get("agg", {})
            if g.get("rerun"):  # the step at the purity the final run assumed
                dep = with_pool(dep, "agg", routing=dataclasses.replace(dep.pools[0].routing,
                                                                         grouping_purity=g["rerun_assumed"]))
            spec = dataclasses.replace(dep.step_spec(dep.pools[0]), batch_per_rank=32, prefix_tokens=4608)
            step = simulate_step(spec, kernels, dep.topology, "flow")
            moe = moe_traffic_summary(step)
            inter = sum(o["inter_bytes"] for o in moe["by_op"].values())
            s = res.summary
            name = "default sample" if policy is None else policy + (f" + grouping ({router} router)" if grouping
                                                                     else "")
            purity = res.run.grouping_purity()
            rows.append({"policy": name, "routing": None if policy is None else ROUTING, "router": router,
                         "purity_measured": purity, "purity_assumed": g.get("rerun_assumed", g.get("assumed")),
                         "step_time_ms": step.step_time_s * 1e3, "inter_node_bytes": inter,
                         "straggler_factor": moe["straggler_factor"], "tpot_p50_ms": s.tpot.p50_s * 1e3,
                         "tpot_p90_ms": s.tpot.p90_s * 1e3, "ttft_p90_ms": s.ttft.p90_s * 1e3,
                         "tokens_per_s_per_gpu": s.output_tokens_per_s_per_gpu, "finished": s.finished,
                         "wall_s": time.perf_counter() - t0})
            r = rows[-1]
            console.print(f"{name}: purity {purity:.2f}, step {r['step_time_ms']:.2f} ms, {inter / 1e6:.1f} MB "
                          f"across nodes, straggler "
                          f"{r['straggler_factor']:.3f}; TPOT p50 {r['tpot_p50_ms']:.2f} ms, "
                          f"{r['tokens_per_s_per_gpu']:.0f} tok/s/GPU ({r['wall_s']:.0f} s)", highlight=False)
    base = next(r for r in rows if r["policy"] == "contiguous")
    table = Table(title=f"Qwen3-30B-A3B TP16/EP16 DP-attn on 2 HGX H200, chat, {args.users} users; routing {ROUTING}")
    for col in ("policy", "purity", "step ms", "MB across nodes", "vs contiguous", "straggler", "TPOT p50 ms",
                "TPOT p90 ms", "TTFT p90 ms", "tok/s/GPU"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in rows:
        r["inter_vs_contiguous"] = r["inter_node_bytes"] / base["inter_node_bytes"] - 1 if base["inter_node_bytes"] else 0
        table.add_row(r["policy"], f"{r['purity_measured']:.2f}", f"{r['step_time_ms']:.2f}", f"{r['inter_node_bytes'] / 1e6:.1f}",
                      f"{r['inter_vs_contiguous']:+.1%}", f"{r['straggler_factor']:.3f}", f"{r['tpot_p50_ms']:.2f}",
                      f"{r['tpot_p90_ms']:.2f}", f"{r['ttft_p90_ms']:.1f}", f"{r['tokens_per_s_per_gpu']:.0f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"python": platform.python_version(), "platform": platform.platform()},
                                    "users": args.users, "requests": args.requests, "rows": rows,
                                    "wall_s": time.perf_counter() - t_all}, indent=1))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
