"""How cosim's cost grows with the cluster: wall time and peak memory from 8 to 4,096 GPUs.

Workloads (``--workloads``), each built through the communication libraries exactly as
``cosim net`` builds them (:func:`cosim.network.libraries.build_collective`):

* ``a2a_64MiB``: all-to-all of a 64 MiB buffer per GPU (64 MiB / N to every peer),
* ``a2a_1MiB``: all-to-all of 1 MiB per ordered pair,
* ``ring``: NCCL ring all-reduce of a 64 MiB buffer (1 MiB chunks; one ring per rail across
  nodes, as NCCL does).

Fabrics (``--fabrics``), 400 Gb/s per GPU:

* ``switch``: N GPUs on one non-blocking switch (``star`` generator),
* ``rail2``: HGX H100 nodes (8 GPUs on NVLink) on a rail-optimized 2-tier leaf/spine fabric
  (32 nodes per leaf, 16 spines, non-blocking; ``hgx_cluster``),
* ``fattree3``: HGX H100 nodes on a rail-optimized 3-tier fat-tree (pods of 16 nodes, 4 nodes
  per leaf, 8 spines per pod, 16 cores, non-blocking; ``fat_tree`` generator). At N <= 128 the
  cluster is one pod (two tiers).

Backends (``--backends``): ``flow`` at every size; ``packet`` while its predicted wall time
(hop-packets of the point / the engine's measured hop-packets per second at the previous size)
stays under ``--packet-budget`` seconds (5 minutes by default).

DeepSeek-V3 decode steps (``--steps``): EP 64 / 128 / 256 with DP attention, 64 requests per
rank at 4k context, FP8 dispatch, DeepEP low-latency dispatch/combine, flow backend, on HGX H200
clusters (``hgx_cluster``, 8 GPUs per node, trtllm h200_sxm kernels) and on GB200 NVL72 racks
(one rack for EP 64, 2 and 4 racks for EP 128 and 256, gb200 kernels).

Every point runs in its own subprocess (``--point``), so peak memory (``ru_maxrss`` of that
process) and caches do not leak from one point into the next. Reported per point: wall time of
building the flows, routing, simulating and their sum (``total``), the process's wall time
including interpreter start-up and imports, peak RSS and its growth over the RSS after imports.
The cost table shows total wall and added memory against N and the exponent of a least-squares
fit ``cost ~ N^k`` over the points with N >= 64.

    python benchmarks/scale.py                                  # everything (long)
    python benchmarks/scale.py --quick                          # 8..256 GPUs, flow backend, no steps
    python benchmarks/scale.py --sizes 8 64 256 1024 --fabrics switch --workloads a2a_64MiB \\
        --backends flow --no-steps --label before --out /tmp/before.json
    python benchmarks/scale.py --profile --fabrics switch --sizes 256 --workloads a2a_64MiB

Results go to ``benchmarks/results/scale.json`` (``--out``); ``--merge`` keeps the points of an
existing file that this run does not measure again. ``--baseline FILE`` stores the points of an
earlier run (e.g. of the code before a change, ``--label before``) under ``baseline`` and prints
the before/after table of the points both runs measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("a2a_64MiB", "a2a_1MiB", "ring")
FABRICS = ("switch", "rail2", "fattree3")
BACKENDS = ("flow", "packet")
SIZES = (8, 64, 256, 1024, 4096)
STEP_EPS = (64, 128, 256)
STEP_CLUSTERS = ("hgx", "nvl72")
RING_BUFFER_BYTES = 64 << 20
A2A_BUFFER_BYTES = 64 << 20
PAIR_BYTES = 1 << 20
#: hop-packets per second of the packet engine assumed before any packet point has run
DEFAULT_HOP_PACKETS_PER_S = 0.9e6


# ---------------------------------------------------------------------------------- one point
# (runs in a child process: imports of cosim happen here, and are timed)

def fabric_topology(fabric: str, n: int):
    from cosim.topology import topology_from_dict

    if fabric == "switch":
        gen = {"kind": "star", "num_gpus": n, "bandwidth": "400Gbps", "latency": "1us", "mtu": 4096}
    elif fabric == "rail2":
        if n % 8:
            raise ValueError("rail2 needs a multiple of 8 GPUs")
        gen = ({"kind": "hgx_node"} if n == 8 else
               {"kind": "hgx_cluster", "num_nodes": n // 8, "nic_bandwidth": "400Gbps", "spines": 16,
                "nodes_per_leaf": 32})
    elif fabric == "fattree3":
        if n % 8:
            raise ValueError("fattree3 needs a multiple of 8 GPUs")
        gen = {"kind": "fat_tree", "num_nodes": n // 8, "gpus_per_node": 8, "nic_bandwidth": "400Gbps",
               "nodes_per_leaf": 4, "nodes_per_pod": 16, "spines_per_pod": 8, "cores": 16}
    else:
        raise ValueError(f"unknown fabric {fabric!r}")
    return topology_from_dict({"name": f"{fabric}-{n}", "generator": gen})


def build_workload(workload: str, topo, n: int):
    from cosim.network import FlowSet
    from cosim.network import deepep as D
    from cosim.network.libraries import build_collective

    fs = FlowSet()
    ranks = range(n)
    if workload == "a2a_64MiB":
        coll = build_collective(fs, "all_to_all", ranks, A2A_BUFFER_BYTES // n)
    elif workload == "a2a_1MiB":
        coll = build_collective(fs, "all_to_all", ranks, PAIR_BYTES)
    elif workload == "ring":
        coll = build_collective(fs, "all_reduce", ranks, RING_BUFFER_BYTES,
                                gpus_per_node=D.topology_gpus_per_node(topo))
    else:
        raise ValueError(f"unknown workload {workload!r}")
    return fs, coll


def expected_flows(workload: str, fabric: str, n: int) -> int:
    """Flow count of a point, computed without building it (to skip points that cannot fit)."""
    if workload.startswith("a2a"):
        return n * (n - 1)
    rings = 1 if fabric == "switch" or n == 8 else 8
    part = RING_BUFFER_BYTES // rings
    segment = part // n
    chunks = max(1, -(-segment // (1 << 20)))
    return rings * 2 * (n - 1) * n * chunks


def run_network_point(p: dict) -> dict:
    import numpy as np

    from cosim.network import simulate

    t0 = time.perf_counter()
    topo = fabric_topology(p["fabric"], p["gpus"])
    fs, coll = build_workload(p["workload"], topo, p["gpus"])
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = simulate(topo, fs, p["backend"])
    sim_total_s = time.perf_counter() - t1
    r = result.routed
    hops = np.diff(r.route_offsets)
    out = {
        "flows": int(r.num_flows), "build_s": build_s, "route_s": float(result.stats.get("route_s", 0.0)),
        "simulate_s": sim_total_s - float(result.stats.get("route_s", 0.0)),
        "total_s": build_s + sim_total_s,
        "completion_s": float(np.max(result.flow_finish_s)) if r.num_flows else 0.0,
        "hop_packets": int(np.dot(r.num_packets.astype(np.float64), hops)),
        "rate_updates": int(result.stats.get("rate_updates", 0)),
        "stats": {k: v for k, v in result.stats.items() if isinstance(v, (int, float))},
    }
    if p["backend"] == "packet":
        out["packet_engine_s"] = float(result.wall_s)
    return out


def step_topology(cluster: str, ep: int):
    from cosim.topology import topology_from_dict

    if cluster == "hgx":
        return topology_from_dict({"name": f"h200-hgx-{ep // 8}node", "gpu": "h200_sxm", "generator": {
            "kind": "hgx_cluster", "num_nodes": ep // 8, "nic_bandwidth": "400Gbps"}})
    racks = -(-ep // 72)
    gen = {"kind": "nvl72_rack"} if racks == 1 else {"kind": "nvl72_cluster", "num_racks": racks}
    return topology_from_dict({"name": f"gb200-nvl72-{racks}rack", "gpu": "gb200", "generator": gen})


def run_step_point(p: dict) -> dict:
    from cosim.engine.step import simulate_step
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec

    t0 = time.perf_counter()
    ep = p["ep"]
    model = load_model("deepseek-ai/DeepSeek-V3")
    topo = step_topology(p["cluster"], ep)
    kernels = (KernelTables.load("h200_sxm", framework="trtllm") if p["cluster"] == "hgx"
               else KernelTables.load("gb200"))
    spec = StepSpec(model, Parallelism(tp=ep, ep=ep, dp_attention=True),
                    Precision.from_checkpoint(model, dispatch="fp8"), "generation", p["batch"],
                    prefix_tokens=p["context"], moe_library="deepep_ll")
    tol = float(p.get("time_tolerance", 0.0))
    if tol:  # the opt-in approximation of the flow backend (exact by default)
        import functools

        from cosim.network import backends as B
        from cosim.network import flow_backend as FB
        B.BACKENDS["flow"] = functools.partial(FB.simulate_flow_level, time_tolerance=tol)
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = simulate_step(spec, kernels, topo, "flow")
    step_s = time.perf_counter() - t1
    return {"topology": topo.name, "setup_s": setup_s, "total_s": step_s, "step_time_s": result.step_time_s,
            "network_simulations": result.network_simulations, "network_wall_s": result.network_wall_s}


def run_point(p: dict) -> dict:
    import resource

    t0 = time.perf_counter()
    import numpy  # noqa: F401  (imports are part of the start-up cost)
    import cosim.network  # noqa: F401
    import cosim.topology  # noqa: F401
    if p["kind"] == "step":
        import cosim.engine.step  # noqa: F401
    import_s = time.perf_counter() - t0
    base_rss = _current_rss_mib()
    out = run_step_point(p) if p["kind"] == "step" else run_network_point(p)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of the whole process (start-up included): steadier than wall on a loaded machine
    out.update(import_s=import_s, baseline_rss_mib=base_rss, peak_rss_mib=usage.ru_maxrss / 1024,
               cpu_s=usage.ru_utime + usage.ru_stime)
    out["added_rss_mib"] = out["peak_rss_mib"] - base_rss
    return out


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------- the driver

def point_key(p: dict) -> str:
    if p["kind"] == "step":
        tol = p.get("time_tolerance", 0.0)
        return f"step/{p['cluster']}/ep{p['ep']}" + (f"/tol{tol:g}" if tol else "")
    return f"{p['fabric']}/{p['workload']}/{p['backend']}/{p['gpus']}"


def spawn(p: dict, timeout_s: float, profile: Path | None = None) -> dict:
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [__file__, "--point", json.dumps(p)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**p, "status": "timeout", "process_wall_s": time.perf_counter() - t0, "timeout_s": timeout_s}
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        status = "out of memory" if proc.returncode in (-9, 137) else "error"
        return {**p, "status": status, "process_wall_s": wall, "error": " | ".join(tail)}
    return {**p, **json.loads(lines[-1]), "status": "ok", "process_wall_s": wall}


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else None


def growth_rows(points: list[dict], sizes: list[int]) -> list[dict]:
    """One row per (fabric, workload, backend): total wall and added memory per N, fitted exponents."""
    series: dict[tuple, dict[int, dict]] = {}
    for p in points:
        if p["kind"] == "network":
            series.setdefault((p["fabric"], p["workload"], p["backend"]), {})[p["gpus"]] = p
        elif p["kind"] == "step":  # GPUs = EP
            tol = p.get("time_tolerance", 0.0)
            backend = f"flow tol {tol:g}" if tol else "flow"
            series.setdefault((f"step-{p['cluster']}", "dsv3_decode", backend), {})[p["ep"]] = p
    rows = []
    for (fabric, workload, backend), by_n in series.items():
        ok = {n: q for n, q in by_n.items() if q.get("status") == "ok"}
        big = sorted(n for n in ok if n >= 64)
        rows.append({
            "fabric": fabric, "workload": workload, "backend": backend,
            "cells": {n: by_n[n] for n in sizes if n in by_n},
            "time_exponent": fit_exponent(big, [ok[n]["total_s"] for n in big]),
            "memory_exponent": fit_exponent(big, [ok[n]["added_rss_mib"] for n in big]),
            "flows_exponent": fit_exponent(big, [ok[n].get("flows", 0) for n in big]),
        })
    return rows


def _cell(q: dict | None) -> str:
    if q is None:
        return ""
    if q.get("status") != "ok":
        return q.get("status", "?") if q.get("status") != "skipped" else f"skip ({q.get('reason', '')})"
    return f"{q['total_s']:.2f} s / {q['peak_rss_mib']:.0f} MiB"


def print_tables(console, points: list[dict], sizes: list[int]) -> list[dict]:
    from rich.table import Table

    rows = growth_rows(points, sorted(set(sizes) | set(STEP_EPS)))
    table = Table(title="Cost growth: wall (build + route + simulate) / peak RSS per point, and fitted "
                        "exponents k of cost ~ N^k (N >= 64)")
    sizes_shown = sorted(set(sizes) | {n for r in rows for n in r["cells"]})
    for col in ("fabric", "workload", "backend", *[f"N={n}" for n in sizes_shown], "k time", "k mem", "k flows"):
        table.add_column(col, justify="left" if col in ("fabric", "workload", "backend") else "right")
    fmt = lambda k: "-" if k is None else f"{k:.2f}"  # noqa: E731
    for r in rows:
        table.add_row(r["fabric"], r["workload"], r["backend"], *[_cell(r["cells"].get(n)) for n in sizes_shown],
                      fmt(r["time_exponent"]), fmt(r["memory_exponent"]), fmt(r["flows_exponent"]))
    console.print(table)
    detail = Table(title="Points (seconds; memory MiB)")
    for col in ("point", "flows", "build", "route", "simulate", "total", "process", "peak RSS", "added",
                "solves", "T sim us"):
        detail.add_column(col, justify="left" if col == "point" else "right")
    for p in points:
        if p["kind"] != "network" or p.get("status") != "ok":
            continue
        detail.add_row(point_key(p), f"{p['flows']:,}", f"{p['build_s']:.2f}", f"{p['route_s']:.2f}",
                       f"{p['simulate_s']:.2f}", f"{p['total_s']:.2f}", f"{p['process_wall_s']:.2f}",
                       f"{p['peak_rss_mib']:.0f}", f"{p['added_rss_mib']:.0f}", f"{p['rate_updates']:,}",
                       f"{p['completion_s'] * 1e6:.1f}")
    console.print(detail)
    steps = [p for p in points if p["kind"] == "step"]
    if steps:
        st = Table(title="DeepSeek-V3 decode steps, flow backend (EP = GPUs, DP attention, DeepEP low-latency)")
        for col in ("cluster", "EP", "tolerance", "topology", "status", "step wall s", "network s", "simulations",
                    "process s", "peak RSS MiB", "step time ms"):
            st.add_column(col, justify="left" if col in ("cluster", "topology", "status") else "right")
        for p in steps:
            ok = p.get("status") == "ok"
            st.add_row(p["cluster"], str(p["ep"]), f"{p.get('time_tolerance', 0.0):g}", p.get("topology", ""),
                       p.get("status", ""),
                       f"{p['total_s']:.2f}" if ok else "", f"{p['network_wall_s']:.2f}" if ok else "",
                       str(p["network_simulations"]) if ok else "", f"{p['process_wall_s']:.1f}",
                       f"{p['peak_rss_mib']:.0f}" if ok else "", f"{p['step_time_s'] * 1e3:.3f}" if ok else "")
        console.print(st)
    return rows


def comparison_rows(baseline: list[dict], points: list[dict]) -> list[dict]:
    """Before/after rows for the points measured (successfully or not) by both runs; steps under
    a time tolerance are compared with the exact step before."""
    before = {point_key(p): p for p in baseline}
    rows = []
    for p in points:
        tol = p["kind"] == "step" and p.get("time_tolerance")
        b = before.get(f"step/{p['cluster']}/ep{p['ep']}" if tol else point_key(p))
        if b is None:
            continue
        ok = b.get("status") == "ok" and p.get("status") == "ok"
        rows.append({"point": point_key(p) + (" (vs exact before)" if tol else ""), "before_status": b.get("status"),
                     "after_status": p.get("status"), "before_total_s": b.get("total_s"),
                     "after_total_s": p.get("total_s"), "before_peak_rss_mib": b.get("peak_rss_mib"),
                     "after_peak_rss_mib": p.get("peak_rss_mib"),
                     "speedup": b["total_s"] / p["total_s"] if ok and p["total_s"] > 0 else None})
    return rows


def print_comparison(console, baseline: list[dict], points: list[dict]) -> list[dict]:
    """Before/after rows for the points measured (successfully or not) by both runs."""
    from rich.table import Table

    rows = comparison_rows(baseline, points)
    if not rows:
        return rows
    table = Table(title="Before / after (wall of build + route + simulate, or of the step; peak RSS)")
    for col in ("point", "before s", "after s", "speedup", "before MiB", "after MiB"):
        table.add_column(col, justify="left" if col == "point" else "right")
    fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        table.add_row(r["point"],
                      fmt(r["before_total_s"], "{:.2f}") if r["before_status"] == "ok" else r["before_status"],
                      fmt(r["after_total_s"], "{:.2f}") if r["after_status"] == "ok" else r["after_status"],
                      fmt(r["speedup"], "{:.0f}x"), fmt(r["before_peak_rss_mib"], "{:.0f}"),
                      fmt(r["after_peak_rss_mib"], "{:.0f}"))
    console.print(table)
    return rows


MD_START = "<!-- scale-tables:start (python benchmarks/scale.py --markdown docs/network.md) -->"
MD_END = "<!-- scale-tables:end -->"
#: the issue's targets: (point key, what, limit in s, limit in MiB or None)
TARGETS = (("switch/a2a_64MiB/flow/1024", "1,024-GPU single-switch all-to-all (64 MiB per GPU)", 10.0, 1024.0),
           ("switch/a2a_64MiB/flow/4096", "4,096-GPU single-switch all-to-all (64 MiB per GPU)", 60.0, None),
           ("step/hgx/ep256", "DeepSeek-V3 EP256 decode step, HGX H200 cluster, exact", 5.0, None),
           ("step/nvl72/ep256", "DeepSeek-V3 EP256 decode step, 4 NVL72 racks, exact", 5.0, None),
           ("step/hgx/ep256/tol0.001", "DeepSeek-V3 EP256 decode step, HGX, time tolerance 1e-3 (opt-in)", 5.0, None),
           ("step/nvl72/ep256/tol0.001", "DeepSeek-V3 EP256 decode step, NVL72, time tolerance 1e-3 (opt-in)",
            5.0, None))


def _cpu(p: dict) -> str:
    return f"{p['cpu_s']:.2f}" if "cpu_s" in p else "-"


def render_markdown(data: dict) -> str:
    """The Scale tables of docs/network.md from a results file."""
    points = data.get("points", [])
    by_key = {point_key(p): p for p in points}
    fmt = lambda k: "-" if k is None else f"{k:.2f}"  # noqa: E731
    out = [f"Measured by `benchmarks/scale.py` ({data.get('label', '')}); load average "
           f"{' '.join(f'{x:.2f}' for x in data.get('load_average_start', []))} at the start, "
           f"{' '.join(f'{x:.2f}' for x in data.get('load_average_end', []))} at the end of the last run, "
           f"{data.get('machine', {}).get('cpus', '?')} CPUs. Regenerate these tables with "
           "`python benchmarks/scale.py --markdown docs/network.md`.", ""]
    net = [p for p in points if p["kind"] == "network"]
    sizes = sorted({p["gpus"] for p in net})
    out += ["**Cost growth**: wall time (build + route + simulate) / peak RSS of each point, and the "
            "exponent k of a least-squares fit cost ~ N^k over N >= 64 (time, added memory, flows).", ""]
    cpu = [p for p in net if "cpu_s" in p and p.get("status") == "ok"]
    if cpu:
        out[-1:-1] = ["Process CPU seconds (start-up included; steadier than wall on a loaded machine) of "
                      "the points that recorded them: " +
                      ", ".join(f"{point_key(p)} {p['cpu_s']:.2f}" for p in cpu if p["gpus"] >= 1024) + ".", ""]
    out.append("| fabric | workload | backend | " + " | ".join(f"N={n}" for n in sizes) + " | k time | k mem | k flows |")
    out.append("|---|---|---|" + "---:|" * (len(sizes) + 3))
    for r in growth_rows(net, sizes):
        cells = [_cell(r["cells"].get(n)) for n in sizes]
        out.append(f"| {r['fabric']} | {r['workload']} | {r['backend']} | " + " | ".join(cells) +
                   f" | {fmt(r['time_exponent'])} | {fmt(r['memory_exponent'])} | {fmt(r['flows_exponent'])} |")
    steps = [p for p in points if p["kind"] == "step"]
    if steps:
        out += ["", "**DeepSeek-V3 decode steps** (EP = GPUs, DP attention, 64 requests per rank at 4k "
                "context, FP8 DeepEP low-latency dispatch/combine, flow backend; tolerance 0 = exact, "
                "otherwise the opt-in `time_tolerance`, with the step time's error against exact):", "",
                "| cluster | EP | topology | tolerance | step wall s | network s | process CPU s | simulations "
                "| peak RSS MiB | step time ms | error vs exact |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in sorted(steps, key=lambda q: (q["cluster"], q["ep"], q.get("time_tolerance", 0.0))):
            tol = p.get("time_tolerance", 0.0)
            if p.get("status") != "ok":
                out.append(f"| {p['cluster']} | {p['ep']} | | {tol:g} | {p.get('status')} | | | | | | |")
                continue
            ex = by_key.get(f"step/{p['cluster']}/ep{p['ep']}")
            err = ("" if not tol or not ex or ex.get("status") != "ok" else
                   f"{(p['step_time_s'] - ex['step_time_s']) / ex['step_time_s'] * 100:+.3f} %")
            out.append(f"| {p['cluster']} | {p['ep']} | {p['topology']} | {tol:g} | {p['total_s']:.2f} | "
                       f"{p['network_wall_s']:.2f} | {_cpu(p)} | {p['network_simulations']} | {p['peak_rss_mib']:.0f} | "
                       f"{p['step_time_s'] * 1e3:.3f} | {err} |")
    out += ["", "**Targets** (issue 9, on this 2-core machine):", "",
            "| target | limit | measured | met |", "|---|---|---|---|"]
    for key, what, limit_s, limit_mib in TARGETS:
        p = by_key.get(key)
        lim = f"< {limit_s:g} s" + (f", < {limit_mib / 1024:g} GiB" if limit_mib else "")
        if p is None or p.get("status") != "ok":
            out.append(f"| {what} | {lim} | {'not measured' if p is None else p.get('status')} | no |")
            continue
        ok = p["total_s"] < limit_s and (limit_mib is None or p["peak_rss_mib"] < limit_mib)
        out.append(f"| {what} | {lim} | {p['total_s']:.2f} s (process CPU {_cpu(p)} s), {p['peak_rss_mib']:.0f} MiB | "
                   f"{'yes' if ok else '**no**'} |")
    base = data.get("baseline") or {}
    rows = comparison_rows(base.get("points", []), points)
    if rows:
        out += ["", f"**Speed-up against the code before this work** ({base.get('label', '')}; "
                "wall of build + route + simulate, or of the step; peak RSS):", "",
                "| point | before s | after s | speed-up | before MiB | after MiB |", "|---|---:|---:|---:|---:|---:|"]
        f2 = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
        for r in rows:
            bs = f2(r["before_total_s"], "{:.2f}") if r["before_status"] == "ok" else r["before_status"]
            a_s = f2(r["after_total_s"], "{:.2f}") if r["after_status"] == "ok" else r["after_status"]
            out.append(f"| {r['point']} | {bs} | {a_s} | {f2(r['speedup'], '{:.1f}x')} | "
                       f"{f2(r['before_peak_rss_mib'], '{:.0f}')} | {f2(r['after_peak_rss_mib'], '{:.0f}')} |")
    return "\n".join(out)


def plan(args) -> list[dict]:
    pts = []
    for fabric in ([] if args.only_steps else args.fabrics):
        for workload in args.workloads:
            for backend in args.backends:
                for n in args.sizes:
                    pts.append({"kind": "network", "fabric": fabric, "workload": workload, "backend": backend,
                                "gpus": n})
    if args.steps:
        for tol in args.step_tolerances:
            for cluster in STEP_CLUSTERS:
                for ep in args.eps:
                    pts.append({"kind": "step", "cluster": cluster, "ep": ep, "batch": 64, "context": 4096,
                                **({"time_tolerance": tol} if tol else {})})
    return pts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--fabrics", nargs="+", choices=FABRICS, default=list(FABRICS))
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--steps", action=argparse.BooleanOptionalAction, default=True,
                        help="DeepSeek-V3 decode steps (default on)")
    parser.add_argument("--eps", type=int, nargs="+", default=list(STEP_EPS))
    parser.add_argument("--only-steps", action="store_true", help="the DeepSeek-V3 steps only, no network points")
    parser.add_argument("--step-tolerances", type=float, nargs="+", default=[0.0, 1e-3],
                        help="flow-backend time tolerances of the step points (0: exact; default 0 and 1e-3)")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="DOC",
                        help="render the tables of --out as Markdown (to stdout, or into DOC between the "
                             "scale-tables markers) and exit")
    parser.add_argument("--packet-budget", type=float, default=300.0,
                        help="skip packet points predicted to take longer (seconds)")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill a point after this many seconds")
    parser.add_argument("--max-flows", type=float, default=40e6, help="skip points with more flows")
    parser.add_argument("--quick", action="store_true", help="8..256 GPUs, flow backend, no steps")
    parser.add_argument("--profile", action="store_true",
                        help="run the points under cProfile and print the top functions")
    parser.add_argument("--label", default="", help="free text stored with the results (e.g. a commit)")
    parser.add_argument("--merge", action="store_true", help="keep other points of an existing --out file")
    parser.add_argument("--baseline", type=Path, help="results of an earlier run to compare against")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = parser.parse_args()
    if args.point:
        print(json.dumps(run_point(json.loads(args.point))))
        return
    if args.markdown:
        text = render_markdown(json.loads(args.out.read_text()))
        if args.markdown == "-":
            print(text)
        else:
            doc = Path(args.markdown)
            body = doc.read_text()
            start, end = body.index(MD_START) + len(MD_START), body.index(MD_END)
            doc.write_text(body[:start] + "\n" + text + "\n" + body[end:])
            print(f"tables written into {doc}")
        return
    if args.quick:
        args.sizes, args.backends, args.steps = [n for n in args.sizes if n <= 256], ["flow"], False

    from rich.console import Console

    console = Console(width=200)
    load0 = os.getloadavg()
    console.print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
                  f"({os.cpu_count()} CPUs)")
    points = []
    hop_rate: dict[tuple, float] = {}
    flow_hops: dict[str, int] = {}
    for p in plan(args):
        key = point_key(p)
        if p["kind"] == "network":
            flows = expected_flows(p["workload"], p["fabric"], p["gpus"])
            if flows > args.max_flows:
                points.append({**p, "status": "skipped", "reason": f"{flows / 1e6:.0f} M flows"})
                console.print(f"{key}: skipped ({flows:,} flows > --max-flows)")
                continue
            if p["backend"] == "packet":
                series = (p["fabric"], p["workload"])
                hops = flow_hops.get(f"{p['fabric']}/{p['workload']}/flow/{p['gpus']}")
                rate = hop_rate.get(series, DEFAULT_HOP_PACKETS_PER_S)
                if hops is None or hops / rate > args.packet_budget:
                    why = "no flow point" if hops is None else f"~{hops / rate:.0f} s predicted"
                    points.append({**p, "status": "skipped", "reason": why})
                    console.print(f"{key}: skipped ({why})")
                    continue
        prof = Path(f"/tmp/scale-{key.replace('/', '_')}.prof") if args.profile else None
        q = spawn(p, args.timeout, prof)
        points.append(q)
        if q["status"] == "ok" and p["kind"] == "network":
            if p["backend"] == "flow":
                flow_hops[key] = q["hop_packets"]
            else:
                hop_rate[(p["fabric"], p["workload"])] = q["hop_packets"] / max(q["packet_engine_s"], 1e-9)
        summary = (f"{q.get('total_s', float('nan')):.2f} s, peak {q.get('peak_rss_mib', float('nan')):.0f} MiB"
                   if q["status"] == "ok" else q["status"] + (f": {q.get('error', '')}" if "error" in q else ""))
        console.print(f"{key}: {summary}  (process {q['process_wall_s']:.1f} s, load {os.getloadavg()[0]:.2f})")
        if prof is not None and prof.exists():
            import pstats
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(15)
    print_tables(console, points, args.sizes)
    load1 = os.getloadavg()
    console.print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    old = []
    if args.merge and args.out.exists():
        measured = {point_key(p) for p in points}
        old = [p for p in json.loads(args.out.read_text()).get("points", []) if point_key(p) not in measured]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    all_points = old + points
    baseline = {}
    if args.baseline:
        base = json.loads(args.baseline.read_text())
        baseline = {"label": base.get("label", ""), "load_average_start": base.get("load_average_start"),
                    "load_average_end": base.get("load_average_end"), "points": base.get("points", [])}
    elif args.merge and args.out.exists():
        baseline = json.loads(args.out.read_text()).get("baseline", {})
    comparison = print_comparison(console, baseline.get("points", []), all_points) if baseline else []
    args.out.write_text(json.dumps({
        "label": args.label,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
        "load_average_start": load0, "load_average_end": load1,
        "workloads": {"a2a_64MiB": "all-to-all, 64 MiB buffer per GPU (64 MiB / N per pair)",
                      "a2a_1MiB": "all-to-all, 1 MiB per ordered pair",
                      "ring": "NCCL ring all-reduce of 64 MiB, 1 MiB chunks, one ring per rail across nodes"},
        "points": all_points,
        "growth": [{k: v for k, v in r.items() if k != "cells"}
                   for r in growth_rows(all_points, sorted(set(args.sizes) | set(STEP_EPS)))],
        "baseline": baseline,
        "comparison": comparison,
    }, indent=1, default=str))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
