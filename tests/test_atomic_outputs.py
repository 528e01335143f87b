"""Outputs under faults: a writer SIGKILLed mid-file leaves the earlier result intact and no torn
file under the final name; a trace folder killed mid-export has no manifest and ``cosim trace
check`` calls it incomplete.

The writers run in subprocesses that announce each write on stdout (``start N``), so every kill
lands while a file is being written (a kill after a random fraction of the measured write time).
A control run of the same harness with a plain, non-atomic ``pq.write_table`` shows that the
kills do tear files, i.e. that the atomic writer is what keeps them whole.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cosim.cli.main import main
from cosim.io_atomic import atomic_path, atomic_write_bytes, check_output_dir, check_output_file, OutputPathError

KILLS = 8

WRITER = textwrap.dedent('''
    import sys, time
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    from cosim.io_atomic import atomic_path
    path, mode = sys.argv[1], sys.argv[2]
    rows = 1_500_000
    base = np.arange(rows, dtype=np.int64)
    version = 1
    while True:
        table = pa.table({"version": np.full(rows, version, dtype=np.int64), "x": base * version,
                          "y": base.astype(np.float64) / version})
        print(f"start {version}", flush=True)
        t0 = time.perf_counter()
        if mode == "atomic":
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp, compression=None)
        else:
            pq.write_table(table, path, compression=None)
        print(f"done {version} {time.perf_counter() - t0:.4f}", flush=True)
        version += 1
''')


def _read_version(path: Path) -> int | None:
    """The version of a whole file at ``path``; ``None`` if it is torn or unreadable."""
    try:
        t = pq.read_table(path)
    except Exception:  # noqa: BLE001 - any failure to read is a torn file
        return None
    versions = set(t.column("version").to_pylist()[:10] + t.column("version").to_pylist()[-10:])
    if len(versions) != 1 or t.num_rows != 1_500_000:
        return None
    return versions.pop()


def _kill_writer(path: Path, mode: str, rng: random.Random) -> tuple[int | None, int]:
    """Start the writer, let it finish one write, kill it during a later one; return the version
    read at ``path`` afterwards (None: torn) and the last version the writer finished."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode], stdout=subprocess.PIPE, text=True)
    try:
        finished, write_s = 0, 0.05
        while True:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("writer exited early")
            word, version, *rest = line.split()
            if word == "done":
                finished, write_s = int(version), float(rest[0])
            elif word == "start" and finished >= 1:
                time.sleep(rng.uniform(0.05, 0.8) * write_s)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    # writes the writer finished while the test slept before the kill (a first write slower than
    # the next ones: the sleep outlasts a whole write) count as finished too
    for line in proc.stdout.read().split("\n"):
        word, *rest = line.split() or [""]
        if word == "done":
            finished = int(rest[0])
    return _read_version(path), finished


def test_sigkill_mid_write_keeps_the_earlier_parquet(tmp_path, capsys):
    rng = random.Random(12)
    intact = 0
    for k in range(KILLS):
        path = tmp_path / f"out{k}.parquet"
        version, finished = _kill_writer(path, "atomic", rng)
        assert version is not None, f"kill {k}: the file at the final name is torn"
        # the earlier result (or, if the rename won the race with the kill, the newer whole one)
        assert version in (finished, finished + 1)
        intact += version is not None
        assert not [p for p in tmp_path.iterdir() if p.name == path.name and _read_version(p) is None]
    with capsys.disabled():
        print(f"\nSIGKILL mid-write, atomic writer: earlier result intact in {intact} of {KILLS} kills")
    assert intact == KILLS


def test_control_plain_writes_are_torn_by_the_same_kills(tmp_path, capsys):
    """Without the atomic writer the same kills leave torn files: the kills land mid-write."""
    rng = random.Random(12)
    torn = sum(_kill_writer(tmp_path / f"plain{k}.parquet", "plain", rng)[0] is None for k in range(4))
    with capsys.disabled():
        print(f"\nSIGKILL mid-write, plain pq.write_table: torn file in {torn} of 4 kills")
    assert torn >= 1


EXPORTER = textwrap.dedent('''
    import sys
    from cosim.trace.chakra import write_trace_dir
    from cosim.trace.serialize import read_step_trace
    trace = read_step_trace(sys.argv[1])
    n = 0
    while True:
        print(f"start {n}", flush=True)
        write_trace_dir(trace, sys.argv[2])
        n += 1
        print(f"done {n}", flush=True)
''')


@pytest.fixture(scope="module")
def step_trace(tmp_path_factory) -> Path:
    """A real step trace (DeepSeek-V3 decode on 8 GPUs) written by ``cosim step --trace-out``."""
    pytest.importorskip("aiconfigurator_core")
    out = tmp_path_factory.mktemp("trace")
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--tp", "8", "--dp-attention",
                 "--batch", "16", "--trace-out", str(out)]) == 0
    assert (out / "cosim.manifest.json").is_file()
    return out


def test_sigkill_mid_trace_export_is_reported_incomplete(tmp_path, step_trace, capsys):
    rng = random.Random(3)
    verdicts = {"complete": 0, "incomplete": 0}
    for k in range(6):
        out = tmp_path / f"t{k}"
        proc = subprocess.Popen([sys.executable, "-c", EXPORTER, str(step_trace / "step.pb"), str(out)],
                                stdout=subprocess.PIPE, text=True)
        try:
            t0 = None
            while True:
                word, n = proc.stdout.readline().split()
                if word == "start" and int(n) == 1:   # one whole export done, the second running
                    time.sleep(rng.uniform(0.0, 0.4))
                    proc.send_signal(signal.SIGKILL)
                    break
        finally:
            proc.kill()
            proc.wait()
        capsys.readouterr()
        code = main(["trace", "check", str(out)])
        text = capsys.readouterr().out
        if (out / "cosim.manifest.json").exists():
            assert code == 0 and "OK" in text, text
            verdicts["complete"] += 1
        else:
            assert code == 2 and "incomplete export" in text, text
            verdicts["incomplete"] += 1
        assert not [p for p in out.iterdir() if p.suffix in (".et", ".pb") and p.stat().st_size == 0]
    with capsys.disabled():
        print(f"\nSIGKILL mid trace export: {verdicts}")
    assert verdicts["incomplete"] >= 1


def test_cli_output_is_atomic_and_replaced(tmp_path, capsys):
    """``cosim net -o`` over an earlier file replaces it whole, and leaves no temporary file."""
    out = tmp_path / "links.parquet"
    for size in ("64KiB", "4096"):
        assert main(["net", "-t", "h100-hgx-node", "-s", size, "-q", "-o", str(out)]) == 0
        assert pq.read_table(out).num_rows > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links.parquet"]


def test_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"new, half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_output_paths_are_checked(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match="afile is a file"):
        check_output_file(tmp_path / "afile" / "x.parquet", "--out")
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(OutputPathError, match="255 bytes"):
        check_output_file(tmp_path / ("n" * 300), "--out")
    with pytest.raises(OutputPathError, match="is a file"):
        check_output_dir(tmp_path / "afile", "--report")
    assert check_output_file(tmp_path / "new" / "deeper" / "x.parquet", "--out") is not None
    assert not (tmp_path / "new").exists()  # checking creates nothing
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_file(ro / "x.json", "--json")
