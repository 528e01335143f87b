"""LiveNetwork: transfers started at arbitrary times share links max-min fairly, with the flow
backend's routes, rates and latency (closed forms, agreement with the batch API, conservation)."""

import math

import numpy as np
import pytest

from cosim.errors import FlowError
from cosim.network import FlowSet, simulate
from cosim.network.collectives import point_to_point
from cosim.network.live import Completion, LiveNetwork
from cosim.topology import Router, load_topology

MiB = 1 << 20


@pytest.fixture(scope="module")
def hgx2():
    return load_topology("h100-hgx-2node")


def wire_bytes(topo, route, size):
    payload = min(topo.links[l // 2].mtu_bytes for l in route)
    return size + -(-size // payload) * topo.transport.header_bytes


def path_latency(topo, route, size):
    """Propagation on every hop + one frame's serialization on every hop but the slowest."""
    payload = min(topo.links[l // 2].mtu_bytes for l in route)
    frame_bits = (min(payload, size) + topo.transport.header_bytes) * 8
    ser = [frame_bits / topo.links[l // 2].bandwidth_bps for l in route]
    return sum(topo.links[l // 2].latency_s for l in route) + sum(ser) - max(ser)


def run_all(net, until=math.inf):
    """Drive the network the way a discrete-event simulator does: wake it at next_event_s()."""
    out = []
    while (t := net.next_event_s()) < math.inf and t <= until:
        out += net.advance(t)
    return out


# 1. one transfer: closed form ------------------------------------------------------------------

def test_one_transfer_across_nodes_closed_form(hgx2):
    route = Router(hgx2).route(0, 8)
    nic = 400e9 / 8
    assert min(hgx2.directed_bandwidth_bps[list(route)]) / 8 == nic  # 50 GB/s NIC is the bottleneck
    size = 256 * MiB
    net = LiveNetwork(hgx2)
    tid = net.start(0, 8, size, 0.0, tag="kv")
    t_drain = wire_bytes(hgx2, route, size) / nic
    assert net.next_event_s() == pytest.approx(t_drain, rel=1e-12)
    assert net.advance(t_drain * 0.999) == []
    done = run_all(net)
    assert len(done) == 1 and isinstance(done[0], Completion)
    c = done[0]
    assert (c.id, c.tag, c.src, c.dst, c.size_bytes, c.start_s) == (tid, "kv", 0, 8, size, 0.0)
    expected = t_drain + path_latency(hgx2, route, size)
    assert c.finish_s == pytest.approx(expected, rel=1e-12)
    assert c.finish_s == pytest.approx(size / nic, rel=0.02)  # headers are 62 B per 4 KiB
    assert net.in_flight == 0 and net.next_event_s() == math.inf


def test_latency_off_and_zero_bytes(hgx2):
    net = LiveNetwork(hgx2, latency=False)
    route = Router(hgx2).route(0, 8)
    net.start(0, 8, 8 * MiB, 1e-3)
    z = net.start(3, 11, 0, 1e-3)
    same = net.start(5, 5, 0, 1e-3)
    first = net.advance(1e-3)
    assert [c.id for c in first] == [z, same] and all(c.finish_s == 1e-3 for c in first)
    (c,) = run_all(net)
    assert c.finish_s == pytest.approx(1e-3 + wire_bytes(hgx2, route, 8 * MiB) / 50e9, rel=1e-12)


# 2. sharing one NIC ----------------------------------------------------------------------------

def test_two_transfers_through_one_nic_take_twice_as_long(hgx2):
    size = 128 * MiB
    router = Router(hgx2)
    r0, r1 = router.route(0, 8), router.route(1, 8)
    assert set(r0) <= set(r1)  # GPU 1 -> GPU 8 relays over GPU 0's NIC (PXN)
    alone = LiveNetwork(hgx2, router)
    alone.start(0, 8, size, 0.0)
    (single,) = run_all(alone)
    net = LiveNetwork(hgx2, router)
    a = net.start(0, 8, size, 0.0)
    b = net.start(1, 8, size, 0.0)
    assert net.rate_Bps(a) == pytest.approx(25e9) and net.rate_Bps(b) == pytest.approx(25e9)
    done = {c.id: c for c in run_all(net)}
    wire = wire_bytes(hgx2, r0, size)
    assert done[a].finish_s == pytest.approx(2 * wire / 50e9 + path_latency(hgx2, r0, size), rel=1e-12)
    assert done[b].finish_s == pytest.approx(2 * wire / 50e9 + path_latency(hgx2, r1, size), rel=1e-12)
    assert done[a].finish_s / single.finish_s == pytest.approx(2.0, rel=1e-3)


def test_transfer_joining_halfway_piecewise(hgx2):
    """A alone for T/2, then A and B at C/2 until A drains at 1.5 T, then B alone until 2 T."""
    size = 64 * MiB
    route = Router(hgx2).route(0, 8)
    wire = wire_bytes(hgx2, route, size)
    lat = path_latency(hgx2, route, size)
    T = wire / 50e9
    net = LiveNetwork(hgx2)
    a = net.start(0, 8, size, 0.0)
    assert net.advance(T / 2) == []
    b = net.start(0, 8, size, T / 2)
    assert net.next_event_s() == pytest.approx(1.5 * T, rel=1e-12)
    done = run_all(net)
    assert [c.id for c in done] == [a, b]
    assert done[0].finish_s == pytest.approx(1.5 * T + lat, rel=1e-12)
    assert done[1].finish_s == pytest.approx(2.0 * T + lat, rel=1e-12)
    assert done[1].start_s == T / 2


def test_cancel_frees_bandwidth_and_keeps_sent_bytes(hgx2):
    size = 64 * MiB
    route = Router(hgx2).route(0, 8)
    wire = wire_bytes(hgx2, route, size)
    T = wire / 50e9
    net = LiveNetwork(hgx2)
    a = net.start(0, 8, size, 0.0)
    b = net.start(0, 8, size, 0.0)
    assert net.advance(T / 2) == []
    net.cancel(b)
    assert net.in_flight == 1
    with pytest.raises(FlowError, match="not in flight"):
        net.cancel(b)
    (c,) = run_all(net)
    assert c.id == a
    # Each had sent wire/4 at T/2; A's remaining 3/4 at the full rate.
    assert c.finish_s == pytest.approx(1.25 * T + path_latency(hgx2, route, size), rel=1e-12)
    tx = net.link_tx_bytes[list(route)]
    assert np.all(np.abs(tx - 1.25 * wire) <= 2)


# 3. disjoint paths ------------------------------------------------------------------------------

def test_disjoint_paths_do_not_interact(hgx2):
    size = 32 * MiB
    pairs = [(0, 8), (1, 9), (10, 2), (3, 4)]  # rails 0 and 1 both ways, NVLink inside node 0
    router = Router(hgx2)
    routes = [set(router.route(s, d)) for s, d in pairs]
    assert all(not (routes[i] & routes[j]) for i in range(4) for j in range(i + 1, 4))
    alone = []
    for s, d in pairs:
        net = LiveNetwork(hgx2, router)
        net.start(s, d, size, 0.0)
        alone += run_all(net)
    net = LiveNetwork(hgx2, router)
    ids = [net.start(s, d, size, 0.0) for s, d in pairs]
    together = {c.id: c.finish_s for c in run_all(net)}
    for tid, single in zip(ids, alone):
        assert together[tid] == single.finish_s


# 4. agreement with the batch flow backend ------------------------------------------------------

def random_transfers(topo, n, seed):
    rng = np.random.default_rng(seed)
    g = topo.num_gpus
    src = rng.integers(0, g, n)
    dst = (src + rng.integers(1, g, n)) % g
    size = rng.integers(1, 48 * MiB, n)
    size[::7] = rng.integers(1, 9000, len(size[::7]))  # a few sub-MTU ones
    start = np.sort(rng.uniform(0, 3e-3, n))
    start[5:9] = start[4]  # simultaneous starts
    channels = rng.choice([1, 1, 1, 2, 4], n)
    return [(int(s), int(d), int(b), float(t), int(c)) for s, d, b, t, c in zip(src, dst, size, start, channels)]


@pytest.mark.parametrize("preset", ["h100-hgx-4node", "h100-hgx-16node-2to1", "gb200-nvl72-2rack"])
def test_agrees_with_batch_flow_backend(preset):
    topo = load_topology(preset)
    router = Router(topo)
    transfers = random_transfers(topo, 120, seed=len(preset))
    fs = FlowSet()
    owner = []
    for i, (s, d, b, t, c) in enumerate(transfers):
        parts = FlowSet()
        point_to_point(parts, s, d, b, channels=c)
        for k in range(len(parts)):
            f = parts[k]
            fs.add(f.src, f.dst, f.size_bytes, earliest_start_s=t, path_key=f.path_key)
            owner.append(i)
    batch = simulate(topo, fs, "flow", router=router)
    expected = np.zeros(len(transfers))
    np.maximum.at(expected, np.asarray(owner), batch.flow_finish_s)

    runs = {}
    for incremental in (True, False):
        net = LiveNetwork(topo, router, incremental=incremental)
        done, ids = [], []
        for s, d, b, t, c in transfers:
            while (ev := net.next_event_s()) < t:  # the simulator wakes the network at its events
                got = net.advance(ev)
                assert all(x.finish_s <= ev for x in got)
                done += got
            done += net.advance(t)
            ids.append(net.start(s, d, b, t, channels=c))
        done += run_all(net)
        assert len(done) == len(transfers) and net.in_flight == 0
        finishes = [c.finish_s for c in done]
        assert finishes == sorted(finishes)  # handed out in finish order
        assert ids == sorted(ids)
        live = np.array([c.finish_s for c in sorted(done, key=lambda c: c.id)])
        np.testing.assert_allclose(live, expected, rtol=1e-9, atol=0)
        np.testing.assert_array_equal(net.link_tx_bytes, batch.links.tx_bytes)
        np.testing.assert_array_equal(net.link_tx_packets, batch.links.tx_packets)
        runs[incremental] = (live, net.stats)
    # Component re-solves give the full re-solve's rates (the same arithmetic per component).
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    full, part = runs[False][1], runs[True][1]
    assert part["re_solves"] == full["re_solves"] > 0
    assert part["solved_flows"] < full["solved_flows"]


# 5. conservation ---------------------------------------------------------------------------------

def test_link_bytes_are_conserved():
    topo = load_topology("h200-hgx-2node")
    router = Router(topo)
    net = LiveNetwork(topo, router)
    rng = np.random.default_rng(3)
    payload = np.zeros(topo.num_directed_links, dtype=np.int64)
    wire = np.zeros(topo.num_directed_links, dtype=np.int64)
    t = 0.0
    for _ in range(40):
        s, d = (int(x) for x in rng.choice(topo.num_gpus, 2, replace=False))
        size = int(rng.integers(1, 20 * MiB))
        t += float(rng.exponential(2e-4))
        run_all(net, until=t)
        net.advance(t)
        net.start(s, d, size, t)
        route = list(router.route(s, d))
        payload[route] += size
        wire[route] += wire_bytes(topo, route, size)
    run_all(net)
    np.testing.assert_array_equal(net.link_payload_bytes, payload)
    np.testing.assert_array_equal(net.link_tx_bytes, wire)
    assert net.link_payload_bytes.sum() == payload.sum()  # = sum of size x hops
    counters = net.link_counters()
    np.testing.assert_allclose(counters.busy_s, wire * 8 / topo.directed_bandwidth_bps)
    assert counters.mean_utilization(net.now_s).max() <= 1.0


def test_series_bins_hold_the_bytes():
    topo = load_topology("h100-hgx-2node")
    net = LiveNetwork(topo, series=True)
    net.start(0, 8, 16 * MiB, 0.0)
    net.start(1, 8, 16 * MiB, 1e-4)
    run_all(net)
    counters = net.link_counters()
    np.testing.assert_allclose(counters.bin_bytes.sum(axis=1), counters.tx_bytes, rtol=1e-9)


# bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, match", [
    ((0, 16, MiB, 0.0), "dst_gpu 16 does not exist"),
    ((-1, 3, MiB, 0.0), "src_gpu -1 does not exist"),
    ((0, 8, -5, 0.0), "size_bytes"),
    ((0, 8, float("nan"), 0.0), "size_bytes"),
    ((0, 8, 1.5e6, 0.0), "size_bytes"),
    ((0, 8, 1 << 60, 0.0), "size_bytes"),
    ((0, 8, MiB, float("nan")), "finite"),
    ((0, 8, MiB, math.inf), "finite"),
    ((4, 4, MiB, 0.0), "both GPU 4"),
])
def test_bad_input(hgx2, args, match):
    with pytest.raises(FlowError, match=match):
        LiveNetwork(hgx2).start(*args)


def test_time_cannot_go_backwards(hgx2):
    net = LiveNetwork(hgx2)
    net.start(0, 8, MiB, 1e-3)
    net.advance(2e-3)
    with pytest.raises(FlowError, match="backwards"):
        net.start(0, 8, MiB, 1e-3)
    with pytest.raises(FlowError, match="backwards"):
        net.advance(1.5e-3)
    with pytest.raises(FlowError, match="channels"):
        net.start(0, 8, MiB, 2e-3, channels=0)
