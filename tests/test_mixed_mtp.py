"""Mixed (chunked-prefill) steps and speculative decoding (MTP) in the colocated layout."""

import dataclasses

import pytest

from cosim.engine.step import simulate_step
from cosim.errors import ConfigError
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.ops import AttentionOp, ComputeOp, MoeOp
from cosim.topology import load_topology
from cosim.trace.builder import PrefillChunk, StepSpec, build_step_trace, layer_op_lists
from cosim.trace.model import ComputeNode


@pytest.fixture(scope="module")
def dsv3():
    return load_model("deepseek-ai/DeepSeek-V3")


@pytest.fixture(scope="module")
def kernels():
    return KernelTables.load("h200_sxm", framework="trtllm")


def spec(model, batch=16, chunks=(), mtp=0):
    return StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model),
                    "generation", batch, prefix_tokens=2048, prefill_chunks=tuple(chunks), mtp_tokens=mtp)


def ops_of(trace, rank=0, layer=5) -> list[ComputeOp]:
    return [n.op for n in trace.ranks[rank].nodes if isinstance(n, ComputeNode) and n.layer == layer]


def test_mixed_step_costs_attention_per_class_and_moe_on_all_tokens(dsv3, kernels):
    chunks = (PrefillChunk(0, 512), PrefillChunk(1024, 256))
    trace = build_step_trace(spec(dsv3, 16, chunks), kernels)
    ops = ops_of(trace)
    att = [op for op in ops if isinstance(op, AttentionOp)]
    assert [(a.phase, a.batch, a.new_tokens, a.prefix_tokens) for a in att] == [
        ("generation", 16, 1, 2048), ("context", 1, 512, 0), ("context", 1, 256, 1024)]
    s = spec(dsv3, 16, chunks)
    moe = next(op for op in layer_op_lists(s, 5, s.parallel, 16, 1)[1] if isinstance(op, MoeOp))
    assert moe.num_tokens == (16 + 512 + 256) * 8  # before the per-rank load split
    q_a = next(op for op in ops if op.name == "q_a_proj")
    assert q_a.m == 16 + 512 + 256  # per-token projections once over every token
    dispatch = next(c for c in trace.collectives if c.name == "L5.mb0.dispatch")
    plain = next(c for c in build_step_trace(spec(dsv3, 16 + 768), kernels).collectives if c.name == "L5.mb0.dispatch")
    assert dispatch.bytes_matrix.sum() == plain.bytes_matrix.sum()  # same tokens dispatched


def test_mixed_step_time_lies_between_its_parts(dsv3, kernels):
    topo = load_topology("h200-hgx-node")
    decode = simulate_step(spec(dsv3, 16), kernels, topo).step_time_s
    mixed = simulate_step(spec(dsv3, 16, (PrefillChunk(0, 1024),)), kernels, topo)
    prefill = simulate_step(StepSpec(dsv3, Parallelism(tp=8, ep=8, dp_attention=True),
                                     Precision.from_checkpoint(dsv3), "context", 1, new_tokens=1024),
                            kernels, topo).step_time_s
    assert decode < mixed.step_time_s < decode + prefill
    assert mixed.tokens_per_step == (16 + 1) * 8
    chunk_only = simulate_step(spec(dsv3, 0, (PrefillChunk(0, 1024),)), kernels, topo)
    assert chunk_only.step_time_s < mixed.step_time_s


def test_mtp_verifies_drafts_and_runs_the_mtp_layer(dsv3, kernels):
    assert dsv3.num_mtp_layers == 1
    base = build_step_trace(spec(dsv3, 16), kernels)
    mtp = build_step_trace(spec(dsv3, 16, mtp=2), kernels)
    s = spec(dsv3, 16, mtp=2)
    moe = next(op for op in layer_op_lists(s, 5, s.parallel, 16 * 3, 1)[1] if isinstance(op, MoeOp))
    assert moe.num_tokens == 16 * 3 * 8
    main = sum(n.op.num_tokens for n in mtp.ranks[0].nodes if isinstance(n, ComputeNode) and n.layer == 5
               and isinstance(n.op, MoeOp))
    assert main > sum(n.op.num_tokens for n in base.ranks[0].nodes if isinstance(n, ComputeNode) and n.layer == 5
                      and isinstance(n.op, MoeOp))
    drafts = {n.layer for n in mtp.ranks[0].nodes if n.layer >= dsv3.num_layers}
    assert drafts == {dsv3.num_layers, dsv3.num_layers + 1}
    draft = [n for n in mtp.ranks[0].nodes if n.layer == dsv3.num_layers]
    assert any(isinstance(n, ComputeNode) and n.op.name == "mtp_eh_proj" for n in draft)
    assert any(isinstance(n, ComputeNode) and isinstance(n.op, MoeOp) for n in draft)
    assert len(mtp.collectives) > len(base.collectives)
    topo = load_topology("h200-hgx-node")
    t0 = simulate_step(spec(dsv3, 16), kernels, topo).step_time_s
    t2 = simulate_step(spec(dsv3, 16, mtp=2), kernels, topo).step_time_s
    assert t0 < t2 < 3 * t0


def test_mtp_and_mixed_errors(dsv3):
    qwen = load_model("Qwen/Qwen3-30B-A3B")
    with pytest.raises(ConfigError, match="no MTP layers"):
        spec(qwen, mtp=1)
    with pytest.raises(ConfigError, match="phase 'generation'"):
        dataclasses.replace(spec(dsv3, 4, (PrefillChunk(0, 8),)), phase="context")
    with pytest.raises(ConfigError, match="routing_skew"):
        dataclasses.replace(spec(dsv3), routing_skew=-1.0)
    with pytest.raises(ConfigError, match="integer >= 1"):
        spec(dsv3, 0)
