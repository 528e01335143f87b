"""``cosim`` command line: inspect topologies and run collectives on either network backend.

Examples::

    cosim topology list
    cosim topology show h100-hgx-2node
    cosim net --topology h100-hgx-2node --collective all_to_all --size 1MiB --backend packet
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cosim.errors import CosimError
from cosim.units import UnitError, format_bandwidth, format_bytes, format_time, parse_size_bytes

console = Console(width=None if sys.stdout.isatty() else 140)


def _parse_gpus(spec: str | None, num_gpus: int) -> list[int]:
    """``"0-7,16"`` -> [0..7, 16]; ``None`` -> all GPUs."""
    if spec is None:
        return list(range(num_gpus))
    ranks: list[int] = []
    for part in spec.split(","):
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ranks.extend(range(lo, hi + 1))
            else:
                ranks.append(int(part))
        except ValueError:
            raise CosimError(f"--gpus: expected ranks like '0-7,16', got {spec!r}") from None
    bad = [r for r in ranks if not 0 <= r < num_gpus]
    if bad:
        raise CosimError(f"--gpus: rank {bad[0]} does not exist (topology has GPUs 0..{num_gpus - 1})")
    return ranks


def _cmd_topology_list(args: argparse.Namespace) -> int:
    from cosim.topology import list_presets, load_topology

    table = Table(title="Topology presets")
    for col in ("name", "GPUs", "links", "description"):
        table.add_column(col)
    for name in list_presets():
        topo = load_topology(name)
        table.add_row(name, str(topo.num_gpus), str(len(topo.links)), topo.description)
    console.print(table)
    return 0


def _cmd_topology_show(args: argparse.Namespace) -> int:
    from cosim.topology import load_topology

    topo = load_topology(args.topology)
    kinds = Counter(n.kind for n in topo.nodes)
    console.print(f"[bold]{topo.name}[/bold] ({topo.source})  {topo.description}")
    console.print("nodes: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
    table = Table(title="Link tiers")
    for col in ("tier", "links", "bandwidth per direction", "latency", "MTU"):
        table.add_column(col)
    tiers: dict[str, list] = {}
    for link in topo.links:
        tiers.setdefault(link.tier, []).append(link)
    for tier, links in tiers.items():
        bws = sorted({format_bandwidth(l.bandwidth_bps) for l in links})
        lats = sorted({format_time(l.latency_s) for l in links})
        mtus = sorted({str(l.mtu_bytes) for l in links})
        table.add_row(tier, str(len(links)), ", ".join(bws), ", ".join(lats), ", ".join(mtus))
    console.print(table)
    console.print(f"routing: ecmp={topo.routing.ecmp}, cross_rail={topo.routing.cross_rail}; "
                  f"transport: header {topo.transport.header_bytes} B, PFC xoff "
                  f"{format_bytes(topo.transport.pfc_xoff_bytes)} / xon {format_bytes(topo.transport.pfc_xon_bytes)}")
    return 0


def _cmd_net(args: argparse.Namespace) -> int:
    from cosim.network import FlowSet, simulate
    from cosim.network.collectives import build_collective
    from cosim.report import hottest_links_table, write_link_parquet
    from cosim.topology import load_topology

    topo = load_topology(args.topology)
    ranks = _parse_gpus(args.gpus, topo.num_gpus)
    try:
        size = parse_size_bytes(args.size)
        chunk = parse_size_bytes(args.chunk) if args.chunk != "none" else None
    except UnitError as exc:
        raise CosimError(f"--size/--chunk: {exc}") from None
    fs = FlowSet()
    coll = build_collective(fs, args.collective, ranks, size, chunk_bytes=chunk)
    console.print(f"{args.collective} over {len(ranks)} GPUs of [bold]{topo.name}[/bold], "
                  f"{format_bytes(size)}: {len(fs)} flows, {format_bytes(fs.total_bytes())} total, "
                  f"backend [bold]{args.backend}[/bold]")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} flows"), TimeElapsedColumn(),
                  console=console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task("simulating", total=len(fs))
        result = simulate(topo, fs, args.backend,
                          progress=lambda done, t: bar.update(task, completed=done))
    console.print(f"completion time: [bold]{format_time(result.finish_s(coll.last))}[/bold]   "
                  f"wall: {result.wall_s:.3f} s"
                  + (f"   hop-packets: {result.stats['hop_packets']:,}" if "hop_packets" in result.stats else ""))
    console.print(hottest_links_table(result, top=args.top))
    if args.out:
        path = write_link_parquet(result, args.out)
        console.print(f"link counters of {topo.num_directed_links} directed links written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cosim.network.collectives import COLLECTIVES

    parser = argparse.ArgumentParser(prog="cosim", description="Network-centric co-simulator for MoE LLM serving.")
    sub = parser.add_subparsers(dest="command", required=True)

    topo = sub.add_parser("topology", help="list or inspect topology presets and files")
    topo_sub = topo.add_subparsers(dest="topology_command", required=True)
    topo_sub.add_parser("list", help="list shipped presets").set_defaults(func=_cmd_topology_list)
    show = topo_sub.add_parser("show", help="summarize a preset or YAML file")
    show.add_argument("topology", help="preset name or path to a topology YAML file")
    show.set_defaults(func=_cmd_topology_show)

    net = sub.add_parser("net", help="run one collective on a topology and report link utilization")
    net.add_argument("--topology", "-t", required=True, help="preset name or path to a topology YAML file")
    net.add_argument("--collective", "-c", default="all_to_all", choices=sorted(COLLECTIVES),
                     help="; ".join(f"{k}: {v}" for k, v in COLLECTIVES.items()))
    net.add_argument("--size", "-s", default="1MiB", help="message size, e.g. 1MiB, 256KiB, 4096 (default 1MiB)")
    net.add_argument("--chunk", default="1MiB", help="pipelining chunk of ring/tree collectives, or 'none'")
    net.add_argument("--gpus", "-g", default=None, help="GPU ranks taking part, e.g. '0-15' (default: all)")
    net.add_argument("--backend", "-b", default="flow", choices=["packet", "flow"])
    net.add_argument("--top", type=int, default=10, help="number of hottest links to show")
    net.add_argument("--out", "-o", type=Path, default=None, help="write all link counters to this Parquet file")
    net.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    net.set_defaults(func=_cmd_net)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cosim`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CosimError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
