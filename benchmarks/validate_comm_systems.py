"""Communication constants fitted on h200_sxm, errors on every system aiconfigurator-core measured.

Simulates every single-node measured row of h200_sxm (the fit system), h100_sxm, b200_sxm and
gb200 (NCCL, TensorRT-LLM custom all-reduce, DeepEP normal and low-latency; on gb200 also
TensorRT-LLM's NVLink all-to-all, EP 2-64 in one NVL72 rack) on the system's topology preset
(h100/h200/b200 HGX node, gb200-nvl72), predicts each with the overhead model given (default:
:data:`cosim.engine.overheads.DEFAULT_OVERHEADS`, nothing refitted) and reports the median and
90th-percentile absolute error per system and table.

    python benchmarks/validate_comm_systems.py [--quick] [--out benchmarks/results/validate_comm_systems.json]
    python benchmarks/validate_comm_systems.py --floors   # per-GPU fixed costs vs compute floors (~10 s)

About 90 s on 2 cores for every row (flow backend); ``--quick`` (the subsample of the test) ~10 s.

``--floors`` (~10 s) asks whether Blackwell's larger fixed cost per communication call (section 10 of
docs/validation-comm.md) follows from a per-GPU quantity measured without communication: it
compares, per system and relative to h200_sxm, (a) the model-free fixed cost of each
communication library (the median time of its smallest measured rows, shape by shape), with
(b) the launch floor of every compute kernel table aiconfigurator-core measured on all four
GPUs (the fastest kernel per shape, over the shapes within 1.25x of h200's fastest) and (c) the
systems' YAML and topology figures; then it applies each compute-floor ratio as one scale on
every fixed cost and reports the cross-system medians that would give. Writes ``benchmarks/results/validate_comm_systems_floors.json``.
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


#: Per-GPU figures of the system YAMLs (cosim.kernels.SystemSpec attributes) compared by ``--floors``.
SPEC_FIGURES = ("mem_bw_bytes_per_s", "intra_node_bw_bytes_per_s", "power_w", "mem_constant_latency_s",
                "p2p_latency_s")
#: Columns of a compute table that are not part of a row's shape.
_NOT_SHAPE = frozenset({"framework", "version", "device", "latency", "kernel_source", "op_name"})
#: A compute table's floor rows: shapes whose h200 time is within this factor of h200's fastest.
FLOOR_WINDOW = 1.25
#: h200 floor below which a compute table counts as launch-bound (a kernel of a few microseconds).
LAUNCH_BOUND_S = 10e-6


def comm_fixed_cost_ratios(systems) -> dict:
    """Model-free fixed cost per call of each communication library and system: the median time
    of its smallest measured rows (NCCL / custom all-reduce: up to 4x the smallest message of each
    operation and GPU count; DeepEP: 1 and 2 tokens per rank, per shape), and its ratio to the
    fit system's on the same operation, GPU count and shape (median over those)."""
    import numpy as np

    from cosim.validation import comm as V

    small = {}
    for s in systems:
        rows = V.load_rows(system=s)
        rows = rows[rows.node_num == 1]
        parts = {}
        for table in ("nccl", "custom_allreduce"):
            d = rows[rows.table == table]
            d = d[d.message_bytes <= 4 * d.groupby(["op", "num_gpus"]).message_bytes.transform("min")]
            parts[table] = d.groupby(["op", "num_gpus"]).measured_s.median()
        for table in ("deepep_ll", "deepep_normal"):
            d = rows[(rows.table == table) & (rows.num_tokens <= 2)]
            parts[table] = d.groupby(["op", "hidden", "topk", "num_experts", "num_tokens"]).measured_s.median()
        small[s] = parts
    ref = small[systems[0]]
    out = {}
    for s in systems:
        out[s] = {}
        for table, m in small[s].items():
            ratio = (m / ref[table]).dropna()
            out[s][table] = {"median_fixed_us": float(m.median() * 1e6), "ratio": float(np.median(ratio)),
                             "groups": int(len(ratio))}
    return out


def compute_floor_ratios(systems) -> dict:
    """Launch floor of every compute kernel table measured on all ``systems``, relative to the
    first: per table, the fastest kernel of each shape on each GPU (the kernels differ by GPU:
    FA3 on Hopper, trtllm-gen / FlashInfer on Blackwell), the shapes within :data:`FLOOR_WINDOW`
    of the reference's fastest, the median ratio over them."""
    import numpy as np
    import pandas as pd

    from cosim.kernels.system import aiconfigurator_systems_dir

    data = aiconfigurator_systems_dir() / "data"
    ref = systems[0]
    tables = sorted(p.relative_to(data / ref) for p in (data / ref).glob("*/*/*/*_perf.parquet")
                    if p.parts[-4] != "comm")
    out = {}
    for rel in tables:
        paths = {s: data / s / rel for s in systems}
        if not all(p.exists() for p in paths.values()):
            continue
        frames = {s: pd.read_parquet(p) for s, p in paths.items()}
        if not all("latency" in f.columns for f in frames.values()):
            continue
        keys = [c for c in frames[ref].columns if c not in _NOT_SHAPE and all(c in f.columns for f in frames.values())]
        merged = None
        for s, f in frames.items():
            f = f[f.latency > 0].groupby(keys, dropna=False).latency.min().rename(s).reset_index()
            merged = f if merged is None else merged.merge(f, on=keys)
        if merged is None or not len(merged):
            continue
        base = merged[ref]
        floor = merged[base <= FLOOR_WINDOW * base.min()]
        out[str(rel.with_suffix(""))] = {
            "floor_rows": int(len(floor)),
            "floor_us": {s: float(floor[s].median() * 1e3) for s in systems},  # table latency is ms
            "ratio": {s: float(np.median(floor[s] / floor[ref])) for s in systems},
        }
    return out


#: The factor of section 10's diagnostic: one scale on every fixed cost, fitted on b200_sxm's own
#: communication rows (not the protocol; shown beside the candidates for comparison).
DIAGNOSTIC_FIXED_COST_SCALE = 1.75


def scale_fixed_costs(overheads, scale: float):
    """``overheads`` with every kernel-side fixed cost (NCCL's protocols included) times ``scale``;
    the NVLink all-to-all's gb200-fitted constants are left as they are. A what-if for
    ``--floors``, not part of the engine's model."""
    import dataclasses

    def one(o):
        return None if o is None else dataclasses.replace(
            o, fixed_s=o.fixed_s * scale, alternatives=tuple(one(a) for a in o.alternatives))

    return dataclasses.replace(
        overheads, nccl=one(overheads.nccl), deepep_normal=one(overheads.deepep_normal),
        deepep_ll=one(overheads.deepep_ll), p2p=one(overheads.p2p), custom_allreduce=one(overheads.custom_allreduce),
        bipartite=one(overheads.bipartite),
        ops={k: v if k.startswith("nvlink_a2a.") else one(v) for k, v in overheads.ops.items()})


def floors_main(args) -> int:
    """``--floors``: the per-GPU fixed-cost comparison (see the module docstring)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from cosim.kernels import load_system
    from cosim.topology import load_topology
    from cosim.validation import comm as V

    console = Console() if sys.stdout.isatty() else Console(width=160)
    systems = list(V.COMM_SYSTEMS)
    t0 = time.perf_counter()
    comm = comm_fixed_cost_ratios(systems)
    compute = compute_floor_ratios(systems)

    t = Table(title="Fixed cost per communication call (smallest measured rows): median us (ratio to h200_sxm)")
    t.add_column("library")
    for s in systems:
        t.add_column(s, justify="right")
    for table in comm[systems[0]]:
        t.add_row(table, *[f"{comm[s][table]['median_fixed_us']:.1f} ({comm[s][table]['ratio']:.2f})" for s in systems])
    console.print(t)

    def quartiles(names, s):
        v = np.array([compute[n]["ratio"][s] for n in names])
        return [float(x) for x in np.percentile(v, [25, 50, 75])]

    gemm = [n for n in compute if n.startswith("gemm/")]
    launch = [n for n in compute if compute[n]["floor_us"][systems[0]] < LAUNCH_BOUND_S * 1e6]
    candidates = {
        "GEMM floor (3 frameworks, median)": {s: float(np.median([compute[n]["ratio"][s] for n in gemm])) for s in systems},
        f"compute floors, launch-bound tables ({len(launch)}, median)": {s: quartiles(launch, s)[1] for s in systems},
        f"compute floors, every table ({len(compute)}, median)": {s: quartiles(compute, s)[1] for s in systems},
    }
    specs = {s: load_system(s) for s in systems}
    for fig in SPEC_FIGURES:
        candidates[f"yaml {fig}"] = {s: getattr(specs[s], fig) / getattr(specs[systems[0]], fig) for s in systems}
    lat = {}
    for s in systems:
        topo = load_topology(V.COMM_SYSTEMS[s].topologies[1])
        gpu = topo.gpu_nodes[0]
        lat[s] = min(l.latency_s for l in topo.links if l.tier == "nvlink" and gpu in (l.a, l.b))
    candidates["topology preset NVLink latency"] = {s: lat[s] / lat[systems[0]] for s in systems}

    t = Table(title="Candidate per-GPU quantities: ratio to h200_sxm (the fixed costs above: h100 ~1.0, "
                    "b200 / gb200 1.2-1.8)")
    t.add_column("quantity")
    for s in systems:
        t.add_column(s, justify="right")
    for name, r in candidates.items():
        t.add_row(name, *[f"{r[s]:.2f}" for s in systems])
    console.print(t)
    spread = {"every_table": {s: quartiles(compute, s) for s in systems},
              "launch_bound_tables": {s: quartiles(launch, s) for s in systems}}
    for name, q in spread.items():
        console.print(f"compute floors, {name.replace('_', ' ')}: quartiles of the ratio " + ", ".join(
            f"{s} {v[0]:.2f} / {v[1]:.2f} / {v[2]:.2f}" for s, v in q.items()))
    # What-if: each candidate's ratio as one scale on every fixed cost of that system (h200: 1).
    from cosim.engine.overheads import DEFAULT_OVERHEADS

    sims = {s: V.simulate_system(s) for s in systems}
    ref = V.cross_system_summary(V.predict(sims[systems[0]], DEFAULT_OVERHEADS), ("system", "table"))
    ref = ref.set_index("table").median_abs_pct
    tables = ("nccl", "custom_allreduce", "deepep_normal", "deepep_ll")
    scales = {"none (DEFAULT_OVERHEADS)": {s: 1.0 for s in systems}}
    scales.update({k: v for k, v in candidates.items() if k.startswith(("GEMM", "compute"))})
    scales[f"diagnostic {DIAGNOSTIC_FIXED_COST_SCALE} on Blackwell (fitted on b200 comm rows)"] = {
        s: DIAGNOSTIC_FIXED_COST_SCALE if specs[s].sm_version >= 100 else 1.0 for s in systems}
    what_if = {}
    t = Table(title="What-if: every fixed cost of a system times the candidate's ratio: median |error| % "
                    "(ratio to h200_sxm's; target <= 1.5)")
    t.add_column("scale from")
    t.add_column("system")
    for table in tables:
        t.add_column(table, justify="right")
    for name, by_system in scales.items():
        what_if[name] = {}
        for s in systems[1:]:
            pred = V.predict(sims[s], scale_fixed_costs(DEFAULT_OVERHEADS, by_system[s]))
            m = V.cross_system_summary(pred, ("system", "table")).set_index("table").median_abs_pct
            what_if[name][s] = {"scale": by_system[s],
                                **{tb: {"median_abs_pct": float(m[tb]), "ratio": float(m[tb] / ref[tb])} for tb in tables}}
            t.add_row(name, f"{s} (x{by_system[s]:.2f})", *[
                f"{m[tb]:.1f} ([{'green' if m[tb] / ref[tb] <= 1.5 else 'red'}]{m[tb] / ref[tb]:.2f}[/])" for tb in tables])
    console.print(t)
    out = {
        "reference_system": systems[0],
        "what_if": what_if,
        "floor_window": FLOOR_WINDOW,
        "launch_bound_s": LAUNCH_BOUND_S,
        "comm_fixed_cost": comm,
        "candidates": candidates,
        "compute_floor_quartiles": spread,
        "launch_bound_tables": launch,
        "compute_floors": compute,
        "runtime_s": time.perf_counter() - t0,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    console.print(f"wrote {path}; runtime {out['runtime_s']:.1f} s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "validate_comm_systems.json"))
    ap.add_argument("--quick", action="store_true", help="subsample rows (the test's subsample)")
    ap.add_argument("--systems", default="", help="comma-separated systems (default: all)")
    ap.add_argument("--floors", action="store_true",
                    help="compare the per-GPU fixed cost of communication calls with compute-kernel floors "
                         "and system figures (writes validate_comm_systems_floors.json by default)")
    args = ap.parse_args()
    try:
        import aiconfigurator_core  # noqa: F401
    except ImportError:
        print("aiconfigurator-core is not installed: nothing to validate against", file=sys.stderr)
        return 2
    if args.floors:
        if args.out == ap.get_default("out"):
            args.out = str(ROOT / "benchmarks" / "results" / "validate_comm_systems_floors.json")
        return floors_main(args)
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
