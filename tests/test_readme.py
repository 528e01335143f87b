"""The README's commands: the two that CI runs are in it, and every ``cosim`` line it shows parses.

CI (``.ci/run``) installs and tests cosim "exactly as the README says"; these tests keep the two
in step (the README once lost its install and test sections while CI kept passing) and catch a
renamed subcommand or flag in the README's examples.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cosim.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_lines() -> list[str]:
    """Command lines of the README's ``bash`` blocks (continuations joined, comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _cosim_commands() -> list[list[str]]:
    """Every ``cosim ...`` invocation in the README's bash blocks (also inside ``a && b``)."""
    out = []
    for line in _bash_lines():
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and words[0] == "cosim":
                out.append(words[1:])
    return out


def _ci_commands() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd "))]


def test_readme_has_the_install_and_test_commands_ci_runs():
    ci = _ci_commands()
    lines = _bash_lines()
    install = next(c for c in ci if c.startswith("pip install"))
    main_job = next(c for c in ci if c.startswith("cosim "))
    tests = next(c for c in ci if "pytest" in c)
    # one README line installs and runs the main job, in that order
    assert any(install in ln and main_job in ln and ln.index(install) < ln.index(main_job) for ln in lines), \
        f"no README command line runs {install!r} then {main_job!r}"
    # the README's test command is CI's without CI's environment settings
    readme_tests = re.sub(r"\b[A-Z_]+=\S+\s+", "", tests)
    assert readme_tests in lines, f"the README does not show the test command {readme_tests!r}"


def test_readme_cosim_commands_parse():
    commands = _cosim_commands()
    assert len(commands) >= 10  # the quickstart shows every subcommand
    assert {c[0] for c in commands} >= {"explore", "serve", "step", "net", "topology", "report", "trace"}
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse reports a bad flag or value by exiting
            pytest.fail(f"README command does not parse: cosim {' '.join(argv)} (exit {exc.code})")
