"""The Chakra export checker (``cosim trace check``): each rule caught on a deliberately broken
export written with the module's own writer, and the default export of real steps (DP-attention
MoE decode with uneven routing, AFD, TP dense with all-gather, a single-rank group) passing."""

from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np
import pytest

from cosim.errors import CosimError
from cosim.kernels.tables import Duration
from cosim.models import Parallelism, Precision, load_model
from cosim.ops import GemmOp
from cosim.trace.builder import AfdSpec, PrefillChunk, StepSpec, build_step_trace
from cosim.trace.chakra import export_chakra, read_chakra, write_chakra
from cosim.trace.chakra_check import RULES, Rule, Violation, check_chakra, find_exports, inspect_chakra
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode
from cosim.trace.proto import et_def_pb2 as et
from cosim.trace.serialize import TraceFormatError

META = et.GlobalMetadata(version="0.0.4")


def _attr(name, **value):
    return et.AttributeProto(name=name, **value)


def comp(i, deps=(), micros=3, num_ops=10, tensor=100):
    n = et.Node(id=i, name=f"k{i}", type=et.COMP_NODE, duration_micros=micros, data_deps=list(deps))
    if num_ops is not None:
        n.attr.append(_attr("num_ops", int64_val=num_ops))
    if tensor is not None:
        n.attr.append(_attr("tensor_size", uint64_val=tensor))
    return n


def coll(i, size, deps=(), pg="1", ctype=et.ALL_TO_ALL):
    n = et.Node(id=i, name=f"c{i}", type=et.COMM_COLL_NODE, data_deps=list(deps))
    n.attr.extend([_attr("comm_type", int64_val=ctype), _attr("comm_size", int64_val=size)])
    if pg is not None:
        n.attr.append(_attr("pg_name", string_val=pg))
    return n


def p2p(i, kind, src, dst, tag, size, deps=()):
    n = et.Node(id=i, name=f"p{i}", type=kind, data_deps=list(deps))
    n.attr.extend([_attr("comm_src", int32_val=src), _attr("comm_dst", int32_val=dst),
                   _attr("comm_tag", int32_val=tag), _attr("comm_size", int64_val=size)])
    return n


def base():
    """Two ranks: compute -> ALL_TO_ALL on group 1 -> a send 0->1 and its receive."""
    r0 = [comp(0), coll(1, 4096, [0]), p2p(2, et.COMM_SEND_NODE, 0, 1, 5, 100, [1])]
    r1 = [comp(0), coll(1, 4096, [0]), p2p(2, et.COMM_RECV_NODE, 0, 1, 5, 100, [1])]
    return [r0, r1], {"1": [0, 1]}


def write_export(d, ranks, groups, prefix="bad"):
    d.mkdir(parents=True, exist_ok=True)
    for r, nodes in ranks.items() if isinstance(ranks, dict) else enumerate(ranks):
        write_chakra(d / f"{prefix}.{r}.et", META, nodes)
    if groups is not None:
        (d / f"{prefix}.comm_groups.json").write_text(json.dumps(groups))
    return d


def _set(node, name, **value):
    for a in node.attr:
        if a.name == name:
            node.attr.remove(a)
            break
    if value:
        node.attr.append(_attr(name, **value))


def test_base_export_passes(tmp_path):
    ranks, groups = base()
    assert check_chakra(write_export(tmp_path, ranks, groups)) == []
    (check,) = inspect_chakra(tmp_path)
    assert check.ok and check.num_ranks == 2 and check.prefix == "bad" and check.num_nodes == 6
    assert check.node_types == {"COMP_NODE": 2, "COMM_COLL_NODE": 2, "COMM_SEND_NODE": 1, "COMM_RECV_NODE": 1}


def _coll_size(ranks, groups):
    _set(ranks[1][1], "comm_size", int64_val=2048)


def _coll_type(ranks, groups):
    _set(ranks[1][1], "comm_type", int64_val=et.ALL_REDUCE)


def _coll_count(ranks, groups):
    ranks[1].append(coll(3, 64, [2]))


def _coll_zero(ranks, groups):
    for r in ranks:
        _set(r[1], "comm_size", int64_val=0)


def _coll_no_type(ranks, groups):
    for r in ranks:
        _set(r[1], "comm_type")


def _p2p_size(ranks, groups):
    _set(ranks[1][2], "comm_size", int64_val=50)


def _p2p_tag(ranks, groups):
    _set(ranks[1][2], "comm_tag", int32_val=6)


def _p2p_missing_recv(ranks, groups):
    ranks[1].pop()


def _p2p_missing_send(ranks, groups):
    ranks[0].pop()


def _p2p_no_attr(ranks, groups):
    _set(ranks[0][2], "comm_tag")


def _p2p_self(ranks, groups):
    ranks[0].append(p2p(3, et.COMM_SEND_NODE, 0, 0, 9, 10))


def _dangling_data(ranks, groups):
    ranks[0][2].data_deps.append(9)


def _dangling_ctrl(ranks, groups):
    ranks[1][0].ctrl_deps.append(7)


def _cycle(ranks, groups):
    ranks[0][0].ctrl_deps.append(2)


def _duplicate_id(ranks, groups):
    ranks[0].append(comp(1, [0]))


def _invalid_type(ranks, groups):
    ranks[0].append(et.Node(id=3, name="x", type=et.INVALID_NODE))


def _single_rank_group(ranks, groups):
    groups["2"] = [0]
    ranks[0].append(coll(3, 64, [2], pg="2", ctype=et.ALL_GATHER))


def _world_of_one(ranks, groups):
    del ranks[1]
    ranks[0].pop()
    groups["1"] = [0]


def _unknown_group(ranks, groups):
    for r in ranks:
        _set(r[1], "pg_name", string_val="7")


def _not_a_member(ranks, groups):
    groups["2"] = [0, 5]
    ranks[1].append(coll(3, 64, [2], pg="2"))


def _no_groups_file(ranks, groups):
    groups.clear()


def _num_ops_zero(ranks, groups):
    _set(ranks[1][0], "num_ops", int64_val=0)


def _num_ops_missing(ranks, groups):
    _set(ranks[1][0], "num_ops")


def _zero_duration(ranks, groups):
    ranks[0][0].duration_micros = 0


def _missing_rank(ranks, groups):
    ranks.append([comp(0)])
    ranks[1] = None  # no file for rank 1


BROKEN = [
    (_coll_size, Rule.COLLECTIVE, "bad.1.et", 1, "ALL_TO_ALL of 2048 B on rank 1, ALL_TO_ALL of 4096 B on rank 0"),
    (_coll_type, Rule.COLLECTIVE, "bad.1.et", 1, "ALL_REDUCE of 4096 B on rank 1"),
    (_coll_count, Rule.COLLECTIVE, "bad.1.et", 3, "rank 1 issues 2 collectives, rank 0 1"),
    (_coll_zero, Rule.COLLECTIVE, "bad.0.et", 1, "ALL_TO_ALL of 0 B"),
    (_coll_no_type, Rule.COLLECTIVE, "bad.0.et", 1, "no comm_type"),
    (_p2p_size, Rule.P2P, "bad.0.et", 2, "send 0->1 tag 5 of 100 B has no matching receive on rank 1 (rank 1 "
                                         "receives [50] B with this tag)"),
    (_p2p_tag, Rule.P2P, "bad.1.et", 2, "receive 0->1 tag 6 of 100 B has no matching send on rank 0"),
    (_p2p_missing_recv, Rule.P2P, "bad.0.et", 2, "no matching receive"),
    (_p2p_missing_send, Rule.P2P, "bad.1.et", 2, "no matching send"),
    (_p2p_no_attr, Rule.P2P, "bad.0.et", 2, "has no comm_tag"),
    (_p2p_self, Rule.P2P, "bad.0.et", 3, "peer rank 0"),
    (_dangling_data, Rule.DEPENDENCY, "bad.0.et", 2, "depends on id(s) [9] not in the file"),
    (_dangling_ctrl, Rule.DEPENDENCY, "bad.1.et", 0, "[7]"),
    (_cycle, Rule.CYCLE, "bad.0.et", 0, "3 node(s) on or behind a dependency cycle"),
    (_duplicate_id, Rule.NODE_IDS, "bad.0.et", 1, "duplicate node id"),
    (_invalid_type, Rule.NODE_IDS, "bad.0.et", 3, "invalid node type 0"),
    (_single_rank_group, Rule.SINGLE_RANK_GROUP, "bad.0.et", 3, "group '2' of one rank [0]"),
    (_world_of_one, Rule.SINGLE_RANK_GROUP, "bad.0.et", 1, "group '1' of one rank"),
    (_world_of_one, Rule.SINGLE_RANK_GROUP, "bad.comm_groups.json", None, "group '1' has one rank [0]"),
    (_unknown_group, Rule.GROUP, "bad.0.et", 1, "pg_name '7' not in bad.comm_groups.json"),
    (_not_a_member, Rule.GROUP, "bad.1.et", 3, "rank 1 is not in group '2'"),
    (_no_groups_file, Rule.GROUP, "bad.0.et", 1, "there is no bad.comm_groups.json"),
    (_num_ops_zero, Rule.NUM_OPS, "bad.1.et", 0, "num_ops 0 with tensor_size 100"),
    (_num_ops_missing, Rule.NUM_OPS, "bad.1.et", 0, "num_ops missing"),
    (_zero_duration, Rule.ZERO_DURATION, "bad.0.et", 0, "duration_micros 0"),
    (_missing_rank, Rule.FILES, "bad.*.et", None, "ranks 0..2 expected, no file for rank(s) [1]"),
]


@pytest.mark.parametrize("breaks, rule, file, node_id, message", BROKEN,
                         ids=[f"{b[0].__name__[1:]}-{b[2]}" for b in BROKEN])
def test_checker_catches_each_violation(tmp_path, breaks, rule, file, node_id, message):
    ranks, groups = base()
    breaks(ranks, groups)
    files = {r: nodes for r, nodes in enumerate(ranks) if nodes is not None}
    write_export(tmp_path, files, groups if groups else None)
    found = check_chakra(tmp_path)
    assert found and all(isinstance(v, Violation) for v in found)
    expected = {rule}
    if breaks is _missing_rank:
        expected |= {Rule.P2P}  # rank 0's send has no receiver any more
    assert {v.rule for v in found} == expected, found
    hit = [v for v in found if v.rule == rule and v.file.endswith(file) and v.node_id == node_id]
    assert any(message in v.message for v in hit), found


def test_every_rule_is_described_and_tested():
    assert set(RULES) == set(Rule) == {b[1] for b in BROKEN}
    v = Violation(Rule.P2P, "x/bad.0.et", 2, "unmatched")
    assert str(v) == "[p2p] x/bad.0.et node 2: unmatched"
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.node_id = 3


def test_unreadable_input_gives_clear_errors(tmp_path):
    with pytest.raises(TraceFormatError, match="no-such-dir: no such directory") as err:
        check_chakra(tmp_path / "no-such-dir")
    assert isinstance(err.value, CosimError)
    with pytest.raises(TraceFormatError, match=r"no Chakra files \(<prefix>.<rank>.et\)"):
        check_chakra(tmp_path)
    ranks, groups = base()
    write_export(tmp_path / "et", ranks, groups)
    with pytest.raises(TraceFormatError, match=r"no Chakra files \(other.<rank>.et\)"):
        check_chakra(tmp_path / "et", "other")
    with pytest.raises(TraceFormatError, match="not a directory"):
        check_chakra(tmp_path / "et" / "bad.0.et")
    (tmp_path / "et" / "bad.1.et").write_bytes(b"\x05abc")
    with pytest.raises(TraceFormatError, match="bad.1.et: truncated message"):
        check_chakra(tmp_path / "et")
    write_export(tmp_path / "json", ranks, groups)
    (tmp_path / "json" / "bad.comm_groups.json").write_text("{1: ")
    with pytest.raises(TraceFormatError, match="bad.comm_groups.json: not a JSON comm-groups file"):
        check_chakra(tmp_path / "json")
    (tmp_path / "json" / "bad.comm_groups.json").write_text('{"1": "0,1"}')
    with pytest.raises(TraceFormatError, match="expected a JSON object"):
        check_chakra(tmp_path / "json")


def test_exports_of_several_prefixes_are_checked_separately(tmp_path):
    ranks, groups = base()
    write_export(tmp_path, ranks, groups, prefix="good")
    _coll_size(ranks, groups)
    write_export(tmp_path, ranks, groups, prefix="bad")
    assert sorted(find_exports(tmp_path)) == ["bad", "good"]
    checks = inspect_chakra(tmp_path)
    assert [(c.prefix, c.ok) for c in checks] == [("bad", False), ("good", True)]
    assert check_chakra(tmp_path, "good") == []


# --- real steps --------------------------------------------------------------------------------

class VariedKernels:
    """Deterministic op times from 0.2 to 12 us, many below 1 us: exercises the carried rounding."""

    def duration(self, op):
        h = zlib.crc32(repr(op).encode())
        return Duration((0.2 + (h % 1000) / 1000 * (0.8 if h % 3 else 12.0)) * 1e-6, "measured", "synthetic")


@pytest.fixture(scope="module")
def qwen():
    return load_model("Qwen/Qwen3-30B-A3B")


def _moe_dp_attention():
    model = load_model("deepseek-ai/DeepSeek-V3")
    return StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model),
                    "generation", batch_per_rank=16, prefix_tokens=1024, routing_skew=1.0)


def _afd(qwen, **afd):
    return StepSpec(qwen, Parallelism(tp=1), Precision(), "generation", 8, prefix_tokens=1024, layout="afd",
                    afd=AfdSpec(micro_batches=2, **afd))


def _tp_dense():
    return StepSpec(load_model("Qwen/Qwen3-8B"), Parallelism(tp=4), Precision(), "generation", 8,
                    prefix_tokens=1024)


def _single_rank_group_trace():
    """A TP1 x PP2 dense step whose ranks also all-gather their logits over a group of one (what
    a TP1 instance's logits gather is): ASTRA-sim would never finish those."""
    spec = StepSpec(load_model("Qwen/Qwen3-8B"), Parallelism(tp=1, pp=2), Precision(), "generation", 8,
                    prefix_tokens=1024)
    trace = build_step_trace(spec, VariedKernels())
    for rt in trace.ranks:
        cid = len(trace.collectives)
        trace.collectives.append(CollectiveSpec(cid, f"logits.r{rt.rank}.allgather", "all_gather", "nccl",
                                                (rt.rank,), np.array([[1 << 20]])))
        last = len(rt.nodes) - 1
        rt.nodes.append(CommNode(last + 1, f"logits.r{rt.rank}.allgather", cid, (last,)))
        rt.nodes.append(ComputeNode(last + 2, f"sample.r{rt.rank}", GemmOp("sample", 8, 1, 4096), 3e-6, "measured",
                                    (last + 1,)))
    return trace


STEPS = {
    "moe_dp_attention_ep8_skewed": lambda qwen: build_step_trace(_moe_dp_attention(), VariedKernels()),
    "afd_2a_4f": lambda qwen: build_step_trace(_afd(qwen, attention_gpus=2, ffn_gpus=4), VariedKernels()),
    "afd_tp2_attention_broadcast": lambda qwen: build_step_trace(
        _afd(qwen, attention_gpus=4, ffn_gpus=4, attention_tp=2, a2f="broadcast"), VariedKernels()),
    "afd_mixed_prefill_chunks": lambda qwen: build_step_trace(dataclasses.replace(
        _afd(qwen, attention_gpus=2, ffn_gpus=4), prefill_chunks=(PrefillChunk(0, 512), PrefillChunk(1024, 256))),
        VariedKernels()),
    "tp4_dense_allgather": lambda qwen: build_step_trace(_tp_dense(), VariedKernels()),
    "single_rank_group": lambda qwen: _single_rank_group_trace(),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_default_export_of_real_steps_passes(tmp_path, qwen, step):
    trace = STEPS[step](qwen)
    for mode in ("auto", "p2p"):
        export_chakra(trace, tmp_path / mode, alltoallv=mode)
        assert check_chakra(tmp_path / mode) == [], mode
    kinds = {c.kind for c in trace.collectives}
    nodes = [n for r in range(len(trace.ranks)) for n in read_chakra(tmp_path / "auto" / f"cosim.{r}.et")[1]]
    by_collective = {}
    for n in nodes:
        a = {x.name: getattr(x, x.WhichOneof("value")) for x in n.attr}
        if "cosim.collective_id" in a:
            by_collective.setdefault(a["cosim.collective_id"], []).append((n.type, a))
    for spec in trace.collectives:
        written = by_collective.get(spec.id, [])
        if len(spec.ranks) == 1:
            assert written == []  # dropped
        elif spec.kind == "all_gather":
            assert {a["comm_size"] for _, a in written} == {round(int(spec.bytes_matrix[0, 0]) / len(spec.ranks))}
        elif spec.kind in ("all_to_all_v", "bipartite"):
            assert {t for t, _ in written} <= {et.COMM_SEND_NODE, et.COMM_RECV_NODE}  # uneven here
    if "all_to_all_v" in kinds:
        # The deadlock: the uneven all-to-all-v as one ALL_TO_ALL gets per-rank sizes.
        export_chakra(trace, tmp_path / "collective", alltoallv="collective")
        assert {v.rule for v in check_chakra(tmp_path / "collective")} == {Rule.COLLECTIVE}
    if step == "single_rank_group":
        assert {1} <= {len(c.ranks) for c in trace.collectives}
        assert all(len(m) > 1 for m in json.loads((tmp_path / "auto" / "cosim.comm_groups.json").read_text()).values())
