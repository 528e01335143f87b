"""Topology loading: presets, generators, routing, and clear errors for bad files."""

import textwrap

import pytest

from cosim.errors import ConfigError
from cosim.topology import Router, list_presets, load_topology, topology_from_dict


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_routes(name):
    topo = load_topology(name)
    router = Router(topo)
    g = topo.num_gpus
    for s, d in [(0, g - 1), (g - 1, 0), (0, g // 2), (1, g - 2)]:
        if s == d:
            continue
        route = router.route(s, d)
        u, v = topo.directed_endpoints(route[0])
        assert u == topo.gpu_nodes[s]
        assert topo.directed_endpoints(route[-1])[1] == topo.gpu_nodes[d]
        for a, b in zip(route, route[1:]):
            assert topo.directed_endpoints(a)[1] == topo.directed_endpoints(b)[0]


def test_shipped_presets_cover_the_required_systems():
    names = set(list_presets())
    assert {"h100-hgx-2node", "h200-hgx-2node", "h800-hgx-4node", "gb200-nvl72", "gb200-nvl72-2rack"} <= names


def test_hgx_cluster_shape_and_rail_alignment():
    topo = load_topology("h100-hgx-2node")
    assert topo.num_gpus == 16
    kinds = [n.kind for n in topo.nodes]
    assert kinds.count("nic") == 16 and kinds.count("nvswitch") == 2
    router = Router(topo)
    names = lambda r: [topo.nodes[topo.directed_endpoints(l)[1]].name for l in r]
    # Same rail: NIC -> rail leaf -> NIC, no spine, no NVLink.
    assert names(router.route(3, 11)) == ["n0.nic3", "leaf3", "n1.nic3", "n1.gpu3"]
    # Cross rail: PXN over NVLink to the rail-matched GPU, then the destination's rail.
    assert names(router.route(0, 13)) == ["n0.nvswitch", "n0.gpu5", "n0.nic5", "leaf5", "n1.nic5", "n1.gpu5"]


def test_cross_rail_direct_goes_through_spine():
    topo = topology_from_dict({"name": "d", "generator": {"kind": "hgx_cluster", "num_nodes": 2},
                               "routing": {"cross_rail": "direct"}})
    router = Router(topo)
    hops = [topo.nodes[topo.directed_endpoints(l)[1]].name for l in router.route(0, 13)]
    assert hops[:2] == ["n0.nic0", "leaf0"] and hops[2].startswith("spine") and hops[3] == "leaf5"


def test_ecmp_hash_spreads_over_spines_deterministically():
    topo = topology_from_dict({"name": "d", "generator": {"kind": "hgx_cluster", "num_nodes": 2, "spines": 4},
                               "routing": {"cross_rail": "direct"}})
    spines = {Router(topo).route(0, 13, key)[2] for key in range(32)}
    assert len(spines) > 1
    assert Router(topo).route(0, 13, 7) == Router(topo).route(0, 13, 7)


def test_oversubscription_sets_uplink_bandwidth():
    topo = load_topology("h100-hgx-16node-2to1")
    spine_links = [l for l in topo.links if l.tier == "spine"]
    # A leaf serves 4 nodes x 1 NIC of its rail at 400 Gb/s; 2:1 over 8 spines -> 100 Gb/s each.
    assert {l.bandwidth_bps for l in spine_links} == {400e9 * 4 / 2 / 8}


def test_nvl72_is_one_nvlink_domain():
    topo = load_topology("gb200-nvl72")
    assert topo.num_gpus == 72
    assert all(l.tier == "nvlink" and l.bandwidth_bps == 900e9 * 8 for l in topo.links)
    assert len(Router(topo).route(0, 71)) == 2


def write(tmp_path, text):
    p = tmp_path / "topo.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
    name: t
    nodes:
      - {name: g0, kind: gpu}
      - {name: g1, kind: gpu}
      - {name: sw, kind: switch}
    links:
      - {a: g0, b: sw, bandwidth: 400Gbps, latency: 1us}
      - {a: g1, b: sw, bandwidth: 400Gbps, latency: 1us}
"""


def test_explicit_file_loads(tmp_path):
    topo = load_topology(write(tmp_path, GOOD))
    assert topo.num_gpus == 2 and topo.links[0].bandwidth_bps == 400e9 and topo.links[0].mtu_bytes == 4096


@pytest.mark.parametrize("mutate,field,expect", [
    (lambda s: s.replace("name: t", "name: t\n    colour: red"), "colour", "unknown key"),
    (lambda s: s.replace("bandwidth: 400Gbps, latency: 1us}\n      - {a: g1", "latency: 1us}\n      - {a: g1"),
     "links[0].bandwidth", "required field is missing"),
    (lambda s: s.replace("400Gbps, latency: 1us}\n      - {a: g1", "400, latency: 1us}\n      - {a: g1"),
     "links[0].bandwidth", "400Gbps"),
    (lambda s: s.replace("400Gbps, latency: 1us}\n      - {a: g1", "0Gbps, latency: 1us}\n      - {a: g1"),
     "links[0].bandwidth", "positive"),
    (lambda s: s.replace("latency: 1us}\n      - {a: g1", "latency: 1 micro}\n      - {a: g1"),
     "links[0].latency", "duration"),
    (lambda s: s.replace("{a: g1, b: sw", "{a: g1, b: swx"), "links[1].b", "did you mean 'sw'"),
    (lambda s: s.replace("kind: switch", "kind: router"), "nodes[2].kind", "expected one of"),
    (lambda s: s.replace("400Gbps, latency: 1us}\n      - {a: g1", "400Gbps, latency: 1us, mtu: 100000}\n      - {a: g1"),
     "links[0].mtu", "MTU between"),
])
def test_bad_files_name_file_field_and_expectation(tmp_path, mutate, field, expect):
    path = write(tmp_path, mutate(GOOD))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    msg = str(info.value)
    assert str(path) in msg and field in msg and expect in msg


def test_absurd_link_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"links\[0\].latency: expected 0 to 1 s"):
        load_topology(write(tmp_path, GOOD.replace("latency: 1us}", "latency: 5s}", 1)))
    with pytest.raises(ConfigError, match=r"links\[0\].bandwidth: expected more than 0 and at most 1000 Tbps"):
        load_topology(write(tmp_path, GOOD.replace("400Gbps", "5000Tbps", 1)))


def test_disconnected_gpu(tmp_path):
    text = GOOD.replace("      - {name: sw, kind: switch}", "      - {name: sw, kind: switch}\n      - {name: g2, kind: gpu}")
    with pytest.raises(ConfigError, match="'g2' is disconnected"):
        load_topology(write(tmp_path, text))


def test_unroutable_pair(tmp_path):
    text = GOOD.replace("{a: g1, b: sw,", "{a: g1, b: sw2,").replace(
        "      - {name: sw, kind: switch}", "      - {name: sw, kind: switch}\n      - {name: sw2, kind: switch}")
    with pytest.raises(ConfigError, match="'g0' and 'g1' cannot reach each other"):
        load_topology(write(tmp_path, text))


def test_duplicate_link_and_self_loop(tmp_path):
    dup = GOOD + "      - {a: sw, b: g0, bandwidth: 400Gbps, latency: 1us}\n"
    with pytest.raises(ConfigError, match=r"links\[2\].b: duplicate link"):
        load_topology(write(tmp_path, dup))
    loop = GOOD + "      - {a: sw, b: sw, bandwidth: 400Gbps, latency: 1us}\n"
    with pytest.raises(ConfigError, match="two different nodes"):
        load_topology(write(tmp_path, loop))


def test_generator_errors(tmp_path):
    bad_param = "name: x\ngenerator: {kind: hgx_cluster, num_nodes: 2, nic_bandwith: 400Gbps}\n"
    with pytest.raises(ConfigError, match=r"generator.nic_bandwith: unknown key \(did you mean 'nic_bandwidth'"):
        load_topology(write(tmp_path, bad_param))
    bad_unit = "name: x\ngenerator: {kind: hgx_cluster, nic_bandwidth: 400G}\n"
    with pytest.raises(ConfigError, match="generator.nic_bandwidth: expected a bandwidth"):
        load_topology(write(tmp_path, bad_unit))
    bad_kind = "name: x\ngenerator: {kind: torus}\n"
    with pytest.raises(ConfigError, match="generator.kind: expected one of"):
        load_topology(write(tmp_path, bad_kind))
    bad_value = "name: x\ngenerator: {kind: hgx_cluster, oversubscription: 0.5}\n"
    with pytest.raises(ConfigError, match="generator.oversubscription: must be >= 1"):
        load_topology(write(tmp_path, bad_value))
    both = "name: x\ngenerator: {kind: star}\nnodes: []\n"
    with pytest.raises(ConfigError, match="not both"):
        load_topology(write(tmp_path, both))


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_topology(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="no such file or topology preset.*h100-hgx-2node"):
        load_topology("h100-hgx-2nod")
