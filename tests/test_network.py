"""Network API on both backends: closed forms, conservation, agreement, dependencies, bad input."""

import numpy as np
import pytest

from cosim.errors import ConfigError, FlowError
from cosim.network import FlowSet, simulate
from cosim.network import collectives as C
from cosim.network.libraries import build_collective
from cosim.topology import load_topology, topology_from_dict

from conftest import backend_param, requires_engine, star

B = 400e9  # bits/s of the star links
FRAME = 4096 + 2


def single_flow_time(size, bw=B, hops=2, latency=1e-6, payload=4096, header=2):
    """Store-and-forward closed form on equal-rate hops: all frames over the link once, plus one
    frame per extra hop, plus propagation."""
    packets = -(-size // payload)
    wire = size + packets * header
    first = min(payload, size) + header
    return wire * 8 / bw + (hops - 1) * first * 8 / bw + hops * latency


@backend_param()
@pytest.mark.parametrize("size", [4096, 1 << 20, 3 * (1 << 20) + 123])
def test_single_flow_closed_form(backend, size):
    fs = FlowSet()
    fs.add(0, 1, size)
    r = simulate(star(2), fs, backend)
    assert r.completion_time_s == pytest.approx(single_flow_time(size), rel=1e-3)


@backend_param()
@pytest.mark.parametrize("senders", [2, 5])
def test_flows_sharing_a_bottleneck(backend, senders):
    # Incast: every sender to GPU 0; the switch->GPU0 link is shared equally.
    size = 1 << 20
    fs = FlowSet()
    for s in range(1, senders + 1):
        fs.add(s, 0, size)
    r = simulate(star(senders + 1), fs, backend)
    wire = size + 256 * 2
    expected = senders * wire * 8 / B + FRAME * 8 / B + 2e-6
    assert r.completion_time_s == pytest.approx(expected, rel=0.01)
    # Fair sharing: all flows finish within a few frame times of each other.
    assert np.ptp(r.flow_finish_s) < 0.02 * expected


@backend_param()
@pytest.mark.parametrize("n", [4, 8])
def test_ring_all_reduce_closed_form(backend, n):
    size = n * (1 << 20)
    fs = FlowSet()
    coll = C.ring_all_reduce(fs, range(n), size, chunk_bytes=None)
    r = simulate(star(n), fs, backend)
    # 2(n-1) steps, each a flow of size/n over 2 hops: 2(n-1)/n of the buffer plus 2(n-1) latencies.
    expected = 2 * (n - 1) * single_flow_time(size // n)
    assert r.finish_s(coll.last) == pytest.approx(expected, rel=0.005)
    sent = np.bincount(fs.src, weights=fs.size_bytes, minlength=n)
    assert np.all(sent == 2 * (n - 1) * size // n)


@backend_param()
@pytest.mark.parametrize("n", [4, 8])
def test_custom_all_reduce_one_shot_and_two_shot_closed_forms(backend, n):
    size = n * (1 << 18)  # 256 KiB per slice
    frame = (4096 + 2) * 8 / B

    def wire(nbytes):  # bytes on the wire with the 2-byte header per frame
        return nbytes + -(-nbytes // 4096) * 2

    # One-shot: every rank pushes the whole buffer to the n-1 others through its one link.
    fs = FlowSet()
    one = C.custom_all_reduce(fs, range(n), size, "one_shot")
    r = simulate(star(n), fs, backend)
    assert r.finish_s(one.last) == pytest.approx((n - 1) * wire(size) * 8 / B + frame + 2e-6, rel=0.01)
    assert np.all(np.bincount(fs.src, weights=fs.size_bytes, minlength=n) == (n - 1) * size)
    # Two-shot: reduce-scatter then all-gather of size/n slices, two latency-bound steps.
    fs = FlowSet()
    two = C.custom_all_reduce(fs, range(n), size, "two_shot")
    r = simulate(star(n), fs, backend)
    step = (n - 1) * wire(size // n) * 8 / B + frame + 2e-6
    assert r.finish_s(two.last) == pytest.approx(2 * step, rel=0.01)
    assert np.all(np.bincount(fs.src, weights=fs.size_bytes, minlength=n) == 2 * (n - 1) * size // n)
    # Every rank receives each reduced slice once: all-gather flows wait for their slice's reduce-scatter.
    rs = [f for f in two.flows if fs.tags[f].endswith(":rs")]
    assert len(rs) == n * (n - 1)
    with pytest.raises(FlowError, match="algorithm"):
        C.custom_all_reduce(FlowSet(), range(n), size, "three_shot")


@backend_param()
def test_pipelined_ring_beats_unchunked_on_latency_bound_links(backend):
    topo = star(8, latency="5us")
    times = {}
    for chunk in (None, 256 * 1024):
        fs = FlowSet()
        coll = C.ring_all_reduce(fs, range(8), 16 << 20, chunk_bytes=chunk)
        times[chunk] = simulate(topo, fs, backend).finish_s(coll.last)
    ideal = 2 * 7 / 8 * (16 << 20) * 8 / B
    assert times[256 * 1024] >= ideal
    assert times[256 * 1024] < times[None]


@backend_param()
@pytest.mark.parametrize("n", [4, 8])
def test_all_to_all_on_non_blocking_switch(backend, n):
    size = 1 << 20
    fs = FlowSet()
    C.all_to_all(fs, range(n), size)
    r = simulate(star(n), fs, backend)
    # Each GPU sends (n-1)/n of its n*size buffer through its own link.
    expected = (n - 1) * (size + 256 * 2) * 8 / B + FRAME * 8 / B + 2e-6
    assert r.completion_time_s == pytest.approx(expected, rel=0.01)


def _rail_transfer(topo, backend, size=4 << 20):
    fs = FlowSet()
    for g in range(8):
        fs.add(g, 8 + g, size)  # same rail, node 0 -> node 1
    return simulate(topo, fs, backend)


@backend_param()
def test_oversubscribed_fabric_halves_cross_leaf_bandwidth(backend):
    def cluster(over):
        return topology_from_dict({"name": f"o{over}", "generator": {
            "kind": "hgx_cluster", "num_nodes": 2, "nodes_per_leaf": 1, "spines": 1, "oversubscription": over}})
    full = _rail_transfer(cluster(1), backend)
    half = _rail_transfer(cluster(2), backend)
    size_wire = (4 << 20) + 1024 * 62
    path_latency = 6 * 0.5e-6  # pcie, 4 fabric hops, pcie
    assert full.completion_time_s == pytest.approx(size_wire * 8 / 400e9 + path_latency, rel=0.01)
    # 8 rails share one spine: 8 x 400 Gb/s down, uplink 3.2 Tb/s / 2 -> each flow gets 200 Gb/s.
    assert half.completion_time_s == pytest.approx(size_wire * 8 / 200e9 + path_latency, rel=0.01)


@backend_param()
def test_bytes_are_conserved_on_every_link(backend):
    topo = load_topology("h100-hgx-2node")
    fs = FlowSet()
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 300_000, size=(16, 16))
    C.all_to_all_v(fs, range(16), matrix)
    r = simulate(topo, fs, backend)
    routed = r.routed
    expected = np.zeros(topo.num_directed_links, dtype=np.int64)
    for f in range(routed.num_flows):
        np.add.at(expected, routed.route(f), routed.wire_bytes[f])
    assert np.array_equal(r.links.tx_bytes, expected)
    packets = np.zeros(topo.num_directed_links, dtype=np.int64)
    for f in range(routed.num_flows):
        np.add.at(packets, routed.route(f), routed.num_packets[f])
    assert np.array_equal(r.links.tx_packets, packets)
    # The time series holds every byte too.
    assert np.allclose(r.links.bin_bytes.sum(axis=1), expected, rtol=1e-6, atol=1)
    # What leaves every GPU arrives somewhere: bytes out of GPUs == bytes into GPUs.
    gpu = set(topo.gpu_nodes)
    out = sum(r.links.tx_bytes[d] for d in range(topo.num_directed_links) if topo.directed_endpoints(d)[0] in gpu)
    into = sum(r.links.tx_bytes[d] for d in range(topo.num_directed_links) if topo.directed_endpoints(d)[1] in gpu)
    assert out == into


@backend_param()
def test_dependencies_and_earliest_start(backend):
    fs = FlowSet()
    a = fs.add(0, 1, 1 << 20)
    b = fs.add(1, 2, 1 << 20, after=[a])
    c = fs.add(2, 3, 4096, earliest_start_s=5e-3)
    d = fs.barrier([b, c])
    r = simulate(star(4), fs, backend)
    assert r.flow_start_s[b] == pytest.approx(r.flow_finish_s[a], rel=1e-9)
    assert r.flow_start_s[c] == pytest.approx(5e-3)
    assert r.flow_finish_s[d] == pytest.approx(max(r.flow_finish_s[b], r.flow_finish_s[c]))


@requires_engine
@pytest.mark.parametrize("topology,collective,size", [
    ("h100-hgx-2node", "all_to_all", 1 << 20),
    ("h100-hgx-2node", "all_to_all", 4 << 20),
    ("h100-hgx-node", "all_reduce", 32 << 20),
    ("h100-hgx-2node", "bipartite", 2 << 20),
])
def test_packet_and_flow_agree_on_large_transfers(topology, collective, size):
    topo = load_topology(topology)
    fs = FlowSet()
    coll = build_collective(fs, collective, range(topo.num_gpus), size)
    t_packet = simulate(topo, fs, "packet").finish_s(coll.last)
    t_flow = simulate(topo, fs, "flow").finish_s(coll.last)
    assert t_flow == pytest.approx(t_packet, rel=0.05)


def test_all_to_all_across_two_nodes_bottleneck_is_the_nic_tier():
    topo = load_topology("h100-hgx-2node")
    fs = FlowSet()
    C.all_to_all(fs, range(16), 1 << 20)
    r = simulate(topo, fs, "flow")
    util = r.links.mean_utilization(r.completion_time_s)
    hottest = int(np.argmax(r.links.busy_s))
    assert topo.links[hottest // 2].tier in ("rail", "pcie")
    assert util[hottest] > 0.9
    nvlink = [d for d in range(topo.num_directed_links) if topo.links[d // 2].tier == "nvlink"]
    assert util[nvlink].max() < 0.5


def test_bad_flow_inputs_raise_clear_errors():
    topo = star(4)
    fs = FlowSet()
    fs.add(0, 9, 100)
    with pytest.raises(FlowError, match="flow 0: dst GPU 9 does not exist.*0..3"):
        simulate(topo, fs)
    with pytest.raises(FlowError, match="size_bytes must be a non-negative integer"):
        FlowSet().add(0, 1, -5)
    with pytest.raises(FlowError, match="dependency 3 must be the index of an earlier flow"):
        FlowSet().add(0, 1, 5, after=[3])
    with pytest.raises(FlowError, match="src and dst are both GPU 1"):
        FlowSet().add(1, 1, 5)
    with pytest.raises(ConfigError, match="backend: expected one of packet, flow"):
        simulate(topo, FlowSet(), "ns2")
    with pytest.raises(FlowError, match="bytes_matrix must be 4x4"):
        C.all_to_all_v(FlowSet(), range(4), np.ones((3, 3)))


@backend_param()
def test_empty_flow_set(backend):
    r = simulate(star(2), FlowSet(), backend)
    assert r.completion_time_s == 0.0 and r.links.tx_bytes.sum() == 0


def test_native_max_min_solver_equals_progressive_filling():
    from cosim.network import flow_backend as FB

    if not FB.native_solver_available():
        pytest.skip("compiled flow solver not built")
    rng = np.random.default_rng(7)
    for _ in range(200):
        links, flows = int(rng.integers(1, 30)), int(rng.integers(1, 150))
        hops = np.minimum(rng.integers(1, 5, size=flows), links)
        fe = np.repeat(np.arange(flows), hops)
        le = np.concatenate([rng.choice(links, size=h, replace=False) for h in hops])
        cap = rng.uniform(1.0, 100.0, size=links) * 1e9
        native = FB.max_min_rates(fe, le, flows, cap)
        assert native == pytest.approx(FB.max_min_rates_numpy(fe, le, flows, cap), rel=1e-12)
        # Feasible (no link over capacity) and every flow has a saturated link (max-min).
        load = np.bincount(le, weights=native[fe], minlength=links)
        assert np.all(load <= cap * (1 + 1e-12))
        saturated = load >= cap * (1 - 1e-9)
        assert np.all(np.bincount(fe, weights=saturated[le], minlength=flows) > 0)
    with pytest.raises(ValueError, match="out of range"):
        FB.max_min_rates(np.array([0]), np.array([3]), 1, np.ones(2))
    with pytest.raises(ValueError, match="crosses no link"):
        FB.max_min_rates(np.array([0]), np.array([0]), 2, np.ones(1))
