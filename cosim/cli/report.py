"""``cosim report RESULTS_DIR``: the HTML report of an exploration's result folder.

Thin command: :func:`cosim.report.html.write_experiment_report` reads ``results.parquet``,
``experiment.json`` and ``finalists/`` (it never simulates) and writes ``RESULTS_DIR/report/
index.html`` with its figures (``docs/reports.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write the HTML report of a cosim explore result folder (docs/reports.md)")
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="result folder of cosim explore (its --out)")
    p.add_argument("--out", "-o", type=Path, default=None, help="report folder (default: RESULTS_DIR/report)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cosim.cli.args import literal
    from cosim.cli.main import console
    from cosim.io_atomic import check_output_dir
    from cosim.report.html import write_experiment_report

    check_output_dir(args.out, "--out")
    with console.status(f"writing the report of {literal(args.results)}"):
        path = write_experiment_report(args.results, args.out)
    console.print(f"report: {literal(path)}", highlight=False)
    return 0
