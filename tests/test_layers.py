"""Package layering: a stage of cosim imports only stages to its left (DESIGN.md, "The serving layer").

The chain, with the rank each stage gets here::

    foundations (0)  cosim/__init__.py, cosim/errors.py, cosim/units.py, cosim/ops.py, cosim/registry.py,
                     cosim/limits.py, cosim/io_atomic.py, cosim/identity_cache.py
    topology    (1)
    network     (2)
    models, kernels (3)   one rank: they may import each other (today neither does)
    trace       (4)
    engine      (5)
    serving     (6)
    validation  (6.5)     just above serving: it checks the engine's steps and the serving layer's
                          runs against measurements, so it imports both (and kernels, models,
                          network, trace, topology); fitted constants live in the stage that uses
                          them (engine.overheads), so nothing below imports validation
    explore     (7)
    report      (8)
    cli         (9)

A module may import its own stage and any stage of lower rank. Imports are read with ``ast`` from
every ``.py`` file under ``cosim/``: top-level and nested (inside functions, ``if TYPE_CHECKING``
blocks ...), ``import cosim.x``, ``from cosim.x import y``, ``from cosim import x``, relative
imports, and ``importlib.import_module("cosim.x")`` with a literal name. A folder of ``cosim/``
that is not in the chain fails the test until it is given a rank here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import cosim

PACKAGE_DIR = Path(cosim.__file__).resolve().parent
ROOT = "<root>"
FOUNDATIONS = ("errors", "units", "ops", "registry", "limits", "io_atomic", "identity_cache")
RANK: dict[str, float] = {
    ROOT: 0, **{name: 0 for name in FOUNDATIONS},
    "topology": 1, "network": 2, "models": 3, "kernels": 3, "trace": 4, "engine": 5,
    "serving": 6, "validation": 6.5, "explore": 7, "report": 8, "cli": 9, "__main__": 10,
}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    stage: str
    imported_stage: str

    def __str__(self) -> str:
        return (f"{self.module}:{self.line}: imports {self.imported} ({self.imported_stage}, rank "
                f"{RANK[self.imported_stage]:g}) from {self.stage} (rank {RANK[self.stage]:g})")


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    """Stage of a dotted module name inside cosim (``cosim.network.flows`` -> ``network``)."""
    parts = module.split(".")
    assert parts[0] == "cosim", module
    return parts[1] if len(parts) > 1 else ROOT


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every cosim module ``source`` imports, wherever the import is."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                target = node.module or ""
            if target == "cosim":  # "from cosim import network" / "from .. import report": names are stages
                found += [(node.lineno, f"cosim.{a.name}") for a in node.names if a.name != "*"]
            else:
                found.append((node.lineno, target))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return sorted((line, name) for line, name in found if name == "cosim" or name.startswith("cosim."))


def _resolves_to_stage(name: str) -> str:
    """Stage of an imported name; ``cosim.<x>`` where ``x`` is not a module (``from cosim import
    __version__``) belongs to the root."""
    stage = stage_of(name)
    return stage if stage in RANK or (PACKAGE_DIR / stage).is_dir() or (PACKAGE_DIR / f"{stage}.py").exists() else ROOT


def violations_of(source: str, module: str, is_package: bool = False) -> list[Violation]:
    stage = stage_of(module)
    out = []
    for line, name in imported_modules(source, module, is_package):
        target = _resolves_to_stage(name)
        if target not in RANK:
            continue  # reported by test_every_stage_has_a_rank
        if RANK[target] > RANK[stage]:
            out.append(Violation(module, line, name, stage, target))
    return out


def package_modules() -> list[tuple[Path, str]]:
    return [(p, module_name(p)) for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts]


def test_every_stage_has_a_rank():
    stages = {stage_of(mod) for _, mod in package_modules()}
    unknown = sorted(stages - set(RANK))
    assert not unknown, f"cosim folders without a place in the layer chain: {unknown}; add them to RANK in {__file__}"


def test_no_module_imports_a_stage_to_its_right():
    found = []
    for path, mod in package_modules():
        found += violations_of(path.read_text(), mod, path.name == "__init__.py")
    assert not found, "layering violations:\n" + "\n".join(map(str, found))


BAD = '''
from __future__ import annotations
import numpy as np
from cosim.errors import ConfigError
from cosim.topology.model import Topology

def helper():
    from cosim.engine.step import simulate_step
    import cosim.cli.main

from ..serving import pools
from .. import report
from . import model
import importlib
importlib.import_module("cosim.explore.runners")
'''


def test_detector_finds_synthetic_bad_imports():
    found = violations_of(BAD, "cosim.topology.bad")
    assert [(v.line, v.imported_stage) for v in found] == [
        (8, "engine"), (9, "cli"), (11, "serving"), (12, "report"), (15, "explore")]
    assert str(found[0]) == "cosim.topology.bad:8: imports cosim.engine.step (engine, rank 5) from topology (rank 1)"


@pytest.mark.parametrize("source,module,is_package,bad_stage", [
    ("from . import deepep", "cosim.network", True, None),               # own stage, package-relative
    ("from ..topology import Router", "cosim.network.flows", False, None),  # left
    ("from ..trace import builder", "cosim.network.flows", False, "trace"),
    ("from cosim import network", "cosim.topology.x", False, "network"),
    ("from cosim import __version__", "cosim.units", False, None),          # root = foundation
    ("import cosim.topology", "cosim.errors", False, "topology"),           # foundations import no stage
    ("from cosim.kernels import KernelTables", "cosim.models.x", False, None),  # same rank
    ("from cosim.validation.comm import run", "cosim.engine.step", False, "validation"),
    ("from cosim.engine.step import simulate_step", "cosim.validation.steps", False, None),
    ("from cosim.validation import steps", "cosim.serving.sim", False, "validation"),
    ("from cosim.serving import serve", "cosim.validation.serving", False, None),
    ("from cosim.cli.main import main", "cosim.report.html", False, "cli"),
])
def test_detector_cases(source, module, is_package, bad_stage):
    found = violations_of(source, module, is_package)
    assert {v.imported_stage for v in found} == ({bad_stage} if bad_stage else set())


def test_every_exception_class_of_cosim_derives_from_cosim_error():
    """DESIGN.md: every error cosim raises derives from one base class, so the CLI prints one line."""
    import importlib
    import inspect

    from cosim.errors import CosimError

    checked, wrong = [], []
    for _, mod in package_modules():
        try:
            module = importlib.import_module(mod)
        except ImportError:  # optional native extension or dependency not installed
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != mod or not issubclass(cls, BaseException) or issubclass(cls, Warning):
                continue
            checked.append(f"{mod}.{cls.__name__}")
            if not issubclass(cls, CosimError):
                wrong.append(f"{mod}.{cls.__name__}")
    assert {"cosim.units.UnitError", "cosim.engine.schedule.ScheduleError", "cosim.errors.ConfigError"} <= set(checked)
    assert not wrong, f"exception classes not derived from cosim.errors.CosimError: {wrong}"
