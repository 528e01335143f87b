"""Property-based fuzzing of cosim's inputs (issue 12): mutated topology presets and generator
parameters, YAML text oddities and encodings, mutated model ``config.json`` files, the flow and
collective API and the unit parsers (what the CLI's ``--size``/``--gpus`` use).

Property: each input gives a valid result or a :class:`cosim.errors.CosimError`, within
:data:`TIME_LIMIT_S` per example (SIGALRM) and within :data:`MEMORY_LIMIT_BYTES` of extra
address space (``RLIMIT_AS`` set around each example: an allocation beyond it is a MemoryError,
which fails the test); never another exception. Derandomized (the same examples every run)
and bounded to about a minute in total. ``benchmarks/fuzz.py`` runs a larger corpus of the same
mutations in subprocesses and counts the outcomes.
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_corpus as F  # noqa: E402

from cosim.errors import CosimError  # noqa: E402

TIME_LIMIT_S = 5.0
MEMORY_LIMIT_BYTES = 1 << 30


class HypothesisChooser:
    """:class:`fuzz_corpus.Chooser` drawing from hypothesis (so failures shrink)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def choice(self, options: Sequence[Any]) -> Any:
        return self.data.draw(st.sampled_from(list(options)))

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


class ExampleTimeout(Exception):
    """An example ran longer than TIME_LIMIT_S (not a CosimError: fails the test)."""


def _alarm(signum, frame):
    raise ExampleTimeout(f"an example ran longer than {TIME_LIMIT_S} s")


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _check(target: str, data: Any) -> None:
    previous = signal.signal(signal.SIGALRM, _alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_bytes() + MEMORY_LIMIT_BYTES
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        F.TARGETS[target](HypothesisChooser(data))
    except CosimError:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def _fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@_fuzz(600)
@given(st.data())
def test_fuzz_topology_presets(data):
    _check("topology", data)


@_fuzz(600)
@given(st.data())
def test_fuzz_generator_parameters(data):
    _check("generator", data)


@_fuzz(400)
@given(st.data())
def test_fuzz_yaml_text_and_encodings(data):
    _check("yaml", data)


@_fuzz(500)
@given(st.data())
def test_fuzz_model_configs(data):
    _check("model", data)


@_fuzz(400)
@given(st.data())
def test_fuzz_flow_api(data):
    _check("flows", data)


@_fuzz(800)
@given(st.data())
def test_fuzz_unit_parsers(data):
    _check("units", data)
