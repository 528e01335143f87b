"""Decode TPOT against aiconfigurator-core's measured deployments (``silicon_sample.csv``).

For every selected row (rules in :mod:`cosim.validation.silicon`): one decode step of the row's
deployment simulated with the flow backend, under the kernel layer *before* (no wide-EP tables,
SGLang MoE rows at the group token count, one precision label for every GEMM) and *after* (wide-EP
tables preferred, SGLang rows at ``num_tokens / ep``, per-module checkpoint formats), next to
aiconfigurator-core's own ``decode_step_latency`` on the same rows. Nothing is fitted.

    python benchmarks/silicon_tpot.py [--max-rows 600] [--no-aic] [--ablation] [--seed 0]

Prints a table and writes ``benchmarks/results/silicon_tpot.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cosim.validation.silicon import (
    ABLATION,
    AFTER,
    BEFORE,
    aiconfigurator_tpot_ms,
    error_summary,
    select_rows,
    simulate_rows,
    subsample,
)

OUT = Path(__file__).parent / "results" / "silicon_tpot.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-rows", type=int, default=600,
                    help="deterministic stratified subsample size (all usable rows when larger)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-aic", action="store_true", help="skip aiconfigurator-core's own estimate")
    ap.add_argument("--ablation", action="store_true", help="also run the cumulative one-rule-at-a-time steps")
    ap.add_argument("--aic-budget-s", type=float, default=240.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    console = Console(width=150)
    wall0 = time.perf_counter()

    sel = select_rows()
    rows = subsample(list(sel.rows), args.max_rows, args.seed)
    console.print(f"silicon_sample.csv: {sel.candidates} candidate rows, {sel.duplicates} repeats removed, "
                  f"{sum(sel.dropped.values())} dropped, {len(sel.rows)} usable; simulating {len(rows)}")
    for why, n in sorted(sel.dropped.items(), key=lambda kv: -kv[1]):
        console.print(f"  dropped {n:4d}: {why}")

    t0 = time.perf_counter()
    with console.status("simulating") as status:
        rules = (BEFORE, *(ABLATION if args.ablation else ()), AFTER)
        results = simulate_rows(rows, rules,
                                progress=lambda i, n, r: status.update(f"simulating {i}/{n}: {r.label}"))
    sim_s = time.perf_counter() - t0

    aic: dict[str, float | None] = {}
    aic_s = 0.0
    if not args.no_aic:
        t0 = time.perf_counter()
        with console.status("aiconfigurator-core decode_step_latency"):
            aic = aiconfigurator_tpot_ms(rows, time_budget_s=args.aic_budget_s)
        aic_s = time.perf_counter() - t0

    by = {(r.row.row_id, r.rules): r for r in results}
    records = []
    for row in rows:
        b, a = by[(row.row_id, "before")], by[(row.row_id, "after")]
        est = aic.get(row.row_id)
        records.append({
            "id": row.row_id, "label": row.label, "system": row.system, "framework": row.framework,
            "mode": row.mode, "model": row.model_path, "gpus": row.gpus, "tp": row.tp,
            "attention_dp": row.attention_dp, "moe_ep": row.moe_ep, "batch_per_rank": row.batch_per_rank,
            "isl": row.isl, "osl": row.osl, "precision": row.precision, "measured_tpot_ms": row.tpot_ms,
            "before_tpot_ms": b.tpot_ms, "after_tpot_ms": a.tpot_ms, "aic_tpot_ms": est,
            "before_moe_ms": b.moe_ms, "after_moe_ms": a.moe_ms, "after_moe_source": a.moe_source,
            "before_rel_err": b.rel_err, "after_rel_err": a.rel_err,
            "aic_rel_err": None if est is None else abs(est / row.tpot_ms - 1.0),
            "error": a.error or b.error,
        })

    def summary(recs: list[dict]) -> dict:
        with_aic = [r for r in recs if r["aic_rel_err"] is not None]
        return {
            "rows": len(recs),
            "before": error_summary(r["before_rel_err"] for r in recs),
            "after": error_summary(r["after_rel_err"] for r in recs),
            "aiconfigurator": error_summary(r["aic_rel_err"] for r in with_aic),
            "after_on_aic_rows": error_summary(r["after_rel_err"] for r in with_aic),
            "before_on_aic_rows": error_summary(r["before_rel_err"] for r in with_aic),
        }

    groups: dict[str, list[dict]] = {"all": records}
    for key in sorted({(r["system"], r["framework"]) for r in records}):
        groups[f"{key[0]} {key[1]}"] = [r for r in records if (r["system"], r["framework"]) == key]
    wide = [r for r in records if r["framework"] == "sglang" and r["moe_ep"] >= 16]
    if wide:
        groups["sglang EP>=16 (wide-EP rule)"] = wide
    fp4 = [r for r in records if r["precision"] == "fp4"]
    if fp4:
        groups["fp4 rows (per-module formats)"] = fp4
    summaries = {k: summary(v) for k, v in groups.items()}

    ablation = {}
    if args.ablation:
        for r in (BEFORE, *ABLATION, AFTER):
            errs = [by[(row.row_id, r.name)].rel_err for row in rows]
            wide_errs = [by[(row.row_id, r.name)].rel_err for row in rows
                         if row.framework == "sglang" and row.moe_ep >= 16]
            ablation[r.name] = {"all": error_summary(errs), "sglang EP>=16": error_summary(wide_errs),
                                "by_system": {f"{s} {f}": error_summary(by[(row.row_id, r.name)].rel_err for row in rows
                                                                        if (row.system, row.framework) == (s, f))
                                              for s, f in sorted({(x.system, x.framework) for x in rows})}}

    table = Table(title="Decode TPOT |error| vs silicon_sample.csv (median / p90)")
    for col in ("rows", "before", "after", "aiconfigurator (rows)", "cosim after on aic rows"):
        table.add_column(col, justify="right" if col != "rows" else "left")

    def fmt(s: dict) -> str:
        return "-" if not s["rows"] else f"{s['median'] * 100:.1f}% / {s['p90'] * 100:.1f}%"

    for name, s in summaries.items():
        table.add_row(f"{name} ({s['rows']})", fmt(s["before"]), fmt(s["after"]),
                      f"{fmt(s['aiconfigurator'])} ({s['aiconfigurator']['rows']})", fmt(s["after_on_aic_rows"]))
    console.print(table)
    if ablation:
        t2 = Table(title="Cumulative rules (median / p90 |error|)")
        for col in ("rules", "all", "sglang EP>=16"):
            t2.add_column(col)
        for name, a in ablation.items():
            t2.add_row(name, fmt(a["all"]), fmt(a["sglang EP>=16"]))
        console.print(t2)
    failures = Counter(r["error"].split(":")[0] for r in records if r["error"])
    if failures:
        console.print(f"simulation failures: {dict(failures)}")
    wall = time.perf_counter() - wall0
    console.print(f"wall {wall:.0f} s (simulation {sim_s:.0f} s, aiconfigurator {aic_s:.0f} s)")

    doc = {
        "benchmark": "silicon_tpot",
        "command": "python benchmarks/silicon_tpot.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "selection": {"candidates": sel.candidates, "repeats_removed": sel.duplicates, "dropped": sel.dropped,
                      "usable": len(sel.rows), "simulated": len(rows), "max_rows": args.max_rows, "seed": args.seed},
        "rules": {r.name: asdict(r) for r in (BEFORE, *(ABLATION if args.ablation else ()), AFTER)},
        "summaries": summaries,
        "ablation": ablation,
        "wall_s": wall, "simulation_s": sim_s, "aiconfigurator_s": aic_s,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
