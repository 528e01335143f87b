"""Property-based fuzz test of the command line (``cosim net``, ``cosim step``): random argument
lists of valid options with random values (huge, negative, inf, nan, text, unit suffixes, rank
ranges) run in-process through :func:`cosim.cli.main.main`.

Every example must end, within a time bound and without a memory blow-up, in either exit 0 (a
result) or a clean error: exit 2 with one ``error: ...`` line (or argparse's usage error), never
a traceback, an internal error (exit 3) or an exception escaping ``main``. Cases that would
simulate large things are kept cheap by construction (1- and 2-node topologies, chunks of at
least 256 KiB, valid sizes up to 16 MiB); absurd values (beyond the limits) are drawn freely and
must be refused by the limits. Valid but expensive sizes between (``1TiB`` of a chunked ring
collective is ~16M flows, minutes of simulation, within the limits) are left out. The outcome
counts are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import io
import resource
import signal
from collections import Counter

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cosim.cli.main import main  # noqa: E402

#: Wall-clock bound of one example (seconds).
EXAMPLE_BOUND_S = 20
#: Growth of the process's peak memory allowed in one example.
MEMORY_BOUND_BYTES = 1 << 31

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Overrun(BaseException):
    """An example ran past EXAMPLE_BOUND_S (a BaseException: ``main`` must not catch it)."""


def _alarm(signum, frame):
    raise Overrun()


def run_cli(argv: list[str]) -> str:
    """Run ``cosim argv`` in-process; the outcome (``ok``, ``clean error``) or an AssertionError."""
    out, err = io.StringIO(), io.StringIO()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_BOUND_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Overrun:
        raise AssertionError(f"hang: {argv} ran more than {EXAMPLE_BOUND_S} s") from None
    except BaseException as exc:  # noqa: BLE001 - any escaping exception is a defect
        raise AssertionError(f"{type(exc).__name__} escaped main for {argv}: {exc}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    text, etext = out.getvalue(), err.getvalue()
    assert grown < MEMORY_BOUND_BYTES, f"memory: {argv} grew the peak by {grown / 2**30:.1f} GiB"
    assert "Traceback" not in text + etext, f"traceback for {argv}:\n{etext[-3000:]}{text[-3000:]}"
    if code == 0:
        return "ok"
    assert code == 2, f"exit {code} for {argv}:\n{etext[-2000:]}{text[-2000:]}"
    error_lines = [line for line in (text + etext).splitlines() if "error:" in line]
    assert error_lines, f"exit 2 without an error line for {argv}: {text[-500:]!r} {etext[-500:]!r}"
    assert len(error_lines[0]) < 5_000, f"an error line of {len(error_lines[0])} chars for {argv}"
    return "clean error"


# --- value strategies ---------------------------------------------------------------------------

UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "kB", "PB", "PiB", "b", "", " B", "bytes", "EiB"]
ABSURD_NUMBERS = ["1e400", "-1e400", "inf", "-inf", "nan", "NaN", "1e308", str(2**64), str(2**63 - 1), str(-2**63),
                  "9" * 5000, "0x10", "1_000", "1.5", "-0", "+3", " 7 ", "", "٣", "1e3"]


def numbers_as_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ABSURD_NUMBERS),
        st.integers(-2**70, 2**70).map(str),
        st.integers(-3, 40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=12),
    )


def sizes(valid_max: int) -> st.SearchStrategy[str]:
    """Message sizes: cheap valid ones (<= valid_max bytes) and anything beyond the limits."""
    return st.one_of(
        st.builds(lambda n, u: f"{n}{u}", st.integers(1, 16), st.sampled_from(["KiB", "MiB", "KB", "MB"])),
        st.integers(1, valid_max).map(str),
        st.builds(lambda n: f"{n}B", st.integers(1, valid_max)),
        st.builds(lambda n, u: f"{n}{u}", st.integers(2**51, 2**80), st.sampled_from(["", "B", "KiB", "TiB"])),
        st.builds(lambda x, u: f"{x!r}{u}", st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from(UNITS)),
        st.builds(lambda x, u: f"{x}{u}", st.sampled_from(ABSURD_NUMBERS), st.sampled_from(UNITS)),
        st.sampled_from(["1PiB", "1e400B", "0", "0B", "-1", "-4KiB", "4096", "1.5B", "1e3B"]),
    )


def rank_lists() -> st.SearchStrategy[str]:
    part = st.one_of(
        st.integers(-5, 20).map(str),
        st.builds(lambda a, b: f"{a}-{b}", st.integers(-3, 20), st.integers(-3, 20)),
        st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 10), st.integers(10**6, 10**30)),
        st.sampled_from(["0-100000000", "a", "", "-", "1--3", "0-7-9", "٣", " 1", str(2**64)]),
    )
    return st.lists(part, min_size=1, max_size=5).map(",".join)


def options(table: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """A random subset of ``table``'s options with drawn values, as argv items."""
    return st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True).flatmap(
        lambda flags: st.tuples(*(table[f] for f in flags)).map(
            lambda values: [x for f, v in zip(flags, values) for x in (f, v)]))


NET_OPTIONS = {
    "--size": sizes(16 << 20),
    "--chunk": st.one_of(st.just("none"), st.sampled_from(["256KiB", "1MiB", "4MiB"]),
                         st.sampled_from(["0", "0B", "-1", "1e400B", "inf", "nan", "1PiB", "x", ""])),
    "--gpus": rank_lists(),
    "--top": numbers_as_text(),
    "--collective": st.sampled_from(["all_to_all", "all_reduce", "all_gather", "reduce_scatter", "ring", "?"]),
}

STEP_OPTIONS = {
    "--tp": st.one_of(st.sampled_from(["1", "2", "4", "8"]), numbers_as_text()),
    "--ep": st.one_of(st.sampled_from(["0", "2", "8"]), numbers_as_text()),
    "--pp": st.one_of(st.sampled_from(["1", "2"]), numbers_as_text()),
    "--batch": st.one_of(st.integers(0, 256).map(str), numbers_as_text(), st.just("100000000")),
    "--context": st.one_of(st.integers(0, 8192).map(str), numbers_as_text()),
    "--new-tokens": st.one_of(st.integers(1, 1024).map(str), numbers_as_text()),
    "--skew": st.one_of(st.floats(0, 2).map(repr), numbers_as_text()),
    "--redundant-experts": st.one_of(st.sampled_from(["0", "8", "1000000"]), numbers_as_text()),
    "--mtp": st.one_of(st.sampled_from(["0", "1", "3"]), numbers_as_text()),
    "--top": numbers_as_text(),
    "--gpus": rank_lists(),
    "--prefill-chunks": st.one_of(st.sampled_from(["0+512", "4096+256,0+128", "12", "1+", "+", "0+0",
                                                   f"0+{2**40}", "-1+5"]), st.text(max_size=12)),
}


def test_fuzz_net_arguments():
    counts: Counter = Counter()

    @settings(max_examples=1200, **SETTINGS)
    @given(topology=st.sampled_from(["h100-hgx-node", "h100-hgx-2node"]), opts=options(NET_OPTIONS))
    def run(topology, opts):
        counts[run_cli(["net", "-t", topology, "-q", *opts])] += 1

    run()
    print(f"\ncosim net fuzz: {dict(counts)} of {sum(counts.values())} examples")
    assert counts["ok"] > 0 and counts["clean error"] > 0


def test_fuzz_step_arguments():
    pytest.importorskip("aiconfigurator_core")
    counts: Counter = Counter()

    @settings(max_examples=150, **SETTINGS)
    @given(opts=options(STEP_OPTIONS), phase=st.sampled_from(["decode", "prefill"]))
    def run(opts, phase):
        counts[run_cli(["step", "-m", "Qwen/Qwen3-30B-A3B", "-t", "h100-hgx-node", "--phase", phase, *opts])] += 1

    run()
    print(f"\ncosim step fuzz: {dict(counts)} of {sum(counts.values())} examples")
    assert counts["clean error"] > 0
