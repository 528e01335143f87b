"""Topology loading: presets, generators, routing, and clear errors for bad files."""

import re
import textwrap

import pytest

from cosim.errors import ConfigError
from cosim.network import FlowSet, simulate
from cosim.topology import Link, Node, Router, Topology, list_presets, load_topology, topology_from_dict
from cosim.topology.loader import read_topology_file

from conftest import backend_param


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
    assert {"h100-hgx-2node", "h200-hgx-2node", "h800-hgx-4node", "gb200-nvl72", "gb200-nvl72-2rack",
            "b200-hgx-node", "b200-hgx-16node", "b200-hgx-16node-800g"} <= names


# ------------------------------------------------------------------------------------- B200 presets

def test_b200_presets_shape():
    node = load_topology("b200-hgx-node")
    assert node.num_gpus == 8 and {(l.tier, l.bandwidth_bps) for l in node.links} == {("nvlink", 900e9 * 8)}
    for name, nic_bps, pcie_bps in [("b200-hgx-16node", 400e9, 64e9 * 8), ("b200-hgx-16node-800g", 800e9, 128e9 * 8)]:
        topo = load_topology(name)
        assert topo.num_gpus == 128 and len({n.domain for n in topo.nodes if n.kind == "gpu"}) == 16
        by_tier = {}
        for l in topo.links:
            by_tier.setdefault(l.tier, set()).add(l.bandwidth_bps)
        assert by_tier == {"nvlink": {900e9 * 8}, "pcie": {pcie_bps}, "rail": {nic_bps},
                           # non-blocking: a rail leaf's 16 NICs go up over 8 spines
                           "spine": {16 * nic_bps / 8}}
        assert sum(l.tier == "rail" for l in topo.links) == 128 and sum(l.tier == "spine" for l in topo.links) == 8 * 8


def _store_and_forward_s(topo, route, size, header=62, mtu=4096):
    """One flow alone on its route: every wire byte through the slowest hop, one frame through
    each other hop (store and forward), plus the propagation latency of every hop."""
    wire = size + -(-size // mtu) * header
    frame = min(size, mtu) + header
    bws = [topo.links[l // 2].bandwidth_bps for l in route]
    slowest = min(range(len(bws)), key=bws.__getitem__)
    return (wire * 8 / bws[slowest] + sum(frame * 8 / b for i, b in enumerate(bws) if i != slowest)
            + sum(topo.links[l // 2].latency_s for l in route))


@backend_param()
@pytest.mark.parametrize("name,src,dst,bottleneck_bps,path_latency_s,tiers", [
    # inside a node: GPU -> NVSwitch -> GPU at 900 GB/s, 2 x 350 ns
    ("b200-hgx-node", 0, 5, 900e9 * 8, 0.7e-6, ["nvlink", "nvlink"]),
    # same rail across nodes: PCIe, NIC -> leaf, leaf -> NIC, PCIe at 400 Gb/s = 50 GB/s, 4 x 500 ns
    ("b200-hgx-16node", 3, 7 * 8 + 3, 400e9, 2.0e-6, ["pcie", "rail", "rail", "pcie"]),
    # cross rail (PXN): NVLink to GPU 5 of node 0 first, then rail 5: + 2 x 350 ns
    ("b200-hgx-16node", 0, 9 * 8 + 5, 400e9, 2.7e-6, ["nvlink", "nvlink", "pcie", "rail", "rail", "pcie"]),
    # 800 Gb/s NICs: 100 GB/s, the Gen6 PCIe hop (128 GB/s) is not the bottleneck
    ("b200-hgx-16node-800g", 3, 15 * 8 + 3, 800e9, 2.0e-6, ["pcie", "rail", "rail", "pcie"]),
])
def test_b200_single_flow_closed_form(backend, name, src, dst, bottleneck_bps, path_latency_s, tiers):
    topo = load_topology(name)
    route = Router(topo).route(src, dst)
    assert [topo.links[l // 2].tier for l in route] == tiers
    assert sum(topo.links[l // 2].latency_s for l in route) == pytest.approx(path_latency_s)
    assert min(topo.links[l // 2].bandwidth_bps for l in route) == bottleneck_bps
    size = 64 << 20
    fs = FlowSet()
    fs.add(src, dst, size)
    t = simulate(topo, fs, backend).completion_time_s
    assert t == pytest.approx(_store_and_forward_s(topo, route, size), rel=1e-6)
    # The headline form: wire bytes / bottleneck + path latency (store-and-forward frames are < 0.02%).
    wire = size + (size // 4096) * 62
    assert t == pytest.approx(wire * 8 / bottleneck_bps + path_latency_s, rel=2e-4)


# ------------------------------------------------------------------------------------- gpu system

_GPU_OF_FAMILY = {"h100": "h100_sxm", "h200": "h200_sxm", "b200": "b200_sxm", "gb200": "gb200",
                  # aiconfigurator-core has no h800 system; the H800 has the H100 SXM's compute and HBM
                  "h800": "h100_sxm", "example": "h100_sxm"}


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_names_its_gpu_system(name):
    from cosim.kernels import available_systems  # tests may look right of topology; the package may not

    topo = load_topology(name)
    assert topo.gpu_system == _GPU_OF_FAMILY[name.split("-")[0]]
    assert topo.gpu_system in available_systems()


def test_gpu_field_is_optional_and_checked(tmp_path):
    assert load_topology(write(tmp_path, GOOD)).gpu_system is None
    assert load_topology(write(tmp_path, GOOD.replace("name: t", "name: t\n    gpu: b200_sxm"))).gpu_system == "b200_sxm"
    # any non-empty string is accepted (user systems); the kernels stage checks the name
    assert load_topology(write(tmp_path, GOOD.replace("name: t", "name: t\n    gpu: my_gpu"))).gpu_system == "my_gpu"
    for bad in ["5", "[h100_sxm]", '""', "{a: 1}", "true"]:
        path = write(tmp_path, GOOD.replace("name: t", f"name: t\n    gpu: {bad}"))
        with pytest.raises(ConfigError) as info:
            load_topology(path)
        msg = str(info.value)
        assert str(path) in msg and ": gpu: expected the name of a kernel-table system" in msg


# ------------------------------------------------------------------------------------- strict YAML

HGX = "name: x\ngenerator:\n  kind: hgx_cluster\n  num_nodes: 16\n  spines: 8\n  nodes_per_leaf: 4\n"


@pytest.mark.parametrize("text,ratio", [("2:1", 2.0), ("'2:1'", 2.0), ("4:3", 4 / 3), ("1.5:1", 1.5),
                                        ("2", 2.0), ("1.5", 1.5), ("1e1", 10.0)])
def test_oversubscription_accepts_ratios(tmp_path, text, ratio):
    # YAML 1.1 reads a bare 2:1 as the base-60 integer 121; cosim reads it as the ratio 2.0.
    topo = load_topology(write(tmp_path, HGX + f"  oversubscription: {text}\n"))
    spine = [l.bandwidth_bps for l in topo.links if l.tier == "spine"]
    assert len(spine) == 8 * 4 * 8 and spine == pytest.approx([400e9 * 4 / ratio / 8] * len(spine))


@pytest.mark.parametrize("key,value,field,expect", [
    ("num_nodes", "0x10", "generator.num_nodes", "expected a decimal integer such as 8, got '0x10' (plain decimal"),
    ("num_nodes", "0o17", "generator.num_nodes", "got '0o17'"),
    ("num_nodes", "017", "generator.num_nodes", "got '017'"),
    ("num_nodes", "1_000", "generator.num_nodes", "got '1_000'"),
    ("num_nodes", "1:30", "generator.num_nodes", "got '1:30'"),
    ("num_nodes", "1e3", "generator.num_nodes", "expected a decimal integer such as 8, got 1000.0"),
    ("num_nodes", "'16'", "generator.num_nodes", "got '16'"),
    ("spines", "yes", "generator.spines", "got 'yes'"),
    ("spines", "true", "generator.spines", "got True"),
    ("spines", "on", "generator.spines", "got 'on'"),
    ("oversubscription", ".inf", "generator.oversubscription", "or a ratio such as '2:1', got '.inf'"),
    ("oversubscription", "2:1:1", "generator.oversubscription", "got '2:1:1'"),
    ("oversubscription", "2:0", "generator.oversubscription", "divides by zero"),
    ("oversubscription", "no", "generator.oversubscription", "got 'no'"),
    ("nic_bandwidth", "1_000Gbps", "generator.nic_bandwidth", "expected a bandwidth"),
    ("fabric_latency", "0:30", "generator.fabric_latency", "expected a duration"),
    ("mtu", "0x1000", "generator.mtu", "expected a size"),
])
def test_implicit_yaml_numbers_are_rejected(tmp_path, key, value, field, expect):
    base = "".join(line + "\n" for line in HGX.splitlines() if not line.startswith(f"  {key}:"))
    path = write(tmp_path, base + f"  {key}: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {field}: ") and expect in msg


@pytest.mark.parametrize("old,new,field", [
    ("{name: g0, kind: gpu}", "{name: g0, kind: gpu, domain: 0x1}", "nodes[0].domain"),
    ("{name: g0, kind: gpu}", "{name: g0, kind: gpu, rail: 1_0}", "nodes[0].rail"),
    ("name: t", "name: t\n    transport: {header_bytes: 0x3e}", "transport.header_bytes"),
    ("name: t", "name: t\n    transport: {pfc_xoff_bytes: 1:0}", "transport.pfc_xoff_bytes"),
    ("latency: 1us}\n      - {a: g1", "latency: 1us, mtu: 4_096}\n      - {a: g1", "links[0].mtu"),
])
def test_implicit_yaml_numbers_rejected_in_explicit_files(tmp_path, old, new, field):
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {field}: expected")):
        load_topology(path)


def test_strict_loader_keeps_shipped_presets_and_plain_numbers():
    import yaml

    for name in list_presets():  # every shipped file reads the same as with PyYAML's SafeLoader
        from cosim.topology.loader import resolve_topology_path

        assert read_topology_file(name) == yaml.safe_load(resolve_topology_path(name).read_text())
    from cosim.topology.strict_yaml import load_yaml_text

    assert load_yaml_text("a: 8\nb: -3\nc: 1.5\nd: 1e3\ne: true\nf: null\ng: 2024-01-01\nh: 0\n") == {
        "a": 8, "b": -3, "c": 1.5, "d": 1000.0, "e": True, "f": None, "g": "2024-01-01", "h": 0}


@pytest.mark.parametrize("text,key,lines", [
    ("name: a\nname: b\ngenerator: {kind: star}\n", "name", "first at line 1, again at line 2"),
    ("name: a\ngenerator: {kind: star, num_gpus: 4, num_gpus: 8}\n", "num_gpus", "first at line 2, again at line 2"),
    ("name: a\ngenerator:\n  kind: star\n  kind: hgx_node\n", "kind", "first at line 3, again at line 4"),
])
def test_duplicate_keys_are_rejected(tmp_path, text, key, lines):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value) == f"{path}: {key}: duplicate key ({lines}); each key may appear once per mapping"


def test_unroutable_route_is_a_config_error():
    # g1 is a GPU: GPUs are endpoints, so g0 cannot reach g2 through it.
    nodes = (Node("g0", "gpu"), Node("g1", "gpu"), Node("g2", "gpu"))
    topo = Topology("chain", nodes, (Link(0, 1, 1e9, 0.0, 4096), Link(1, 2, 1e9, 0.0, 4096)))
    with pytest.raises(ConfigError, match="<api>: links: no route from 'g0' to 'g2'"):
        Router(topo).route(0, 2)


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
