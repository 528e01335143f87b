"""The error message each bad input of issue 12 now gives (input side: topology, YAML, config.json,
flow/collective API, units), one line each, with the time it took.

The cases are those of ``tests/test_limits.py`` plus file encodings and the packet budget.
Prints them and writes ``benchmarks/results/limits_examples.json``.

    python benchmarks/limits_examples.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_limits import CASES  # noqa: E402

from cosim.errors import CosimError  # noqa: E402
from cosim.network.flows import FlowSet, check_packet_budget, route_flows  # noqa: E402
from cosim.topology.loader import topology_from_dict  # noqa: E402
from cosim.topology.strict_yaml import load_yaml_file  # noqa: E402
from cosim.units import parse_size_bytes  # noqa: E402


def _file_case(data: bytes):
    def run():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "topo.yaml"
            path.write_bytes(data)
            return load_yaml_file(path)
    return run


def _packet_budget():
    topo = topology_from_dict({"name": "t", "generator": {"kind": "star", "num_gpus": 2}})
    fs = FlowSet()
    fs.add(0, 1, 1 << 40)
    check_packet_budget(route_flows(topo, fs))


EXTRA = [
    ("UTF-16 file", _file_case("name: x\n".encode("utf-16"))),
    ("Latin-1 file", _file_case("name: caf\xe9\n".encode("latin-1"))),
    ("1 TiB flow on the packet backend (check_packet_budget)", _packet_budget),
    ("-s 4096 (plain byte count)", lambda: parse_size_bytes("4096")),
    ("--size 1TiB", lambda: parse_size_bytes("1TiB")),
]


def main() -> None:
    rows = []
    for label, run, *_ in [(c[0], c[1]) for c in CASES] + EXTRA:
        t0 = time.perf_counter()
        try:
            value = run()
            outcome, message = "accepted", repr(value)[:120]
        except CosimError as exc:
            outcome, message = type(exc).__name__, str(exc)
        elapsed = time.perf_counter() - t0
        rows.append({"input": label, "outcome": outcome, "message": message, "seconds": round(elapsed, 3)})
        print(f"- {label}: [{outcome}, {elapsed:.2f} s] {message}")
    out = ROOT / "benchmarks" / "results" / "limits_examples.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
