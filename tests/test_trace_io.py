"""Trace I/O: cosim protobuf round trip and Chakra ET export, on a small hand-made step trace."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest

from cosim.ops import AttentionOp, GemmOp, MemoryOp, MoeOp
from cosim.trace.chakra import _encode_varint, export_chakra, read_chakra, write_chakra
from cosim.trace.chakra_check import Rule, check_chakra
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode, RankTrace, StepTrace
from cosim.trace.proto import cosim_trace_pb2
from cosim.trace.proto import et_def_pb2 as et
from cosim.trace.serialize import TraceFormatError, read_step_trace, to_proto, write_step_trace

GEMM = GemmOp("qkv_proj", m=64, n=3072, k=7168, dtype="fp8")
ATTN = AttentionOp("fmha", phase="generation", kind="mla", batch=64, new_tokens=1, prefix_tokens=4096,
                   num_heads=128, num_kv_heads=1, head_dim=192, v_head_dim=128, kv_dtype="fp8",
                   kv_lora_rank=512, rope_dim=64, sparse_topk=2048)
MOE = MoeOp("experts", num_tokens=128, hidden_size=7168, inter_size=2048, num_experts=256, top_k=8,
            ep_size=2, distribution="power_law_1.2", gated=True)
MEM = MemoryOp("rmsnorm", bytes=917504.5, flop_count=1.5e6)
A2A = np.array([[100, 300], [200, 50]], dtype=np.int64)


def small_trace() -> StepTrace:
    """2 ranks: compute -> all-to-all-v -> compute -> p2p from rank 0 to rank 1."""
    colls = [
        CollectiveSpec(0, "L0.mb0.dispatch", "all_to_all_v", "deepep_ll", (0, 1), A2A, layer=0, microbatch=0,
                       qps_per_peer=4, op="dispatch"),
        CollectiveSpec(1, "pp0.mb0.0->1", "p2p", "p2p", (0, 1), np.array([[0, 4096], [0, 0]], dtype=np.int64)),
    ]
    r0 = [
        ComputeNode(0, "L0.mb0.qkv_proj", GEMM, 1.234567891e-3, "measured", (), 0, 0, "gemm"),
        ComputeNode(1, "L0.mb0.fmha", ATTN, 3.0e-7, "interpolated", (0,), 0, 0, "attention"),
        CommNode(2, "L0.mb0.dispatch", 0, (1,), 0, 0),
        ComputeNode(3, "L0.mb0.experts", MOE, 2.5e-5, "roofline", (2,), 0, 0, "moe"),
        CommNode(4, "pp0.mb0.0->1", 1, (3,), -1, 0),
    ]
    r1 = [
        ComputeNode(0, "L0.mb0.rmsnorm", MEM, 0.0, "roofline", (), 0, 1, "memory"),
        CommNode(1, "L0.mb0.dispatch", 0, (0,), 0, 0),
        ComputeNode(2, "L0.mb0.qkv_proj", GEMM, 4.0e-6, "measured", (), 0, 1, "gemm"),
        CommNode(3, "pp0.mb0.0->1", 1, (1, 2), -1, 0),
    ]
    return StepTrace([RankTrace(0, r0), RankTrace(1, r1)], colls, {"model": "toy", "phase": "generation"})


def assert_traces_equal(a: StepTrace, b: StepTrace) -> None:
    assert a.metadata == b.metadata
    assert [r.rank for r in a.ranks] == [r.rank for r in b.ranks]
    for ra, rb in zip(a.ranks, b.ranks, strict=True):
        assert ra.nodes == rb.nodes
    assert len(a.collectives) == len(b.collectives)
    for ca, cb in zip(a.collectives, b.collectives, strict=True):
        for name in ("id", "name", "kind", "library", "ranks", "layer", "microbatch", "num_senders"):
            assert getattr(ca, name) == getattr(cb, name), name
        assert cb.bytes_matrix.dtype == np.int64
        np.testing.assert_array_equal(ca.bytes_matrix, cb.bytes_matrix)
        assert ca.qps_per_peer == cb.qps_per_peer
        if ca.node_bytes_matrix is None:
            assert cb.node_bytes_matrix is None
        else:
            assert cb.node_bytes_matrix.dtype == np.int64
            np.testing.assert_array_equal(ca.node_bytes_matrix, cb.node_bytes_matrix)
        assert ca.shape_key() == cb.shape_key()


def attrs(node) -> dict:
    """Chakra attributes of a node (or GlobalMetadata) as name -> python value."""
    out = {}
    for a in node.attr:
        v = getattr(a, a.WhichOneof("value"))
        out[a.name] = list(v.values) if hasattr(v, "values") else v
    return out


# --- cosim protobuf ----------------------------------------------------------------------------

def test_round_trip_is_exact(tmp_path):
    trace = small_trace()
    path = write_step_trace(trace, tmp_path / "step.pb")
    back = read_step_trace(path)
    assert_traces_equal(trace, back)
    assert back.ranks[0].nodes[0].duration_s == 1.234567891e-3
    assert isinstance(back.ranks[0].nodes[0].op, GemmOp) and isinstance(back.ranks[1].nodes[0].op, MemoryOp)
    assert back.collectives[0].ranks == (0, 1)


def test_deepep_fields_round_trip(tmp_path):
    """DeepEP normal mode's per-node matrix and low-latency mode's queue pairs survive a round trip;
    collectives without them read back as None / 0."""
    trace = small_trace()
    node = np.array([[0, 250, 75]], dtype=np.int64)  # [nodes x ranks]-shaped: dims are kept
    trace.collectives[0] = dataclasses.replace(trace.collectives[0], library="deepep_normal", name="L0.mb0.combine",
                                               node_bytes_matrix=node, qps_per_peer=0)
    back = read_step_trace(write_step_trace(trace, tmp_path / "step.pb"))
    assert_traces_equal(trace, back)
    assert back.collectives[0].node_bytes_matrix.shape == (1, 3)
    assert back.collectives[1].node_bytes_matrix is None and back.collectives[1].qps_per_peer == 0
    msg = to_proto(trace)
    assert list(msg.collectives[0].node_dims) == [1, 3] and list(msg.collectives[0].node_bytes_matrix) == [0, 250, 75]
    assert to_proto(small_trace()).collectives[0].qps_per_peer == 4
    msg.collectives[0].node_dims[1] = 2
    path = tmp_path / "bad_dims.pb"
    path.write_bytes(msg.SerializeToString())
    with pytest.raises(TraceFormatError, match="node_bytes_matrix"):
        read_step_trace(path)


def test_shape_key_covers_deepep_fields():
    base = small_trace().collectives[0]
    keys = {base.shape_key(), dataclasses.replace(base, qps_per_peer=8).shape_key(),
            dataclasses.replace(base, node_bytes_matrix=np.array([[0, 1], [1, 0]])).shape_key(),
            dataclasses.replace(base, op="combine").shape_key()}
    assert len(keys) == 4
    assert dataclasses.replace(base, id=5, name="L9.mb1.dispatch", layer=9).shape_key() == base.shape_key()


def test_durations_are_integer_nanoseconds(tmp_path):
    msg = to_proto(small_trace())
    compute = msg.ranks[0].nodes[0].compute
    assert compute.duration_ns == 1_234_568
    assert compute.WhichOneof("op") == "gemm"
    # A producer that writes only nanoseconds still reads back to the nanosecond.
    compute.ClearField("duration_s")
    path = tmp_path / "ns_only.pb"
    path.write_bytes(msg.SerializeToString())
    d = read_step_trace(path).ranks[0].nodes[0].duration_s
    assert round(d * 1e9) == 1_234_568 and abs(d - 1.234568e-3) < 1e-15


def test_bytes_matrix_is_packed_row_major():
    coll = to_proto(small_trace()).collectives[0]
    assert list(coll.dims) == [2, 2] and list(coll.bytes_matrix) == [100, 300, 200, 50]


def test_write_rejects_bad_duration(tmp_path):
    trace = small_trace()
    trace.ranks[0].nodes[0] = ComputeNode(0, "bad", GEMM, -1e-6, "measured")
    with pytest.raises(ValueError, match="non-negative"):
        write_step_trace(trace, tmp_path / "bad.pb")


@pytest.mark.parametrize("content", [b"", b"\xff" * 64, b"not a protobuf file at all\n"])
def test_read_corrupt_pb_raises_clear_error(tmp_path, content):
    path = tmp_path / "corrupt.pb"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match="not a cosim step trace"):
        read_step_trace(path)


def test_read_truncated_pb_raises_clear_error(tmp_path):
    data = write_step_trace(small_trace(), tmp_path / "step.pb").read_bytes()
    path = tmp_path / "truncated.pb"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFormatError):
        read_step_trace(path)


def test_read_inconsistent_pb_raises_clear_error(tmp_path):
    msg = to_proto(small_trace())
    msg.ranks[0].nodes[2].comm.collective_id = 7
    path = tmp_path / "dangling.pb"
    path.write_bytes(msg.SerializeToString())
    with pytest.raises(TraceFormatError, match="missing collective 7"):
        read_step_trace(path)


# --- Chakra ------------------------------------------------------------------------------------

def assert_astra_ready(out_dir, prefix=None) -> None:
    """The export in ``out_dir`` follows every rule of ``cosim trace check``."""
    assert check_chakra(out_dir, prefix) == []


def test_chakra_one_file_per_rank(tmp_path):
    paths = export_chakra(small_trace(), tmp_path / "et")
    assert [p.name for p in paths] == ["cosim.0.et", "cosim.1.et"]
    # Default (auto): the uneven all-to-all-v is written as sends/receives: no communicator group.
    assert json.loads((tmp_path / "et" / "cosim.comm_groups.json").read_text()) == {}
    meta, _ = read_chakra(paths[0])
    assert meta.version == "0.0.4"
    assert attrs(meta)["cosim.rank"] == 0 and attrs(meta)["cosim.meta.model"] == "toy"
    assert attrs(meta)["cosim.alltoallv"] == "auto"
    assert_astra_ready(tmp_path / "et")
    export_chakra(small_trace(), tmp_path / "coll", alltoallv="collective")
    assert json.loads((tmp_path / "coll" / "cosim.comm_groups.json").read_text()) == {"1": [0, 1]}


def test_chakra_node_types_sizes_and_deps(tmp_path):
    """Default export: exact per-peer sends/receives for the uneven all-to-all-v; kernels whose
    carried share rounds to 0 us are not written and their dependents wait on their parents."""
    trace = small_trace()
    p0, p1 = export_chakra(trace, tmp_path, prefix="toy")
    assert_astra_ready(tmp_path, "toy")
    _, n0 = read_chakra(p0)
    _, n1 = read_chakra(p1)
    # Rank 0: the 300 ns fmha after the gemm rounded up to 1235 us carries 0 us: not written.
    assert [n.type for n in n0] == [et.COMP_NODE, et.COMM_SEND_NODE, et.COMM_RECV_NODE, et.COMP_NODE,
                                    et.COMM_SEND_NODE]
    assert [attrs(n)["cosim.node_id"] for n in n0] == [0, 2, 2, 3, 4]
    assert [list(n.data_deps) for n in n0] == [[], [0], [0], [1, 2], [3]]  # dispatch waits on the fmha's parent
    # Stream order: the experts follow the gemm on the compute stream, the p2p send the dispatch on comm stream 0.
    assert [list(n.ctrl_deps) for n in n0] == [[], [], [], [0], [1, 2]]
    # Rank 1: the zero-length rmsnorm is not written; the dispatch then has no dependency.
    assert [n.type for n in n1] == [et.COMM_SEND_NODE, et.COMM_RECV_NODE, et.COMP_NODE, et.COMM_RECV_NODE]
    assert [list(n.data_deps) for n in n1] == [[], [], [], [0, 1, 2]]
    # The sends and receives of one collective run together; the p2p receive follows them on comm stream 0.
    assert [list(n.ctrl_deps) for n in n1] == [[], [], [], []] and list(n1[3].data_deps)[:2] == [0, 1]

    gemm = attrs(n0[0])
    assert n0[0].duration_micros == 1235 and gemm["cosim.duration_ns"] == 1_234_568
    assert gemm["num_ops"] == round(GEMM.flops()) and gemm["tensor_size"] == round(GEMM.bytes_moved())
    assert gemm["is_cpu_op"] is False
    # Remainder carried: 1234.568 + 0.3 + 25 us = 1259.868 us -> 1260 us in total on rank 0.
    assert n0[3].duration_micros == 25 and attrs(n0[3])["num_ops"] == round(MOE.flops())
    assert sum(n.duration_micros for n in n0 if n.type == et.COMP_NODE) == 1260
    assert n1[2].duration_micros == 4

    sends = [(a["comm_src"], a["comm_dst"], a["comm_size"], a["comm_tag"]) for a in map(attrs, n0[1:3])]
    assert sends == [(0, 1, 300, 0), (1, 0, 200, 0)]  # no self transfer, exact per-peer bytes
    send, recv = attrs(n0[4]), attrs(n1[3])
    for a in (send, recv):
        assert (a["comm_src"], a["comm_dst"], a["comm_size"], a["comm_tag"]) == (0, 1, 4096, 1)
    assert "pg_name" not in send


def test_chakra_alltoallv_as_one_collective(tmp_path):
    """``collective`` mode: one ALL_TO_ALL per rank with the rank's row sum (uneven: the checker
    flags it); a uniform all-to-all-v is one collective in the default mode too, with n x the
    per-peer bytes on every rank (ASTRA-sim sends comm_size / n to each peer)."""
    p0, p1 = export_chakra(small_trace(), tmp_path / "coll", alltoallv="collective")
    a2a0 = attrs(next(n for n in read_chakra(p0)[1] if n.type == et.COMM_COLL_NODE))
    a2a1 = attrs(next(n for n in read_chakra(p1)[1] if n.type == et.COMM_COLL_NODE))
    assert a2a0["comm_type"] == a2a1["comm_type"] == et.ALL_TO_ALL
    assert (a2a0["comm_size"], a2a1["comm_size"]) == (400, 250)
    assert a2a0["pg_name"] == a2a1["pg_name"] == "1"
    assert a2a0["cosim.peer_bytes"] == [100, 300] and a2a1["cosim.peer_ranks"] == [0, 1]
    assert [v.rule for v in check_chakra(tmp_path / "coll")] == [Rule.COLLECTIVE]

    trace = small_trace()
    uniform = np.array([[7, 300], [300, 0]], dtype=np.int64)  # the diagonal stays on the rank
    trace.collectives[0] = dataclasses.replace(trace.collectives[0], bytes_matrix=uniform)
    for mode in ("auto", "collective"):
        paths = export_chakra(trace, tmp_path / mode, alltoallv=mode)
        colls = [attrs(n) for p in paths for n in read_chakra(p)[1] if n.type == et.COMM_COLL_NODE]
        assert [(a["comm_type"], a["comm_size"], a["pg_name"]) for a in colls] == [(et.ALL_TO_ALL, 600, "1")] * 2
        assert_astra_ready(tmp_path / mode)


def test_chakra_ring_collective_comm_types_and_sizes(tmp_path):
    """ASTRA-sim's comm_size: all-gather each rank's input (cosim holds the gathered buffer),
    all-reduce and reduce-scatter the whole buffer."""
    trace = small_trace()
    for kind, size in (("all_reduce", 8192), ("all_gather", 4096), ("reduce_scatter", 8192)):
        trace.collectives[0] = CollectiveSpec(0, "ring", kind, "nccl", (1, 0), np.array([[8192]]))
        paths = export_chakra(trace, tmp_path / kind)
        assert_astra_ready(tmp_path / kind)
        for path in paths:
            a = attrs(next(n for n in read_chakra(path)[1] if n.type == et.COMM_COLL_NODE))
            assert a["comm_type"] == {"all_reduce": et.ALL_REDUCE, "all_gather": et.ALL_GATHER,
                                      "reduce_scatter": et.REDUCE_SCATTER}[kind]
            assert a["comm_size"] == size and a["cosim.buffer_bytes"] == 8192 and a["pg_name"] == "1"


def test_chakra_alltoallv_as_p2p(tmp_path):
    trace = small_trace()
    uniform = np.array([[0, 300], [300, 0]], dtype=np.int64)
    trace.collectives[0] = dataclasses.replace(trace.collectives[0], bytes_matrix=uniform)
    p0, p1 = export_chakra(trace, tmp_path, alltoallv="p2p")  # p2p even when uniform
    assert_astra_ready(tmp_path)
    assert json.loads((tmp_path / "cosim.comm_groups.json").read_text()) == {}
    _, n0 = read_chakra(p0)
    _, n1 = read_chakra(p1)
    assert [n.type for n in n0] == [et.COMP_NODE, et.COMM_SEND_NODE, et.COMM_RECV_NODE, et.COMP_NODE,
                                    et.COMM_SEND_NODE]
    # The experts wait for both halves of the expanded collective.
    assert list(n0[3].data_deps) == [1, 2] and attrs(n0[3])["cosim.node_id"] == 3
    recv = [attrs(n) for n in n1 if n.type == et.COMM_RECV_NODE and attrs(n)["comm_tag"] == 0]
    assert [(a["comm_src"], a["comm_size"]) for a in recv] == [(0, 300)]


def test_chakra_bipartite(tmp_path):
    trace = small_trace()
    trace.collectives[0] = CollectiveSpec(0, "a2f", "bipartite", "nccl", (0, 1), np.array([[700]]), num_senders=1)
    back = read_step_trace(write_step_trace(trace, tmp_path / "b.pb"))
    assert back.collectives[0].bytes_matrix.shape == (1, 1) and back.collectives[0].num_senders == 1
    p0, p1 = export_chakra(trace, tmp_path / "coll", alltoallv="collective")
    a0 = attrs(next(n for n in read_chakra(p0)[1] if n.type == et.COMM_COLL_NODE))
    a1 = attrs(next(n for n in read_chakra(p1)[1] if n.type == et.COMM_COLL_NODE))
    assert a0["comm_type"] == a1["comm_type"] == et.ALL_TO_ALL
    assert (a0["comm_size"], a1["comm_size"]) == (700, 0)  # receivers send nothing: ASTRA-sim stalls
    assert {v.rule for v in check_chakra(tmp_path / "coll")} == {Rule.COLLECTIVE}
    # Default and p2p: one send, one receive (a bipartite transfer is never one ALL_TO_ALL by default:
    # that would also move bytes from the receivers and between ranks of one side).
    for mode in ("auto", "p2p"):
        p0, p1 = export_chakra(trace, tmp_path / mode, alltoallv=mode)
        assert_astra_ready(tmp_path / mode)
        send = next(n for n in read_chakra(p0)[1] if attrs(n).get("cosim.collective_id") == 0)
        recv = next(n for n in read_chakra(p1)[1] if attrs(n).get("cosim.collective_id") == 0)
        assert (send.type, recv.type) == (et.COMM_SEND_NODE, et.COMM_RECV_NODE)
        assert attrs(send)["comm_size"] == attrs(recv)["comm_size"] == 700


def test_chakra_compute_durations_keep_each_ranks_sum(tmp_path):
    """Each rank's written microseconds add up to its exact total rounded once; every written
    kernel lasts at least 1 us and ends within half a microsecond of its exact end."""
    rng = np.random.default_rng(7)
    ranks = []
    for r in range(2):
        nodes, prev = [], ()
        for i in range(400):
            seconds = float(rng.choice([0.0, 1e-7, 4.99e-7, 5e-7, 1.5e-6, 2.4999e-6]) + rng.uniform(0, 3e-6))
            if i % 50 == 25:
                nodes.append(CommNode(i, f"ar{i}", i // 50, prev))
            else:
                nodes.append(ComputeNode(i, f"k{i}", MEM, seconds, "roofline", prev))
            prev = (i,)
        ranks.append(RankTrace(r, nodes))
    colls = [CollectiveSpec(k, f"ar{50 * k + 25}", "all_reduce", "nccl", (0, 1), np.array([[4096]]))
             for k in range(8)]
    trace = StepTrace(ranks, colls)
    export_chakra(trace, tmp_path)
    assert_astra_ready(tmp_path)
    for rt in trace.ranks:
        _, nodes = read_chakra(tmp_path / f"cosim.{rt.rank}.et")
        exact = [round(n.duration_s * 1e9) for n in rt.nodes if isinstance(n, ComputeNode)]
        comp = [n for n in nodes if n.type == et.COMP_NODE]
        assert sum(n.duration_micros for n in comp) == (sum(exact) + 500) // 1000
        assert min(n.duration_micros for n in comp) >= 1 and len(comp) < len(exact)  # some kernels carried 0 us
        end_of = {}
        total = 0
        for n in rt.nodes:
            if isinstance(n, ComputeNode):
                total += round(n.duration_s * 1e9)
                end_of[n.id] = total
        written = 0
        for n in comp:
            written += n.duration_micros
            assert abs(written * 1000 - end_of[attrs(n)["cosim.node_id"]]) <= 500


def test_chakra_memory_only_kernel_has_one_op(tmp_path):
    """num_ops = 0 hangs ASTRA-sim's roofline mode: a kernel without arithmetic gets 1."""
    trace = small_trace()
    copy = MemoryOp("kv_copy", bytes=65536.0)
    assert copy.flops() == 0
    trace.ranks[1].nodes[2] = dataclasses.replace(trace.ranks[1].nodes[2], op=copy)
    _, nodes = read_chakra(export_chakra(trace, tmp_path)[1])
    a = attrs(next(n for n in nodes if attrs(n)["cosim.node_id"] == 2))
    assert a["num_ops"] == 1 and a["tensor_size"] == 65536
    assert_astra_ready(tmp_path)


def test_chakra_drops_single_rank_collectives(tmp_path):
    """A collective on one rank never completes in ASTRA-sim: it is not written, its dependents
    wait on its parents, and its group is not in the comm-groups file."""
    trace = small_trace()
    gather = CollectiveSpec(2, "solo.allgather", "all_gather", "nccl", (1,), np.array([[8192]]))
    nodes = trace.ranks[1].nodes
    trace.ranks[1].nodes = nodes[:2] + [CommNode(2, "solo.allgather", 2, (1,)),
                                        dataclasses.replace(nodes[2], id=3, deps=(2,)),
                                        dataclasses.replace(nodes[3], id=4, deps=(1, 3))]
    trace.collectives.append(gather)
    for mode in ("auto", "collective", "p2p"):
        _, n1 = read_chakra(export_chakra(trace, tmp_path / mode, alltoallv=mode)[1])
        assert "solo.allgather" not in [n.name for n in n1]
        gemm = next(n for n in n1 if attrs(n)["cosim.node_id"] == 3)
        dispatch = [n.id for n in n1 if attrs(n).get("cosim.collective_id") == 0]
        assert list(gemm.data_deps) == dispatch  # the gather's parent
        assert [1] not in json.loads((tmp_path / mode / "cosim.comm_groups.json").read_text()).values()
        if mode != "collective":
            assert_astra_ready(tmp_path / mode)


def test_chakra_rejects_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="auto, collective, p2p"):
        export_chakra(small_trace(), tmp_path, alltoallv="uniform")


def test_chakra_gzip_and_varint(tmp_path):
    assert _encode_varint(0) == b"\x00" and _encode_varint(300) == b"\xac\x02"
    path = export_chakra(small_trace(), tmp_path / "et")[0]
    gz = tmp_path / "gz.0.et"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_chakra(gz)[1] == read_chakra(path)[1]


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"\x80\x80\x80", "truncated length prefix"),
    (b"\x05abc", "truncated message"),
    (b"\xff\xff\xff\xff\xff\xff", "varint32"),
])
def test_read_corrupt_chakra_raises_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.0.et"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match=match):
        read_chakra(path)


def test_read_truncated_chakra_raises_clear_error(tmp_path):
    data = export_chakra(small_trace(), tmp_path)[0].read_bytes()
    path = tmp_path / "cut.0.et"
    path.write_bytes(data[:-7])
    with pytest.raises(TraceFormatError, match="truncated"):
        read_chakra(path)


def test_read_chakra_rejects_dangling_dependency(tmp_path):
    node = et.Node(id=0, name="x", type=et.COMP_NODE, duration_micros=1, data_deps=[5])
    path = write_chakra(tmp_path / "dangling.0.et", et.GlobalMetadata(version="0.0.4"), [node])
    with pytest.raises(TraceFormatError, match="not in the file"):
        read_chakra(path)
    assert len(read_chakra(path, validate=False)[1]) == 1


def test_generated_modules_are_importable():
    assert cosim_trace_pb2.DESCRIPTOR.package == "cosim.trace"
    assert et.DESCRIPTOR.package == "ChakraProtoMsg"
