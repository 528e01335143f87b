"""Speed of the two network backends on all-to-all (1 MiB per ordered pair, MTU 4096).

For N = 8, 16, 32, 64 GPUs on (a) one non-blocking 400 Gb/s switch and (b) HGX H100 clusters
(8 GPUs per node, NVLink + 400 Gb/s rail-optimized fabric), prints and writes to JSON:
packet-level hop-packets per second (frame transmissions over all links per second of ns-3
engine time), flow-level flows per second, the ratio of the two backends' simulate() wall times
and the packet/flow completion-time ratio. Then a MoE dispatch with sampled routing (unequal
flows) at EP 16/32/64 on the GB200 NVL72 rack: flow backend with the compiled and the numpy
max-min solver, and the packet backend.

    python benchmarks/network_speed.py [--sizes 8 16 32 64] [--out benchmarks/results/network_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cosim.network import FlowSet, simulate
from cosim.network.collectives import all_to_all
from cosim.topology import Router, load_topology, topology_from_dict

BYTES_PER_PAIR = 1 << 20


def star(n: int):
    return topology_from_dict({"name": f"star{n}", "generator": {
        "kind": "star", "num_gpus": n, "bandwidth": "400Gbps", "latency": "1us", "mtu": 4096},
        "transport": {"header_bytes": 2}})


def hgx(n: int):
    return load_topology("h100-hgx-node" if n == 8 else f"h100-hgx-{n // 8}node")


def run_case(fabric: str, topo, repeats: int) -> dict:
    fs = FlowSet()
    all_to_all(fs, range(topo.num_gpus), BYTES_PER_PAIR)
    router = Router(topo)
    simulate(topo, fs, "flow", router=router)  # warm the route cache for both backends
    # Both backends are timed around the whole simulate() call (routing from the warm cache,
    # array preparation, simulation, result assembly).
    t0 = time.perf_counter()
    packet = simulate(topo, fs, "packet", router=router)
    packet_wall = time.perf_counter() - t0
    flow_walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        flow = simulate(topo, fs, "flow", router=router)
        flow_walls.append(time.perf_counter() - t0)
    flow_wall = min(flow_walls)
    hop_packets = packet.stats["hop_packets"]
    return {
        "fabric": fabric, "gpus": topo.num_gpus, "topology": topo.name, "flows": len(fs),
        "packet_wall_s": packet_wall, "packet_engine_wall_s": packet.wall_s, "hop_packets": hop_packets,
        "hop_packets_per_s": hop_packets / packet.wall_s,
        "events": packet.stats.get("events", 0),
        "flow_wall_s": flow_wall, "flows_per_s": len(fs) / flow_wall,
        "wall_speedup_flow_vs_packet": packet.wall_s / flow_wall,
        "packet_completion_s": packet.completion_time_s, "flow_completion_s": flow.completion_time_s,
        "completion_ratio_packet_over_flow": packet.completion_time_s / flow.completion_time_s,
    }


def run_moe_case(ep: int, repeats: int) -> dict:
    """MoE dispatch of a sampled routing (64 tokens/rank, top-8 of 256 experts, fp8 + metadata
    per token, deduplicated per rank) on the NVL72 rack: unequal flows, so nearly every flow
    completion is its own rate-solver event. Flow backend with the compiled and the numpy solver,
    and the packet backend."""
    import numpy as np

    from cosim.network import collectives as C
    from cosim.network import flow_backend as FB
    from cosim.trace.moe_traffic import sampled_routing_counts

    topo = load_topology("gb200-nvl72")
    counts = sampled_routing_counts(64, 256, 8, ep, node_of=[0] * ep, seed=0)
    matrix = np.rint(np.asarray(counts.tokens) * (7168 + 64)).astype(np.int64)
    np.fill_diagonal(matrix, 0)
    fs = FlowSet()
    C.all_to_all_v(fs, list(range(ep)), matrix)
    router = Router(topo)
    simulate(topo, fs, "flow", router=router)
    walls = {}
    native = FB._native_max_min_rates
    for name, solver in (("native", native), ("numpy", None)):
        if name == "native" and solver is None:
            continue
        FB._native_max_min_rates = solver
        try:
            best = float("inf")
            for _ in range(repeats if name == "native" else 1):
                t0 = time.perf_counter()
                flow = simulate(topo, fs, "flow", router=router)
                best = min(best, time.perf_counter() - t0)
            walls[name] = best
        finally:
            FB._native_max_min_rates = native
    t0 = time.perf_counter()
    packet = simulate(topo, fs, "packet", router=router)
    return {"ep": ep, "flows": len(fs), "rate_solves": flow.stats["rate_updates"],
            "flow_native_wall_s": walls.get("native"), "flow_numpy_wall_s": walls["numpy"],
            "packet_wall_s": time.perf_counter() - t0, "flow_completion_s": flow.completion_time_s,
            "packet_completion_s": packet.completion_time_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3, help="flow-backend repeats (best is kept)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "network_speed.json")
    args = parser.parse_args()
    console = Console(width=160)
    rows = []
    for fabric, make in (("star-400G", star), ("hgx-h100", hgx)):
        for n in args.sizes:
            row = run_case(fabric, make(n), args.repeats)
            rows.append(row)
            console.print(f"{fabric} N={n}: packet {row['packet_wall_s']:.2f} s, flow {row['flow_wall_s'] * 1e3:.1f} ms")
    table = Table(title=f"All-to-all, {BYTES_PER_PAIR >> 20} MiB per pair, MTU 4096")
    for col in ("fabric", "N", "flows", "packet wall s", "hop-packets", "hop-pkts/s", "flow wall ms",
                "flows/s", "flow speedup", "T packet us", "T flow us", "T ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["fabric"], str(r["gpus"]), str(r["flows"]), f"{r['packet_wall_s']:.3f}",
                      f"{r['hop_packets']:,}", f"{r['hop_packets_per_s']:,.0f}", f"{r['flow_wall_s'] * 1e3:.2f}",
                      f"{r['flows_per_s']:,.0f}", f"{r['wall_speedup_flow_vs_packet']:.0f}x",
                      f"{r['packet_completion_s'] * 1e6:.2f}", f"{r['flow_completion_s'] * 1e6:.2f}",
                      f"{r['completion_ratio_packet_over_flow']:.4f}")
    console.print(table)
    moe = []
    for ep in (16, 32, 64):
        moe.append(run_moe_case(ep, args.repeats))
    table = Table(title="MoE dispatch, sampled routing, GB200 NVL72 (unequal flows)")
    for col in ("EP", "flows", "rate solves", "flow (compiled solver) s", "flow (numpy solver) s", "packet s",
                "T flow us", "T packet us"):
        table.add_column(col, justify="right")
    for r in moe:
        native = "-" if r["flow_native_wall_s"] is None else f"{r['flow_native_wall_s']:.3f}"
        table.add_row(str(r["ep"]), str(r["flows"]), str(r["rate_solves"]), native, f"{r['flow_numpy_wall_s']:.3f}",
                      f"{r['packet_wall_s']:.3f}", f"{r['flow_completion_s'] * 1e6:.2f}",
                      f"{r['packet_completion_s'] * 1e6:.2f}")
    console.print(table)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS {peak_rss_mib:.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "bytes_per_pair": BYTES_PER_PAIR, "mtu_bytes": 4096, "peak_rss_mib": peak_rss_mib, "rows": rows,
        "moe_sampled_nvl72": moe,
    }, indent=2))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
