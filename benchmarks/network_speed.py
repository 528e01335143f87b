"""Speed of the two network backends on all-to-all (1 MiB per ordered pair, MTU 4096).

For N = 8, 16, 32, 64 GPUs on (a) one non-blocking 400 Gb/s switch and (b) HGX H100 clusters
(8 GPUs per node, NVLink + 400 Gb/s rail-optimized fabric), prints and writes to JSON:
packet-level hop-packets per second (frame transmissions over all links per second of ns-3
engine time), flow-level flows per second, the ratio of the two backends' simulate() wall times
and the packet/flow completion-time ratio.

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
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS {peak_rss_mib:.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "bytes_per_pair": BYTES_PER_PAIR, "mtu_bytes": 4096, "peak_rss_mib": peak_rss_mib, "rows": rows,
    }, indent=2))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
