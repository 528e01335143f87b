"""Load time of valid large topologies (issue 12: validation must not compare every GPU pair).

Builds generator topologies up to the MAX_GPUS limit, and a 20,000-GPU star written as an
explicit YAML file (nodes and links listed), and times ``topology_from_dict`` / ``load_topology``
(generation + validation, and YAML parsing for the file). Prints a table and writes
``benchmarks/results/limits_load.json``.

    python benchmarks/limits_load.py
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

from cosim import limits as L
from cosim.topology.loader import load_topology, topology_from_dict

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("star 20,000 GPUs", {"kind": "star", "num_gpus": 20_000}),
    ("star 65,536 GPUs (MAX_GPUS)", {"kind": "star", "num_gpus": int(L.MAX_GPUS.value)}),
    ("hgx_cluster 1,024 nodes x 8 GPUs", {"kind": "hgx_cluster", "num_nodes": 1024, "nodes_per_leaf": 16}),
    ("fat_tree 8,192 nodes x 8 GPUs (MAX_GPUS)", {"kind": "fat_tree", "num_nodes": 8192}),
    ("nvl72_cluster 128 racks (9,216 GPUs)", {"kind": "nvl72_cluster", "num_racks": 128, "nodes_per_leaf": 8}),
]


def _explicit_star_yaml(n: int) -> str:
    lines = ["name: explicit-star", "defaults: {latency: 1us, bandwidth: 400Gbps}", "nodes:",
             "  - {name: sw, kind: switch}"]
    lines += [f"  - {{name: g{i}, kind: gpu}}" for i in range(n)]
    lines.append("links:")
    lines += [f"  - {{a: g{i}, b: sw}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def main() -> None:
    rows = []
    for label, gen in CASES:
        t0 = time.perf_counter()
        topo = topology_from_dict({"name": "bench", "generator": gen})
        rows.append({"case": label, "gpus": topo.num_gpus, "nodes": len(topo.nodes), "links": len(topo.links),
                     "load_s": round(time.perf_counter() - t0, 3)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "star.yaml"
        path.write_text(_explicit_star_yaml(20_000))
        t0 = time.perf_counter()
        topo = load_topology(path)
        rows.append({"case": "explicit YAML star 20,000 GPUs", "gpus": topo.num_gpus, "nodes": len(topo.nodes),
                     "links": len(topo.links), "load_s": round(time.perf_counter() - t0, 3)})
    print(f"{'case':45s} {'GPUs':>7s} {'nodes':>8s} {'links':>8s} {'load':>8s}")
    for r in rows:
        print(f"{r['case']:45s} {r['gpus']:7,d} {r['nodes']:8,d} {r['links']:8,d} {r['load_s']:7.2f}s")
    out = ROOT / "benchmarks" / "results" / "limits_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                               "before": {"star 20,000 GPUs": "17 s (issue 12); 14.6 s measured before the fix"},
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
