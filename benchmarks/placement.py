"""Expert placement and domain grouping (issue 11): inter-node all-to-all bytes, straggler factor
and decode step time of DeepSeek-V3 under a 4-domain routing workload.

DeepSeek-V3 decode, EP64 with DP attention (32 requests per rank, context 4096), routing
``domain_mixture`` (4 domains, overlap 0.3, skew 0.45; each MoE layer its own draw), flow backend,
on 8 HGX H200 nodes (``h200-hgx-8node``: DeepEP low-latency across nodes) and on one GB200 NVL72
rack (``gb200-nvl72``, 64 of its 72 GPUs: one NVLink domain, so nothing crosses a node and only
the straggler factor moves). Placements (``cosim.trace.placement``): contiguous, balanced (LPT,
EPLB without redundancy), eplb (EPLB with one redundant slot per rank: 64 replicas of the
hottest experts of each layer), locality (co-activated experts on one node), domain (each node group
the hot experts of its domains), with and without domain grouping (a rank's requests all of the
domain of its node). Prints a table and writes ``benchmarks/results/placement.json``.

    python benchmarks/placement.py [--quick]
    python benchmarks/placement.py --sensitivity   # how the reduction grows with domain specialization

``--sensitivity`` (seconds, no step simulation): the share of DeepSeek-V3's EP64 token
selections that cross the 8 HGX nodes, contiguous vs domain placement + grouping, for
``domain_mixture`` skews 0.45 / 1.0 / 1.5 and overlaps 0.3 / 0 (DeepEP low-latency sends every
selection on its own, so its inter-node bytes scale with these selections); writes
``benchmarks/results/placement_sensitivity.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cosim.engine.step import simulate_step
from cosim.engine.summary import moe_traffic_summary
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.topology import load_topology
from cosim.trace.builder import StepSpec
from cosim.trace.expert_routing import StepRouting, routing_model

OUT = Path(__file__).parent / "results" / "placement.json"
CONFIGS = (("contiguous", False), ("contiguous", True), ("balanced", False), ("eplb", False), ("locality", False),
           ("locality", True), ("domain", False), ("domain", True))


def sensitivity(console: Console, out: Path) -> int:
    """Inter-node selections of contiguous vs domain placement + grouping over skew x overlap."""
    import numpy as np

    from cosim.trace.moe_traffic import counts_from_choices

    num_experts, top_k, ep, layers = 256, 8, 64, (3, 10, 30)
    node = np.repeat(np.arange(8), 8)
    nodes = tuple(int(v) for v in node)

    def crossing(model, placement, grouping):
        shares = []
        for layer in layers:
            r = StepRouting(model=model, placement=placement, grouping=grouping)
            c = counts_from_choices(r.choices(layer, ep, 32, num_experts, top_k, source_node=nodes), num_experts, ep,
                                    node_of=node, owner=r.owner(layer, num_experts, top_k, ep, nodes))
            sel = np.asarray(c.selections)
            shares.append(float(sel[node[:, None] != node[None, :]].sum() / sel.sum()))
        return float(np.mean(shares))

    rows = []
    table = Table(title="DeepSeek-V3 EP64 on 8 nodes: share of selections crossing nodes (4 domains)")
    for col in ("skew", "overlap", "contiguous", "domain + grouping", "change"):
        table.add_column(col, justify="right")
    for skew in (0.45, 1.0, 1.5):
        for overlap in (0.3, 0.0):
            m = routing_model("domain_mixture", domains=4, overlap=overlap, skew=skew)
            a, b = crossing(m, "contiguous", False), crossing(m, "domain", True)
            rows.append({"skew": skew, "overlap": overlap, "contiguous": a, "domain_grouping": b, "change": b / a - 1})
            table.add_row(f"{skew:g}", f"{overlap:g}", f"{a:.3f}", f"{b:.3f}", f"{b / a - 1:+.1%}")
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "layers": list(layers)}, indent=1))
    console.print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Qwen3-30B-A3B EP16 on two HGX nodes instead (seconds)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--backend", choices=("flow", "packet"), default="flow",
                    help="network backend of the steps (packet: ns-3, minutes per step at EP64)")
    ap.add_argument("--configs", nargs="+", default=None, metavar="PLACEMENT[+grouping]",
                    help="only these placements, e.g. contiguous domain+grouping balanced")
    ap.add_argument("--sensitivity", action="store_true",
                    help="inter-node selections vs domain specialization (skew, overlap); seconds")
    args = ap.parse_args()
    console = Console()
    if args.sensitivity:
        return sensitivity(console, OUT.with_name("placement_sensitivity.json"))
    if args.quick:
        model, ep, cases = load_model("Qwen/Qwen3-30B-A3B"), 16, (("h200-hgx-2node", "h200_sxm"),)
    else:
        model, ep, cases = load_model("deepseek-ai/DeepSeek-V3"), 64, (("h200-hgx-8node", "h200_sxm"),
                                                                       ("gb200-nvl72", "gb200"))
    routing = routing_model("domain_mixture", domains=4, overlap=0.3)
    rows = []
    t_all = time.perf_counter()
    for topo_name, system in cases:
        topo = load_topology(topo_name)
        kernels = KernelTables.load(system, framework="trtllm")
        configs = CONFIGS if topo_name != "gb200-nvl72" else (("contiguous", False), ("balanced", False),
                                                              ("eplb", False), ("domain", True))
        if args.configs:
            wanted = {(c.split("+")[0], c.endswith("+grouping")) for c in args.configs}
            configs = tuple(c for c in configs if c in wanted)
        for placement, grouping in configs:
            redundant = ep if placement == "eplb" else 0  # EPLB: one replica slot more per rank
            spec = StepSpec(model, Parallelism(tp=ep, ep=ep, dp_attention=True, redundant_experts=redundant),
                            Precision.from_checkpoint(model, dispatch="fp8"), "generation", 32, prefix_tokens=4096,
                            redundant_experts=redundant,
                            routing=StepRouting(model=routing, placement=placement, grouping=grouping))
            t0 = time.perf_counter()
            res = simulate_step(spec, kernels, topo, args.backend)
            moe = moe_traffic_summary(res)
            inter = sum(o["inter_bytes"] for o in moe["by_op"].values())
            total = sum(o["inter_bytes"] + o["intra_bytes"] for o in moe["by_op"].values())
            rows.append({"topology": topo_name, "backend": args.backend, "placement": placement, "grouping": grouping,
                         "step_time_ms": res.step_time_s * 1e3, "inter_node_bytes": inter, "total_bytes": total,
                         "inter_fraction": inter / total if total else 0.0,
                         "straggler_factor": moe["straggler_factor"], "library": res.trace.metadata.get("moe_library"),
                         "wall_s": time.perf_counter() - t0})
            console.print(f"{topo_name} {placement}{' + grouping' if grouping else ''}: "
                          f"{rows[-1]['step_time_ms']:.2f} ms, {inter / 1e9:.3f} GB across nodes "
                          f"({rows[-1]['inter_fraction']:.1%}), straggler {rows[-1]['straggler_factor']:.3f} "
                          f"({rows[-1]['wall_s']:.0f} s)", highlight=False)
    table = Table(title=f"{model.name} decode EP{ep}, domain_mixture routing (4 domains, overlap 0.3), "
                        f"{args.backend} backend")
    for col in ("topology", "placement", "grouping", "step ms", "GB across nodes", "vs contiguous", "straggler"):
        table.add_column(col, justify="left" if col in ("topology", "placement", "grouping") else "right")
    for r in rows:
        base = next((b for b in rows if b["topology"] == r["topology"] and b["placement"] == "contiguous"
                     and not b["grouping"]), r)
        change = (r["inter_node_bytes"] / base["inter_node_bytes"] - 1) if base["inter_node_bytes"] else 0.0
        r["inter_vs_contiguous"] = change
        table.add_row(r["topology"], r["placement"], "yes" if r["grouping"] else "no", f"{r['step_time_ms']:.2f}",
                      f"{r['inter_node_bytes'] / 1e9:.3f}", f"{change:+.1%}", f"{r['straggler_factor']:.3f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"python": platform.python_version(), "platform": platform.platform()},
                                    "model": model.name, "ep": ep, "rows": rows,
                                    "wall_s": time.perf_counter() - t_all}, indent=1))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
