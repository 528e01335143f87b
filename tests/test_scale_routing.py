"""Compiled routes (cosim.topology._route_engine) against the Python routing rules, and the
3-tier fat-tree generator."""

from __future__ import annotations

import dataclasses
import gc
import re

import numpy as np
import pytest

from cosim.errors import ConfigError
from cosim.topology import Link, Node, Router, RoutingPolicy, Topology, list_presets, load_topology, topology_from_dict
from cosim.topology import routing as R

pytestmark = pytest.mark.skipif(not R.compiled_routes_available(), reason="compiled route engine not built")


def all_pairs(n: int):
    s = np.repeat(np.arange(n), n)
    d = np.tile(np.arange(n), n)
    return s, d


def assert_same_routes(topo: Topology, src, dst, keys) -> None:
    fast = Router(topo)
    ref = Router(topo, engine="python")
    assert fast.engine == "compiled" and ref.engine == "python"
    off, links = fast.routes(src, dst, keys)
    roff, rlinks = ref.routes(src, dst, keys)
    assert off.dtype == np.int64 and links.dtype == np.int32
    np.testing.assert_array_equal(off, roff)
    np.testing.assert_array_equal(links, rlinks)


@pytest.mark.parametrize("name", list_presets())
def test_every_pair_of_every_preset_routes_as_the_python_rules(name):
    topo = load_topology(name)
    s, d = all_pairs(topo.num_gpus)
    assert_same_routes(topo, s, d, np.zeros(len(s), dtype=np.int64))
    rng = np.random.default_rng(1)
    pick = rng.choice(len(s), size=min(len(s), 3000), replace=False)
    for key in (1, 7, 123457):
        assert_same_routes(topo, s[pick], d[pick], np.full(len(pick), key))


@pytest.mark.parametrize("name", ["h100-hgx-16node-2to1", "gb200-nvl72-4rack", "b200-hgx-16node"])
@pytest.mark.parametrize("policy", [RoutingPolicy("hash", "direct"), RoutingPolicy("first", "pxn"),
                                    RoutingPolicy("first", "direct")])
def test_routing_policies_route_as_the_python_rules(name, policy):
    topo = dataclasses.replace(load_topology(name), routing=policy)
    s, d = all_pairs(topo.num_gpus)
    keys = np.arange(len(s)) % 5 - 2  # negative keys are hashed by their decimal string too
    assert_same_routes(topo, s, d, keys)


GENERATED = {
    "star-96": {"kind": "star", "num_gpus": 96},
    "hgx-12node-3perleaf": {"kind": "hgx_cluster", "num_nodes": 12, "nodes_per_leaf": 3, "spines": 3,
                            "oversubscription": "3:2"},
    "fat-tree-hgx": {"kind": "fat_tree", "num_nodes": 20, "nodes_per_leaf": 2, "nodes_per_pod": 8,
                     "spines_per_pod": 4, "cores": 8},
    "fat-tree-bare-gpus": {"kind": "fat_tree", "num_nodes": 48, "gpus_per_node": 1, "nodes_per_leaf": 4,
                           "nodes_per_pod": 16, "spines_per_pod": 2, "cores": 4},
    "nvl-36x3": {"kind": "nvl72_cluster", "num_racks": 3, "gpus_per_rack": 36, "nodes_per_leaf": 1, "spines": 2},
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_multi_tier_fabrics_route_as_the_python_rules(name):
    topo = topology_from_dict({"name": name, "generator": GENERATED[name]})
    s, d = all_pairs(topo.num_gpus)
    assert_same_routes(topo, s, d, (s * 7 + d) % 3)


def test_single_routes_come_from_the_same_engine_and_are_cached():
    topo = load_topology("h100-hgx-16node-2to1")
    router = Router(topo)
    off, links = router.routes([0, 5, 9, 9], [77, 5, 100, 100], [0, 0, 0, 3])
    assert router.route(0, 77) == tuple(links[off[0]:off[1]].tolist())
    assert router.route(5, 5) == ()
    assert router.route(9, 100, 3) == tuple(links[off[3]:off[4]].tolist())
    assert router.route(0, 77) is router.route(0, 77)
    assert router.route(9, 100, 3) == Router(topo, engine="python").route(9, 100, 3)


def test_route_tables_are_built_once_per_topology_and_dropped_with_it():
    topo = topology_from_dict({"name": "t", "generator": {"kind": "hgx_cluster", "num_nodes": 4}})
    a, b = Router(topo), Router(topo)
    assert a._tables is b._tables
    key = id(topo)
    assert key in R._TABLES
    del a, b, topo
    gc.collect()
    assert key not in R._TABLES


def test_bad_ranks_and_unreachable_pairs_raise_config_errors():
    topo = load_topology("h100-hgx-2node")
    with pytest.raises(ConfigError, match="GPU rank 16 does not exist"):
        Router(topo).routes([0], [16])
    with pytest.raises(ConfigError, match="differ in length"):
        Router(topo).routes([0, 1], [2])
    # Two GPUs joined only through a third GPU: GPUs are endpoints, so there is no route
    # (built in code: the loader would refuse this topology).
    nodes = (Node("g0", "gpu"), Node("g1", "gpu"), Node("g2", "gpu"))
    links = (Link(0, 1, 1e9, 1e-6, 4096), Link(1, 2, 1e9, 1e-6, 4096))
    bad = Topology("bad", nodes, links)
    for engine in ("auto", "python"):
        with pytest.raises(ConfigError, match="no route from 'g0' to 'g2'"):
            Router(bad, engine=engine).routes([0], [2])
    with pytest.raises(ConfigError, match="engine"):
        Router(bad, engine="fast")


def test_ecmp_spreads_path_keys_over_the_spines():
    topo = topology_from_dict({"name": "t", "generator": {"kind": "hgx_cluster", "num_nodes": 4, "nodes_per_leaf": 1,
                                                          "spines": 4}})
    router = Router(topo)
    off, links = router.routes(np.zeros(64, dtype=np.int64), np.full(64, 8), np.arange(64))
    spines = {topo.nodes[topo.directed_endpoints(int(links[off[i] + 2]))[1]].name for i in range(64)}
    assert spines == {"spine0", "spine1", "spine2", "spine3"}


# ------------------------------------------------------------------------------ fat_tree generator

def fat_tree(**params):
    return topology_from_dict({"name": "ft", "generator": {"kind": "fat_tree", **params}})


def test_fat_tree_shape_and_non_blocking_bandwidth():
    topo = fat_tree(num_nodes=64, nodes_per_leaf=4, nodes_per_pod=16, spines_per_pod=8, cores=16,
                    nic_bandwidth="400Gbps")
    kinds = {k: sum(n.kind == k for n in topo.nodes) for k in ("gpu", "nic", "nvswitch", "switch")}
    pods, leaves, spines, cores = 4, 4 * 8 * 4, 4 * 8, 16
    assert kinds == {"gpu": 512, "nic": 512, "nvswitch": 64, "switch": leaves + spines + cores}
    tiers = {}
    for link in topo.links:
        tiers.setdefault(link.tier, []).append(link)
    assert len(tiers["spine"]) == leaves * 8 and len(tiers["core"]) == pods * 8 * 2
    # non-blocking: every leaf sends up what its NICs bring down, every spine what its leaves bring up
    name = {i: n.name for i, n in enumerate(topo.nodes)}
    up = {}
    for link in tiers["spine"] + tiers["core"]:
        up[name[link.a]] = up.get(name[link.a], 0.0) + link.bandwidth_bps
    assert up["p0.leaf3.2"] == pytest.approx(4 * 400e9)
    assert up["p2.spine5"] == pytest.approx(32 * 4 * 400e9 / 8)
    assert sum(l.bandwidth_bps for l in tiers["core"]) == pytest.approx(512 * 400e9)


def test_fat_tree_routes_cross_pods_on_their_rail_through_a_core():
    topo = fat_tree(num_nodes=64, nodes_per_pod=16)
    router = Router(topo)

    def hops(s, d):
        return [topo.nodes[topo.directed_endpoints(l)[1]].name for l in router.route(s, d)]

    same_rail = hops(0, 8 * 20)          # node 0 (pod 0) -> node 20 (pod 1), rail 0
    assert [re.search("nic|leaf|spine|core|gpu", h).group() for h in same_rail] == \
        ["nic", "leaf", "spine", "core", "spine", "leaf", "nic", "gpu"]
    assert same_rail[1].startswith("p0.leaf0.") and same_rail[5] == "p1.leaf0.1"
    cross_rail = hops(0, 8 * 20 + 3)     # PXN: NVLink to GPU 3 of node 0 first
    assert cross_rail[:3] == ["n0.nvswitch", "n0.gpu3", "n0.nic3"] and "core" in cross_rail[5]
    assert hops(0, 8 * 5) == ["n0.nic0", "p0.leaf0.0", hops(0, 8 * 5)[2], "p0.leaf0.1", "n5.nic0", "n5.gpu0"]


def test_fat_tree_small_cases():
    one_pod = fat_tree(num_nodes=8, nodes_per_pod=16)
    assert not any(l.tier == "core" for l in one_pod.links)
    bare = fat_tree(num_nodes=3, gpus_per_node=1, nodes_per_leaf=4, nodes_per_pod=4)
    assert bare.num_gpus == 3 and {l.tier for l in bare.links} == {"pcie", "rail"}  # one leaf: no spines
    over = fat_tree(num_nodes=32, nodes_per_pod=16, oversubscription="2:1", core_oversubscription=4)
    leaf_up = sum(l.bandwidth_bps for l in over.links if l.tier == "spine" and over.nodes[l.a].name == "p0.leaf0.0")
    assert leaf_up == pytest.approx(4 * 400e9 / 2)
    core = sum(l.bandwidth_bps for l in over.links if l.tier == "core")
    assert core == pytest.approx(256 * 400e9 / 2 / 4)


@pytest.mark.parametrize("params,field,message", [
    ({"nodes_per_pod": 10, "nodes_per_leaf": 4}, "nodes_per_pod", "multiple of nodes_per_leaf"),
    ({"num_nodes": 64, "cores": 12, "spines_per_pod": 8}, "cores", "multiple of spines_per_pod"),
    ({"oversubscription": 0.5}, "oversubscription", ">= 1"),
    ({"core_oversubscription": "1:2"}, "core_oversubscription", ">= 1"),
    ({"num_nodes": 0}, "num_nodes", ">= 1"),
    ({"spines_per_pod": 0}, "spines_per_pod", ">= 1"),
    ({"nic_bandwidth": 400}, "nic_bandwidth", "bandwidth"),
    ({"pods": 4}, "pods", "unknown"),
])
def test_fat_tree_parameters_are_checked(params, field, message):
    with pytest.raises(ConfigError, match=field) as err:
        fat_tree(**params)
    assert message in str(err.value).lower() or message in str(err.value)
