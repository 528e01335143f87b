"""TTFT / TPOT of served deployments against aiconfigurator-core's measured ones (issue 8, item 6).

For every selected row of ``silicon_sample.csv`` (rules in :mod:`cosim.validation.serving`): the
row's deployment (agg: one mixed pool; disagg: prefill + decode pools with KV transfers through
the topology), a closed loop at the row's concurrency with fixed ISL / OSL, served by cosim's
discrete-event simulator with exact (memoized) step simulations; mean TTFT and TPOT of the
steady-state requests against the measured values, next to aiconfigurator-core's own estimate on
the same rows. Nothing is fitted.

    python benchmarks/validate_serving.py [--max-rows 40] [--seed 0] [--all] [--no-aic]
                                          [--check-memo N]

Default subset: rows of at most 32 GPUs, 40 of them stratified by (system, framework, mode),
seed 0 (deterministic); ``--all`` serves every row. Prints rich tables and writes
``benchmarks/results/validate_serving.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cosim.validation.serving import (
    CLIENT_OVERHEAD_MS, CONTEXT_STEP, DEFAULT_MAX_GPUS, KV_CACHE, aiconfigurator_estimates, check_memo, default_subset,
    fit_client_overhead_ms, select_serving_rows, serve_rows, summarize_errors,
)

OUT = Path(__file__).parent / "results" / "validate_serving.json"


def _fmt(s: dict) -> str:
    return "-" if not s or not s["rows"] else f"{s['median'] * 100:.0f}% / {s['p90'] * 100:.0f}%"


def _table(console: Console, title: str, summary: dict) -> None:
    t = Table(title=title)
    for col in ("group", "rows", "pred", "TTFT cosim", "TTFT aic (rows)", "TTFT cosim on aic rows",
                "TPOT cosim", "TPOT aic (rows)", "TPOT cosim on aic rows"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for name, s in summary.items():
        t.add_row(name, str(s["rows"]), str(s["predicted"]), _fmt(s["ttft"]),
                  f"{_fmt(s['ttft_aic'])} ({s['ttft_aic']['rows']})", _fmt(s["ttft_cosim_on_aic_rows"]),
                  _fmt(s["tpot"]), f"{_fmt(s['tpot_aic'])} ({s['tpot_aic']['rows']})",
                  _fmt(s["tpot_cosim_on_aic_rows"]))
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-rows", type=int, default=40, help="stratified subsample size of the default subset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--all", action="store_true", help="every servable row (no GPU limit, no subsample)")
    ap.add_argument("--max-gpus", type=int, default=DEFAULT_MAX_GPUS, help="GPU limit of the default subset")
    ap.add_argument("--no-aic", action="store_true", help="skip aiconfigurator-core's own estimate")
    ap.add_argument("--aic-budget-s", type=float, default=240.0)
    ap.add_argument("--check-memo", type=int, default=0,
                    help="also compare the memo's rounded step times with direct simulation on N rows")
    ap.add_argument("--client-overhead-ms", type=float, default=CLIENT_OVERHEAD_MS,
                    help="fixed client-side TTFT overhead (fitted on the fit half; 0 to disable)")
    ap.add_argument("--fit-overhead", action="store_true",
                    help="after the run, fit the client overhead on the fit half of its rows and print it")
    ap.add_argument("--kv-cache", default=KV_CACHE, choices=["fp8", "bfloat16", "checkpoint"],
                    help=f"KV-cache format of every row (default {KV_CACHE}, chosen on the fit half; 'checkpoint': "
                         "the checkpoint's); the CSV does not record it")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--pickle", type=Path, default=None,
                    help="keep the served rows and estimates in this pickle and reuse them when it exists")
    args = ap.parse_args(argv)
    console = Console(width=170)
    wall0 = time.perf_counter()

    sel = select_serving_rows()
    rows = list(sel.rows) if args.all else default_subset(sel.rows, args.max_rows, args.seed, args.max_gpus)
    console.print(f"silicon_sample.csv: {sel.usable} usable rows (cosim.validation.silicon rules), "
                  f"{len(sel.rows)} servable, {len(sel.skipped)} skipped before serving; serving {len(rows)}"
                  + ("" if args.all else f" (default subset: <= {args.max_gpus} GPUs, {args.max_rows} stratified, "
                                         f"seed {args.seed})"))
    for why, n in sel.skip_counts.items():
        console.print(f"  skipped {n:4d}: {why}")

    if args.pickle is not None and args.pickle.exists():
        import pickle

        results, aic, serve_s, aic_s = pickle.loads(args.pickle.read_bytes())
    else:
        t0 = time.perf_counter()
        with console.status("serving") as status:
            results = serve_rows(rows, progress=lambda i, n, r: status.update(f"serving {i}/{n}: {r.label}"),
                                 client_overhead_ms=args.client_overhead_ms,
                                 kv_cache=None if args.kv_cache == "checkpoint" else args.kv_cache)
        serve_s = time.perf_counter() - t0

        aic: dict[str, dict] = {}
        aic_s = 0.0
        if not args.no_aic:
            t0 = time.perf_counter()
            with console.status("aiconfigurator-core estimates"):
                aic = aiconfigurator_estimates(rows, time_budget_s=args.aic_budget_s)
            aic_s = time.perf_counter() - t0
        if args.pickle is not None:
            import pickle

            args.pickle.write_bytes(pickle.dumps((results, aic, serve_s, aic_s)))

    memo_check = None
    if args.check_memo:
        t0 = time.perf_counter()
        with console.status("memo vs direct simulation"):
            memo_check = check_memo(rows[:: max(1, len(rows) // args.check_memo)][:args.check_memo])
        memo_check["wall_s"] = time.perf_counter() - t0

    skipped_serving = {r.row.row_id: r.skipped for r in results if r.skipped}
    predicted = [r for r in results if not r.skipped]
    by = {
        "all": summarize_errors(results, aic, lambda r: "all"),
        "system / framework / mode": summarize_errors(results, aic,
                                                      lambda r: f"{r.row.system} {r.row.decode.framework} {r.row.mode}"),
        "system / mode": summarize_errors(results, aic, lambda r: f"{r.row.system} {r.row.mode}"),
        "export": summarize_errors(results, aic, lambda r: r.row.export),
        "half (hash of row id)": summarize_errors(results, aic, lambda r: r.row.half),
    }
    for name, s in by.items():
        if name != "all":
            s.pop("all", None)
    _table(console, "All rows: |error| median / p90 (mean over steady-state requests)", by["all"])
    for name in ("system / mode", "system / framework / mode", "export", "half (hash of row id)"):
        _table(console, f"By {name}", by[name])

    # variants of the statistic (sensitivity): errors of cosim under each definition
    variants = {}
    for v in ("steady_median", "all_mean", "all_median"):
        te = [abs(r.variants[f"ttft_{v}_ms"] / r.row.decode.ttft_ms - 1) for r in predicted]
        pe = [abs(r.variants[f"tpot_{v}_ms"] / r.row.decode.tpot_ms - 1) for r in predicted]
        variants[v] = {"ttft": _summ(te), "tpot": _summ(pe)}
    t = Table(title="Sensitivity to the statistic (cosim, all predicted rows)")
    for col in ("statistic", "TTFT", "TPOT"):
        t.add_column(col)
    t.add_row("steady mean (primary)", _fmt(by["all"]["all"]["ttft"]), _fmt(by["all"]["all"]["tpot"]))
    for v, s in variants.items():
        t.add_row(v.replace("_", " "), _fmt(s["ttft"]), _fmt(s["tpot"]))
    console.print(t)
    # signed TTFT bias per mode
    for mode in ("agg", "disagg"):
        ratios = [r.ttft_ms / r.row.decode.ttft_ms for r in predicted if r.row.mode == mode]
        if ratios:
            console.print(f"{mode}: TTFT predicted/measured median {np.median(ratios):.2f} "
                          f"(p10 {np.quantile(ratios, 0.1):.2f}, p90 {np.quantile(ratios, 0.9):.2f}); TPOT ratio median "
                          f"{np.median([r.tpot_ms / r.row.decode.tpot_ms for r in predicted if r.row.mode == mode]):.2f}")
    if skipped_serving:
        console.print("skipped while serving: " + str(dict(Counter(skipped_serving.values()).most_common())))
    if memo_check:
        console.print(f"memo (context step {CONTEXT_STEP}) vs direct simulation: {memo_check['queries']} queries, "
                      f"|error| median {memo_check['median'] * 100:.2f}% max {memo_check['max'] * 100:.2f}%")
    cost = {"serve_s": serve_s, "aic_s": aic_s, "rows": len(rows),
            "step_simulations": int(sum(r.step_simulations for r in results)),
            "step_queries": int(sum(r.step_queries for r in results)),
            "simulate_wall_s": float(sum(r.simulate_wall_s for r in results)),
            "per_row_wall_s": _summ([r.wall_s for r in results])}
    wall = time.perf_counter() - wall0
    console.print(f"wall {wall:.0f} s (serving {serve_s:.0f} s: {cost['step_simulations']} step simulations for "
                  f"{cost['step_queries']} queries, {cost['simulate_wall_s']:.0f} s in them; aiconfigurator {aic_s:.0f} s)")

    records = []
    for r in results:
        d = r.row.decode
        est = aic.get(d.row_id, {})
        records.append({
            "id": d.row_id, "label": r.row.label, "system": d.system, "framework": d.framework, "mode": d.mode,
            "model": d.model_path, "export": r.row.export, "half": r.row.half, "gpus": r.row.num_gpus,
            "concurrency": r.row.concurrency, "isl": d.isl, "osl": d.osl, "requests": r.row.num_requests,
            "measured_ttft_ms": d.ttft_ms, "measured_tpot_ms": d.tpot_ms,
            "ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms, "ttft_err": r.ttft_err, "tpot_err": r.tpot_err,
            "aic_ttft_ms": est.get("ttft_ms"), "aic_tpot_ms": est.get("tpot_ms"),
            "kv_transfer_ms": r.kv_transfer_ms, "kv_capacity_tokens": r.kv_capacity_tokens,
            "preemptions": r.preemptions, "variants": r.variants, "step_simulations": r.step_simulations,
            "wall_s": r.wall_s, "skipped": r.skipped,
        })
    doc = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "subset": "all" if args.all else {"max_rows": args.max_rows, "seed": args.seed, "max_gpus": args.max_gpus},
        "coverage": {"usable": sel.usable, "servable": len(sel.rows), "skipped_before_serving": sel.skip_counts,
                     "served": len(rows), "predicted": len(predicted),
                     "skipped_while_serving": dict(Counter(skipped_serving.values()).most_common()),
                     "silicon_dropped": sel.silicon_dropped},
        "summary": by, "statistic_variants": variants, "memo_check": memo_check, "cost": cost,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "wall_s": wall,
        "rows": records, "skipped_rows": sel.skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc["client_overhead_ms"] = args.client_overhead_ms
    doc["kv_cache"] = args.kv_cache
    if args.fit_overhead:
        doc["fitted_client_overhead_ms"] = fit_client_overhead_ms(doc["rows"])
        print(f"client overhead fitted on the fit half: {doc['fitted_client_overhead_ms']:g} ms "
              f"(run made with {args.client_overhead_ms:g} ms; fit from a run made with 0)")
    args.out.write_text(json.dumps(doc, indent=1, default=_json_default))
    console.print(f"wrote {args.out}")
    return 0


def _summ(values) -> dict:
    v = np.array([x for x in values if x is not None and math.isfinite(x)])
    if not len(v):
        return {"rows": 0, "median": None, "p90": None}
    return {"rows": int(len(v)), "median": float(np.median(v)), "p90": float(np.quantile(v, 0.9))}


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    sys.exit(main())
