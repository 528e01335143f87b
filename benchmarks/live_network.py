"""Speed of the live flow-level network (cosim.network.live) on P/D KV-cache transfers.

10,000 KV transfers of 100-500 MiB (uniform) arrive as a Poisson process on ``h200-hgx-8node``:
prefill GPUs 0-31 (nodes 0-3) send to decode GPUs 32-63 (nodes 4-7), each request from a
uniformly drawn prefill GPU to a uniformly drawn decode GPU. The arrival rate puts the offered
load at ``--load`` of the prefill side's NIC capacity (32 x 50 GB/s). The network is driven like
a discrete-event simulator does (wake it at ``next_event_s()`` or at the next arrival). Prints and
writes to JSON: wall time, re-solves per second, flows per re-solve, transfer time statistics
(slowdown = time / time alone), and the same transfers run through the batch flow backend
(``simulate`` with ``earliest_start_s``): its wall time and the largest finish-time difference.

    python benchmarks/live_network.py [--transfers 10000] [--load 0.7] [--channels 1]
                                      [--out benchmarks/results/live_network.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import time
from pathlib import Path

import numpy as np

from cosim.network import FlowSet, simulate
from cosim.network.flow_backend import native_solver_available
from cosim.network.live import LiveNetwork
from cosim.topology import Router, load_topology

MiB = 1 << 20
PRESET = "h200-hgx-8node"
NIC_Bps = 400e9 / 8


def workload(n: int, load: float, seed: int):
    rng = np.random.default_rng(seed)
    size = rng.integers(100 * MiB, 500 * MiB + 1, n)
    rate_per_s = load * 32 * NIC_Bps / size.mean()
    start = np.cumsum(rng.exponential(1 / rate_per_s, n))
    src = rng.integers(0, 32, n)
    dst = rng.integers(32, 64, n)
    return src.tolist(), dst.tolist(), size.tolist(), start.tolist(), rate_per_s


def run_live(topo, router, src, dst, size, start, channels):
    net = LiveNetwork(topo, router)
    done = []
    peak = 0
    t0 = time.perf_counter()
    for s, d, b, t in zip(src, dst, size, start):
        while (ev := net.next_event_s()) < t:
            done += net.advance(ev)
        done += net.advance(t)
        net.start(s, d, b, t, tag="kv", channels=channels)
        peak = max(peak, net.in_flight)
    while (ev := net.next_event_s()) < math.inf:
        done += net.advance(ev)
    wall = time.perf_counter() - t0
    return net, done, wall, peak


def run_batch(topo, router, src, dst, size, start, channels):
    from cosim.network.collectives import point_to_point
    fs = FlowSet()
    owner = []
    for i, (s, d, b, t) in enumerate(zip(src, dst, size, start)):
        parts = FlowSet()
        point_to_point(parts, s, d, b, channels=channels)
        for k in range(len(parts)):
            fs.add(s, d, parts[k].size_bytes, earliest_start_s=t, path_key=parts[k].path_key)
            owner.append(i)
    t0 = time.perf_counter()
    result = simulate(topo, fs, "flow", router=router)
    wall = time.perf_counter() - t0
    finish = np.zeros(len(src))
    np.maximum.at(finish, np.asarray(owner), result.flow_finish_s)
    return finish, wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=10_000)
    parser.add_argument("--load", type=float, default=0.7, help="offered load / prefill NIC capacity")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-batch", action="store_true", help="skip the batch-backend comparison")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "live_network.json")
    args = parser.parse_args()

    topo = load_topology(PRESET)
    router = Router(topo)
    src, dst, size, start, rate_per_s = workload(args.transfers, args.load, args.seed)
    for s in range(32):  # warm the route cache (routing is a one-off per GPU pair)
        for d in range(32, 64):
            for k in range(args.channels):
                router.route(s, d, k)
    net, done, wall, peak = run_live(topo, router, src, dst, size, start, args.channels)
    stats = net.stats
    by_id = sorted(done, key=lambda c: c.id)
    live_finish = np.array([c.finish_s for c in by_id])
    duration = live_finish - np.asarray(start)
    alone = np.asarray(size) * (1 + 62 / 4096) / NIC_Bps  # drain time alone (wire bytes at the NIC)
    slowdown = duration / alone
    sim_s = float(live_finish.max())
    row = {
        "topology": PRESET, "transfers": args.transfers, "channels": args.channels,
        "offered_load": args.load, "arrival_rate_per_s": rate_per_s,
        "compiled_solver": native_solver_available(),
        "simulated_s": sim_s,
        "wall_s": wall,
        "wall_inside_network_s": stats["wall_s"],
        "solve_wall_s": stats["solve_wall_s"],
        "re_solves": stats["re_solves"],
        "re_solves_per_wall_s": stats["re_solves"] / wall,
        "events": stats["events"],
        "mean_flows_per_re_solve": stats["solved_flows"] / max(stats["re_solves"], 1),
        "peak_in_flight": peak,
        "transfers_per_wall_s": args.transfers / wall,
        "transfer_ms": {"mean": float(duration.mean() * 1e3), "p50": float(np.percentile(duration, 50) * 1e3),
                        "p99": float(np.percentile(duration, 99) * 1e3)},
        "slowdown": {"mean": float(slowdown.mean()), "p50": float(np.percentile(slowdown, 50)),
                     "p99": float(np.percentile(slowdown, 99)), "max": float(slowdown.max())},
    }
    util = net.link_counters().mean_utilization(sim_s)
    tiers = {}
    for d in range(topo.num_directed_links):
        tier = topo.links[d // 2].tier
        if net.link_tx_bytes[d]:
            tiers[tier] = max(tiers.get(tier, 0.0), float(util[d]))
    row["peak_mean_utilization_by_tier"] = tiers
    print(f"{PRESET}: {args.transfers} KV transfers of 100-500 MiB, prefill GPUs 0-31 -> decode 32-63, "
          f"Poisson {rate_per_s:.0f}/s (offered load {args.load:.0%} of the prefill NICs), channels={args.channels}")
    print(f"  simulated {sim_s:.3f} s in {wall:.3f} s wall ({stats['wall_s']:.3f} s inside LiveNetwork, "
          f"{stats['solve_wall_s']:.3f} s re-solving)")
    print(f"  {stats['re_solves']} re-solves ({row['re_solves_per_wall_s']:.0f}/s wall, "
          f"{row['mean_flows_per_re_solve']:.1f} flows each), peak {peak} transfers in flight")
    print(f"  transfer time mean {row['transfer_ms']['mean']:.2f} ms, p99 {row['transfer_ms']['p99']:.2f} ms; "
          f"slowdown vs alone mean {row['slowdown']['mean']:.2f}, p99 {row['slowdown']['p99']:.2f}")
    print(f"  busiest link per tier (mean utilization): "
          + ", ".join(f"{k} {v:.0%}" for k, v in sorted(tiers.items())))
    if not args.no_batch:
        finish, batch_wall, result = run_batch(topo, router, src, dst, size, start, args.channels)
        rel = float(np.max(np.abs(live_finish - finish) / finish))
        row["batch"] = {"wall_s": batch_wall, "rate_updates": result.stats["rate_updates"],
                        "max_rel_finish_diff": rel,
                        "link_tx_bytes_equal": bool(np.array_equal(net.link_tx_bytes, result.links.tx_bytes))}
        print(f"  batch flow backend on the same transfers (known up front): {batch_wall:.3f} s wall, "
              f"{result.stats['rate_updates']} rate updates; max relative finish-time difference {rel:.1e}, "
              f"link bytes equal: {row['batch']['link_tx_bytes_equal']}")
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        **row}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
