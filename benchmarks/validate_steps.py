"""cosim step times next to aiconfigurator's own estimates (DeepSeek-V3, Qwen3-235B on h200_sxm).

Also runs the issue's showcase: DeepSeek-V3 decode, 128 tokens per GPU, context 4096, EP16 over
two HGX-H200 nodes, with both backends, and reports step time, breakdown and wall time.

    python benchmarks/validate_steps.py [--out benchmarks/results/validate_steps.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cosim.validation.steps import StepCase, compare, cosim_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "validate_steps.json")
    args = parser.parse_args()
    console = Console(width=170)
    t0 = time.perf_counter()
    rows = compare()
    table = Table(title="Step time: cosim (flow backend) vs aiconfigurator estimate, h200_sxm, trtllm 1.3.0rc20 tables")
    for col in ("deployment", "phase", "batch/rank", "cosim ms", "aiconfigurator ms", "diff", "compute ms",
                "comm ms", "exposed ms", "wall s"):
        table.add_column(col, justify="left" if col == "deployment" else "right")
    for r in rows:
        table.add_row(r["case"], r["phase"], str(r["batch_per_rank"]), f"{r['cosim_ms']:.2f}",
                      f"{r['aiconfigurator_ms']:.2f}", f"{r['diff_pct']:+.1f}%", f"{r['compute_ms']:.2f}",
                      f"{r['comm_ms']:.2f}", f"{r['exposed_comm_ms']:.2f}", f"{r['wall_s']:.2f}")
    console.print(table)

    showcase = StepCase("deepseek-ai/DeepSeek-V3", "h200-hgx-2node", 16, 16, True, "generation", 128, 1, 4096)
    runs = {}
    for backend in ("flow", "packet"):
        t1 = time.perf_counter()
        result = cosim_step(showcase, backend)
        wall = time.perf_counter() - t1
        runs[backend] = {
            "step_ms": result.step_time_s * 1e3, "wall_s": wall,
            "compute_ms": {k: v * 1e3 for k, v in result.compute_by_class_s.items()},
            "comm_ms": {k: v * 1e3 for k, v in result.comm_by_collective_s.items()},
            "exposed_ms": {k: v * 1e3 for k, v in result.exposed_comm_by_collective_s.items()},
            "network_simulations": result.network_simulations, "network_wall_s": result.network_wall_s,
        }
        console.print(f"showcase {showcase.label}, decode 128 tok/GPU, ctx 4096, {backend}: "
                      f"step {result.step_time_s * 1e3:.2f} ms, wall {wall:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "showcase": runs, "total_wall_s": time.perf_counter() - t0},
                                   indent=2, default=float))
    console.print(f"written to {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
