"""``cosim explore EXPERIMENT.yaml`` : sweep a design space under SLOs and print the best
deployment per mode and the Pareto fronts; results (one Parquet row per point) in ``--out``, and
their HTML report in ``OUT/report/`` (:func:`cosim.report.html.write_experiment_report`).

Thin command: arguments -> :func:`cosim.explore.load_experiment` -> :func:`cosim.explore.explore`
-> report tables. A run interrupted at any moment resumes from ``--out`` without redoing or
duplicating a finished point.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cosim.cli.args import cli_int

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def add_parser(sub) -> None:
    p = sub.add_parser("explore", help="sweep deployments under SLOs: best per mode, Pareto fronts (docs/experiments.md)")
    p.add_argument("experiment", type=Path, help="experiment YAML file (docs/experiments.md)")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="result folder (default: results/<experiment name>); an existing one is resumed")
    p.add_argument("--workers", "-j", type=cli_int, default=None, help="local worker processes (default: the file's, 2)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run the points on the Ray cluster at ADDRESS")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder of shared step-time models (default: OUT/step-models)")
    p.add_argument("--no-finalists", action="store_true",
                   help="skip the close look at the finalists (their steps on both backends, breakdown, links)")
    p.add_argument("--no-packet", action="store_true", help="finalists: no packet-backend re-check")
    p.add_argument("--fronts", action="store_true", help="also print the Pareto front of every workload")
    p.add_argument("--no-report", action="store_true",
                   help="do not write the HTML report (OUT/report/index.html; cosim report OUT writes it later)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosim.cli.args import IntOption, check_options, check_text_options, literal, load_option
    from cosim.cli.main import console
    from cosim.explore import explore, load_experiment
    from cosim.io_atomic import check_output_dir
    from cosim.limits import MAX_WORKERS
    from cosim.report.explore import best_table, front_table, recheck_table

    check_options(args, (IntOption("--workers", "workers", 1, MAX_WORKERS),))
    check_text_options(args, (("--ray", "ray"),))
    check_output_dir(args.out, "--out")
    check_output_dir(args.cache, "--cache")
    spec = load_option("experiment", load_experiment, args.experiment)
    out = args.out or Path("results") / spec.name
    check_output_dir(out, "--out")
    runner = "ray" if args.ray else None
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task(f"{literal(spec.name)}: points", total=None)
        fin: list = []

        def finalist_progress(done: int, total: int) -> None:
            if not fin:
                fin.append(bar.add_task("finalists (flow + packet steps)", total=total))
            bar.update(fin[0], completed=done, total=total)

        result = explore(spec, out, runner=runner, address=args.ray, workers=args.workers, cache_dir=args.cache,
                         finalists=not args.no_finalists, packet=not args.no_packet,
                         progress=lambda done, total: bar.update(task, completed=done, total=total),
                         finalist_progress=finalist_progress)
    enum = result.enumeration
    skipped = sum(enum.skipped.values())
    console.print(f"{literal(spec.name)}: {len(enum.points)} points ({result.reused} reused from {literal(out)}, "
                  f"{result.evaluated} "
                  f"evaluated in {result.wall_s:.0f} s, {result.points_per_s:.2f} points/s); {skipped} combinations "
                  f"left out", highlight=False)
    console.print(best_table(result.best))
    if args.fronts:
        for group, front in result.fronts.items():
            console.print(front_table(group, front))
    if result.finalists:
        console.print(recheck_table(result.finalists))
    console.print(f"results: {literal(out / 'results.parquet')}", highlight=False)
    if not args.no_report:
        from cosim.report.html import write_experiment_report

        console.print(f"report: {literal(write_experiment_report(out))}", highlight=False)
    return 0
