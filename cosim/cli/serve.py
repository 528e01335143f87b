"""``cosim serve DEPLOYMENT.yaml --workload chat`` : serve a workload with a deployment and report
TTFT/TPOT against the SLOs, throughput per GPU and per user, and the pools (the bottleneck first).

Thin command: arguments -> deployment, requests and options -> :func:`cosim.serving.run.serve`
-> report functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cosim.cli.args import IntOption, NumberOption, check_options, cli_float, cli_int, literal, load_option
from cosim.errors import ConfigError
from cosim.io_atomic import check_output_dir, check_output_file
from cosim.limits import MAX_BATCH, MAX_REQUESTS, MAX_SIM_TIME_S

#: Numeric options of ``cosim serve`` and their limits.
SERVE_OPTIONS = (
    IntOption("--requests", "requests", 1, MAX_REQUESTS),
    NumberOption("--duration", "duration", 0.0, MAX_SIM_TIME_S, lo_open=True, hint="seconds of arrivals"),
    NumberOption("--rate", "rate", 0.0, float(MAX_REQUESTS.value), lo_open=True, hint="Poisson arrivals per second"),
    IntOption("--concurrency", "concurrency", 1, MAX_BATCH),
    IntOption("--prefixes", "prefixes", 0, MAX_REQUESTS),
    NumberOption("--ramp", "ramp", 0.0, MAX_SIM_TIME_S, hint="seconds over which the users start"),
    NumberOption("--decode-prefix-cache", "decode_prefix_cache", 0.0, 1.0, hint="a fraction of the KV capacity"),
    IntOption("--seed", "seed", 0, 2**63 - 1),
    NumberOption("--grouping-purity", "grouping_purity", 0.0, 1.0, hint="a share of a rank's tokens"),
    NumberOption("--domain-slack", "domain_slack", 0.0, 1.0, hint="a share of the mean rank load"),
)


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a workload with a deployment (TTFT/TPOT, SLOs, tokens/s per GPU)")
    p.add_argument("deployment", type=Path, help="deployment YAML file (docs/serving.md)")
    p.add_argument("--workload", "-w", default="chat",
                   help="preset (chat, coding, agentic-coding) or workload YAML / JSONL trace (docs/workloads.md)")
    p.add_argument("--requests", "-n", type=cli_int, default=None, help="number of requests (default 1000)")
    p.add_argument("--duration", type=cli_float, default=None, help="open loop: requests arriving in this many seconds")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", type=cli_float, default=None, help="open loop: Poisson arrivals per second")
    load.add_argument("--concurrency", type=cli_int, default=None, help="closed loop of N users")
    p.add_argument("--prefixes", type=cli_int, default=None,
                   help="shared reusable prefixes (0: each request's prefix is its own and resident)")
    p.add_argument("--ttft", choices=["decode_first_token", "prefill_end"], default="decode_first_token",
                   help="P/D TTFT convention (default: the decode side streams the first token after the KV move)")
    p.add_argument("--ramp", type=cli_float, default=None,
                   help="closed loop: spread the users' first requests over this many seconds (default: 1 s "
                        "x users / 1000, at least 0.1 s)")
    p.add_argument("--admission", choices=["prompt", "full"], default="prompt",
                   help="KV admission: the prompt, growing per token with preemption (vLLM/SGLang), or the whole "
                        "request reserved up front (TensorRT-LLM)")
    p.add_argument("--kv-transfer", choices=["after_prefill", "layerwise"], default="after_prefill",
                   help="P/D: move the KV cache after the prefill, or stream it layer by layer during it")
    p.add_argument("--decode-prefix-cache", type=cli_float, default=0.0, metavar="FRACTION",
                   help="P/D: share of each decode rank's KV capacity that caches prefixes, so a prefix the decode "
                        "rank holds does not move (default 0: the whole prompt's KV moves)")
    p.add_argument("--steps", choices=["model", "exact"], default="model",
                   help="step times from the step-time model (interpolated grid, default) or every distinct step "
                        "simulated (exact, slower)")
    from cosim.network import BACKENDS

    p.add_argument("--backend", "-b", choices=list(BACKENDS), default="flow",
                   help="network backend of the step simulations")
    p.add_argument("--cache", type=Path, default=Path(".cosim-cache"),
                   help="folder of saved step-time models (reused across runs)")
    p.add_argument("--seed", type=cli_int, default=None, help="seed of the requests (default: the workload's)")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="per-request Parquet file (written atomically: the old file or the new, never a torn one)")
    p.add_argument("--json", type=Path, default=None, help="summary as JSON (written atomically)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write an HTML report (latency distributions, throughput, pools, busiest links) to "
                        "DIR/index.html")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    from cosim.cli.main import add_routing_options
    from cosim.serving.simulator import ROUTERS

    routing = p.add_argument_group("MoE routing and placement (every MoE pool; overrides the pools' routing:)")
    add_routing_options(routing)
    routing.add_argument("--grouping-purity", type=cli_float, default=1.0, metavar="SHARE",
                         help="with --grouping: share of a rank's tokens of its home domain the step-time model "
                              "starts from (the run measures it and re-prices once if it differs)")
    routing.add_argument("--router", choices=list(ROUTERS), default="least_loaded",
                         help="attention-rank choice for new requests and P/D decode ranks (domain: requests of "
                              "one domain to the ranks of its nodes)")
    routing.add_argument("--domain-slack", type=cli_float, default=0.1, metavar="SHARE",
                         help="domain router: how far above the mean rank load a rank of the request's domain may "
                              "be and still take it")
    routing.add_argument("--domains", default=None, metavar="N|W0,W1,...",
                         help="request domains of the workload: N equal ones or their shares (default: the "
                              "workload's)")
    p.set_defaults(func=run)


def _domains(text: str):
    """``--domains 4`` (an integer) or ``--domains 0.4,0.3,0.2,0.1`` (shares), for
    :meth:`~cosim.serving.workload.WorkloadSpec.with_domains`."""
    parts = [x.strip() for x in str(text).split(",")]
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0])
    try:
        return [float(x) for x in parts]
    except ValueError:
        raise ConfigError("--domains", "", f"expected N or shares such as 0.4,0.3,0.3, got {literal(text)}") from None


def run(args: argparse.Namespace) -> int:
    from cosim.cli.main import check_report_dir, console
    from cosim.report import pool_table, summary_table, throughput_lines, write_requests_parquet, write_serving_json
    from cosim.report.serving import grouping_lines, links_table
    from cosim.serving.deployment import load_deployment
    from cosim.serving.run import serve
    from cosim.serving.simulator import ServingOptions
    from cosim.serving.workload import ClosedLoop, Poisson, generate_requests, load_workload

    check_options(args, SERVE_OPTIONS)
    if args.rate is not None and args.duration is not None and args.rate * args.duration > MAX_REQUESTS.value:
        raise ConfigError("--rate x --duration", "", f"{args.rate:g}/s over {args.duration:g} s is about "
                          f"{int(args.rate * args.duration):,} requests; the limit {MAX_REQUESTS.name} is "
                          f"{int(MAX_REQUESTS.value):,} ({MAX_REQUESTS.reason})")
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    check_output_dir(args.cache, "--cache")
    check_report_dir(args.report)
    dep = load_option("deployment", load_deployment, args.deployment)
    dep = _with_routing(dep, args)
    workload = load_option("--workload", load_workload, args.workload)
    if args.domains is not None:
        try:
            workload = workload.with_domains(_domains(args.domains))
        except ConfigError as exc:
            raise ConfigError("--domains", "", exc.message) from None
    if args.rate is not None:
        workload = workload.with_arrival(Poisson(args.rate))
    elif args.concurrency is not None:
        workload = workload.with_arrival(ClosedLoop(args.concurrency))
    if args.prefixes is not None:
        workload = workload.with_prefixes(args.prefixes)
    n = args.requests if args.requests is not None or args.duration is not None else 1000
    requests = generate_requests(workload, num_requests=n, duration_s=args.duration, seed=args.seed)
    what = (f"{len(requests)} {workload.name} requests with {dep.model.name} ({dep.mode}, {len(dep.pools)} pools, "
            f"{dep.num_gpus} GPUs of {dep.topology.name}, {dep.system}/{dep.framework}, {args.backend} backend)")
    console.print(f"serving {literal(what)}", highlight=False)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
                  transient=True, disable=args.quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        users = requests.concurrency or 0
        ramp = args.ramp if args.ramp is not None else (max(0.1, users / 1000.0) if users else 0.0)
        options = ServingOptions(ttft=args.ttft, kv_transfer=args.kv_transfer, ramp_s=ramp, admission=args.admission,
                                 decode_prefix_cache_fraction=args.decode_prefix_cache, router=args.router,
                                 domain_slack=args.domain_slack)
        result = serve(dep, requests, slo=workload.slo, options=options, backend=args.backend,
                       cache_dir=args.cache, steps=args.steps, progress=progress)
    if not result.feasible:
        for reason in result.reasons:
            console.print(f"[bold red]infeasible:[/] {literal(reason)}", markup=True, highlight=False)
        if args.json:
            write_serving_json(result, args.json)
        if args.report:
            _report(result, args, workload, f"served {what}")
        return 1
    console.print(summary_table(result, workload.slo))
    for line in throughput_lines(result):
        console.print(line, highlight=False)
    console.print(pool_table(result))
    for line in grouping_lines(result):
        console.print(line, highlight=False)
    links = links_table(result)
    if links is not None:
        console.print(links)
    console.print(f"wall: {result.wall_s:.1f} s (simulation of the requests {result.run.wall_s:.2f} s)")
    if args.out:
        console.print(f"per-request results written to {literal(write_requests_parquet(result.run, args.out))}",
                      highlight=False)
    if args.json:
        console.print(f"summary written to {literal(write_serving_json(result, args.json))}", highlight=False)
    if args.report:
        _report(result, args, workload, f"served {what}")
    return 0


def _with_routing(dep, args: argparse.Namespace):
    """The deployment with ``--routing`` / ``--routing-trace`` / ``--placement`` / ``--grouping``
    as the routing of every MoE pool (a prefill pool replays a trace's prefill rows)."""
    from cosim.cli.main import _step_routing
    from cosim.serving.deployment import with_pool

    if not (args.routing or args.routing_trace or args.placement != "contiguous" or args.grouping):
        return dep
    if not dep.model.is_moe:
        raise ConfigError("--routing", "", f"{dep.model.name} has no MoE layers to route")
    for pool in dep.pools:
        routing = _step_routing(args, "prefill" if pool.role == "prefill" else "decode")
        try:
            dep = with_pool(dep, pool.name, routing=routing)
        except ConfigError as exc:
            raise ConfigError("--routing", f"pools.{pool.name}.{exc.field}", exc.message) from None
    return dep


def _report(result, args: argparse.Namespace, workload, what: str) -> None:
    from cosim.cli.main import console
    from cosim.report.html import write_serving_report


    console.print(f"report: {literal(write_serving_report(result, args.report, workload.slo, what))}",
                  highlight=False)
