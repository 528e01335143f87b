"""Cost and accuracy of the kernel tables (cosim.kernels) for one system/framework.

Measures, in this process: import time, ``KernelTables.load`` time, the first lookup of each op
kind (which reads its parquet table), reading every table (``warm``), resident memory after each
step, and the per-lookup time (cached and uncached) per op kind. Then the accuracy figures quoted
in docs/kernel-tables.md: interpolation error on held-out grid values, roofline efficiency fits
(random 25 % held out) and roofline extrapolation beyond the grid edge. Prints a summary and
writes JSON.

    python benchmarks/kernel_tables.py [--system h200_sxm] [--framework trtllm]
                                       [--out benchmarks/results/kernel_tables.json] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

T_START = time.perf_counter()


def rss_mib() -> float:
    """Current resident set size (VmRSS) in MiB (Linux), else peak RSS."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def lookup_ops():
    """One representative op per lookup path (DeepSeek-V3-like shapes on one GPU)."""
    from cosim.ops import AttentionOp, GemmOp, MemoryOp, MoeOp

    mla = dict(num_kv_heads=1, head_dim=192, v_head_dim=128, kv_lora_rank=512, rope_dim=64)
    return {
        "gemm_exact": lambda i: GemmOp("g", m=4096, n=7168, k=2048, dtype="fp8_block"),
        "gemm_interpolated": lambda i: GemmOp("g", m=4100 + i % 200, n=7000 + i % 100, k=2048, dtype="fp8_block"),
        "gemm_roofline": lambda i: GemmOp("g", m=40000 + i, n=7168, k=2048, dtype="fp8_block"),
        "moe_interpolated": lambda i: MoeOp("m", 1000 + i, 7168, 2048, 256, 8, 8, 1, "fp8_block", "power_law_1.01"),
        "mla_decode": lambda i: AttentionOp("a", "generation", "mla", batch=64, new_tokens=1, prefix_tokens=3000 + i,
                                            num_heads=128, kv_dtype="fp8", **mla),
        "mla_prefill_with_prefix": lambda i: AttentionOp("a", "context", "mla", batch=1, new_tokens=512,
                                                         prefix_tokens=4000 + i, num_heads=128, kv_dtype="fp8", **mla),
        "dsa_decode_core": lambda i: AttentionOp("a", "generation", "dsa", batch=64, new_tokens=1,
                                                 prefix_tokens=3000 + i, num_heads=128, kv_dtype="bfloat16",
                                                 sparse_topk=2048, **mla),
        "gqa_prefill": lambda i: AttentionOp("a", "context", "gqa", batch=2, new_tokens=3000 + i, prefix_tokens=0,
                                             num_heads=32, num_kv_heads=8, head_dim=128, v_head_dim=128),
        "memory_op": lambda i: MemoryOp("norm", bytes=1e6 + i),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="h200_sxm")
    ap.add_argument("--framework", default="trtllm")
    ap.add_argument("--version", default=None)
    ap.add_argument("--lookups", type=int, default=2000, help="uncached lookups per op kind")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy reports")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kernel_tables.json"))
    args = ap.parse_args()

    steps = []
    rss0 = rss_mib()
    t0 = time.perf_counter()
    from cosim.kernels import KernelTables
    from cosim.kernels.accuracy import efficiency_fit_report, extrapolation_fit_report, interpolation_report

    steps.append({"step": "import cosim.kernels", "seconds": time.perf_counter() - t0, "rss_mib": rss_mib()})
    tables, dt = timed(KernelTables.load, args.system, args.framework, args.version)
    steps.append({"step": "KernelTables.load (lazy)", "seconds": dt, "rss_mib": rss_mib()})

    ops = lookup_ops()
    first = {}
    for name, make in ops.items():
        d, dt = timed(tables.duration, make(0))
        first[name] = {"seconds": dt, "source": d.source, "duration_s": d.seconds, "detail": d.detail}
    steps.append({"step": "first lookup of every op kind (reads its tables, fits used)",
                  "seconds": sum(v["seconds"] for v in first.values()), "rss_mib": rss_mib()})
    rows, dt = timed(tables.warm)
    steps.append({"step": f"warm(): read every table ({rows} rows held)", "seconds": dt, "rss_mib": rss_mib()})

    per_lookup = {}
    for name, make in ops.items():
        batch = [make(i) for i in range(1, args.lookups + 1)]
        t = time.perf_counter()
        for op in batch:
            tables.duration(op)
        uncached = (time.perf_counter() - t) / len(batch)
        t = time.perf_counter()
        for op in batch:
            tables.duration(op)
        cached = (time.perf_counter() - t) / len(batch)
        per_lookup[name] = {"uncached_us": uncached * 1e6, "cached_us": cached * 1e6,
                            "source": tables.duration(batch[0]).source}

    result = {
        "system": args.system, "framework": args.framework, "version": tables.version,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.machine()},
        "rss_before_import_mib": rss0, "steps": steps, "first_lookup": first, "per_lookup": per_lookup,
        "provenance": tables.provenance(),
    }
    if not args.no_accuracy:
        t = time.perf_counter()
        result["interpolation_holdout_every4"] = interpolation_report(tables, every=4)
        result["efficiency_fit_random25"] = efficiency_fit_report(tables)
        result["efficiency_fit_plain_one_eta_no_fixed"] = efficiency_fit_report(tables, fixed_latency=False,
                                                                                separate=False)
        result["roofline_extrapolation"] = extrapolation_fit_report(tables)
        result["accuracy_seconds"] = time.perf_counter() - t
    result["total_seconds"] = time.perf_counter() - T_START

    _print(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {out}")
    return 0


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]kernel tables: {r['system']} {r['framework']} {r['version']}[/bold]  "
              f"(RSS before import {r['rss_before_import_mib']:.0f} MiB)")
    t = Table("step", "seconds", "RSS MiB")
    for s in r["steps"]:
        t.add_row(s["step"], f"{s['seconds']:.3f}", f"{s['rss_mib']:.0f}")
    con.print(t)
    t = Table("op kind", "source", "first (ms)", "uncached (us)", "cached (us)")
    for name, v in r["per_lookup"].items():
        t.add_row(name, v["source"], f"{r['first_lookup'][name]['seconds'] * 1e3:.1f}", f"{v['uncached_us']:.1f}",
                  f"{v['cached_us']:.2f}")
    con.print(t)
    if "interpolation_holdout_every4" in r:
        t = Table("table.axis (every 4th value held out)", "rows", "median", "p90", "max")
        for k, v in r["interpolation_holdout_every4"].items():
            t.add_row(k, str(v["evaluated"]), f"{v['median_rel_err']:.1%}", f"{v['p90_rel_err']:.1%}",
                      f"{v['max_rel_err']:.0%}")
        con.print(t)
        t = Table("roofline fit (25% held out)", "format", "eta_c", "eta_m", "t_fixed us", "median", "p90",
                  "plain median")
        plain = {(p["table"], p["dtype"]): p for p in r["efficiency_fit_plain_one_eta_no_fixed"]}
        for f in r["efficiency_fit_random25"]:
            p = plain.get((f["table"], f["dtype"]))
            t.add_row(f["table"], str(f["dtype"] or "all"), f"{f['compute_efficiency']:.3f}",
                      f"{f['memory_efficiency']:.3f}", f"{f['fixed_latency_s'] * 1e6:.1f}",
                      f"{f['test_median_rel_err']:.1%}", f"{f['test_p90_rel_err']:.1%}",
                      f"{p['test_median_rel_err']:.0%}" if p else "-")
        con.print(t)
        t = Table("roofline beyond the grid edge", "held out", "plain median", "anchored median", "anchored p90")
        for e in r["roofline_extrapolation"]:
            t.add_row(e["table"], e["held_out"], f"{e['plain_median_rel_err']:.1%}",
                      f"{e['anchored_median_rel_err']:.1%}", f"{e['anchored_p90_rel_err']:.1%}")
        con.print(t)


if __name__ == "__main__":
    raise SystemExit(main())
