"""Step engine: scheduling closed forms, memoization, overlap, congestion between collectives."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from cosim.engine.overheads import DEFAULT_OVERHEADS, CommOverheads, LibraryOverhead
from cosim.engine.schedule import schedule
from cosim.errors import ConfigError
from cosim.engine.step import CollectiveNetwork, simulate_step, simulate_trace
from cosim.ops import GemmOp
from cosim.topology import topology_from_dict
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode, RankTrace, StepTrace

from conftest import backend_param, star

ZERO = CommOverheads(*(LibraryOverhead(fixed_s=0.0) for _ in range(4)))
OP = GemmOp("g", 1, 1, 1)


@dataclass(frozen=True)
class _D:
    seconds: float
    source: str = "measured"
    detail: str = ""


class ConstantKernels:
    """Every op takes the same time: isolates the engine from the kernel tables."""

    def __init__(self, seconds: float = 10e-6):
        self.seconds = seconds

    def duration(self, op):
        return _D(self.seconds)


def _two_rank_trace(size_bytes: int, compute_s: float = 1e-3) -> StepTrace:
    coll = CollectiveSpec(0, "L0.mb0.dispatch", "all_to_all_v", "nccl", (0, 1),
                          np.array([[0, size_bytes], [size_bytes, 0]], dtype=np.int64))
    ranks = []
    for r in (0, 1):
        ranks.append(RankTrace(r, [
            ComputeNode(0, "a", OP, compute_s, "measured"),
            CommNode(1, "L0.mb0.dispatch", 0, deps=(0,)),
            ComputeNode(2, "b", OP, compute_s, "measured", deps=(1,)),
        ]))
    return StepTrace(ranks, [coll])


def test_schedule_closed_form_compute_comm_compute():
    trace = _two_rank_trace(1 << 20)
    sched = schedule(trace, lambda cid: 0.5e-3)
    assert sched.step_time_s == pytest.approx(2.5e-3)
    assert sched.collective_start_s[0] == pytest.approx(1e-3)


def test_collective_waits_for_the_slowest_participant():
    trace = _two_rank_trace(1 << 20)
    slow = trace.ranks[1].nodes[0]
    trace.ranks[1].nodes[0] = ComputeNode(0, "a", OP, 3e-3, "measured")
    sched = schedule(trace, lambda cid: 0.5e-3)
    assert sched.collective_start_s[0] == pytest.approx(3e-3) and slow.duration_s == 1e-3
    assert sched.step_time_s == pytest.approx(4.5e-3)


def test_simulate_trace_adds_network_time_and_overhead():
    topo = star(2)
    size = 1 << 20
    r0 = simulate_trace(_two_rank_trace(size), topo, "flow", overheads=ZERO)
    network = r0.collective_duration_s[0]
    assert network == pytest.approx((size + 256 * 2) * 8 / 400e9 + 4098 * 8 / 400e9 + 2e-6, rel=1e-3)
    assert r0.step_time_s == pytest.approx(2e-3 + network)
    fixed = CommOverheads(*(LibraryOverhead(fixed_s=20e-6) for _ in range(4)))
    r1 = simulate_trace(_two_rank_trace(size), topo, "flow", overheads=fixed)
    assert r1.step_time_s == pytest.approx(r0.step_time_s + 20e-6)
    # Exposed communication: nothing overlaps the collective here.
    assert r0.exposed_comm_by_collective_s["dispatch"] == pytest.approx(network)
    assert r0.overlap_fraction == pytest.approx(0.0, abs=1e-9)


def _bottleneck_topology():
    """GPUs 0,1 on sw0 and 2,3 on sw1, one 100 Gb/s link between the switches."""
    return topology_from_dict({
        "name": "dumbbell", "defaults": {"latency": "1us"}, "transport": {"header_bytes": 2},
        "nodes": [{"name": f"g{i}", "kind": "gpu"} for i in range(4)]
        + [{"name": "sw0", "kind": "switch"}, {"name": "sw1", "kind": "switch"}],
        "links": [{"a": "g0", "b": "sw0", "bandwidth": "400Gbps"}, {"a": "g1", "b": "sw0", "bandwidth": "400Gbps"},
                  {"a": "g2", "b": "sw1", "bandwidth": "400Gbps"}, {"a": "g3", "b": "sw1", "bandwidth": "400Gbps"},
                  {"a": "sw0", "b": "sw1", "bandwidth": "100Gbps"}],
    })


@backend_param()
def test_concurrent_collectives_of_disjoint_groups_share_the_bottleneck(backend):
    size = 4 << 20
    colls = [CollectiveSpec(i, f"L0.mb0.p2p{i}", "p2p", "p2p", (src, dst),
                            np.array([[0, size], [0, 0]], dtype=np.int64)) for i, (src, dst) in enumerate([(0, 2), (1, 3)])]
    ranks = [RankTrace(r, [CommNode(0, "x", 0 if r in (0, 2) else 1)]) for r in range(4)]
    result = simulate_trace(StepTrace(ranks, colls), _bottleneck_topology(), backend, overheads=ZERO)
    alone = (size + 1024 * 2) * 8 / 100e9
    # Alone each would take `alone`; together they share the 100 Gb/s link and take twice as long.
    assert result.step_time_s == pytest.approx(2 * alone, rel=0.02)
    assert result.congestion_iterations >= 1


def test_identical_moe_layers_cost_one_network_simulation_each_way():
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec

    pytest.importorskip("aiconfigurator_core")
    model = load_model("deepseek-ai/DeepSeek-V3")
    spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                    "generation", batch_per_rank=32, prefix_tokens=1024)
    result = simulate_step(spec, ConstantKernels(), star(8, bandwidth="3600Gbps"), "flow", overheads=ZERO)
    dispatches = [c for c in result.trace.collectives if c.name.endswith("dispatch")]
    assert len(dispatches) == 58
    assert result.network_simulations == 2  # one dispatch shape, one combine shape
    # Every rank runs the same number of compute nodes; the step is longer than pure compute.
    compute_nodes = sum(1 for n in result.trace.ranks[0].nodes if isinstance(n, ComputeNode))
    assert result.step_time_s > compute_nodes * 10e-6
    # Conservation: link bytes over the step = 58 x (dispatch + combine) wire bytes.
    assert result.link_tx_bytes.sum() > 0


def test_link_series_conserves_bytes_and_puts_them_where_the_collectives_ran():
    """``StepResult.link_series``: the bins sum to each link's step bytes, and a bin holds bytes
    only while some collective was scheduled (none during the compute-only head of the step)."""
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec

    model = load_model("Qwen/Qwen3-30B-A3B")
    spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                    "generation", batch_per_rank=16, prefix_tokens=1024)
    result = simulate_step(spec, ConstantKernels(), star(8, bandwidth="400Gbps"), "flow", overheads=ZERO)
    edges, series = result.link_series(200)
    assert series.shape == (len(result.link_tx_bytes), 200) and edges[-1] == pytest.approx(result.step_time_s)
    assert series.sum(axis=1) == pytest.approx(result.link_tx_bytes, rel=1e-9)
    sched = result.schedule
    centres = (edges[:-1] + edges[1:]) / 2
    busy = np.zeros(200, dtype=bool)
    for s_, f_ in zip(sched.collective_start_s, sched.collective_finish_s):
        busy |= (edges[1:] > s_) & (edges[:-1] < f_)
    assert series[:, ~busy].sum() == 0 and series[:, busy].sum() > 0
    assert centres[busy][0] > 0  # the first collective (dispatch of layer 0) waits for compute
    with pytest.raises(ConfigError, match="num_bins"):
        result.link_series(0)


def test_two_batch_overlap_hides_communication():
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec

    pytest.importorskip("aiconfigurator_core")
    model = load_model("deepseek-ai/DeepSeek-V3")
    results = {}
    for overlap in ("none", "tbo"):
        spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True),
                        Precision.from_checkpoint(model, dispatch="fp8"), "context", batch_per_rank=2,
                        new_tokens=2048, overlap=overlap)
        results[overlap] = simulate_step(spec, ConstantKernels(50e-6), star(8, bandwidth="3600Gbps"), "flow",
                                         overheads=ZERO)
    exposed = {k: sum(r.exposed_comm_by_collective_s.values()) for k, r in results.items()}
    assert exposed["tbo"] < 0.5 * exposed["none"]
    assert results["tbo"].overlap_fraction > results["none"].overlap_fraction


@pytest.mark.parametrize("phase, tokens, library", [("generation", 128, "deepep_ll"),
                                                    ("context", 1024, "deepep_normal")])
def test_step_engine_deepep_traffic_is_the_validated_model(phase, tokens, library):
    """One DeepEP model: the engine's MoE dispatch and combine on EP16 over two HGX H200 nodes take
    the network time of the communication validation's model for the same row and routing sample
    (DSv3 shape: hidden 7168, top-8, 256 experts; LL 128 tokens/rank, normal 1024)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("aiconfigurator_core")
    from cosim.models import Parallelism, Precision, load_model
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec
    from cosim.validation import comm as V

    model = load_model("deepseek-ai/DeepSeek-V3")
    assert (model.hidden_size, model.moe.top_k, model.moe.num_experts) == (7168, 8, 256)
    spec = StepSpec(model, Parallelism(tp=16, ep=16, dp_attention=True),
                    Precision.from_checkpoint(model, dispatch="fp8"), phase,
                    batch_per_rank=tokens if phase == "generation" else 1,
                    new_tokens=1 if phase == "generation" else tokens, prefix_tokens=1024)
    topo = load_topology("h200-hgx-2node")
    result = simulate_step(spec, ConstantKernels(), topo, "flow", overheads=ZERO)
    with_overheads = simulate_step(spec, ConstantKernels(), topo, "flow", overheads=DEFAULT_OVERHEADS)
    assert result.network_simulations == 2  # 58 identical MoE layers: one dispatch, one combine
    for op in ("dispatch", "combine"):
        coll = next(c for c in result.trace.collectives if c.name.endswith(op))
        assert coll.library == library
        engine_s = result.collective_duration_s[coll.id]  # zero overheads: the network time
        row = pd.DataFrame([dict(table=library, op=op, version="-", node_num=2, num_gpus=16, hidden=7168, topk=8,
                                 num_experts=256, num_tokens=tokens, selections=np.nan)])
        validated = V.simulate_rows(row, "flow", traffic="sampled")
        assert engine_s == pytest.approx(validated.network_s[0], rel=0.01)
        # ... and the validated overhead model (kernel rate on the bytes one GPU emits, forwarding included).
        predicted = DEFAULT_OVERHEADS.duration_s(library, validated.network_s[0], op=op,
                                                 gpu_bytes=validated.gpu_bytes[0],
                                                 remote_fraction=validated.remote_fraction[0])
        assert validated.remote_fraction[0] == pytest.approx(8 / 15)  # 8 of a rank's 15 peers are remote
        assert with_overheads.collective_duration_s[coll.id] == pytest.approx(predicted, rel=0.01)
        # Same bytes too: low-latency sends every selection (no dedup); normal mode sends one RDMA
        # copy per (token, remote node), 3.3x less across nodes than a per-rank all-to-all.
        fs = (V.deepep_ll_flows if library == "deepep_ll" else V.deepep_normal_flows)(row.iloc[0], traffic="sampled")
        assert validated.gpu_bytes[0] == pytest.approx(V.max_gpu_bytes(fs))
        if library == "deepep_ll":
            assert coll.total_bytes == pytest.approx(sum(fs.size_bytes))
            assert coll.qps_per_peer == 256 // 16
        else:
            assert coll.node_bytes_matrix.shape == ((16, 2) if op == "dispatch" else (2, 16))
            tags = np.array(fs.tags)
            assert coll.node_bytes_matrix.sum() == pytest.approx(np.array(fs.size_bytes)[tags == "rdma"].sum())


class TokenKernels:
    """Routed experts take 0.1 us per token of their op, everything else 10 us: makes the
    per-rank expert load visible in closed form."""

    def duration(self, op):
        from cosim.ops import MoeOp

        return _D(op.num_tokens * 1e-7 if isinstance(op, MoeOp) else 10e-6)


def test_per_rank_expert_load_follows_the_routing_sample_and_makes_stragglers():
    from cosim.models import Parallelism, Precision, load_model
    from cosim.ops import MoeOp
    from cosim.trace.builder import StepSpec
    from cosim.trace.moe_traffic import sampled_routing_counts

    pytest.importorskip("aiconfigurator_core")
    model = load_model("deepseek-ai/DeepSeek-V3")
    results = {}
    for load in ("per_rank", "table"):
        spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True),
                        Precision.from_checkpoint(model, dispatch="fp8"), "generation", batch_per_rank=64,
                        routing_skew=1.5, moe_load=load)
        results[load] = simulate_step(spec, TokenKernels(), star(8, bandwidth="3600Gbps"), "flow", overheads=ZERO)
    # The same routing sample the dispatch traffic comes from sizes each rank's experts.
    received = sampled_routing_counts(64, 256, 8, 8, node_of=[0] * 8, skew=1.5, seed=0).expert_tokens
    tokens = 64 * 8  # the table convention: tokens entering the layer on the EP group
    durations = []
    for r, rank in enumerate(results["per_rank"].trace.ranks):
        node = next(n for n in rank.nodes if isinstance(n, ComputeNode) and isinstance(n.op, MoeOp))
        assert node.op.distribution == "balanced"  # the imbalance is explicit now
        assert node.op.num_tokens == round(tokens * received[r] / received.mean())
        durations.append(node.duration_s)
    assert max(durations) / min(durations) > 1.5  # hot experts make hot ranks
    assert results["per_rank"].compute_per_rank_s("moe_experts") == pytest.approx(58 * np.array(durations))
    ratio, hot, layers = results["per_rank"].expert_imbalance()
    assert ratio == pytest.approx(max(durations) / np.mean(durations)) and hot == int(np.argmax(durations))
    assert layers == 58 and results["table"].expert_imbalance()[0] == pytest.approx(1.0)
    table = [n.duration_s for rank in results["table"].trace.ranks for n in rank.nodes
             if isinstance(n, ComputeNode) and isinstance(n.op, MoeOp)]
    assert table == pytest.approx([tokens * 1e-7] * 8 * 58)
    # Every MoE layer waits for its slowest rank before the combine: 58 x (max - mean) longer.
    extra = results["per_rank"].step_time_s - results["table"].step_time_s
    assert extra == pytest.approx(58 * (max(durations) - tokens * 1e-7), rel=0.02)


def test_tensor_parallel_all_reduce_uses_custom_kernels_inside_a_node_and_nccl_across():
    from cosim.models import Parallelism, Precision, load_model
    from cosim.network import FlowSet, simulate
    from cosim.network import collectives as C
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec

    pytest.importorskip("aiconfigurator_core")
    model = load_model("deepseek-ai/DeepSeek-V3")

    def run(topo, tp, library="auto", batch=16):
        spec = StepSpec(model, Parallelism(tp=tp, ep=tp), Precision.from_checkpoint(model), "generation",
                        batch_per_rank=batch, prefix_tokens=1024, allreduce_library=library)
        result = simulate_step(spec, ConstantKernels(), topo, "flow", overheads=DEFAULT_OVERHEADS)
        coll = next(c for c in result.trace.collectives if c.name.endswith("attn_allreduce"))
        return coll, result.collective_duration_s[coll.id]

    node = load_topology("h200-hgx-node")

    def alone(size, algorithm):
        fs = FlowSet()
        C.custom_all_reduce(fs, range(8), size, algorithm)
        return simulate(node, fs, "flow").completion_time_s

    custom, custom_s = run(node, 8)
    assert custom.library == "custom_allreduce"
    ring, ring_s = run(node, 8, "nccl")
    assert ring.library == "nccl"
    # 16 tokens x 7168 bf16 = 229 KB: one-shot (its smaller fixed cost wins), faster than NCCL's ring.
    size = int(custom.bytes_matrix[0, 0])
    assert size == 16 * 7168 * 2
    one = DEFAULT_OVERHEADS.overhead("custom_allreduce", "one_shot")
    assert custom_s == pytest.approx(one.duration_s(alone(size, "one_shot")), rel=1e-6)
    assert custom_s < ring_s
    # 512 tokens (7.3 MB): two-shot, which moves 2(n-1)/n of the buffer instead of (n-1) x.
    big, big_s = run(node, 8, batch=512)
    two = DEFAULT_OVERHEADS.overhead("custom_allreduce", "two_shot")
    assert big_s == pytest.approx(two.duration_s(alone(int(big.bytes_matrix[0, 0]), "two_shot")), rel=1e-6)
    across, _ = run(load_topology("h200-hgx-2node"), 16)
    assert across.library == "nccl"  # the custom kernels stay inside one NVLink domain
    with pytest.raises(ConfigError, match="allreduce_library"):
        StepSpec(model, Parallelism(tp=8), Precision.from_checkpoint(model), "generation", 1,
                 allreduce_library="mpi")


def test_nvlink_all_to_all_library_on_an_nvl72_rack():
    from cosim.models import Parallelism, Precision, load_model
    from cosim.network.nvlink_a2a import phase_bytes_per_token
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec
    from cosim.trace.moe_traffic import sampled_routing_counts

    pytest.importorskip("aiconfigurator_core")
    model = load_model("deepseek-ai/DeepSeek-V3")
    spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                    "generation", batch_per_rank=32, prefix_tokens=1024, moe_library="nvlink_a2a")
    result = simulate_step(spec, ConstantKernels(), load_topology("gb200-nvl72"), "flow")
    dispatch = next(c for c in result.trace.collectives if c.name.endswith("dispatch"))
    combine = next(c for c in result.trace.collectives if c.name.endswith("combine"))
    assert dispatch.library == combine.library == "nvlink_a2a" and dispatch.op == "dispatch"
    # Tokens deduplicated per destination rank: fp8 + 64 B of top-k metadata out, bf16 back.
    tokens = np.asarray(sampled_routing_counts(32, 256, 8, 8, node_of=[0] * 8, seed=0).tokens)
    expected = np.rint(tokens * (7168 + 64)).astype(np.int64)
    np.fill_diagonal(expected, 0)
    assert np.array_equal(dispatch.bytes_matrix, expected)
    assert combine.bytes_matrix.sum() == pytest.approx(tokens.sum() * phase_bytes_per_token("combine", "fp8", 7168, 8)
                                                       - np.trace(tokens) * 2 * 7168, rel=1e-6)
    # The validated constants: kernel rate on the bytes one GPU sends.
    o = DEFAULT_OVERHEADS.overhead("nvlink_a2a", "dispatch")
    alone = CollectiveNetwork(load_topology("gb200-nvl72"), "flow").run([dispatch], [0.0])
    assert alone.gpu_bytes[0] == dispatch.bytes_matrix.sum(axis=1).max()
    assert result.collective_duration_s[dispatch.id] == pytest.approx(
        o.duration_s(alone.network_s[0], alone.gpu_bytes[0]), rel=1e-6)
    # Across nodes the NVLink all-to-all does not exist.
    with pytest.raises(ConfigError, match="one NVLink domain"):
        simulate_step(dataclasses.replace(spec, parallel=Parallelism(tp=16, ep=16, dp_attention=True)),
                      ConstantKernels(), load_topology("h200-hgx-2node"), "flow")


def test_redundant_experts_remove_the_straggler_of_hot_experts():
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec

    pytest.importorskip("aiconfigurator_core")
    model = load_model("deepseek-ai/DeepSeek-V3")
    results = {}
    for redundant in (0, 32):
        spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                        "generation", batch_per_rank=64, routing_skew=1.5, redundant_experts=redundant)
        results[redundant] = simulate_step(spec, TokenKernels(), star(8, bandwidth="3600Gbps"), "flow", overheads=ZERO)
    before, after = results[0].expert_imbalance()[0], results[32].expert_imbalance()[0]
    assert before > 1.5 and after < 1.15
    assert results[32].step_time_s < results[0].step_time_s
    # Replicas hold weights: 32 more experts' worth on 8 ranks.
    extra = results[32].memory.weight_bytes - results[0].memory.weight_bytes
    assert extra > 0
    with pytest.raises(ConfigError, match="divisible"):
        simulate_step(dataclasses.replace(spec, redundant_experts=3), TokenKernels(), star(8), "flow")


def test_placement_on_other_gpus_moves_the_traffic_not_the_time():
    """A colocated EP8 decode step on GPUs 8-15 of two HGX nodes takes what it takes on 0-7 (the
    nodes are identical) and its bytes cross only node 1's links; spread over both nodes (GPUs
    0-3 and 8-11) the dispatch crosses the NICs."""
    pytest.importorskip("aiconfigurator_core")
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec

    model = load_model("deepseek-ai/DeepSeek-V3")
    topo = load_topology("h200-hgx-2node")
    kernels = KernelTables.load("h200_sxm")
    base = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model),
                    "generation", batch_per_rank=16, prefix_tokens=1024)
    first = simulate_step(base, kernels, topo, "flow")
    second = simulate_step(dataclasses.replace(base, gpus=tuple(range(8, 16))), kernels, topo, "flow")
    assert second.step_time_s == pytest.approx(first.step_time_s, rel=1e-9)
    used = {topo.describe_link(int(d)) for d in np.nonzero(second.link_tx_bytes)[0]}
    assert used and all("n1." in u for u in used)
    split = simulate_step(dataclasses.replace(base, gpus=(0, 1, 2, 3, 8, 9, 10, 11)), kernels, topo, "flow")
    assert any("nic" in topo.describe_link(int(d)) for d in np.nonzero(split.link_tx_bytes)[0])
    assert split.step_time_s > first.step_time_s
