"""Speed of ``cosim explore`` (issue 10's target: the disaggregation study in under 10 minutes).

Runs two experiments **cold** (a fresh result folder, so a fresh step-model cache, and a fresh
Python process, so no in-process cache either), with one worker (``workers = 1``: the machine's
other core is often busy, and one worker's points/s is what a pool of N multiplies):

- ``quickstart``: ``experiments/quickstart.yaml`` (16 points, Qwen3-30B-A3B on 2 HGX H200 nodes);
- ``study-slice``: a fixed slice of the study's ``hgx-b200.yaml`` (:data:`SLICE`: Qwen3-235B-A22B
  on the 16 HGX B200 nodes, the three workloads, every mode, one colocated layout, one AFD split:
  12 points), which has the study's sharing structure (the same deployments under three
  workloads, prefill pools shared by the P/D modes).

For each it prints and records the wall time, the points, points/s, the CPU time (on a machine
shared with other jobs the wall time grows and the CPU time hardly does: points per CPU second
times the cores is the projection for an idle machine) and the per-phase split:
step-model building (its simulated steps and its kernel-work tables), serving simulations, the
rest of the points' evaluation (feasibility, requests, load search bookkeeping) and the
finalists' close look (``packet = False``, as the study runs it). ``--label`` names the run
(``before`` / ``after``) in ``benchmarks/results/explore_speed.json``; the per-point metrics are
kept, and when a ``before`` run is there the ``after`` run's metrics are compared with it point by
point (tokens/s/GPU at the best load, TTFT and TPOT p90, best concurrency, status).

    python benchmarks/explore_speed.py [--label after] [--only quickstart] [--study]

``--study`` also runs the whole study (its experiments, with their own ``workers``) cold
and records its wall time and points/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "explore_speed.json"
STUDY = ROOT / "experiments" / "disaggregation"

#: The study slice (a restriction of ``hgx-b200.yaml``'s space; same load search and seed).
SLICE = """\
name: study-slice
models: [Qwen/Qwen3-235B-A22B]
topology: b200-hgx-16node
gpus: 128
workloads: [chat, coding, agentic-coding]
space:
  modes: [aggregated, pd, pd+afd, aggregated+afd]
  replicas: [{tp: 8, ep: 8, dp_attention: true}]
  prefill_replicas: [{tp: 8, ep: 8}]
  prefill_gpus: [32]
  afd: {gpus: [16], attention_gpus: [8], micro_batches: [2]}
  max_batch: [64]
  token_budget: [2048]
  mtp: [0]
  mtp_acceptance: 0.8
load: {concurrency: [16, 4096], attainment: 0.9, growth: 4, steps: 2, requests_per_user: 1, min_requests: 48}
seed: 0
workers: 1
"""

#: Metrics compared point by point between two runs.
METRICS = ("tokens_per_s_per_gpu", "ttft_p90_ms", "tpot_p90_ms")


def child(name: str, experiment: str, out_dir: str, workers: int) -> dict:
    """One cold run in this (fresh) process: the points, then the finalists; phase times."""
    from cosim.explore import load_experiment
    from cosim.explore.finalists import examine_finalists
    from cosim.explore.run import explore

    spec = load_experiment(experiment)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    res = explore(spec, out_dir, workers=workers, finalists=False)
    points_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    examine_finalists(spec, res.enumeration.points, res.rows, Path(out_dir), Path(out_dir) / "step-models", False,
                      None)
    finalists_s = time.perf_counter() - t1
    cpu_s = time.process_time() - cpu0  # one worker: everything ran in this process
    rows = res.rows

    def total(col):
        vals = [r.get(col) for r in rows]
        return float(sum(v for v in vals if isinstance(v, (int, float)) and not math.isnan(v)))

    phases = {"points_s": points_s, "finalists_s": finalists_s,
              "step_simulation_s": total("step_simulate_s"), "kernel_work_s": total("step_work_s"),
              "step_models_s": total("step_model_s"), "serving_s": total("serving_s"),
              "point_wall_sum_s": total("wall_s")}
    if "step_model_s" in (rows[0] if rows else {}):
        phases["other_s"] = phases["point_wall_sum_s"] - phases["step_models_s"] - phases["serving_s"]
    keep = ("key", "mode", "workload", "model", "status", "concurrency", "evaluations", "reason", *METRICS)
    return {"name": name, "points": len(rows), "evaluated": res.evaluated, "wall_s": points_s + finalists_s,
            "points_per_s": len(rows) / (points_s + finalists_s), "cpu_s": cpu_s,
            "points_per_cpu_s": len(rows) / cpu_s, "phases": phases,
            "rows": [{k: r.get(k) for k in keep} for r in rows]}


def run_cold(name: str, experiment: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"explore-speed-{name}-") as tmp:
        out = Path(tmp) / "out"
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, __file__, "--child", name, experiment, str(out), str(workers), str(report)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        data = json.loads(report.read_text())
    data["process_wall_s"] = wall
    return data


def run_study() -> dict:
    """The whole study cold (each experiment with its own ``workers``), points only."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="explore-speed-study-") as tmp:
        for stem in ("hgx-b200", "hgx-nic", "nvl72", "nvl72-micro-batches"):
            cmd = [sys.executable, "-m", "cosim", "explore", str(STUDY / f"{stem}.yaml"), "-o", f"{tmp}/{stem}",
                   "--no-finalists", "--no-report", "-q"]
            t0 = time.perf_counter()
            c0 = os.times()
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            c1 = os.times()
            import pyarrow.parquet as pq

            n = pq.read_table(f"{tmp}/{stem}/results.parquet").num_rows
            out[stem] = {"wall_s": time.perf_counter() - t0, "points": n,
                         "cpu_s": (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)}
    wall = sum(v["wall_s"] for v in out.values())
    pts = sum(v["points"] for v in out.values())
    return {"experiments": out, "wall_s": wall, "points": pts, "points_per_s": pts / wall}


def compare(before: dict, after: dict) -> dict:
    """Per-point relative differences of :data:`METRICS` (after vs before) and status changes."""
    ref = {r["key"]: r for r in before["rows"]}
    diffs = {m: [] for m in METRICS}
    changed = []
    for r in after["rows"]:
        b = ref.get(r["key"])
        if b is None:
            continue
        if (b["status"], b.get("concurrency")) != (r["status"], r.get("concurrency")):
            changed.append({"key": r["key"], "before": [b["status"], b.get("concurrency")],
                            "after": [r["status"], r.get("concurrency")]})
        for m in METRICS:
            x, y = b.get(m), r.get(m)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x == x and y == y and x:
                diffs[m].append(abs(y - x) / abs(x))
    return {"points": len(after["rows"]), "status_or_load_changed": changed,
            **{f"max_rel_diff_{m}": (max(v) if v else 0.0) for m, v in diffs.items()},
            **{f"mean_rel_diff_{m}": (sum(v) / len(v) if v else 0.0) for m, v in diffs.items()}}


def show(d: dict) -> None:
    ph = d["phases"]
    print(f"{d['name']}: {d['points']} points in {d['wall_s']:.1f} s = {d['points_per_s']:.3f} points/s "
          f"(points {ph['points_s']:.1f} s, finalists {ph['finalists_s']:.1f} s; CPU {d.get('cpu_s', math.nan):.1f} s)")
    if ph.get("step_models_s"):
        print(f"  per point, summed: step models {ph['step_models_s']:.1f} s (simulated steps "
              f"{ph['step_simulation_s']:.1f} s, kernel-work tables {ph['kernel_work_s']:.1f} s), serving "
              f"{ph['serving_s']:.1f} s, other {ph.get('other_s', float('nan')):.1f} s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, experiment, out, workers, report = sys.argv[2:7]
        Path(report).write_text(json.dumps(child(name, experiment, out, int(workers))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="after", help="name of this run in the JSON (before / after)")
    ap.add_argument("--only", choices=("quickstart", "study-slice"), help="run one experiment only")
    ap.add_argument("--study", action="store_true", help="also run the whole study cold")
    args = ap.parse_args()
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs = data.get(args.label, {})
    with tempfile.TemporaryDirectory() as tmp:
        slice_yaml = Path(tmp) / "study-slice.yaml"
        slice_yaml.write_text(SLICE)
        # the slice names its model and topology presets: resolved from the study folder
        experiments = {"quickstart": str(ROOT / "experiments" / "quickstart.yaml"), "study-slice": str(slice_yaml)}
        for name, path in experiments.items():
            if args.only and name != args.only:
                continue
            runs[name] = run_cold(name, path, 1)
            show(runs[name])
    if args.study:
        runs["study"] = run_study()
        s = runs["study"]
        print(f"study: {s['points']} points in {s['wall_s']:.0f} s = {s['points_per_s']:.3f} points/s")
    runs["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d %H:%M")}
    data[args.label] = runs
    if args.label != "before" and "before" in data:
        data.setdefault("comparison", {})
        for name in ("quickstart", "study-slice"):
            if name in data["before"] and name in runs:
                c = data["comparison"][name] = compare(data["before"][name], runs[name])
                c["speedup"] = data["before"][name]["wall_s"] / runs[name]["wall_s"]
                print(f"{name} vs before: x{c['speedup']:.2f} faster; max |rel diff| "
                      + ", ".join(f"{m} {c[f'max_rel_diff_{m}']:.2e}" for m in METRICS)
                      + f"; status/load changes: {len(c['status_or_load_changed'])}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
