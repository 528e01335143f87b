"""Serving showcase (issue 8): the chat preset on DeepSeek-V3.2 at 128 B200 GPUs in each mode.

Every row is a deployment under ``experiments/deployments/dsv32-b200-*.yaml`` on
``b200-hgx-16node`` serving the same load: the chat preset (4k resident prefix, 512 new input,
256 output; SLOs TTFT 50 ms, TPOT 15 ms) as a closed loop of ``--users`` users (default 1536:
12 requests per attention rank aggregated, 16 per decode rank in P/D, 32 or 21 per AFD attention
instance) for ``--requests`` requests (default 6144, four per user), and again open loop at
``--rate`` Poisson requests/s (default 100, ~75 % of the slowest mode's closed-loop throughput):
the closed loop compares throughput, the open loop latency at equal offered load (its tokens/s
per GPU are the same for every mode by construction). The call is the one
``cosim serve`` makes (same requests, same options): each row prints its command.

Per row: TTFT / TPOT / ITL percentiles over all requests and in steady state (the requests after
the first ``users``, which all arrive at t = 0), SLO attainment, output tokens/s per GPU and per
user, pool utilization, KV transfer times, and which links carried the KV transfers (the
LiveNetwork's per-link counters ``ServingRun.link_tx_bytes``: bytes by tier and the top links),
next to the busiest links of the steps' own collectives (``ServeResult.step_link_tx_bytes``).
A deployment that cannot be served records its error.

Step-time models are cached in ``--cache`` (default ``.cosim-cache``, git-ignored, the CLI's
default too; the printed commands use that default: the cache holds models, never results), so a
second run skips the cold builds.

    python benchmarks/serving_showcase.py [--users 1536] [--requests 6144] [--cache .cosim-cache]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from cosim.errors import CosimError
from cosim.serving.deployment import load_deployment
from cosim.serving.metrics import Distribution, tpot_s, ttft_s
from cosim.serving.run import serve
from cosim.serving.simulator import ServingOptions
from cosim.serving.workload import ClosedLoop, Poisson, generate_requests, load_workload

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "serving_showcase.json"
ROWS = (
    ("aggregated", "dsv32-b200-agg.yaml"),
    ("P/D", "dsv32-b200-pd.yaml"),
    ("P/D + AFD decode 1:1", "dsv32-b200-pd-afd.yaml"),
    ("P/D + AFD decode 3:1", "dsv32-b200-pd-afd-3to1.yaml"),
    ("P/D + MTP decode", "dsv32-b200-pd-mtp.yaml"),
    ("aggregated + AFD", "dsv32-b200-agg-afd.yaml"),
)


def ms(d: Distribution) -> dict:
    return {"mean": d.mean_s * 1e3, "p50": d.p50_s * 1e3, "p90": d.p90_s * 1e3, "p99": d.p99_s * 1e3}


def layout(dep) -> str:
    parts = []
    for p in dep.pools:
        if p.afd is not None:
            a = p.afd
            shape = f"AFD {a.attention_gpus}A+{a.ffn_gpus}F m={a.micro_batches}"
        else:
            q = p.parallel
            shape = f"TP{q.tp}/EP{q.ep}" + (" DP-attn" if q.dp_attention else "")
        mtp = f" MTP{p.mtp_tokens}@{p.mtp_acceptance:g}" if p.mtp_tokens else ""
        parts.append(f"{p.name} {p.replicas} x {shape}{mtp} ({p.num_gpus} GPUs)")
    return "; ".join(parts)


def link_rows(topo, tx: np.ndarray, window_s: float, top: int) -> tuple[dict, list]:
    tiers: dict[str, float] = {}
    for d in np.nonzero(tx)[0]:
        tier = topo.links[d // 2].tier
        tiers[tier] = tiers.get(tier, 0.0) + float(tx[d]) / 1e9
    rows = [{"link": topo.describe_link(int(d)), "tier": topo.links[d // 2].tier, "gb": float(tx[d]) / 1e9,
             "mean_utilization": float(tx[d] * 8 / topo.directed_bandwidth_bps[d] / window_s)}
            for d in np.argsort(-tx)[:top] if tx[d] > 0]
    return dict(sorted(tiers.items(), key=lambda x: -x[1])), rows


def one_row(label: str, yaml: str, load: str, args) -> dict:
    path = ROOT / "experiments" / "deployments" / yaml
    rel = path.relative_to(ROOT)
    closed = load == "closed"
    arrival = f"--concurrency {args.users}" if closed else f"--rate {args.rate:g}"
    command = f"cosim serve {rel} --workload chat {arrival} --requests {args.requests}"
    try:
        dep = load_deployment(path)
    except CosimError as e:  # e.g. aggregated + AFD, refused when the deployment loads
        row = {"mode": label, "load": load, "deployment": str(rel), "command": command,
               "error": f"{type(e).__name__}: {e}", "wall_s": 0.0}
        print(f"== {label}\n   {command}\n   not servable: {row['error']}", flush=True)
        return row
    workload = load_workload("chat").with_arrival(ClosedLoop(args.users) if closed else Poisson(args.rate))
    requests = generate_requests(workload, num_requests=args.requests, duration_s=None, seed=None)
    row = {"mode": label, "load": load, "deployment": str(rel), "layout": layout(dep), "gpus": dep.num_gpus,
           "command": command}
    print(f"== {label}: {row['layout']}\n   {command}", flush=True)
    t0 = time.perf_counter()
    try:
        # the closed loop's users start spread over max(0.1 s, users / 1000 s), as `cosim serve` does
        ramp = max(0.1, args.users / 1000.0) if closed else 0.0
        result = serve(dep, requests, slo=workload.slo, cache_dir=args.cache, options=ServingOptions(ramp_s=ramp))
    except CosimError as e:
        row.update(error=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - t0)
        print(f"   not servable: {row['error']}", flush=True)
        return row
    row["wall_s"] = result.wall_s
    row["step_models"] = {k: {"source": v["source"], "wall_s": v["wall_s"], "grid_points": v["grid_points"]}
                          for k, v in result.step_models.items()}
    row["memory"] = {k: {"weights_gib": m.weight_bytes / 2**30, "kv_capacity_tokens": m.kv_capacity_tokens,
                         "reason": m.reason} for k, m in result.memory.items()}
    if not result.feasible:
        row["error"] = "infeasible: " + "; ".join(result.reasons)
        print(f"   {row['error']}")
        return row
    s, run = result.summary, result.run
    # steady state: closed loop, the requests after the first round (all sent at t = 0); open
    # loop, the requests after the first 10 % of arrivals
    steady = np.arange(len(run.arrival_s)) >= (args.users if closed else len(run.arrival_s) // 10)
    done = run.finished
    row.update(
        finished=s.finished, duration_s=s.duration_s,
        ttft_ms=ms(s.ttft), tpot_ms=ms(s.tpot), itl_ms=ms(s.itl),
        steady_ttft_ms=ms(Distribution.of(ttft_s(run)[done & steady])),
        steady_tpot_ms=ms(Distribution.of(tpot_s(run)[done & steady])),
        slo_attainment=s.slo_attainment, goodput_tokens_per_s=s.goodput_tokens_per_s,
        output_tokens_per_s_per_gpu=s.output_tokens_per_s_per_gpu,
        output_tokens_per_s_per_user=s.output_tokens_per_s_per_user,
        mean_concurrency=s.mean_concurrency, preemptions=s.preemptions,
        pool_utilization={k: float(v) for k, v in s.pool_utilization.items()},
        kv_transfer_ms=ms(s.kv_transfer), simulation_wall_s=run.wall_s, steps=run.steps,
    )
    topo = dep.topology
    if run.link_tx_bytes is not None and np.any(run.link_tx_bytes):
        kv = np.asarray(run.link_tx_bytes, dtype=float)
        row["kv_bytes_by_tier_gb"], row["kv_top_links"] = link_rows(topo, kv, s.duration_s, args.top)
        row["kv_transfers"] = len(run.kv_transfers)
        row["kv_bytes_each_mb"] = float(np.median([c.size_bytes for c in run.kv_transfers])) / 1e6
    else:
        row["kv_bytes_by_tier_gb"], row["kv_top_links"], row["kv_transfers"] = {}, [], 0
    if result.step_link_tx_bytes is not None:
        row["step_bytes_by_tier_gb"], row["step_top_links"] = link_rows(
            topo, np.asarray(result.step_link_tx_bytes, dtype=float), s.duration_s, args.top)
    print(f"   TTFT p50/p90/p99 {s.ttft.p50_s * 1e3:.0f}/{s.ttft.p90_s * 1e3:.0f}/{s.ttft.p99_s * 1e3:.0f} ms "
          f"(steady p50 {row['steady_ttft_ms']['p50']:.0f}), TPOT p50/p90/p99 {s.tpot.p50_s * 1e3:.1f}/"
          f"{s.tpot.p90_s * 1e3:.1f}/{s.tpot.p99_s * 1e3:.1f} ms, SLO attainment {s.slo_attainment:.1%}, "
          f"{s.output_tokens_per_s_per_gpu:.0f} tok/s/GPU, {s.output_tokens_per_s_per_user:.0f} tok/s/user, "
          f"util " + ", ".join(f"{k} {v:.2f}" for k, v in s.pool_utilization.items())
          + f"; wall {result.wall_s:.0f} s", flush=True)
    if row["kv_transfers"]:
        print(f"   KV: {row['kv_transfers']} transfers of {row['kv_bytes_each_mb']:.0f} MB, p50/p99 "
              f"{s.kv_transfer.p50_s * 1e3:.1f}/{s.kv_transfer.p99_s * 1e3:.1f} ms; wire GB by tier "
              + ", ".join(f"{k} {v:.0f}" for k, v in row["kv_bytes_by_tier_gb"].items()))
        for lk in row["kv_top_links"][:3]:
            print(f"     {lk['link']:<26} {lk['tier']:<7} {lk['gb']:6.1f} GB  util {lk['mean_utilization']:.3f}")
    return row


def markdown(rows: list[dict]) -> str:
    out = ["| mode | deployment | TTFT p50 / p90 / p99 ms | steady TTFT p50 ms | TPOT p50 / p90 / p99 ms | "
           "SLO attainment | tok/s/GPU | tok/s/user | KV transfer p50 / p99 ms | utilization |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['mode']} | {r.get('layout', r['deployment'])} | not servable: {r['error'][:120]} |  |  |  |  |  |  |  |")
            continue
        t, p, k = r["ttft_ms"], r["tpot_ms"], r["kv_transfer_ms"]
        kv = f"{k['p50']:.1f} / {k['p99']:.1f}" if r["kv_transfers"] else "none"
        out.append(f"| {r['mode']} | {r['layout']} | {t['p50']:.0f} / {t['p90']:.0f} / {t['p99']:.0f} | "
                   f"{r['steady_ttft_ms']['p50']:.0f} | {p['p50']:.1f} / {p['p90']:.1f} / {p['p99']:.1f} | "
                   f"{r['slo_attainment']:.1%} | {r['output_tokens_per_s_per_gpu']:.0f} | "
                   f"{r['output_tokens_per_s_per_user']:.0f} | {kv} | "
                   + ", ".join(f"{n} {u:.2f}" for n, u in r["pool_utilization"].items()) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1536)
    ap.add_argument("--rate", type=float, default=100.0, help="open-loop pass: Poisson requests/s")
    ap.add_argument("--requests", type=int, default=6144)
    ap.add_argument("--cache", type=Path, default=Path(".cosim-cache"))
    ap.add_argument("--top", type=int, default=8, help="links listed per row")
    ap.add_argument("--only", default=None, help="comma-separated row numbers (1-based) to run")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    wall0 = time.perf_counter()
    picks = ROWS if args.only is None else [ROWS[int(i) - 1] for i in args.only.split(",")]
    rows = []
    tables = {}
    for load in ("closed", "open"):
        these = [one_row(label, yaml, load, args) for label, yaml in picks]
        rows += these
        tables[load] = markdown(these)
    table = (f"closed loop of {args.users} users:\n\n{tables['closed']}\n\n"
             f"open loop, Poisson {args.rate:g} requests/s:\n\n{tables['open']}")
    print(table)
    out = {"machine": {"python": platform.python_version(), "platform": platform.platform()},
           "workload": {"preset": "chat", "closed_loop_users": args.users, "open_loop_rate_per_s": args.rate,
                        "requests": args.requests,
                        "slo_ms": {"ttft": 50, "tpot": 15}},
           "topology": "b200-hgx-16node", "model": "deepseek-ai/DeepSeek-V3.2",
           "rows": rows, "markdown": table, "wall_s": time.perf_counter() - wall0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"total wall {out['wall_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
