"""DeepEP traffic builders (cosim.network.deepep) and MoE routing counts (cosim.trace.moe_traffic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosim.engine.step import add_collective_flows
from cosim.errors import ConfigError
from cosim.network import FlowSet
from cosim.network import deepep as D
from cosim.topology import load_topology, topology_from_dict
from cosim.trace import moe_traffic as M
from cosim.trace.model import CollectiveSpec

from conftest import star


def test_gpus_per_node_from_topology_domains():
    assert D.topology_gpus_per_node(load_topology("h200-hgx-2node")) == 8
    assert D.topology_gpus_per_node(load_topology("gb200-nvl72-2rack")) == 72
    assert D.topology_gpus_per_node(star(4)) == 4  # one NVLink domain
    nodes = [{"name": f"g{i}", "kind": "gpu"} for i in range(3)] + [{"name": "sw", "kind": "switch"}]
    links = [{"a": f"g{i}", "b": "sw", "bandwidth": "400Gbps", "latency": "1us"} for i in range(3)]
    no_domains = topology_from_dict({"name": "t", "nodes": nodes, "links": links})
    assert D.topology_gpus_per_node(no_domains) == 3  # no domains: one node
    for i, d in enumerate((0, 0, 1)):
        nodes[i]["domain"] = d
    with pytest.raises(ConfigError, match="unequal"):
        D.topology_gpus_per_node(topology_from_dict({"name": "t", "nodes": nodes, "links": links}))


def test_per_token_bytes():
    assert D.ll_dispatch_bytes_per_selection(7168) == 7168 + 56 * 4 + 16
    assert D.ll_dispatch_bytes_per_selection(7168, "bfloat16") == 2 * 7168 + 16
    assert D.ll_combine_bytes_per_selection(7168) == D.normal_combine_bytes_per_token(7168) == 2 * 7168
    assert D.normal_dispatch_bytes_per_token(7168) == 7392
    assert D.ll_qps_per_peer(256, 16) == 16 and D.ll_qps_per_peer(8, 16) == 1
    assert [D.topk_nodes_limit(n) for n in (1, 2, 4, 8)] == [0, 2, 4, 4]


def test_ll_flows_split_inter_node_pairs_over_queue_pairs():
    ranks = list(range(8, 24))  # nodes 1 and 2 of a 4-node cluster
    m = np.full((16, 16), 1000, dtype=np.int64)
    np.fill_diagonal(m, 0)
    fs = FlowSet()
    start = fs.add(0, 1, 0)
    coll = D.deepep_ll_flows(fs, ranks, m, 4, 8, after=[start], tag="x")
    src, dst, size = np.array(fs.src)[1:], np.array(fs.dst)[1:], np.array(fs.size_bytes)[1:]
    keys = np.array(fs.path_keys)[1:]
    assert size.sum() == m.sum() and len(coll.flows) == len(fs) - 1 == 16 * 7 + 16 * 8 * 4
    cross = src // 8 != dst // 8
    assert (size[cross] == 250).all() and set(keys[cross]) == {0, 1, 2, 3}
    assert (keys[~cross] == 0).all() and (size[~cross] == 1000).all()
    assert all(fs.deps[f] == (start,) for f in coll.flows)


@pytest.mark.parametrize("op", ["dispatch", "combine"])
def test_normal_flows_one_rdma_copy_per_node_then_nvlink(op):
    """16 ranks on nodes 1 and 2 (not starting at rank 0): RDMA only between GPUs of the same
    local index, one stream per (rank, remote node), forwarding inside the destination node."""
    ranks = list(range(8, 24))
    rng = np.random.default_rng(1)
    tok = rng.integers(1, 50, (16, 16)).astype(float) * 1000
    np.fill_diagonal(tok, 0)
    node_tok = np.zeros((16, 2))
    for s in range(16):
        other = 1 - s // 8
        node_tok[s, other] = tok[s, other * 8:(other + 1) * 8].max() * 1.5  # dedup per node < per-rank sum
    m, nm = (tok, node_tok) if op == "dispatch" else (tok.T, node_tok.T)
    fs = FlowSet()
    D.deepep_normal_flows(fs, ranks, m, nm, 8, op, tag="c")
    tags, size = np.array(fs.tags), np.array(fs.size_bytes, dtype=float)
    src, dst = np.array(fs.src), np.array(fs.dst)
    rdma = tags == "c:rdma"
    assert size[rdma].sum() == pytest.approx(node_tok.sum())
    assert (src[rdma] % 8 == dst[rdma] % 8).all() and (src[rdma] // 8 != dst[rdma] // 8).all()
    assert set(src) | set(dst) <= set(ranks)
    assert (src[~rdma] // 8 == dst[~rdma] // 8).all()
    node = np.arange(16) // 8
    intra = node[:, None] == node[None, :]
    assert size[tags == "c:nvl_direct"].sum() == pytest.approx(tok[intra].sum())
    relay = "c:nvl_forward" if op == "dispatch" else "c:nvl_gather"
    assert size[tags == relay].sum() == pytest.approx(tok[~intra].sum() - sum(
        tok[s, (1 - s // 8) * 8 + s % 8] for s in range(16)))  # the relay's own share stays put
    if op == "dispatch":  # RDMA leaves the source; forwarding leaves the relay
        assert set(src[rdma]) == set(ranks)
    else:
        assert set(dst[rdma]) == set(ranks)


def test_normal_flows_within_one_node_are_a_plain_all_to_all():
    tok = np.full((8, 8), 500.0)
    fs = FlowSet()
    D.deepep_normal_flows(fs, range(8), tok, None, 8, "dispatch")
    assert len(fs) == 56 and sum(fs.size_bytes) == 56 * 500


def test_engine_checks_the_node_matrix_against_the_topology():
    m = np.full((16, 16), 100, dtype=np.int64)
    np.fill_diagonal(m, 0)
    spec = CollectiveSpec(0, "L0.mb0.dispatch", "all_to_all_v", "deepep_normal", tuple(range(16)), m, op="dispatch")
    with pytest.raises(ConfigError, match="node_bytes_matrix"):
        add_collective_flows(FlowSet(), spec, gpus_per_node=8)
    spec = CollectiveSpec(0, "L0.mb0.dispatch", "all_to_all_v", "deepep_normal", tuple(range(16)), m,
                          node_bytes_matrix=np.full((16, 2), 700), op="dispatch")
    with pytest.raises(ConfigError, match="built for 2 nodes"):
        add_collective_flows(FlowSet(), spec, gpus_per_node=4)
    assert add_collective_flows(FlowSet(), spec, gpus_per_node=16)  # one node: intranode all-to-all
    fs = FlowSet()
    add_collective_flows(fs, spec, gpus_per_node=8)
    assert "L0.mb0.dispatch:rdma" in fs.tags


# ---------------------------------------------------------------------------------- routing


def test_expected_and_sampled_routing_counts_agree():
    e = M.expected_routing_counts(1000, 256, 8, 16)
    assert e.selections.sum(axis=1) == pytest.approx(np.full(16, 8000.0))
    assert e.tokens[0, 1] == pytest.approx(M.expected_dispatch_tokens(1000, 256, 8, 16))
    assert e.node_tokens[0, 1] / 1000 == pytest.approx(1 - math.comb(128, 8) / math.comb(256, 8))
    s = M.sampled_routing_counts(1000, 256, 8, 16)
    assert s.selections.sum() == 16 * 8000 and (s.tokens <= s.selections).all()
    assert s.tokens.mean() == pytest.approx(e.tokens.mean(), rel=0.02)
    assert s.node_tokens.mean() == pytest.approx(e.node_tokens.mean(), rel=0.02)
    assert (s.node_tokens[:, :1] <= s.tokens[:, :8].sum(axis=1, keepdims=True)).all()
    assert M.sampled_routing_counts(1000, 256, 8, 16) is s  # cached: one sample per step
    with pytest.raises(ValueError):
        s.tokens[0, 0] = 1  # shared, read-only
    # Uneven nodes (group positions 0-3 on one node, 4-11 on another).
    u = M.expected_routing_counts(100, 96, 4, 12, node_of=[0] * 4 + [1] * 8)
    assert u.node_tokens[0, 0] < u.node_tokens[0, 1]
    # Skewed routing concentrates selections; the legacy per-rank helper is the same sample.
    k = M.sampled_routing_counts(512, 256, 8, 16, skew=1.2)
    assert k.expert_tokens.max() > 1.5 * k.expert_tokens.mean()
    tokens, experts = M.routed_token_counts(512, 256, 8, 16, skew=1.2)
    np.testing.assert_array_equal(tokens, k.tokens)
    np.testing.assert_array_equal(experts, k.expert_tokens)
    # Node-limited routing: at most topk_nodes nodes per token.
    n = M.sampled_routing_counts(256, 256, 8, 64, topk_nodes=2, node_of=tuple(np.arange(64) // 8))
    assert (n.node_tokens.sum(axis=1) <= 2 * 256).all()


def test_normal_flows_on_partial_nodes_stay_in_the_group():
    """Ranks 4..11 (half of two 8-GPU nodes): a relay with the source's local index does not exist
    on the other node, one of the group's GPUs there takes its stream."""
    ranks = list(range(4, 12))
    tok = np.full((8, 8), 1000.0)
    node_tok = np.array([[0.0, 3000.0]] * 4 + [[3000.0, 0.0]] * 4)
    fs = FlowSet()
    D.deepep_normal_flows(fs, ranks, tok, node_tok, 8, "dispatch")
    tags, size = np.array(fs.tags), np.array(fs.size_bytes)
    assert set(fs.src) | set(fs.dst) <= set(ranks)
    assert size[tags == "rdma"].sum() == 8 * 3000
    assert size[tags == "nvl_direct"].sum() == 8 * 3 * 1000


def test_eplb_placement_replicates_hot_experts_and_balances_ranks():
    from cosim.trace.moe_traffic import eplb_placement, expert_popularity, sampled_routing_counts

    p = expert_popularity(256, 1.2, seed=0)
    for redundant in (0, 32, 64):
        pl = eplb_placement(p, redundant, 32)
        assert pl.num_slots == 256 + redundant and min(pl.replicas) >= 1
        slots = np.bincount([r for row, k in zip(pl.replica_ranks, pl.replicas) for r in row[:k]], minlength=32)
        assert np.all(slots == (256 + redundant) // 32)  # the same number of slots on every rank
        for row, k in zip(pl.replica_ranks, pl.replicas):
            assert len(set(row[:k])) == k  # replicas of one expert on distinct ranks
        load = pl.rank_load(p)
        assert load.sum() == pytest.approx(1.0)
        if redundant == 0:
            unbalanced = load.max() / load.mean()
        else:  # the hottest expert alone holds ~10 % of all selections: replicas cut the peak
            assert load.max() / load.mean() < 0.5 * unbalanced
    # The hottest expert gets the most replicas.
    assert eplb_placement(p, 32, 32).replicas[int(np.argmax(p))] == max(eplb_placement(p, 32, 32).replicas)
    # Sampled routing through the replicas: selections are conserved, load follows the placement.
    c0 = sampled_routing_counts(512, 256, 8, 32, node_of=[0] * 32, skew=1.2)
    c1 = sampled_routing_counts(512, 256, 8, 32, node_of=[0] * 32, skew=1.2, redundant_experts=32)
    assert c0.selections.sum() == c1.selections.sum() == 512 * 8 * 32
    assert c1.expert_tokens.max() < 0.6 * c0.expert_tokens.max()
    with pytest.raises(ValueError, match="multiple of ep"):
        eplb_placement(p, 5, 32)
    with pytest.raises(ValueError, match="node-limited"):
        sampled_routing_counts(16, 256, 8, 16, topk_nodes=2, skew=1.2, redundant_experts=16)
