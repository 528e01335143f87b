"""Macro-steps: wall time of serving runs step by step against macro-stepped, and their agreement.

A replica whose decode batch cannot change over its next steps advances them in one event
(``ServingOptions.macro_steps``, docs/serving.md). Measured, with warm step-time models (the
first call of each case builds or loads them, untimed):

(a) DeepSeek-V3.2 aggregated on ``b200-hgx-16node`` (16 x TP8/EP8 DP attention,
    ``experiments/deployments/dsv32-b200-agg.yaml``), agentic-coding (524k cached prefix, 256 new,
    8k output), closed loop of 32 users;
(b) DeepSeek-V3.2 P/D chat (``experiments/deployments/dsv32-b200-pd.yaml``), closed loop of 512
    users;
(c) the quickstart exploration (``cosim explore experiments/quickstart.yaml --no-report``) in a
    subprocess, once with a copy of the package whose ``ServingOptions.macro_steps`` defaults to
    False ("before") and once as is ("after"), sharing one warm step-model cache.

For (a) and (b) it also reports the largest relative difference of every per-request array
(expected 0) and of the pools' busy time (summation order: ~1e-16).

Prints and writes ``benchmarks/results/serving_macro.json``.

    python benchmarks/serving_macro.py [--requests-a 64] [--requests-b 2048] [--no-explore]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "serving_macro.json"
FIELDS = ("arrival_s", "first_token_s", "finish_s", "prefill_end_s", "kv_transfer_s", "prefix_hit_tokens",
          "prefilled_tokens", "output_tokens_done", "preemptions", "itl_s", "max_itl_s", "entry_gpu", "decode_gpu")


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        return float("inf")
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return 0.0
    return float(np.max(np.abs(a - b)[~same] / np.maximum(np.abs(a[~same]), 1e-300)))


def agreement(a, b) -> dict:
    out = {f: max_rel_diff(getattr(a, f), getattr(b, f)) for f in FIELDS if getattr(a, f) is not None}
    out["steps_equal"] = a.steps == b.steps and a.replica_steps == b.replica_steps
    out["duration_equal"] = a.duration_s == b.duration_s
    out["pool_busy_s"] = max(abs(a.pool_busy_s[k] / b.pool_busy_s[k] - 1) for k in a.pool_busy_s)
    return out


def serving_case(name: str, deployment: str, preset_name: str, users: int, n: int, cache: str) -> dict:
    from cosim.serving.deployment import load_deployment
    from cosim.serving.run import serve
    from cosim.serving.simulator import ServingOptions
    from cosim.serving.workload import ClosedLoop, generate_requests, preset

    dep = load_deployment(ROOT / deployment)
    wl = preset(preset_name).with_arrival(ClosedLoop(users))
    reqs = generate_requests(wl, num_requests=n, seed=0)
    options = ServingOptions(ramp_s=max(0.1, users / 1000.0))  # as cosim explore runs a point
    warm = generate_requests(wl, num_requests=min(n, users), seed=0)
    serve(dep, warm, slo=wl.slo, options=options, cache_dir=cache, link_load=False)  # builds or loads the models
    res = {}
    for macro in (False, True):
        t0 = time.perf_counter()
        r = serve(dep, reqs, slo=wl.slo, options=options, cache_dir=cache, link_load=False, macro_steps=macro)
        res[macro] = (time.perf_counter() - t0, r)
    (wa, a), (wb, b) = res[False], res[True]
    row = {"deployment": deployment, "workload": preset_name, "users": users, "requests": n,
           "finished": a.summary.finished, "steps": a.run.steps, "macro": b.run.macro,
           "step_by_step": {"serve_wall_s": wa, "simulation_s": a.run.wall_s},
           "macro_steps": {"serve_wall_s": wb, "simulation_s": b.run.wall_s},
           "simulation_speedup": a.run.wall_s / b.run.wall_s,
           "tpot_mean_ms": [a.summary.tpot.mean_s * 1e3, b.summary.tpot.mean_s * 1e3],
           "max_rel_diff": agreement(a.run, b.run)}
    print(f"({name}) {preset_name}, {users} users, {n} requests on {deployment}: {sum(a.run.steps.values())} steps; "
          f"simulation {a.run.wall_s:.2f} s step by step, {b.run.wall_s:.2f} s macro-stepped "
          f"(x{row['simulation_speedup']:.1f}; {b.run.macro['virtual_steps']} virtual steps in "
          f"{b.run.macro['macros']} macro-steps, {b.run.macro['truncated']} cut short); "
          f"largest per-request difference {max(v for k, v in row['max_rel_diff'].items() if k in FIELDS):.1e}, "
          f"busy time {row['max_rel_diff']['pool_busy_s']:.1e}")
    return row


def explore_case(cache: str) -> dict:
    """Wall of the quickstart exploration, step by step (a patched copy of the package) and
    macro-stepped, with one warm step-model cache."""
    spec = ROOT / "experiments" / "quickstart.yaml"
    out: dict = {"experiment": str(spec.relative_to(ROOT))}
    with tempfile.TemporaryDirectory(prefix="cosim-macro-bench-") as tmp:
        before = Path(tmp) / "before"
        shutil.copytree(ROOT / "cosim", before / "cosim", ignore=shutil.ignore_patterns("__pycache__"))
        sim = before / "cosim" / "serving" / "simulator.py"
        text = sim.read_text()
        line = "    macro_steps: bool = True\n"
        assert line in text, "ServingOptions.macro_steps default not found"
        sim.write_text(text.replace(line, "    macro_steps: bool = False\n"))

        def run(label: str, pythonpath: str | None, tag: str) -> float:
            env = dict(os.environ)
            if pythonpath:
                env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cosim.cli.main", "explore", str(spec), "-o", str(Path(tmp) / tag),
                            "--no-report", "--cache", cache], check=True, env=env, cwd=tmp,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            print(f"(c) quickstart explore, {label}: {wall:.1f} s")
            return wall

        run("warming the step-model cache (macro-stepped)", None, "warm")
        out["before_step_by_step_wall_s"] = run("step by step (before)", str(before), "before")
        out["after_macro_steps_wall_s"] = run("macro-stepped (after)", None, "after")
        out["rows_equal"] = _rows(Path(tmp) / "before") == _rows(Path(tmp) / "after")
        print(f"(c) same result rows: {out['rows_equal']}")
    return out


def _rows(folder: Path) -> list:
    """The exploration's result rows (``results.parquet``) without their wall-time columns."""
    import pyarrow.parquet as pq

    rows = pq.read_table(folder / "results.parquet").to_pylist()
    return sorted(json.dumps({k: v for k, v in r.items() if "wall" not in k}, sort_keys=True, default=str)
                  for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests-a", type=int, default=64)
    ap.add_argument("--requests-b", type=int, default=2048)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cosim-serving-macro-cache"),
                    help="step-model cache (reused across runs of the benchmark)")
    ap.add_argument("--no-explore", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    out: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "platform": platform.platform()}}
    out["a_agentic_aggregated"] = serving_case("a", "experiments/deployments/dsv32-b200-agg.yaml", "agentic-coding",
                                               32, args.requests_a, args.cache)
    out["b_chat_pd"] = serving_case("b", "experiments/deployments/dsv32-b200-pd.yaml", "chat", 512,
                                    args.requests_b, args.cache)
    if not args.no_explore:
        out["c_quickstart_explore"] = explore_case(args.cache)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
