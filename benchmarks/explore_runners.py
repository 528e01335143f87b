"""Runners and resumption of ``cosim explore`` on a shipped experiment (issue 10's evidence).

On ``experiments/quickstart.yaml`` (or ``--experiment``), each run cold (its own result folder
and step-model cache):

1. ``clean``: the local runner (two worker processes), uninterrupted: the reference rows;
2. ``killed``: ``cosim explore`` in a subprocess, SIGKILLed once ``--kill-after`` points have
   finished (the process group: its workers die too), then run again into the same folder: the
   points it finished before the kill, the points the second run reused and evaluated, the
   duplicate keys (must be 0) and whether the rows equal the clean run's;
3. ``ray``: the same experiment on a real Ray head started here on 127.0.0.1 (``ray start
   --head``) and stopped after: whether its rows equal the clean run's.

Rows are compared on every column except the timings (:data:`cosim.explore.evaluate.
TIMING_COLUMNS`). Prints a summary and writes ``benchmarks/results/explore_runners.json``.

    python benchmarks/explore_runners.py [--experiment experiments/quickstart.yaml] [--kill-after 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "explore_runners.json"


def _stable(rows):
    from cosim.explore.evaluate import TIMING_COLUMNS

    return sorted((json.dumps({k: v for k, v in r.items() if k not in TIMING_COLUMNS}, sort_keys=True, default=str)
                   for r in rows))


def _finished(out: Path) -> int:
    return len(list((out / "points").glob("*.parquet")))


def _explore(exp: Path, out: Path, **kw):
    from cosim.explore import explore, load_experiment

    t0 = time.perf_counter()
    res = explore(load_experiment(exp), out, finalists=False, **kw)
    return res, time.perf_counter() - t0


def killed_then_resumed(exp: Path, base: Path, kill_after: int, clean_rows) -> dict:
    out = base / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "explore", str(exp), "-o", str(out), "-q", "-j", "2",
                             "--no-finalists"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=ROOT)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and _finished(out) < kill_after:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the workers' exits
    before = _finished(out)
    res, wall = _explore(exp, out, workers=2)
    keys = [r["key"] for r in res.rows]
    return {"finished_before_kill": before, "reused": res.reused, "evaluated_after": res.evaluated,
            "points": len(res.rows), "duplicate_keys": len(keys) - len(set(keys)),
            "rows_equal_clean": _stable(res.rows) == clean_rows, "resume_wall_s": round(wall, 2),
            "temp_files_left": len(list((out / "points").glob(".*.tmp")))}


def on_ray(exp: Path, base: Path, clean_rows) -> dict:
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if not ray_bin:
        return {"error": "Ray is not installed (pip install '.[ray]')"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="cosim-ray-")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                    "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    try:
        res, wall = _explore(exp, base / "ray", runner="ray", address=f"127.0.0.1:{port}")
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=180)
        shutil.rmtree(temp, ignore_errors=True)
    return {"address": f"127.0.0.1:{port}", "points": len(res.rows), "evaluated": res.evaluated,
            "rows_equal_clean": _stable(res.rows) == clean_rows, "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    ap.add_argument("--kill-after", type=int, default=5, help="finished points before the SIGKILL")
    args = ap.parse_args()
    exp = Path(args.experiment).resolve()
    base = Path(tempfile.mkdtemp(prefix="cosim-runners-"))
    try:
        clean, wall = _explore(exp, base / "clean", workers=2)
        clean_rows = _stable(clean.rows)
        out = {"experiment": str(exp.relative_to(ROOT)) if exp.is_relative_to(ROOT) else str(exp),
               "clean": {"points": len(clean.rows), "wall_s": round(wall, 2)},
               "killed": killed_then_resumed(exp, base, args.kill_after, clean_rows),
               "ray": on_ray(exp, base, clean_rows)}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out, indent=1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
