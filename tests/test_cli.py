"""The ``cosim`` command line: runs on shipped presets, writes Parquet, fails cleanly on bad input."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from cosim.cli.main import main
from cosim.trace.chakra_check import check_chakra

from conftest import requires_engine


def test_topology_list_and_show(capsys):
    assert main(["topology", "list"]) == 0
    out = capsys.readouterr().out
    assert "h100-hgx-2node" in out and "gb200-nvl72" in out
    assert main(["topology", "show", "gb200-nvl72-2rack"]) == 0
    out = capsys.readouterr().out
    assert "144 gpu" in out and "nvlink" in out and "900.0 GB/s" in out


@pytest.mark.parametrize("backend", ["flow", pytest.param("packet", marks=requires_engine)])
def test_net_writes_every_link_to_parquet(tmp_path, capsys, backend):
    out = tmp_path / "links.parquet"
    assert main(["net", "-t", "h100-hgx-2node", "-c", "all_to_all", "-s", "256KiB", "-b", backend,
                 "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "completion time" in text and "rail" in text
    table = pq.read_table(out)
    assert table.num_rows == 160  # 80 full-duplex links
    meta = table.schema.metadata
    assert meta[b"backend"].decode() == backend
    rows = table.to_pylist()
    hottest = max(rows, key=lambda r: r["busy_s"])
    assert hottest["tier"] in ("rail", "pcie")
    assert all(len(r["utilization_series"]) >= 1 for r in rows)


@pytest.mark.parametrize("argv,message", [
    (["net", "-t", "no-such-topology"], "no such file or topology preset"),
    (["net", "-t", "h100-hgx-2node", "-s", "lots"], "--size: expected a size"),
    (["net", "-t", "h100-hgx-2node", "--gpus", "0-99"], "rank 16 does not exist"),
])
def test_bad_arguments_give_clear_errors(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().out


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "cosim.cli.main", "topology", "show", "h100-hgx-node"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "nvswitch" in proc.stdout


def test_step_prints_breakdown_memory_and_writes_traces(tmp_path, capsys):
    pytest.importorskip("aiconfigurator_core")
    argv = ["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--tp", "8", "--dp-attention",
            "--batch", "16", "--context", "1024", "--trace-out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step time" in out and "comm: dispatch" in out and "compute: moe_experts" in out
    assert "memory per GPU" in out and "141.0 GiB HBM" in out and "does not fit" not in out
    assert (tmp_path / "step.pb").exists() and len(list(tmp_path.glob("*.et"))) == 8
    assert "breaks" not in out and check_chakra(tmp_path) == []  # the default export runs in ASTRA-sim
    # DeepSeek-V3 on one 80 GB H100 node with TP8 does not hold its weights and a 64 x 4k KV cache.
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h100-hgx-node", "--system", "h100_sxm",
                 "--tp", "8", "--batch", "64", "--context", "4096"]) == 0
    assert "does not fit in GPU memory" in capsys.readouterr().out


def test_trace_check_verdicts_and_exit_codes(tmp_path, capsys):
    """``cosim trace check DIR``: 0 and OK on a runnable export, 1 and the broken rule on an
    uneven all-to-all-v written as one collective, 2 and the path on a missing folder."""
    from test_trace_io import small_trace

    from cosim.trace.chakra import export_chakra

    export_chakra(small_trace(), tmp_path / "good")
    assert main(["trace", "check", str(tmp_path / "good")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "2 ranks" in out and "single-rank-group" in out and "FAIL" not in out
    export_chakra(small_trace(), tmp_path / "bad", prefix="toy", alltoallv="collective")
    assert main(["trace", "check", str(tmp_path / "bad"), "--prefix", "toy", "--max", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "[collective]" in out and "toy.1.et node 0" in out
    assert main(["trace", "check", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().out
