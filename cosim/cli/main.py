"""``cosim`` command line: inspect topologies and run collectives on either network backend.

Examples::

    cosim topology list
    cosim topology show h100-hgx-2node
    cosim net --topology h100-hgx-2node --collective all_to_all --size 1MiB --backend packet
    cosim trace check out/            # a Chakra ET export against ASTRA-sim's rules
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cosim.cli.args import (IntOption, NumberOption, Parser, check_options, check_text_options, cli_float, cli_int, literal,
                            load_option, parse_gpus, parse_prefill_chunks)
from cosim.errors import ConfigError, CosimError
from cosim.io_atomic import check_output_dir, check_output_file, describe_os_error
from cosim.limits import (MAX_BATCH, MAX_FLOW_BYTES, MAX_GPUS, MAX_LINKS, MAX_MICRO_BATCHES, MAX_MTP_TOKENS,
                          MAX_REDUNDANT_EXPERTS, MAX_ROUTING_SKEW, MAX_TOKENS, MIN_CHUNK_BYTES, check_count)
from cosim.units import UnitError, format_bandwidth, format_bytes, format_time, parse_size_bytes

console = Console(width=None if sys.stdout.isatty() else 140)

#: Longest error message printed (a message is one line; library messages quote bounded values).
MAX_ERROR_CHARS = 4_000


def check_report_dir(path: Path | None, option: str = "--report") -> None:
    """``--report DIR``: refuse a path that is a file, or a folder that cannot be written or
    created, before simulating anything."""
    check_output_dir(path, option)


#: Numeric options of ``cosim net`` and their limits.
NET_OPTIONS = (IntOption("--top", "top", 0, MAX_LINKS),)

#: Numeric options of ``cosim step`` and their limits.
STEP_OPTIONS = (
    IntOption("--tp", "tp", 1, MAX_GPUS), IntOption("--ep", "ep", 0, MAX_GPUS), IntOption("--pp", "pp", 1, MAX_GPUS),
    IntOption("--batch", "batch", 0, MAX_BATCH), IntOption("--new-tokens", "new_tokens", 1, MAX_TOKENS),
    IntOption("--context", "context", 0, MAX_TOKENS),
    NumberOption("--skew", "skew", 0.0, MAX_ROUTING_SKEW,
                 hint="routing_skew: 0 = uniform routing, > 0 = power-law expert popularity"),
    IntOption("--redundant-experts", "redundant_experts", 0, MAX_REDUNDANT_EXPERTS),
    IntOption("--top", "top", 0, MAX_LINKS),
    IntOption("--attention-gpus", "attention_gpus", 0, MAX_GPUS), IntOption("--ffn-gpus", "ffn_gpus", 0, MAX_GPUS),
    IntOption("--micro-batches", "micro_batches", 1, MAX_MICRO_BATCHES),
    IntOption("--attention-tp", "attention_tp", 1, MAX_GPUS), IntOption("--ffn-tp", "ffn_tp", 1, MAX_GPUS),
    IntOption("--mtp", "mtp", 0, MAX_MTP_TOKENS),
)


def _table_row(*cells: object) -> list[str]:
    return [literal(c) for c in cells]


def _cmd_topology_list(args: argparse.Namespace) -> int:
    from cosim.topology import list_presets, load_topology

    table = Table(title="Topology presets")
    for col in ("name", "GPUs", "links", "description"):
        table.add_column(col)
    for name in list_presets():
        topo = load_topology(name)
        table.add_row(*_table_row(name, topo.num_gpus, len(topo.links), topo.description))
    console.print(table)
    return 0


def _cmd_topology_show(args: argparse.Namespace) -> int:
    from cosim.topology import load_topology

    topo = load_option("topology", load_topology, args.topology)
    kinds = Counter(n.kind for n in topo.nodes)
    console.print(f"[bold]{literal(topo.name)}[/bold] ({literal(topo.source)})  {literal(topo.description)}",
                  highlight=False)
    console.print("nodes: " + ", ".join(f"{v} {literal(k)}" for k, v in sorted(kinds.items())), highlight=False)
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
        table.add_row(*_table_row(tier, len(links), ", ".join(bws), ", ".join(lats), ", ".join(mtus)))
    console.print(table)
    console.print(f"routing: ecmp={literal(topo.routing.ecmp)}, cross_rail={literal(topo.routing.cross_rail)}; "
                  f"transport: header {topo.transport.header_bytes} B, PFC xoff "
                  f"{format_bytes(topo.transport.pfc_xoff_bytes)} / xon {format_bytes(topo.transport.pfc_xon_bytes)}")
    return 0


def _cmd_net(args: argparse.Namespace) -> int:
    from cosim.network import FlowSet, simulate
    from cosim.network.libraries import build_collective
    from cosim.report import hottest_links_table, write_link_parquet
    from cosim.topology import load_topology

    check_options(args, NET_OPTIONS)
    check_text_options(args, (("--size", "size"), ("--chunk", "chunk"), ("--gpus", "gpus")))
    size = _size_option("--size", args.size, lo=0)
    chunk = _size_option("--chunk", args.chunk, lo=int(MIN_CHUNK_BYTES.value)) if args.chunk != "none" else None
    check_output_file(args.out, "--out")
    check_report_dir(args.report)
    topo = load_option("--topology", load_topology, args.topology)
    ranks = parse_gpus("--gpus", args.gpus, topo.num_gpus)
    fs = FlowSet()
    coll = build_collective(fs, args.collective, ranks, size, chunk_bytes=chunk)
    console.print(f"{args.collective} over {len(ranks)} GPUs of [bold]{literal(topo.name)}[/bold], "
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
        console.print(f"link counters of {topo.num_directed_links} directed links written to {literal(path)}",
                      highlight=False)
    if args.report:
        from cosim.report.html import write_net_report

        path = write_net_report(result, args.report, f"{args.collective} over {len(ranks)} GPUs of {topo.name}, "
                                f"message size {format_bytes(size)}: {len(fs)} flows", args.top)
        console.print(f"report: {literal(path)}", highlight=False)
    return 0


def _size_option(flag: str, text: str, lo: int) -> int:
    """A size option (``1MiB``, ``4096``, ``256KiB``) in bytes, at most MAX_FLOW_BYTES."""
    try:
        size = parse_size_bytes(text)
    except UnitError as exc:
        raise ConfigError(flag, "", str(exc)) from None
    return check_count(flag, "", size, MAX_FLOW_BYTES, lo=lo)


def _cmd_step(args: argparse.Namespace) -> int:
    import numpy as np

    from cosim.engine.step import simulate_step
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.report import write_step_json
    from cosim.topology import load_topology
    from cosim.trace.builder import AfdSpec, StepSpec

    check_options(args, STEP_OPTIONS)
    check_text_options(args, (("--gpus", "gpus"), ("--prefill-chunks", "prefill_chunks"), ("--routing", "routing")))
    prefill_chunks = parse_prefill_chunks("--prefill-chunks", args.prefill_chunks)
    check_output_file(args.json, "--json")
    check_output_dir(args.trace_out, "--trace-out")
    check_report_dir(args.report)
    model = load_option("--model", load_model, args.model)
    topo = load_option("--topology", load_topology, args.topology)
    system = args.system or topo.gpu_system or "h200_sxm"
    if args.system and topo.gpu_system and args.system != topo.gpu_system:
        console.print(f"[bold yellow]warning:[/] kernel system {literal(args.system)} but topology "
                      f"{literal(topo.name)} has {literal(topo.gpu_system)} GPUs", highlight=False)
    parallel = Parallelism(tp=args.tp, ep=args.ep or args.tp, dp_attention=args.dp_attention, pp=args.pp)
    overrides = {k: v for k, v in (("dispatch", args.dispatch_dtype), ("kv_cache", args.kv_dtype)) if v}
    precision = Precision.from_checkpoint(model, **overrides)
    phase = "generation" if args.phase == "decode" else "context"
    afd = None
    if args.layout == "afd":
        if not (args.attention_gpus and args.ffn_gpus):
            raise CosimError("--layout afd needs --attention-gpus N and --ffn-gpus M")
        afd = AfdSpec(args.attention_gpus, args.ffn_gpus, micro_batches=args.micro_batches, a2f=args.a2f,
                      attention_tp=args.attention_tp, ffn_tp=args.ffn_tp, shared_expert=args.shared_expert,
                      dense_layers=args.dense_layers)
    n = afd.num_gpus if afd else parallel.num_gpus
    gpus = tuple(parse_gpus("--gpus", args.gpus, topo.num_gpus)) if args.gpus else None
    spec = StepSpec(model, parallel, precision, phase, batch_per_rank=args.batch,
                    new_tokens=1 if phase == "generation" else args.new_tokens, prefix_tokens=args.context,
                    overlap=args.overlap, routing_skew=args.skew, moe_load=args.moe_load,
                    moe_library=args.moe_library, allreduce_library=args.allreduce_library,
                    redundant_experts=args.redundant_experts, gpus=gpus, layout=args.layout, afd=afd,
                    prefill_chunks=prefill_chunks, mtp_tokens=args.mtp,
                    routing=_step_routing(args))
    kernels = KernelTables.load(system, framework=args.framework)
    with console.status(f"simulating one {args.phase} step of {literal(model.name)} on {literal(topo.name)} "
                        f"({args.backend} backend)"):
        result = simulate_step(spec, kernels, topo, args.backend)
    t = result.step_time_s
    where = f"GPUs {_ranges(spec.gpu_ranks)}" if gpus else f"{n} GPUs"
    layout = (f"AFD {afd.attention_gpus}A (TP{afd.attention_tp}) + {afd.ffn_gpus}F (EP{afd.ffn_ep} TP{afd.ffn_tp}), "
              f"{afd.micro_batches} micro-batches, {afd.a2f} A2F" if afd else
              f"TP{parallel.tp} EP{parallel.ep}{' DP-attention' if parallel.dp_attention else ''} PP{parallel.pp}, "
              f"overlap {args.overlap}")
    extra = (f", {len(spec.prefill_chunks)} prefill chunks" if spec.prefill_chunks else "") + \
        (f", MTP {spec.mtp_tokens} draft tokens" if spec.mtp_tokens else "")
    what = (f"{model.name} {args.phase}, {args.batch} requests/{'instance' if afd else 'rank'} x {spec.new_tokens} new "
            f"tokens, context {args.context}{extra}, {layout}, {where}, {kernels.system.name} ({args.framework}), "
            f"{topo.name}, {args.backend} backend")
    console.print(f"[bold]{literal(model.name)}[/bold]{literal(what[len(model.name):])}", highlight=False)
    console.print(f"step time: [bold]{format_time(t)}[/bold]   tokens/s per GPU: "
                  f"[bold]{result.tokens_per_s_per_gpu:,.1f}[/bold]   wall: {result.wall_s:.2f} s "
                  f"({result.network_simulations} network simulations, {result.network_wall_s:.2f} s)")
    table = Table(title=f"Breakdown on the critical rank {result.critical_rank}")
    for col in ("part", "time", "share of step", "exposed"):
        table.add_column(col, justify="right" if col != "part" else "left")
    for name, v in sorted(result.compute_by_class_s.items(), key=lambda kv: -kv[1]):
        table.add_row(*_table_row(f"compute: {name}", format_time(v), f"{v / t:.1%}", ""))
    for name, v in sorted(result.comm_by_collective_s.items(), key=lambda kv: -kv[1]):
        e = result.exposed_comm_by_collective_s.get(name, 0.0)
        table.add_row(*_table_row(f"comm: {name}", format_time(v), f"{v / t:.1%}", format_time(e)))
    console.print(table)
    if len(result.groups) > 1:
        groups = Table(title="Per group (slowest rank of each)")
        for col in ("group", "GPUs", "busy", "idle (bubbles)", "communication (exposed)", "memory per GPU"):
            groups.add_column(col, justify="left" if col in ("group", "communication (exposed)") else "right")
        for name, g in result.groups.items():
            comm = ", ".join(f"{k} {format_time(v)} ({format_time(g.exposed_comm_by_collective_s.get(k, 0.0))})"
                             for k, v in sorted(g.comm_by_collective_s.items(), key=lambda kv: -kv[1]))
            mem = g.memory
            mtxt = "-" if mem is None else (f"{format_bytes(mem.total_bytes)} (W {format_bytes(mem.weight_bytes)}, "
                                            f"KV {format_bytes(mem.kv_cache_bytes)})"
                                            + ("" if mem.capacity_bytes is None else
                                               f" {mem.total_bytes / mem.capacity_bytes:.0%}"))
            groups.add_row(*_table_row(name, len(g.ranks), format_time(g.busy_s), format_time(g.idle_s), comm, mtxt))
        console.print(groups)
    console.print(f"overlap achieved: {result.overlap_fraction:.1%} of communication hidden; compute durations: "
                  + ", ".join(f"{n} {k}" for k, n in sorted(result.duration_sources.items())))
    ratio, hot, layers = result.expert_imbalance()
    if ratio > 1.02:
        console.print(f"routed experts: the slowest rank of a MoE layer takes {ratio:.2f}x the layer's mean "
                      f"(rank {hot} is the slowest in {layers} layers); the others wait for it in the combine "
                      f"(AFD: the F2A)")
    mem = result.memory
    if mem is not None:
        cap = "" if mem.capacity_bytes is None else f" of {format_bytes(mem.capacity_bytes)} HBM " \
            f"({mem.total_bytes / mem.capacity_bytes:.0%})"
        console.print(f"memory per GPU: weights {format_bytes(mem.weight_bytes)} + KV cache "
                      f"{format_bytes(mem.kv_cache_bytes)} + activations {format_bytes(mem.activation_bytes)} = "
                      f"{format_bytes(mem.total_bytes)}{cap}")
        if mem.fits is False:
            console.print("[bold yellow]warning:[/] this deployment does not fit in GPU memory; the step time "
                          "is what it would take if it did")
    util = result.link_utilization()
    links = Table(title="Hottest links during the step")
    for col in ("link", "tier", "GB/s", "bytes", "mean util", "peak queue"):
        links.add_column(col, justify="left" if col in ("link", "tier") else "right")
    for d in np.argsort(-util)[:args.top]:
        if result.link_tx_bytes[d] == 0:
            break
        links.add_row(*_table_row(topo.describe_link(int(d)), topo.links[d // 2].tier,
                                  f"{topo.directed_bandwidth_bps[d] / 8e9:.0f}", format_bytes(result.link_tx_bytes[d]),
                                  f"{util[d]:.1%}",
                                  format_bytes(result.link_peak_queue_bytes[d]) if args.backend == "packet" else "-"))
    console.print(links)
    from cosim.engine.summary import moe_traffic_summary

    moe = moe_traffic_summary(result)
    if moe:
        parts = [f"{op} {o['inter_fraction']:.0%} of {format_bytes(o['intra_bytes'] + o['inter_bytes'])}"
                 for op, o in moe["by_op"].items()]
        console.print(f"MoE tokens crossing nodes (over {next(iter(moe['by_op'].values()))['layers']} layers): "
                      f"{', '.join(parts)}; routed-expert straggler factor {moe['straggler_factor']:.2f} (max / mean "
                      f"expert time of the ranks, mean over layers)", highlight=False)
    if args.trace_out:
        _write_traces(result, args.trace_out, args.chakra_alltoallv)
    if args.json:
        console.print(f"step summary written to {literal(write_step_json(result, args.json, args.top))}",
                      highlight=False)
    if args.report:
        from cosim.report.html import write_step_report

        console.print(f"report: {literal(write_step_report(result, args.report, what, args.top))}", highlight=False)
    return 0


def _ranges(values) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2,5"``."""
    out, values = [], list(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(out)


def _step_routing(args, phase: str | None = None):
    """``--routing MODEL`` / ``--routing-trace FILE`` with ``--placement`` / ``--grouping`` (and
    ``--grouping-purity`` where the command has it) as a StepRouting (None: neither given;
    ``cosim step`` then uses ``--skew``). ``phase``: the routing trace rows to replay (default:
    ``args.phase``). The one reader of these options (``cosim step``, ``cosim serve``)."""
    from cosim.trace.expert_routing import routing_from

    if args.routing and args.routing_trace:
        raise CosimError("--routing and --routing-trace: give one")
    if (args.placement != "contiguous" or args.grouping) and not (args.routing or args.routing_trace):
        raise CosimError("--placement / --grouping need --routing or --routing-trace (their statistics place the "
                         "experts)")
    if phase is None:
        phase = "decode" if args.phase == "decode" else "prefill"
    return load_option("--routing-trace" if args.routing_trace else "--routing", routing_from, args.routing,
                       args.routing_trace, phase, args.placement, args.grouping, getattr(args, "grouping_purity", 1.0))


def add_routing_options(p) -> None:
    """The routing options of ``cosim step`` and ``cosim serve`` (one definition)."""
    from cosim.trace.placement import PLACEMENTS

    p.add_argument("--routing", default=None, metavar="MODEL",
                   help="routing model drawn per MoE layer: uniform, power_law, domain_mixture, request_affinity, "
                        "with parameters as KIND:skew=0.45,max_nodes=4 (docs/routing.md)")
    p.add_argument("--routing-trace", type=Path, default=None, metavar="FILE",
                   help="replay the expert choices of a routing trace (Parquet, docs/routing.md)")
    p.add_argument("--placement", choices=sorted(PLACEMENTS), default="contiguous",
                   help="expert placement from the routing's statistics (eplb: with --redundant-experts or the "
                        "pool's redundant_experts; docs/routing.md)")
    p.add_argument("--grouping", action="store_true",
                   help="domain grouping: each rank's requests of the domain of its node (domain_mixture)")


def _write_traces(result, out_dir: Path, alltoallv: str) -> None:
    """Write the step trace as cosim protobuf and Chakra ET files, and check the Chakra export.

    Every file is written atomically; the manifest ``cosim.manifest.json`` is removed first and
    written last (listing ``step.pb`` too), so a folder without it is an interrupted export."""
    try:
        from cosim.trace.chakra import manifest_path, write_trace_dir
        from cosim.trace.chakra_check import check_chakra
    except ImportError as exc:  # pragma: no cover - trace I/O not installed
        raise CosimError(f"trace export unavailable: {exc}") from None
    path, files = write_trace_dir(result.trace, out_dir, alltoallv=alltoallv)
    console.print(f"trace written to {literal(path)} and {len(files)} Chakra ET files in {literal(out_dir)} "
                  f"(all-to-all-v: {alltoallv}; complete: {literal(manifest_path(out_dir).name)})", highlight=False)
    broken = check_chakra(out_dir, "cosim")
    if broken:
        console.print(f"[bold yellow]warning:[/] the Chakra export breaks {len(broken)} ASTRA-sim rule instance(s) "
                      f"(first: {literal(broken[0])}); see cosim trace check {literal(out_dir)}", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    from cosim.network.libraries import COLLECTIVES
    from cosim.trace.chakra import ALLTOALLV_MODES

    parser = Parser(prog="cosim", description="Network-centric co-simulator for MoE LLM serving.")
    sub = parser.add_subparsers(dest="command", required=True)

    topo = sub.add_parser("topology", help="list or inspect topology presets and files")
    topo_sub = topo.add_subparsers(dest="topology_command", required=True)
    topo_sub.add_parser("list", help="list shipped presets").set_defaults(func=_cmd_topology_list)
    show = topo_sub.add_parser("show", help="summarize a preset or YAML file")
    show.add_argument("topology", help="preset name or path to a topology YAML file")
    show.set_defaults(func=_cmd_topology_show)

    from cosim.network import BACKENDS

    net = sub.add_parser("net", help="run one collective on a topology and report link utilization")
    net.add_argument("--topology", "-t", required=True, help="preset name or path to a topology YAML file")
    net.add_argument("--collective", "-c", default="all_to_all", choices=sorted(COLLECTIVES),
                     help="; ".join(f"{k}: {v.description}" for k, v in COLLECTIVES.items()))
    net.add_argument("--size", "-s", default="1MiB", help="message size, e.g. 1MiB, 256KiB, 4096 (default 1MiB)")
    net.add_argument("--chunk", default="1MiB", help="pipelining chunk of ring/tree collectives, or 'none'")
    net.add_argument("--gpus", "-g", default=None, help="GPU ranks taking part, e.g. '0-15' (default: all)")
    net.add_argument("--backend", "-b", default="flow", choices=list(BACKENDS),
                     help="network backend: packet (ns-3), flow (exact fluid), flow_fast (fluid, finishes grouped "
                          "within 0.1 %%)")
    net.add_argument("--top", type=cli_int, default=10, help="number of hottest links to show")
    net.add_argument("--out", "-o", type=Path, default=None,
                     help="write all link counters to this Parquet file (atomically: the old file or the new one, "
                          "never a torn file)")
    net.add_argument("--report", type=Path, default=None, metavar="DIR",
                     help="write an HTML report (hottest links, utilization heat map) to DIR/index.html")
    net.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    net.set_defaults(func=_cmd_net)

    step = sub.add_parser("step", help="co-simulate one prefill or decode step of a model on a topology")
    step.add_argument("--model", "-m", required=True, help="HF id (e.g. deepseek-ai/DeepSeek-V3) or path to config.json")
    step.add_argument("--system", default=None,
                      help="kernel-table system: h100_sxm, h200_sxm, b200_sxm, gb200 (default: the topology's GPUs)")
    step.add_argument("--framework", default="trtllm", help="kernel-table framework: trtllm, sglang, vllm")
    step.add_argument("--topology", "-t", required=True, help="preset name or topology YAML file")
    step.add_argument("--phase", choices=["decode", "prefill"], default="decode")
    step.add_argument("--tp", type=cli_int, default=8, help="GPUs per pipeline stage (attention TP unless --dp-attention)")
    step.add_argument("--ep", type=cli_int, default=0, help="expert parallelism (default: = tp)")
    step.add_argument("--dp-attention", action="store_true", help="data-parallel attention (each rank its own requests)")
    step.add_argument("--pp", type=cli_int, default=1, help="pipeline stages")
    step.add_argument("--batch", "-n", type=cli_int, default=64, help="requests per rank (decode: tokens per rank)")
    step.add_argument("--new-tokens", type=cli_int, default=4096, help="prefill: new tokens per request (chunk)")
    step.add_argument("--context", type=cli_int, default=0, help="tokens already in the KV cache per request")
    step.add_argument("--overlap", choices=["none", "tbo"], default="none", help="two-batch overlap")
    step.add_argument("--skew", type=cli_float, default=0.0, help="routing skew (0 = uniform, 1 = power law)")
    add_routing_options(step)
    step.add_argument("--moe-library", choices=["auto", "deepep_normal", "deepep_ll", "nvlink_a2a"], default="auto",
                      help="MoE dispatch/combine: DeepEP (auto: normal in prefill, low-latency in decode) or "
                           "TensorRT-LLM's NVLink all-to-all inside one NVLink domain (NVL72)")
    step.add_argument("--allreduce-library", choices=["auto", "nccl", "custom_allreduce"], default="auto",
                      help="tensor-parallel all-reduce (auto: custom kernels inside a node, NCCL across)")
    step.add_argument("--redundant-experts", type=cli_int, default=0,
                      help="extra expert slots replicating the most loaded experts (EPLB); with --skew")
    step.add_argument("--moe-load", choices=["per_rank", "table"], default="per_rank",
                      help="expert compute per rank from its own routed tokens (stragglers), or the table's "
                           "distribution for every rank")
    step.add_argument("--dispatch-dtype", default=None, help="dtype of dispatched activations (default fp8; bfloat16)")
    step.add_argument("--kv-dtype", default=None, help="KV cache dtype (bfloat16, fp8)")
    step.add_argument("--backend", "-b", default="flow", choices=list(BACKENDS),
                      help="network backend: packet (ns-3), flow (exact fluid), flow_fast (fluid, finishes grouped "
                           "within 0.1 %%: EP256 steps ~10x faster)")
    step.add_argument("--top", type=cli_int, default=8, help="number of hottest links to show")
    step.add_argument("--trace-out", type=Path, default=None,
                      help="write protobuf and Chakra traces to this folder (cosim.manifest.json, written last, "
                           "marks it complete)")
    step.add_argument("--chakra-alltoallv", choices=list(ALLTOALLV_MODES), default="auto",
                      help="Chakra export of all-to-all-v and bipartite collectives: auto (one ALL_TO_ALL when "
                           "uniform, matched sends/receives otherwise), collective (always ALL_TO_ALL: lossy, "
                           "ASTRA-sim stalls on uneven ones) or p2p (always sends/receives)")
    step.add_argument("--json", type=Path, default=None, help="write the step summary (time, breakdown, groups, "
                                                               "memory, tokens/s per GPU, hottest links) as JSON "
                                                               "(atomically)")
    step.add_argument("--report", type=Path, default=None, metavar="DIR",
                      help="write an HTML report (breakdown, link heat map, hottest links) to DIR/index.html")
    step.add_argument("--gpus", "-g", default=None, help="topology GPUs the step runs on, e.g. '64-127' or "
                                                          "'0-15,72-127' (AFD: attention GPUs first)")
    step.add_argument("--layout", choices=["colocated", "afd"], default="colocated",
                      help="colocated, or attention-FFN disaggregation (decode)")
    step.add_argument("--attention-gpus", type=cli_int, default=0, help="AFD: GPUs of the attention group")
    step.add_argument("--ffn-gpus", type=cli_int, default=0, help="AFD: GPUs of the FFN group")
    step.add_argument("--micro-batches", type=cli_int, default=2, help="AFD: ping-pong micro-batches")
    step.add_argument("--a2f", choices=["routed", "broadcast"], default="routed",
                      help="AFD: tokens to the FFN ranks of their experts, or the whole batch to every FFN rank")
    step.add_argument("--attention-tp", type=cli_int, default=1, help="AFD: GPUs per attention instance")
    step.add_argument("--ffn-tp", type=cli_int, default=1, help="AFD: tensor parallelism inside the FFN group")
    step.add_argument("--shared-expert", choices=["ffn", "attention"], default="ffn", help="AFD: shared expert side")
    step.add_argument("--dense-layers", choices=["ffn", "attention"], default="ffn", help="AFD: dense layers side")
    step.add_argument("--mtp", type=cli_int, default=0, help="decode: verify this many MTP draft tokens per request")
    step.add_argument("--prefill-chunks", default=None,
                      help="mixed step: prefill chunks PREFIX+NEW,... run with the --batch decode requests")
    step.set_defaults(func=_cmd_step)

    from cosim.cli import serve as serve_cmd

    serve_cmd.add_parser(sub)

    from cosim.cli import trace as trace_cmd

    trace_cmd.add_parser(sub)

    from cosim.cli import explore as explore_cmd

    explore_cmd.add_parser(sub)

    from cosim.cli import report as report_cmd

    report_cmd.add_parser(sub)
    return parser


def print_error(message: object) -> None:
    """``error: MESSAGE`` on one line, the message printed literally and cut to MAX_ERROR_CHARS."""
    console.print(f"[bold red]error:[/bold red] {literal(message, MAX_ERROR_CHARS)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cosim`` console script.

    Exit status: 0 done; 1 a verdict (``trace check`` violations, an infeasible ``serve``); 2 a
    bad argument or input (:class:`~cosim.errors.CosimError`, argparse's usage errors) or an
    operating-system error on a file (disk full, permission denied: one line, no traceback);
    130 interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.func(args)
    except CosimError as exc:
        print_error(exc)
        return 2
    except OSError as exc:
        print_error(describe_os_error(exc))
        return 2
    except MemoryError:
        print_error("out of memory; the input is too large for this host (see docs/limits.md for cosim's limits)")
        return 2
    except RecursionError:
        print_error("input nested too deeply (recursion limit reached)")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception:  # a bug: the traceback is for the bug report, on stderr
        traceback.print_exc()
        console.print("[bold red]internal error[/bold red]: cosim hit a bug (traceback above); please report it")
        return 3


if __name__ == "__main__":
    sys.exit(main())
