"""Speed of a serving simulation: 10,000 chat requests on a 64-GPU P/D deployment (issue 8).

DeepSeek-V3 on ``h200-hgx-8node`` (``experiments/deployments/dsv3-h200-pd64.yaml``: prefill 4 x
TP8/EP8 DP attention, decode 2 x EP16 DP attention), the chat preset (4k resident prefix, 512 new
input, 256 output) arriving open loop as a Poisson process (``--rate``, default 150 requests/s,
about 80 % of the decode pool's capacity at its batch limit; the script prints the capacities it
derives from the step models and checks the run does not diverge: TTFT per quarter of the
requests).

1. **cold**: ``serve(..., cache_dir=<empty temp dir>)`` builds the two step-time models (wall and
   grid size reported per pool) and runs the requests;
2. **warm** (``--repeat`` times): the same call reloads the models from that folder; this is the
   headline (target: < 10 s on a 2-core machine);
3. **breakdown**: one warm run with timers around the step-time queries and the LiveNetwork's
   methods (its own ``stats``: starts, re-solves, solved flows, solve time), and one under
   cProfile with its self time grouped by where it is spent.

Prints and writes ``benchmarks/results/serving_speed.json``; also the KV transfer figures
(count, size, durations, the links that carry them).

    python benchmarks/serving_speed.py [--requests 10000] [--rate 150] [--repeat 3] [--no-profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np

import cosim.network.live as live_mod
import cosim.serving.run as run_mod
from cosim.serving.deployment import load_deployment
from cosim.serving.metrics import ttft_s
from cosim.serving.run import serve
from cosim.serving.workload import Poisson, generate_requests, preset

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = ROOT / "experiments" / "deployments" / "dsv3-h200-pd64.yaml"
OUT = ROOT / "benchmarks" / "results" / "serving_speed.json"


def dist(d) -> dict:
    return {"mean_ms": d.mean_s * 1e3, "p50_ms": d.p50_s * 1e3, "p90_ms": d.p90_s * 1e3, "p99_ms": d.p99_s * 1e3}


def capacities(result, models: dict) -> dict:
    """Requests/s each pool sustains at its batching limits, from its step-time model."""
    dep = result.deployment
    out = {}
    for p in dep.pools:
        model = models[p.name]
        ranks = p.attention_ranks * p.replicas
        if p.role == "prefill":
            k = max(1, min(p.batching.max_batch, p.batching.token_budget // 512))
            t = model.step_time(0, 0, [(4096, 512)] * k).seconds
            out[p.name] = {"chunks_per_step": k, "step_ms": t * 1e3, "requests_per_s": ranks * k / t}
        else:
            b = p.batching.max_batch
            t = model.step_time(b, 4096 + 512 + 128).seconds
            out[p.name] = {"batch": b, "step_ms": t * 1e3, "requests_per_s": ranks * b / (256 * t)}
    return out


class _Instrument:
    """Timers around the step-time queries and a handle on the LiveNetwork that serve() opens
    (patched in this process only; the library is unchanged)."""

    def __init__(self):
        self.query_s = 0.0
        self.queries = 0
        self.networks = []
        self.start_s = 0.0
        self.link_s = 0.0

    def __enter__(self):
        inst = self
        self._orig_links = getattr(run_mod, "step_link_bytes", None)
        if self._orig_links is not None:
            orig_links = self._orig_links

            def step_link_bytes(*a, **k):
                t0 = time.perf_counter()
                try:
                    return orig_links(*a, **k)
                finally:
                    inst.link_s += time.perf_counter() - t0
            run_mod.step_link_bytes = step_link_bytes
        self._orig_step = run_mod.ModelStepTimes.step_time_s
        self._orig_net = live_mod.LiveNetwork
        orig_step = self._orig_step

        def step_time_s(self_, *a):
            t0 = time.perf_counter()
            try:
                return orig_step(self_, *a)
            finally:
                inst.query_s += time.perf_counter() - t0
                inst.queries += 1

        class Net(self._orig_net):
            def __init__(self_, *a, **k):
                super().__init__(*a, **k)
                inst.networks.append(self_)

            def start(self_, *a, **k):
                t0 = time.perf_counter()
                try:
                    return super().start(*a, **k)
                finally:
                    inst.start_s += time.perf_counter() - t0

        run_mod.ModelStepTimes.step_time_s = step_time_s
        live_mod.LiveNetwork = Net
        return self

    def __exit__(self, *exc):
        run_mod.ModelStepTimes.step_time_s = self._orig_step
        live_mod.LiveNetwork = self._orig_net
        if self._orig_links is not None:
            run_mod.step_link_bytes = self._orig_links


GROUPS = (  # cProfile self time by file
    ("step-time queries", ("step_model.py", "run.py:39")),
    ("LiveNetwork (routing, packetizing, max-min solves, draining)",
     ("live.py", "flows.py", "flow_backend.py", "collectives.py", "routing.py")),
    ("DES loop (events, batching, admission, KV hand-over, bookkeeping)",
     ("simulator.py", "batching.py", "prefix_cache.py", "heapq")),
)


def profile_groups(stats: pstats.Stats, total_s: float) -> dict:
    by = {g: 0.0 for g, _ in GROUPS}
    by["numpy and builtins called from them"] = 0.0
    top = []
    for (file, line, fn), (cc, nc, tt, ct, callers) in stats.stats.items():
        key = f"{Path(file).name}:{line}({fn})"
        top.append((tt, key, nc))
        for g, pats in GROUPS:
            if any(p in f"{Path(file).name}:{line}" for p in pats):
                by[g] += tt
                break
        else:
            by["numpy and builtins called from them"] += tt
    top.sort(reverse=True)
    return {"self_s_by_group": by, "profiled_total_s": total_s,
            "top_self": [{"function": k, "self_s": t, "calls": n} for t, k, n in top[:15]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=150.0, help="Poisson arrivals per second")
    ap.add_argument("--repeat", type=int, default=3, help="warm runs")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    dep = load_deployment(DEPLOYMENT)
    workload = preset("chat").with_arrival(Poisson(args.rate))
    requests = generate_requests(workload, num_requests=args.requests)
    print(f"{args.requests} chat requests, Poisson {args.rate:g}/s, {dep.model.name} {dep.mode} on "
          f"{dep.num_gpus} GPUs of {dep.topology.name}: "
          + ", ".join(f"{p.name} {p.replicas} x TP{p.parallel.tp}/EP{p.parallel.ep}"
                      + (" DP-attention" if p.parallel.dp_attention else "") for p in dep.pools))

    models: dict = {}
    orig_init = run_mod.ModelStepTimes.__init__

    def keep(self, model):
        orig_init(self, model)
        models[len(models) % len(dep.pools)] = model
    run_mod.ModelStepTimes.__init__ = keep
    out: dict = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                             "platform": platform.platform()},
                 "deployment": str(DEPLOYMENT.relative_to(ROOT)), "requests": args.requests,
                 "arrival": {"kind": "poisson", "rate_per_s": args.rate}}
    with tempfile.TemporaryDirectory(prefix="cosim-serving-speed-") as cache:
        t0 = time.perf_counter()
        cold = serve(dep, requests, slo=workload.slo, cache_dir=cache)
        cold_wall = time.perf_counter() - t0
        out["cold"] = {"wall_s": cold_wall, "simulation_s": cold.run.wall_s,
                       "step_models": {k: {"source": v["source"], "build_s": v["wall_s"],
                                           "grid_points": v["grid_points"]} for k, v in cold.step_models.items()}}
        print(f"cold: {cold_wall:.1f} s (" + ", ".join(f"{k} step model built in {v['wall_s']:.1f} s, "
                                                      f"{v['grid_points']} grid points"
                                                      for k, v in cold.step_models.items())
              + f"; simulation {cold.run.wall_s:.1f} s)")
        cap = capacities(cold, {p.name: models[i] for i, p in enumerate(dep.pools)})
        out["capacity"] = cap
        for k, v in cap.items():
            print(f"  capacity {k}: {v['requests_per_s']:.0f} requests/s (step {v['step_ms']:.0f} ms)")

        warm = []
        result = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            c0 = time.process_time()
            result = serve(dep, requests, slo=workload.slo, cache_dir=cache)
            warm.append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                         "simulation_s": result.run.wall_s,
                         "sources": {k: v["source"] for k, v in result.step_models.items()}})
            print(f"warm: {warm[-1]['wall_s']:.2f} s wall, {warm[-1]['cpu_s']:.2f} s CPU "
                  f"(simulation {result.run.wall_s:.2f} s; models {warm[-1]['sources']})")
        walls = [w["wall_s"] for w in warm]
        out["warm"] = {"runs": warm, "median_wall_s": float(np.median(walls)), "min_wall_s": min(walls),
                       "target_s": 10.0, "meets_target": float(np.median(walls)) < 10.0}
        out["cold"]["speedup_vs_warm"] = cold_wall / float(np.median(walls))

        # timers
        with _Instrument() as inst:
            t0 = time.perf_counter()
            timed = serve(dep, requests, slo=workload.slo, cache_dir=cache)
            timed_wall = time.perf_counter() - t0
        net = inst.networks[-1]
        st = net.stats
        sim_s = timed.run.wall_s
        net_s = st["wall_s"]
        out["breakdown_timers"] = {
            "serve_wall_s": timed_wall, "simulation_s": sim_s,
            "step_time_queries": {"count": inst.queries, "wall_s": inst.query_s},
            "live_network": {"wall_s": net_s, "start_wall_s": inst.start_s, "solve_wall_s": st["solve_wall_s"],
                             **{k: st[k] for k in ("transfers", "completed", "events", "re_solves", "solved_flows")}},
            "des_loop_s": sim_s - inst.query_s - net_s,
            "step_link_bytes_s": inst.link_s,
            "outside_simulation_s": timed_wall - sim_s,
        }
        b = out["breakdown_timers"]
        print(f"breakdown (timers, one warm run of {timed_wall:.2f} s): simulation {sim_s:.2f} s = "
              f"step-time queries {inst.query_s:.2f} s ({inst.queries}) + LiveNetwork {net_s:.2f} s "
              f"(start {inst.start_s:.2f} s for {st['transfers']} transfers, {st['re_solves']} re-solves of "
              f"{st['solved_flows'] / max(1, st['re_solves']):.1f} flows in {st['solve_wall_s']:.2f} s, "
              f"{st['events']} drain events) + DES loop {b['des_loop_s']:.2f} s; outside the simulation "
              f"{b['outside_simulation_s']:.2f} s, of which the per-link step traffic estimate "
              f"(serve's step_link_bytes: one step simulated per replica) {inst.link_s:.2f} s")

        if not args.no_profile:
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            serve(dep, requests, slo=workload.slo, cache_dir=cache)
            prof.disable()
            total = time.perf_counter() - t0
            groups = profile_groups(pstats.Stats(prof), total)
            out["breakdown_cprofile"] = groups
            print(f"cProfile (run inflated to {total:.1f} s), self time by group:")
            for g, s in groups["self_s_by_group"].items():
                print(f"  {s:6.2f} s  {g}")
            print("  top self time:")
            for row in groups["top_self"][:10]:
                print(f"    {row['self_s']:6.2f} s  {row['calls']:>9}  {row['function']}")
    run_mod.ModelStepTimes.__init__ = orig_init

    # the run's figures and its KV transfers
    s = result.summary
    run = result.run
    t = ttft_s(run)
    q = len(t) // 4
    quarters = [float(np.nanmedian(t[i * q:(i + 1) * q])) * 1e3 for i in range(4)]
    kv = run.kv_transfer_s[~np.isnan(run.kv_transfer_s)]
    sizes = np.array([c.size_bytes for c in run.kv_transfers], dtype=float)
    durations = np.array([c.duration_s for c in run.kv_transfers])
    topo = dep.topology
    tx = run.link_tx_bytes
    order = np.argsort(tx)[::-1]
    tiers: dict[str, float] = {}
    for d in np.nonzero(tx)[0]:
        tier = topo.links[d // 2].tier
        tiers[tier] = tiers.get(tier, 0.0) + float(tx[d])
    nic_Bps = max(topo.directed_bandwidth_bps[d] for d in np.nonzero(tx)[0] if topo.links[d // 2].tier == "rail") / 8
    alone_s = float(np.median(sizes)) / nic_Bps
    out["run"] = {
        "finished": s.finished, "duration_s": s.duration_s, "ttft_ms": dist(s.ttft), "tpot_ms": dist(s.tpot),
        "ttft_median_by_quarter_ms": quarters, "output_tokens_per_s_per_gpu": s.output_tokens_per_s_per_gpu,
        "pool_utilization": {k: float(v) for k, v in s.pool_utilization.items()}, "mean_concurrency": s.mean_concurrency,
        "steps": run.steps, "slo_attainment": s.slo_attainment,
    }
    out["kv_transfers"] = {
        "count": len(run.kv_transfers), "bytes_each_mb": float(np.median(sizes)) / 1e6,
        "total_payload_gb": float(sizes.sum()) / 1e9,
        "hand_over_ms": dist(s.kv_transfer), "network_time_ms": {"p50": float(np.median(durations)) * 1e3,
                                                               "p99": float(np.percentile(durations, 99)) * 1e3,
                                                               "max": float(durations.max()) * 1e3},
        "alone_on_a_400g_nic_ms": alone_s * 1e3,
        "wire_bytes_by_tier_gb": {k: v / 1e9 for k, v in sorted(tiers.items(), key=lambda x: -x[1])},
        "top_links": [{"link": topo.describe_link(int(d)), "tier": topo.links[d // 2].tier,
                       "gb": float(tx[d]) / 1e9, "utilization": float(tx[d] * 8 / topo.directed_bandwidth_bps[d]
                                                                       / s.duration_s)}
                      for d in order[:8]],
    }
    print(f"run: {s.finished} finished in {s.duration_s:.1f} simulated s; TTFT p50/p90/p99 "
          f"{s.ttft.p50_s * 1e3:.0f}/{s.ttft.p90_s * 1e3:.0f}/{s.ttft.p99_s * 1e3:.0f} ms (median per quarter "
          + "/".join(f"{x:.0f}" for x in quarters) + f" ms: no divergence), TPOT p50 {s.tpot.p50_s * 1e3:.1f} ms, "
          f"{s.output_tokens_per_s_per_gpu:.0f} output tokens/s/GPU, utilization "
          + ", ".join(f"{k} {v:.2f}" for k, v in s.pool_utilization.items()))
    k = out["kv_transfers"]
    print(f"KV transfers: {k['count']} of {k['bytes_each_mb']:.0f} MB ({k['total_payload_gb']:.0f} GB); network time "
          f"p50 {k['network_time_ms']['p50']:.1f} ms, p99 {k['network_time_ms']['p99']:.1f} ms (alone on a 400G NIC "
          f"{alone_s * 1e3:.1f} ms); wire bytes by tier " + ", ".join(f"{t} {v:.0f} GB" for t, v in
                                                                       k["wire_bytes_by_tier_gb"].items()))
    for row in k["top_links"][:4]:
        print(f"  {row['link']:<28} {row['tier']:<7} {row['gb']:7.1f} GB  utilization {row['utilization']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
