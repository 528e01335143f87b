"""Communication validation against aiconfigurator-core's measured h200_sxm tables.

Simulates every measured NCCL and TensorRT-LLM custom all-reduce (2/4/8 GPUs) and DeepEP (normal and low-latency; node_num 1, 2, 4,
8) row on the h200 HGX topologies with the flow backend, fits the per-library overheads on the
single-node rows only (strict protocol) and the DeepEP cross-node terms on the 2-node rows only
(calibrated protocol), and reports the error on every table, in particular on the multi-node
DeepEP rows that were not used for fitting. A subset is re-run on the packet backend (ns-3), the
multi-node normal rows also with per-rank deduplication (for comparison), and a subset with
sampled instead of expected routing. Prints rich tables, writes JSON and the plot used by
docs/validation-comm.md.

    python benchmarks/validate_comm.py [--out benchmarks/results/validate_comm.json]
                                       [--plot docs/img/validation-comm.png] [--no-packet] [--quick]
                                       [--all-rows]

``--quick`` keeps NCCL buffers of 4 KiB, 1 MiB, 64 MiB and DeepEP token counts 1, 2, 16, 128, 256,
1024, 16384, flow backend only (no packet, comparison or sensitivity runs): about 10 s. Without it
every row is simulated (about 75 s on 2 cores, 45 s of it the packet-backend subset).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

ROOT = Path(__file__).resolve().parent.parent
QUICK_NCCL_BYTES = (4096, 1 << 20, 64 << 20)
QUICK_TOKENS = (1, 2, 16, 128, 256, 1024, 16384)


def _clean(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.6g}")
    return v


def _records(df, columns):
    """Small tables: a list of {column: value}."""
    return [{k: _clean(v) for k, v in rec.items()} for rec in df[columns].to_dict(orient="records")]


def _columnar(df, columns):
    """Row tables: {"columns": [...], "rows": [[...], ...]} (compact)."""
    return {"columns": list(columns), "rows": [[_clean(v) for v in row] for row in df[columns].itertuples(index=False)]}


def _overheads_dict(o):
    def one(x):
        d = {"fixed_us": x.fixed_s * 1e6, "bandwidth_efficiency": x.bandwidth_efficiency,
             "kernel_rate_GBps": None if x.kernel_rate_bytes_per_s is None else x.kernel_rate_bytes_per_s / 1e9,
             "cross_node_fixed_us": x.cross_node_fixed_s * 1e6, "rdma_efficiency": x.rdma_efficiency}
        if x.wire_bytes_factor != 1:
            d["wire_bytes_factor"] = x.wire_bytes_factor
        if x.alternatives:
            d["alternatives"] = [one(a) for a in x.alternatives]
        return d
    d = {lib: one(getattr(o, lib)) for lib in ("nccl", "deepep_normal", "deepep_ll", "p2p")}
    d["custom_allreduce"] = None if o.custom_allreduce is None else one(o.custom_allreduce)
    d["ops"] = {k: one(v) for k, v in sorted(o.ops.items())}
    d["link_efficiency"] = {"nvlink": o.links.nvlink, "rdma": o.links.rdma, "pcie": o.links.pcie}
    return d


def print_tables(res, console):
    from rich.table import Table

    from cosim.validation import comm as V

    o = res.overheads
    console.print(f"Link efficiency (achievable / line rate, every library): NVLink {o.links.nvlink:.3f} "
                  f"(single-node rows), RDMA {o.links.rdma:.3f} (2-node low-latency rows), PCIe {o.links.pcie:.3f} "
                  "(no PCIe-bound row: not fitted)")
    t = Table(title="Fitted kernel-side constants (single-node rows; cross-node terms on 2-node rows)")
    for col in ("constants", "fixed us", "LL protocol fixed us", "bandwidth efficiency", "kernel rate GB/s",
                "cross-node fixed us", "RDMA efficiency"):
        t.add_column(col, justify="right" if col != "constants" else "left")
    entries = [(lib, getattr(o, lib)) for lib in ("nccl", "custom_allreduce", "deepep_normal", "deepep_ll")
               if getattr(o, lib) is not None] + sorted(o.ops.items())
    for name, x in entries:
        rate = "-" if x.kernel_rate_bytes_per_s is None else f"{x.kernel_rate_bytes_per_s / 1e9:.0f}"
        cross = name.startswith("deepep")
        ll = ", ".join(f"{a.fixed_s * 1e6:.1f}" for a in x.alternatives) or "-"
        t.add_row(name, f"{x.fixed_s * 1e6:.1f}", ll, f"{x.bandwidth_efficiency:.3f}", rate,
                  f"{x.cross_node_fixed_s * 1e6:.1f}" if cross else "-", f"{x.rdma_efficiency:.3f}" if cross else "-")
    console.print(t)

    def summary_table(df, title, plain=None):
        t = Table(title=title)
        for col in ("table", "op", "nodes", "rows", "median |err| %", "worst |err| %", "median err %"):
            t.add_column(col, justify="left" if col in ("table", "op") else "right")
        if plain is not None:
            t.add_column("plain model median |err| %", justify="right")
        for i, r in enumerate(df.itertuples(index=False)):
            style = "bold" if r.node_num > 1 else None
            cells = [r.table, r.op, str(r.node_num), str(r.rows), f"{r.median_abs_pct:.1f}",
                     f"{r.worst_abs_pct:.1f}", f"{r.median_signed_pct:+.1f}"]
            if plain is not None:
                cells.append(f"{plain.iloc[i].median_abs_pct:.1f}")
            t.add_row(*cells, style=style)
        console.print(t)

    summary_table(res.summary_strict, "STRICT protocol: single-node constants only (flow backend; kernel-rate "
                                      "model for DeepEP, plain for NCCL; bold = multi-node, all out of sample)")
    summary_table(res.summary, "CALIBRATED protocol: + cross-node terms fitted on the 2-node rows (4 and 8 nodes "
                               "out of sample, 2 nodes in sample)", res.summary_plain)
    summary_table(res.summary_network, "Calibrated, rows where the network/kernel-rate term is >= half the "
                                       "prediction")
    multi = res.multi_node()
    held = multi[multi.node_num != V.CROSS_NODE_FIT_NODES]
    t = Table(title="Multi-node DeepEP rows, median |err| % (all tables pooled)")
    for col in ("protocol", "2 nodes", "4 nodes", "8 nodes", "all multi-node", "held out (4 + 8 nodes)"):
        t.add_column(col, justify="left" if col == "protocol" else "right")
    for name, col in (("strict", "error_strict_pct"), ("calibrated", "error_pct")):
        by = [f"{multi[multi.node_num == n][col].abs().median():.1f}" for n in (2, 4, 8)]
        t.add_row(name, *by, f"{multi[col].abs().median():.1f}", f"{held[col].abs().median():.1f}")
    console.print(t)

    if res.packet_rows is not None and len(res.packet_rows):
        p = res.packet_rows
        t = Table(title="Packet backend (ns-3) subset, same overheads")
        for col in ("table", "op", "nodes", "size", "measured us", "packet net us", "flow net us", "packet err %",
                    "flow err %"):
            t.add_column(col, justify="left" if col in ("table", "op") else "right")
        for r in p.itertuples(index=False):
            size = f"{int(r.message_bytes) >> 10} KiB" if r.table == "nccl" else f"{int(r.num_tokens)} tok"
            t.add_row(r.table, r.op, str(r.node_num), size, f"{r.measured_s * 1e6:.1f}", f"{r.network_s * 1e6:.1f}",
                      f"{r.flow_network_s * 1e6:.1f}", f"{r.error_pct:+.1f}", f"{r.flow_error_pct:+.1f}")
        console.print(t)

    if res.variant_rows is not None:
        from cosim.validation.comm import error_summary

        summary_table(error_summary(res.variant_rows),
                      "Comparison only: multi-node normal mode as a per-rank-deduplicated all-to-all (PXN routing)")
    if res.sampled_rows is not None and len(res.sampled_rows):
        s = res.sampled_rows
        t = Table(title="Sensitivity: sampled routing (slowest rank) vs expected traffic")
        for col in ("table", "op", "nodes", "tokens", "expected net us", "sampled net us", "err expected %",
                    "err sampled %"):
            t.add_column(col, justify="left" if col in ("table", "op") else "right")
        for r in s.itertuples(index=False):
            t.add_row(r.table, r.op, str(r.node_num), str(int(r.num_tokens)), f"{r.expected_network_s * 1e6:.1f}",
                      f"{r.network_s * 1e6:.1f}", f"{r.expected_error_pct:+.1f}", f"{r.error_pct:+.1f}")
        console.print(t)


def plot(res, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res.rows
    dsv3 = (rows.hidden == 7168) & (rows.topk == 8) & (rows.num_experts == 256)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [("deepep_normal", "dispatch"), ("deepep_normal", "combine"), None,
              ("deepep_ll", "dispatch"), ("deepep_ll", "combine"), "nccl"]
    colors = {1: "tab:gray", 2: "tab:blue", 4: "tab:green", 8: "tab:red"}
    for ax, panel in zip(axes.ravel(), panels):
        if panel is None:
            ax.axis("off")
            ax.text(0.0, 0.95, "Measured (markers) vs cosim (lines), flow backend.\n"
                    "Solid: calibrated (library constants fitted\non node_num 1, cross-node terms on\n"
                    "node_num 2; 4 and 8 out of sample).\n"
                    "Dotted: strict (node_num 1 constants only).\n\n"
                    "normal: best SM count per shape,\nkernel time (notify excluded)\n"
                    "LL: 0.5.6.post2 rows (node 1 too)", va="top", fontsize=10, transform=ax.transAxes)
            continue
        if panel == "nccl":
            sub = rows[(rows.table == "nccl") & (rows.num_gpus == 8) & (rows.dtype == "half")]
            for op, c in zip(("all_reduce", "all_gather", "reduce_scatter", "all_to_all"),
                             ("tab:purple", "tab:orange", "tab:brown", "tab:cyan")):
                d = sub[sub.op == op].sort_values("message_bytes")
                ax.loglog(d.message_bytes, d.measured_s * 1e6, "o", ms=3.5, color=c)
                ax.loglog(d.message_bytes, d.predicted_s * 1e6, "-", color=c, label=op)
            d = rows[(rows.table == "custom_allreduce") & (rows.num_gpus == 8)].sort_values("message_bytes")
            ax.loglog(d.message_bytes, d.measured_s * 1e6, "s", ms=3.5, color="black")
            ax.loglog(d.message_bytes, d.predicted_s * 1e6, "-", color="black", label="TRT-LLM custom all_reduce")
            ax.set_xlabel("buffer bytes")
            ax.set_title("NCCL and custom all-reduce, 8 GPUs, bf16 (in-sample)")
            ax.legend(fontsize=8)
            ax.set_ylabel("time (us)")
            continue
        table, op = panel
        sub = rows[(rows.table == table) & (rows.op == op) & dsv3]
        if table == "deepep_ll":
            sub = sub[sub.version == "0.5.6.post2"]
        for n, c in colors.items():
            d = sub[sub.node_num == n].sort_values("num_tokens")
            if not len(d):
                continue
            ax.loglog(d.num_tokens, d.measured_s * 1e6, "o", ms=3.5, color=c)
            ax.loglog(d.num_tokens, d.predicted_s * 1e6, "-", color=c, label=f"{n} node{'s' if n > 1 else ''} (EP{8 * n})")
            if n > 1:
                ax.loglog(d.num_tokens, d.predicted_strict_s * 1e6, ":", color=c, lw=1)
        ax.set_title(f"DeepEP {'normal' if table == 'deepep_normal' else 'low-latency'} {op}")
        ax.set_xlabel("tokens per rank")
        ax.set_ylabel("time (us)")
        ax.legend(fontsize=8)
    for ax in axes.ravel():
        ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "validate_comm.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "validation-comm.png"),
                    help="PNG path ('' to skip)")
    ap.add_argument("--no-packet", action="store_true", help="skip the packet-backend subset")
    ap.add_argument("--quick", action="store_true", help="subsample rows (see module docstring)")
    ap.add_argument("--all-rows", action="store_true",
                    help="also write every single-node row to the JSON (multi-node rows are always written)")
    args = ap.parse_args()

    try:
        import aiconfigurator_core  # noqa: F401
    except ImportError:
        print("aiconfigurator-core is not installed: nothing to validate against", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.progress import Progress

    from cosim.network.packet_backend import engine_available
    from cosim.validation import comm as V

    console = Console() if sys.stdout.isatty() else Console(width=132)
    rows = V.load_rows()
    if args.quick:
        rows = V.subsample(rows, QUICK_NCCL_BYTES, QUICK_TOKENS)
    packet = not args.no_packet and not args.quick and engine_available()
    if not args.no_packet and not args.quick and not packet:
        console.print("[yellow]packet engine not built: packet-backend subset skipped[/]")
    with Progress(console=console, transient=True) as bar:
        tasks = {}

        def progress(stage, i, n):
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage} backend" if stage in ("flow", "packet") else stage, total=n)
            bar.update(tasks[stage], completed=i)

        res = V.run_validation(rows, packet=packet, variant=not args.quick, sampled=not args.quick,
                               progress=progress)
    print_tables(res, console)

    runtime = time.perf_counter() - T_START
    multi = res.multi_node()
    cols = ["table", "op", "version", "node_num", "num_gpus", "dtype", "message_bytes", "hidden", "topk",
            "num_experts", "num_tokens", "sms", "selections", "measured_s", "notify_s", "network_s", "gpu_bytes",
            "flows", "remote_fraction", "predicted_s", "predicted_plain_s", "error_pct", "error_plain_pct",
            "error_vs_total_pct", "network_dominated"]
    out = {
        "machine": {"python": platform.python_version(), "cpu": platform.machine()},
        "quick": args.quick,
        "rows": len(res.rows),
        "runtime_s": runtime,
        "timings_s": res.timings,
        "overheads": _overheads_dict(res.overheads),
        "summary": _records(res.summary, list(res.summary.columns)),
        "summary_strict": _records(res.summary_strict, list(res.summary_strict.columns)),
        "multi_node_median_abs_pct": {
            name: {**{str(n): _clean(multi[multi.node_num == n][col].abs().median()) for n in (2, 4, 8)},
                   "all": _clean(multi[col].abs().median()),
                   "held_out_4_8": _clean(multi[multi.node_num > 2][col].abs().median())}
            for name, col in (("strict", "error_strict_pct"), ("calibrated", "error_pct"))},
        "summary_plain_model": _records(res.summary_plain, list(res.summary_plain.columns)),
        "summary_network_dominated": _records(res.summary_network, list(res.summary_network.columns)),
        "multi_node_rows": _columnar(multi, cols + ["predicted_strict_s", "error_strict_pct"]),
        "packet_rows": None if res.packet_rows is None else _columnar(
            res.packet_rows, cols + ["flow_network_s", "flow_error_pct"]),
        "per_rank_variant_summary": None if res.variant_rows is None else _records(
            V.error_summary(res.variant_rows), ["table", "op", "node_num", "rows", "median_abs_pct", "worst_abs_pct",
                                                "median_signed_pct"]),
        "sampled_routing_rows": None if res.sampled_rows is None else _columnar(
            res.sampled_rows, ["table", "op", "version", "node_num", "num_tokens", "measured_s", "expected_network_s",
                               "network_s", "expected_error_pct", "error_pct"]),
        "all_rows": _columnar(res.rows, cols) if args.all_rows else None,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1, default=str)
    # One line per table row keeps the file diffable and small.
    text = re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s+\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    path.write_text(text)
    if args.plot and not args.quick:
        try:
            plot(res, Path(args.plot))
            console.print(f"plot: {args.plot}")
        except ImportError:
            console.print("[yellow]matplotlib is not installed: no plot[/]")
    console.print(f"{len(res.rows)} rows; wrote {path}; runtime {runtime:.1f} s "
                  f"({', '.join(f'{k} {v:.1f} s' for k, v in res.timings.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
