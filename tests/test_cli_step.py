"""cosim step: AFD, placement, mixed steps, MTP and the JSON summary from the command line."""

import json

from cosim.cli.main import main
from cosim.trace.chakra_check import Rule, check_chakra


def test_step_afd_json(tmp_path, capsys):
    out = tmp_path / "afd.json"
    rc = main(["step", "-m", "Qwen/Qwen3-30B-A3B", "-t", "h200-hgx-2node", "--layout", "afd",
               "--attention-gpus", "4", "--ffn-gpus", "8", "--micro-batches", "2", "--batch", "16",
               "--context", "1024", "--gpus", "0-3,8-15", "--json", str(out),
               "--trace-out", str(tmp_path / "et"), "--chakra-alltoallv", "collective"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["groups"]) == {"attention", "ffn"}
    assert data["gpus"] == [0, 1, 2, 3] + list(range(8, 16))
    assert data["groups"]["attention"]["comm_by_collective_s"]["a2f"] > 0
    assert data["tokens_per_step"] == 4 * 16
    assert abs(data["tokens_per_s_per_gpu"] - 64 / data["step_time_s"] / 12) < 1e-6 * data["tokens_per_s_per_gpu"]
    text = capsys.readouterr().out
    assert "Per group" in text and "h200_sxm" in text  # the kernel system follows the topology's GPUs
    # A2F/F2A as one ALL_TO_ALL each (receivers 0 B): the export warns that ASTRA-sim would stall on it.
    assert "all-to-all-v: collective" in text and "breaks" in text and "cosim trace check" in text
    assert {v.rule for v in check_chakra(tmp_path / "et")} == {Rule.COLLECTIVE}


def test_step_mixed_and_mtp(capsys):
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--tp", "8", "--dp-attention",
                 "--batch", "8", "--context", "2048", "--prefill-chunks", "0+512,1024+256"]) == 0
    assert "2 prefill chunks" in capsys.readouterr().out
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--tp", "8", "--dp-attention",
                 "--batch", "8", "--mtp", "2"]) == 0
    assert "MTP 2 draft tokens" in capsys.readouterr().out


def test_step_errors_are_one_clean_line(capsys):
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--skew", "-1"]) == 2
    assert "routing_skew" in capsys.readouterr().out
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--prefill-chunks", "12"]) == 2
    assert "PREFIX+NEW" in capsys.readouterr().out
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--layout", "afd"]) == 2
    assert "--attention-gpus" in capsys.readouterr().out
    assert main(["step", "-m", "deepseek-ai/DeepSeek-V3", "-t", "h200-hgx-node", "--gpus", "0-3"]) == 2
    assert "needs 8 GPUs, 4 given" in capsys.readouterr().out
