"""The communication-library registry: one path from a collective call to flows."""

import numpy as np
import pytest

from cosim.errors import ConfigError
from cosim.network import FlowSet, simulate
from cosim.network.libraries import (
    LIBRARIES, MOE_LIBRARIES, BuildOptions, CommCall, add_call_flows, build_collective, rail_rings,
)
from cosim.topology import load_topology


def test_every_library_is_registered_with_its_operations():
    assert set(LIBRARIES) >= {"nccl", "custom_allreduce", "deepep_ll", "deepep_normal", "nvlink_a2a", "p2p",
                              "bipartite"}
    assert set(MOE_LIBRARIES) == {"deepep_ll", "deepep_normal", "nvlink_a2a"}
    assert LIBRARIES["deepep_ll"].cross_rail == "direct"
    assert all(lib.cross_rail == "topology" for name, lib in LIBRARIES.items() if name != "deepep_ll")


def test_unknown_library_op_and_algorithm_are_clear_errors():
    m = np.array([[1024]], dtype=np.int64)
    with pytest.raises(ConfigError, match="unknown communication library 'mpi'"):
        add_call_flows(FlowSet(), CommCall("mpi", "all_reduce", (0, 1), m))
    with pytest.raises(ConfigError, match="no operation 'dispatch'"):
        add_call_flows(FlowSet(), CommCall("nccl", "dispatch", (0, 1), m))
    with pytest.raises(ConfigError, match="no algorithm 'three_shot'"):
        add_call_flows(FlowSet(), CommCall("custom_allreduce", "all_reduce", (0, 1), m),
                       opts=BuildOptions(algorithm="three_shot"))


def test_rail_rings_enter_every_node_on_a_different_rail():
    rings = rail_rings(list(range(16)), 8)
    assert len(rings) == 8
    for c, ring in enumerate(rings):
        assert sorted(ring) == list(range(16))
        # the hop from node 0 to node 1 arrives on local GPU c of node 1
        cross = [(a, b) for a, b in zip(ring, ring[1:] + ring[:1]) if a // 8 != b // 8]
        assert len(cross) == 2 and {b % 8 for _, b in cross} == {c}
    assert rail_rings(list(range(8)), 8) == [list(range(8))]   # one node: one ring
    assert rail_rings([0, 1, 2, 8], 8) == [[0, 1, 2, 8]]       # uneven groups: one ring


def test_nccl_ring_across_nodes_uses_every_rail():
    """Ring all-reduce over 2 HGX nodes: 8 channels, one per rail, so each NIC carries 1/8 of the
    ring's 2(n-1)/n of the buffer; the time is that over 50 GB/s (closed form, 10 %)."""
    topo = load_topology("h100-hgx-2node")
    size = 256 << 20
    fs = FlowSet()
    coll = build_collective(fs, "all_reduce", range(16), size, gpus_per_node=8)
    res = simulate(topo, fs, "flow")
    nic_bytes = 2 * 15 / 16 * size / 8
    t = res.finish_s(coll.last)
    assert t == pytest.approx(nic_bytes / 50e9, rel=0.10)
    tx = res.links.tx_bytes
    rail_links = [d for d in range(topo.num_directed_links) if tx[d] > 0.9 * nic_bytes and "nic" in
                  topo.describe_link(d).lower() and "leaf" in topo.describe_link(d).lower()]
    assert len(rail_links) >= 16  # 8 rails x 2 nodes, upward direction at least
