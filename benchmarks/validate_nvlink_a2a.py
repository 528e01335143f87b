"""NVLink MoE all-to-all across a GB200 NVL72 rack: cosim vs TensorRT-LLM's measured kernels.

Fits the kernel-rate overheads on the EP 2/4 rows (one compute tray) and reports the error on the
EP 8-64 rows (across trays); see :mod:`cosim.validation.nvlink_a2a` for the traffic model.

    python benchmarks/validate_nvlink_a2a.py [--out benchmarks/results/validate_nvlink_a2a.json]

About 7 s on 2 cores (flow backend, 1,620 rows).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "validate_nvlink_a2a.json"))
    args = ap.parse_args()
    try:
        import aiconfigurator_core  # noqa: F401
    except ImportError:
        print("aiconfigurator-core is not installed: nothing to validate against", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    from cosim.validation import nvlink_a2a as N

    console = Console() if sys.stdout.isatty() else Console(width=140)
    t0 = time.perf_counter()
    with console.status("simulating the gb200 NVLink all-to-all rows"):
        res = N.run()
    runtime = time.perf_counter() - t0

    t = Table(title="Kernel-rate constants, fitted on EP 2 and 4 (one tray)")
    for col in ("phase", "dtype", "fixed us", "kernel rate GB/s"):
        t.add_column(col, justify="left" if col in ("phase", "dtype") else "right")
    for (phase, dtype), o in sorted(res.constants.items()):
        t.add_row(phase, dtype, f"{o.fixed_s * 1e6:.1f}", f"{o.kernel_rate_bytes_per_s / 1e9:.0f}")
    console.print(t)

    eps = sorted(res.rows.ep_size.unique())
    t = Table(title="Median |error| % per EP size (EP 2/4 fitted, EP 8-64 held out); worst in brackets")
    for col in ["phase", "dtype"] + [f"EP{e}" for e in eps]:
        t.add_column(col, justify="left" if col in ("phase", "dtype") else "right")
    for (phase, dtype), g in res.summary.groupby(["phase", "dtype"]):
        cells = {int(r.ep_size): f"{r.median_abs_pct:.1f} ({r.worst_abs_pct:.0f})" for r in g.itertuples()}
        t.add_row(phase, dtype, *[cells.get(e, "-") for e in eps])
    console.print(t)
    held = res.held_out()
    fit_rows = res.rows[~res.rows.index.isin(held.index)]
    console.print(f"held out (EP 8-64, {len(held)} rows): median |err| {held.error_pct.abs().median():.1f} %; "
                  f"without combine_low_precision {held[held.phase != 'combine_low_precision'].error_pct.abs().median():.1f} %; "
                  f"fit rows (EP 2/4): {fit_rows.error_pct.abs().median():.1f} %")

    cols = ["phase", "dtype", "ep_size", "num_tokens", "measured_s", "network_s", "gpu_bytes", "predicted_s",
            "error_pct"]
    out = {
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
        "runtime_s": runtime,
        "rows": len(res.rows),
        "constants": {f"{p}/{d}": {"fixed_us": o.fixed_s * 1e6, "kernel_rate_GBps": o.kernel_rate_bytes_per_s / 1e9}
                      for (p, d), o in sorted(res.constants.items())},
        "held_out_median_abs_pct": float(held.error_pct.abs().median()),
        "held_out_median_abs_pct_without_low_precision":
            float(held[held.phase != "combine_low_precision"].error_pct.abs().median()),
        "fit_median_abs_pct": float(fit_rows.error_pct.abs().median()),
        "summary": [{k: (float(v) if hasattr(v, "item") else v) for k, v in r.items()}
                    for r in res.summary.to_dict(orient="records")],
        "rows_table": {"columns": cols, "rows": [[(float(f"{v:.6g}") if isinstance(v, float) else
                                                   (v.item() if hasattr(v, "item") else v)) for v in row]
                                                 for row in res.rows[cols].itertuples(index=False)]},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1)
    # One line per table row keeps the file diffable and small.
    text = re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s+\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    path.write_text(text)
    console.print(f"{len(res.rows)} rows; wrote {path}; runtime {runtime:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
