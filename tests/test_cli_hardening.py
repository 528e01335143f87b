"""The command line under bad arguments (issue 12): every numeric option is finite, integral where
a count is meant and within :mod:`cosim.limits`; the error names the option, the value (a bounded
prefix) and the limit, exits 2 and prints no traceback; output paths are checked before anything
is simulated; user text prints literally and in bounded time; a trace folder without its manifest
is refused as incomplete."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosim.cli.main import main
from cosim.limits import MAX_BATCH, MAX_GPUS, MAX_REDUNDANT_EXPERTS, MAX_ROUTING_SKEW

from conftest import requires_engine

ROOT = Path(__file__).resolve().parents[1]
STEP = ["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node"]


def run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text
    return code, text


@pytest.mark.parametrize("argv,pieces", [
    (["net", "-t", "h100-hgx-2node", "-s", "1e400B"], ["--size", "1e400B", "finite"]),
    (["net", "-t", "h100-hgx-2node", "-s", "1PiB"], ["--size", "1PiB"]),
    (["net", "-t", "h100-hgx-2node", "-s", str(2**60)], ["--size", "MAX_FLOW_BYTES"]),
    (["net", "-t", "h100-hgx-2node", "--chunk", "0B"], ["--chunk", "at least 1"]),
    (["net", "-t", "h100-hgx-2node", "--gpus", "0-100000000"], ["--gpus", "rank 16 does not exist"]),
    (["net", "-t", "h100-hgx-2node", "--gpus", "0-" + "9" * 5000], ["--gpus", "out of range"]),
    (["net", "-t", "h100-hgx-2node", "--top", "-1"], ["--top", "too small"]),
    (["net", "-t", "x" * 300], ["--topology", "File name too long", "(300 chars)"]),
    (STEP + ["--batch", "100000000"], ["--batch", "100000000", "MAX_BATCH", f"{MAX_BATCH.value:,}"]),
    (STEP + ["--skew", "inf"], ["--skew", "inf", "finite"]),
    (STEP + ["--skew", "nan"], ["--skew", "nan", "finite"]),
    (STEP + ["--skew", "1e9"], ["--skew", "MAX_ROUTING_SKEW", f"{MAX_ROUTING_SKEW.value:g}"]),
    (STEP + ["--redundant-experts", "1000000"], ["--redundant-experts", "MAX_REDUNDANT_EXPERTS",
                                                  f"{MAX_REDUNDANT_EXPERTS.value:,}"]),
    (STEP + ["--tp", "100000000"], ["--tp", "MAX_GPUS", f"{MAX_GPUS.value:,}"]),
    (STEP + ["--tp", "0"], ["--tp", "too small"]),
    (STEP + ["--mtp", "100000"], ["--mtp", "MAX_MTP_TOKENS"]),
    (STEP + ["--context", str(2**40)], ["--context", "MAX_TOKENS"]),
    (STEP + ["--prefill-chunks", f"0+{2**30}"], ["--prefill-chunks", "new tokens", "MAX_TOKENS"]),
    (STEP + ["--prefill-chunks", "1+" + "9" * 5000], ["--prefill-chunks", "PREFIX+NEW", "chars"]),
    (STEP + ["--gpus", "0-100000000"], ["--gpus", "rank 8 does not exist"]),
])
def test_bad_numbers_name_the_option_value_and_limit(capsys, argv, pieces):
    t0 = time.perf_counter()
    code, text = run(capsys, argv)
    assert code == 2, text
    line = text.strip().splitlines()[0]
    assert line.startswith("error: "), text
    for piece in pieces:
        assert piece in line, (piece, line)
    assert len(line) < 600
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("argv", [
    ["net", "-t", "h100-hgx-2node", "--top", "1e3"],          # a count must be an integer
    ["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--batch", "1.5"],
    ["net", "-t", "h100-hgx-2node", "--backend", "quantum"],
])
def test_usage_errors_exit_2_without_raising(capsys, argv):
    code, text = run(capsys, argv)
    assert code == 2 and "error: argument" in text


def test_plain_byte_counts_are_sizes(capsys):
    code, text = run(capsys, ["net", "-t", "h100-hgx-node", "-s", "4096", "-q"])
    assert code == 0 and "4.0 KiB" in text


def test_outputs_are_checked_before_simulating(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    cases = [
        (["net", "-t", "h100-hgx-2node", "-q", "-o", str(tmp_path / "afile" / "x.parquet")], "--out", "is a file"),
        (["net", "-t", "h100-hgx-2node", "-q", "-o", str(tmp_path)], "--out", "is a folder"),
        (["net", "-t", "h100-hgx-2node", "-q", "--report", str(tmp_path / "afile")], "--report", "is a file"),
        (["net", "-t", "h100-hgx-2node", "-q", "-o", str(tmp_path / ("n" * 300))], "--out", "255 bytes"),
        (STEP + ["--json", str(tmp_path / "afile" / "s.json")], "--json", "is a file"),
        (STEP + ["--trace-out", str(tmp_path / "afile")], "--trace-out", "is a file"),
        (STEP + ["--trace-out", str(tmp_path / "afile" / "deeper")], "--trace-out", "is a file"),
    ]
    for argv, option, message in cases:
        code, text = run(capsys, argv)
        assert code == 2 and f"error: {option}: " in text and message in text, text
        assert "completion time" not in text and "step time" not in text  # nothing was simulated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_serve_and_explore_options(tmp_path, capsys):
    dep = tmp_path / "d.yaml"
    dep.write_text("model: Qwen/Qwen3-30B-A3B\ntopology: h200-hgx-node\npools:\n  - name: agg\n    role: mixed\n"
                   "    parallel: {tp: 8}\n")
    for argv, piece in [
        (["serve", str(dep), "--requests", "100000000000"], "--requests"),
        (["serve", str(dep), "--rate", "inf"], "--rate"),
        (["serve", str(dep), "--rate", "1e6", "--duration", "1e5"], "--rate x --duration"),
        (["serve", str(dep), "--duration", "-1"], "--duration"),
        (["serve", str(dep), "--decode-prefix-cache", "2"], "--decode-prefix-cache"),
        (["serve", str(dep), "--concurrency", "0"], "--concurrency"),
        (["serve", str(dep), "-o", str(dep / "x.parquet")], "--out"),
        (["explore", str(ROOT / "experiments" / "quickstart.yaml"), "--workers", "0"], "--workers"),
        (["explore", str(ROOT / "experiments" / "quickstart.yaml"), "-o", str(dep)], "--out"),
        (["trace", "check", str(tmp_path), "--max", "-5"], "--max"),
    ]:
        code, text = run(capsys, argv)
        assert code == 2 and f"error: {piece}" in text, (argv, text)


def _topology_with(tmp_path: Path, **fields: str) -> Path:
    text = (ROOT / "topologies" / "h200-hgx-node.yaml").read_text()
    for key, value in fields.items():
        text = re.sub(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def test_user_text_prints_literally(tmp_path, capsys):
    path = _topology_with(tmp_path, name="'[/bold]evil[link=x]'", description="'bad [/bold] markup [red] \\'")
    for argv in (["topology", "show", str(path)], ["net", "-t", str(path), "-q"]):
        code, text = run(capsys, argv)
        assert code == 0, text
        assert "[/bold]evil[link=x]" in text
    code, text = run(capsys, ["topology", "show", str(path)])
    assert "bad [/bold] markup [red] \\" in text


def test_long_description_prints_in_bounded_time(tmp_path, capsys):
    desc = "word [b] " * 7_000  # 63,000 characters, below MAX_DESCRIPTION_CHARS
    path = _topology_with(tmp_path, description=f"'{desc}'")
    t0 = time.perf_counter()
    code, text = run(capsys, ["topology", "show", str(path)])
    assert code == 0 and time.perf_counter() - t0 < 10
    assert "characters, cut" in text and len(text) < 20_000


def test_error_messages_print_literally(tmp_path, capsys):
    code, text = run(capsys, ["net", "-t", "[/bold]nowhere[red]"])
    assert code == 2 and "[/bold]nowhere[red]" in text


def test_trace_check_refuses_an_export_without_manifest(tmp_path, capsys):
    from test_trace_io import small_trace

    from cosim.trace.chakra import export_chakra, manifest_path

    export_chakra(small_trace(), tmp_path / "et")
    assert run(capsys, ["trace", "check", str(tmp_path / "et")])[0] == 0
    (tmp_path / "et" / "cosim.1.et").write_bytes(b"\x00" * 3)      # changed after the export
    code, text = run(capsys, ["trace", "check", str(tmp_path / "et")])
    assert code == 2 and "does not match cosim.manifest.json" in text
    manifest_path(tmp_path / "et").unlink()
    code, text = run(capsys, ["trace", "check", str(tmp_path / "et")])
    assert code == 2 and "incomplete export 'cosim': no manifest" in text
    code, text = run(capsys, ["trace", "check", str(tmp_path / "et"), "--no-manifest"])
    assert code in (1, 2) and "cosim.1.et" in text and "OK" not in text  # the torn file itself


def test_reexport_into_a_folder_of_a_larger_export(tmp_path):
    """An export of fewer ranks over an earlier one leaves no stale rank file and a valid manifest."""
    from test_trace_io import small_trace

    from cosim.trace.chakra import export_chakra, verify_manifest
    from cosim.trace.chakra_check import check_chakra

    out = tmp_path / "et"
    export_chakra(small_trace(), out)
    shutil.copy(out / "cosim.1.et", out / "cosim.5.et")            # as if an earlier export had 6 ranks
    export_chakra(small_trace(), out)
    assert not (out / "cosim.5.et").exists()
    assert len(verify_manifest(out)["files"]) == 3 and check_chakra(out) == []


@requires_engine
def test_packet_backend_huge_flow_is_refused_quickly(tmp_path):
    """``--size 1TiB -b packet`` is 2^28 packets per flow: refused by MAX_PACKETS, not simulated
    for hours (run in a subprocess so a regression fails instead of hanging the suite)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "cosim.cli.main", "net", "-t", "h100-hgx-2node", "-s", "1TiB",
                               "-b", "packet", "-q"], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)  # the installed package, not a source tree without its engines
    except subprocess.TimeoutExpired:
        pytest.fail("cosim net -s 1TiB -b packet still ran after 60 s")
    assert proc.returncode == 2 and "MAX_PACKETS" in proc.stdout and "Traceback" not in proc.stderr
