"""Communication constants fitted on h200_sxm, errors on every system aiconfigurator-core measured.

Simulates every single-node measured row of h200_sxm (the fit system), h100_sxm, b200_sxm and
gb200 (NCCL, TensorRT-LLM custom all-reduce, DeepEP normal and low-latency; on gb200 also
TensorRT-LLM's NVLink all-to-all, EP 2-64 in one NVL72 rack) on the system's topology preset
(h100/h200/b200 HGX node, gb200-nvl72), predicts each with the overhead model given (default:
:data:`cosim.engine.overheads.DEFAULT_OVERHEADS`, nothing refitted) and reports the median and
90th-percentile absolute error per system and table.

    python benchmarks/validate_comm_systems.py [--quick] [--out benchmarks/results/validate_comm_systems.json]

About 90 s on 2 cores for every row (flow backend); ``--quick`` (the subsample of the test) ~10 s.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Subsample of ``--quick`` (and of tests/test_validation_comm_systems.py).
QUICK_NCCL_BYTES = (4096, 1 << 20, 64 << 20)
QUICK_TOKENS = (1, 16, 128, 1024, 16384)


def _clean(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.6g}")
    return v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "validate_comm_systems.json"))
    ap.add_argument("--quick", action="store_true", help="subsample rows (the test's subsample)")
    ap.add_argument("--systems", default="", help="comma-separated systems (default: all)")
    args = ap.parse_args()
    try:
        import aiconfigurator_core  # noqa: F401
    except ImportError:
        print("aiconfigurator-core is not installed: nothing to validate against", file=sys.stderr)
        return 2
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from cosim.engine.overheads import DEFAULT_OVERHEADS
    from cosim.validation import comm as V

    console = Console() if sys.stdout.isatty() else Console(width=160)
    systems = [s for s in args.systems.split(",") if s] or list(V.COMM_SYSTEMS)
    t0 = time.perf_counter()
    parts, timings = [], {}
    for system in systems:
        t1 = time.perf_counter()
        with console.status(f"simulating {system}"):
            sim = V.simulate_system(system, *((QUICK_NCCL_BYTES, QUICK_TOKENS) if args.quick else (None, None)))
        parts.append(V.predict(sim, DEFAULT_OVERHEADS))
        timings[system] = time.perf_counter() - t1
    rows = pd.concat(parts, ignore_index=True)
    by_op = V.cross_system_summary(rows)
    by_table = V.cross_system_summary(rows, ("system", "table"))
    runtime = time.perf_counter() - t0

    def cell(df, keys):
        hit = df
        for k, v in keys.items():
            hit = hit[hit[k] == v]
        if not len(hit):
            return "-"
        r = hit.iloc[0]
        return f"{r.median_abs_pct:.1f} / {r.p90_abs_pct:.0f} ({int(r.rows)})"

    t = Table(title="Median / p90 |error| % (rows), constants fitted on h200_sxm only (DEFAULT_OVERHEADS)")
    t.add_column("table")
    t.add_column("op")
    for s in systems:
        t.add_column(s + (" (fit)" if s == V.SYSTEM else ""), justify="right")
    for table in V.CROSS_SYSTEM_TABLES:
        ops = by_op[by_op.table == table].op.unique()
        for op in ops:
            t.add_row(table, op, *[cell(by_op, dict(system=s, table=table, op=op)) for s in systems])
        if len(ops) > 1:
            t.add_row(table, "all", *[cell(by_table, dict(system=s, table=table)) for s in systems], style="bold")
    console.print(t)

    ref = by_table[by_table.system == V.SYSTEM].set_index("table").median_abs_pct
    t = Table(title="Ratio of median |error| to h200_sxm's (target <= 1.5)")
    t.add_column("table")
    for s in systems:
        if s != V.SYSTEM:
            t.add_column(s, justify="right")
    ratios = {}
    for table in V.CROSS_SYSTEM_TABLES:
        cells = []
        for s in systems:
            if s == V.SYSTEM:
                continue
            hit = by_table[(by_table.system == s) & (by_table.table == table)]
            if not len(hit) or table not in ref:
                cells.append("-")
                continue
            r = float(hit.iloc[0].median_abs_pct / ref[table])
            ratios[f"{s}/{table}"] = r
            cells.append(f"[{'green' if r <= 1.5 else 'red'}]{r:.2f}[/]")
        t.add_row(table, *cells)
    console.print(t)

    cols = ["system", "table", "op", "num_gpus", "dtype", "message_bytes", "hidden", "topk", "num_experts",
            "num_tokens", "measured_s", "network_s", "gpu_bytes", "predicted_s", "error_pct"]
    out = {
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
        "quick": args.quick,
        "fit_system": V.SYSTEM,
        "runtime_s": runtime,
        "timings_s": timings,
        "summary_by_op": [{k: _clean(v) for k, v in r.items()} for r in by_op.to_dict(orient="records")],
        "summary_by_table": [{k: _clean(v) for k, v in r.items()} for r in by_table.to_dict(orient="records")],
        "ratio_to_fit_system": {k: _clean(v) for k, v in ratios.items()},
        "rows": {"columns": cols, "rows": [[_clean(v) for v in r] for r in rows[cols].itertuples(index=False)]},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)
    text = re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s+\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    path.write_text(text)
    console.print(f"{len(rows)} rows; wrote {path}; runtime {runtime:.1f} s "
                  f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
