"""Packet (ns-3) vs flow (max-min) completion times over collectives, sizes and fabrics.

The packet backend is the reference. Prints a table and writes
``benchmarks/results/backend_agreement.json``; ``docs/validation.md`` quotes it.

    python benchmarks/backend_agreement.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cosim.network import FlowSet, simulate
from cosim.network.libraries import build_collective
from cosim.topology import Router, load_topology

# (topology, ranks or None for all, collective)
CASES = [
    ("h100-hgx-node", None, "all_to_all"),
    ("h100-hgx-node", None, "all_reduce"),
    ("h100-hgx-2node", None, "all_to_all"),
    ("h100-hgx-2node", None, "bipartite"),
    ("h100-hgx-2node", None, "all_reduce"),
    ("h100-hgx-2node", None, "p2p"),
    # 4 nodes on 4 different leaves of a 2:1 oversubscribed fabric.
    ("h100-hgx-16node-2to1", [*range(0, 8), *range(32, 40), *range(64, 72), *range(96, 104)], "all_to_all"),
    ("gb200-nvl72-2rack", [*range(0, 8), *range(72, 80)], "all_to_all"),
]
SIZES = [64 << 10, 1 << 20, 4 << 20]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backend_agreement.json")
    args = parser.parse_args()
    console = Console(width=150)
    rows = []
    for topo_name, ranks, collective in CASES:
        topo = load_topology(topo_name)
        router = Router(topo)
        ranks = ranks if ranks is not None else list(range(topo.num_gpus))
        for size in SIZES:
            fs = FlowSet()
            coll = build_collective(fs, collective, ranks, size)
            packet = simulate(topo, fs, "packet", router=router)
            flow = simulate(topo, fs, "flow", router=router)
            t_p, t_f = packet.finish_s(coll.last), flow.finish_s(coll.last)
            rows.append({"topology": topo_name, "gpus": len(ranks), "collective": collective, "size_bytes": size,
                         "flows": len(fs), "packet_s": t_p, "flow_s": t_f, "error_pct": 100 * (t_f - t_p) / t_p,
                         "packet_wall_s": packet.wall_s, "flow_wall_s": flow.wall_s,
                         "pfc_pauses": int(packet.links.pause_count.sum())})
            console.print(f"{topo_name} {collective} {size >> 10} KiB: {100 * (t_f - t_p) / t_p:+.2f}%")
    table = Table(title="Flow backend vs packet backend (reference): completion time")
    for col in ("topology", "GPUs", "collective", "size", "flows", "packet us", "flow us", "error", "PFC pauses"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["topology"], str(r["gpus"]), r["collective"], f"{r['size_bytes'] >> 10} KiB", str(r["flows"]),
                      f"{r['packet_s'] * 1e6:.2f}", f"{r['flow_s'] * 1e6:.2f}", f"{r['error_pct']:+.2f}%",
                      str(r["pfc_pauses"]))
    console.print(table)
    errors = np.abs([r["error_pct"] for r in rows])
    large = np.abs([r["error_pct"] for r in rows if r["size_bytes"] >= 1 << 20])
    summary = {"median_abs_error_pct": float(np.median(errors)), "max_abs_error_pct": float(errors.max()),
               "max_abs_error_pct_ge_1MiB": float(large.max())}
    console.print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
