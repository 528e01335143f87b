"""``cosim trace check DIR``: check a Chakra ET export against what ASTRA-sim 2.0 needs to run it.

Thin command: :func:`cosim.trace.chakra.verify_manifest` checks that each export is complete (its
manifest, written last by cosim, is there and matches the files), then
:func:`cosim.trace.chakra_check.inspect_chakra` does the checking; this prints one table per
export (each rule, how many violations), the first violations and a verdict, and exits 1 when a
rule is broken (2 for a directory or file that cannot be read, or an incomplete export).
``--no-manifest`` checks Chakra files that another tool wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cosim.cli.args import cli_int

from rich.markup import escape
from rich.table import Table


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="check exported traces")
    trace_sub = p.add_subparsers(dest="trace_command", required=True)
    check = trace_sub.add_parser(
        "check", help="check a Chakra ET export (the folder of cosim step --trace-out) for ASTRA-sim",
        description="Check the Chakra ET files of DIR against the rules ASTRA-sim 2.0 needs to run them to the "
                    "end: one file per rank; unique node ids and dependencies inside the file, no cycle; the "
                    "same collectives (comm_type, comm_size) in the same order on every rank of a process group; "
                    "no group of one rank; every send matched by a receive (src, dst, tag, size); compute nodes "
                    "with num_ops > 0 and no 0 us duration. An export of cosim is complete only with its "
                    "manifest <prefix>.manifest.json (written last, it lists every file's size and SHA-256); "
                    "one without it was interrupted and is refused. Exit status 0: all rules hold; 1: "
                    "violations; 2: DIR or a file cannot be read, or the export is incomplete.")
    check.add_argument("directory", type=Path, metavar="DIR", help="folder with <prefix>.<rank>.et files")
    check.add_argument("--prefix", default=None, help="check only <prefix>.<rank>.et (default: every prefix in DIR)")
    check.add_argument("--max", type=cli_int, default=20, help="violations to list (default 20; all are counted)")
    check.add_argument("--no-manifest", action="store_true",
                       help="check Chakra files without a cosim manifest (written by another tool); cosim's own "
                            "exports are complete only with theirs")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from cosim.cli.args import IntOption, check_options, check_text_options
    from cosim.cli.main import console
    from cosim.limits import MAX_GPUS
    from cosim.trace.chakra import verify_manifest
    from cosim.trace.chakra_check import RULES, find_exports, inspect_chakra

    check_options(args, (IntOption("--max", "max", 0, 64 * int(MAX_GPUS.value)),))
    check_text_options(args, (("--prefix", "prefix"),))
    if not args.no_manifest:
        for prefix in sorted(find_exports(args.directory, args.prefix)):
            verify_manifest(args.directory, prefix)
    checks = inspect_chakra(args.directory, args.prefix)
    for check in checks:
        types = ", ".join(f"{n} {t.removesuffix('_NODE').lower()}" for t, n in sorted(check.node_types.items()))
        console.print(f"[bold]{escape(check.directory)}/{escape(check.prefix)}[/bold]: {check.num_ranks} ranks, "
                      f"{check.num_nodes} nodes ({types}), {len(check.groups)} process group(s)", highlight=False)
        table = Table(title="ASTRA-sim rules")
        for col in ("rule", "checks", "violations"):
            table.add_column(col, justify="right" if col == "violations" else "left")
        for rule, found in check.by_rule().items():
            table.add_row(rule.value, RULES[rule], f"[red]{len(found)}[/red]" if found else "[green]ok[/green]")
        console.print(table)
        for v in check.violations[:args.max]:
            console.print(f"  {escape(str(v))}", highlight=False)
        if len(check.violations) > args.max:
            console.print(f"  ... and {len(check.violations) - args.max} more")
        if check.ok:
            console.print(f"[bold green]OK[/bold green]: {escape(check.prefix)} follows every rule")
        else:
            console.print(f"[bold red]FAIL[/bold red]: {escape(check.prefix)} breaks {len(check.violations)} "
                          f"rule instance(s); ASTRA-sim would stall or abort on it")
    return 0 if all(c.ok for c in checks) else 1
