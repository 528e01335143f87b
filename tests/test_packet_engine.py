"""Low-level tests of the raw ns-3 extension ``cosim.network._packet_engine``.

Closed forms for serialization / store-and-forward timing, byte and packet conservation,
dependencies, PFC, adaptive time bins, repeatability, progress interruption, and that every
kind of bad input raises ValueError (ns-3's own fatal errors would abort the interpreter).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pe = pytest.importorskip("cosim.network._packet_engine")

PS = 1e-12


def frame_time(frame_bytes: int, rate_bps: float) -> float:
    """Serialization time of one frame, rounded to ns-3's picosecond resolution."""
    return round(frame_bytes * 8 / rate_bps / PS) * PS


def make_args(**overrides):
    """Two nodes, one 100 Gb/s link with 1 us delay, one flow 0 -> 1 of 10000 bytes."""
    args = dict(
        n_nodes=2,
        link_node_a=np.array([0], np.int32), link_node_b=np.array([1], np.int32),
        link_rate_bps=np.array([100e9]), link_delay_s=np.array([1e-6]),
        flow_src=np.array([0], np.int32), flow_dst=np.array([1], np.int32),
        flow_bytes=np.array([10_000], np.int64), flow_earliest_start_s=np.array([0.0]),
        flow_payload_per_packet=np.array([4000], np.int32),
        route_offsets=np.array([0, 1], np.int64), route_links=np.array([0], np.int32),
        dep_offsets=np.array([0, 0], np.int64), dep_flows=np.zeros(0, np.int32),
        header_bytes=2, pfc_xoff_bytes=10**9, pfc_xon_bytes=10**9 - 1, max_bins=1000,
    )
    args.update(overrides)
    return args


def star_all_to_all(n_hosts, bytes_per_pair=1 << 20, payload=4096, header=2, rate=400e9,
                    delay=1e-6, xoff=10**9, xon=10**9 - 1, max_bins=1000, progress=None):
    """Hosts 0..N-1 on switch N; link i joins host i and the switch (2i up, 2i+1 down).

    Source i lists its flows to (i+k) % N for k = 1..N-1, so round robin is a permutation.
    """
    src, dst, routes, offsets = [], [], [], [0]
    for i in range(n_hosts):
        for k in range(1, n_hosts):
            j = (i + k) % n_hosts
            src.append(i)
            dst.append(j)
            routes += [2 * i, 2 * j + 1]
            offsets.append(len(routes))
    n_flows = len(src)
    return pe.run(
        n_hosts + 1, np.arange(n_hosts, dtype=np.int32), np.full(n_hosts, n_hosts, np.int32),
        np.full(n_hosts, rate), np.full(n_hosts, delay),
        np.array(src, np.int32), np.array(dst, np.int32), np.full(n_flows, bytes_per_pair, np.int64),
        np.zeros(n_flows), np.full(n_flows, payload, np.int32),
        np.array(offsets, np.int64), np.array(routes, np.int32),
        np.zeros(n_flows + 1, np.int64), np.zeros(0, np.int32),
        header, xoff, xon, max_bins, progress)


def incast(n_senders, xoff, xon, bytes_each=1 << 20, payload=4096, header=2, rate=100e9, delay=1e-6):
    """Senders 0..n-1 and receiver n on switch n+1; everyone sends to the receiver."""
    n_links = n_senders + 1
    routes = np.array([[2 * i, 2 * n_senders + 1] for i in range(n_senders)], np.int32).ravel()
    return pe.run(
        n_senders + 2, np.arange(n_links, dtype=np.int32), np.full(n_links, n_senders + 1, np.int32),
        np.full(n_links, rate), np.full(n_links, delay),
        np.arange(n_senders, dtype=np.int32), np.full(n_senders, n_senders, np.int32),
        np.full(n_senders, bytes_each, np.int64), np.zeros(n_senders),
        np.full(n_senders, payload, np.int32), np.arange(0, 2 * n_senders + 1, 2, dtype=np.int64),
        routes, np.zeros(n_senders + 1, np.int64), np.zeros(0, np.int32), header, xoff, xon, 100)


# --------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------

def test_single_hop_closed_form():
    out = pe.run(**make_args())
    # 10000 B in 4000 B packets: frames of 4002, 4002 and 2002 bytes, back to back.
    expected = 2 * frame_time(4002, 100e9) + frame_time(2002, 100e9) + 1e-6
    assert out["flow_start_s"][0] == 0.0
    assert out["flow_finish_s"][0] == pytest.approx(expected, abs=2 * PS)
    assert out["end_time_s"] == out["flow_finish_s"][0]
    assert out["link_tx_bytes"].tolist() == [10_006, 0]
    assert out["link_tx_packets"].tolist() == [3, 0]
    assert out["hop_packets"] == 3
    assert out["link_pause_count"].tolist() == [0, 0]


def test_two_hop_store_and_forward_and_header_bytes():
    # 0 -> 1 -> 2, header 66 B (64 B + 2 B PPP): each frame is serialized again at node 1.
    args = make_args(
        n_nodes=3, link_node_a=np.array([0, 1], np.int32), link_node_b=np.array([1, 2], np.int32),
        link_rate_bps=np.array([100e9, 100e9]), link_delay_s=np.array([1e-6, 2e-6]),
        flow_dst=np.array([2], np.int32), route_offsets=np.array([0, 2], np.int64),
        route_links=np.array([0, 2], np.int32), header_bytes=66)
    out = pe.run(**args)
    # The small last frame waits for its predecessor on hop 2, so hop 2 is the bottleneck:
    # first frame on hop 1, then all three frames back to back on hop 2.
    expected = frame_time(4066, 100e9) + (2 * frame_time(4066, 100e9) + frame_time(2066, 100e9)) + 3e-6
    assert out["flow_finish_s"][0] == pytest.approx(expected, abs=4 * PS)
    assert out["link_tx_bytes"].tolist() == [10_198, 0, 10_198, 0]
    assert out["hop_packets"] == 6


def test_star_all_to_all_closed_form_and_conservation():
    n, payload, m = 4, 4096, 1 << 20
    out = star_all_to_all(n)
    t_frame = frame_time(payload + 2, 400e9)  # 81.96 ns
    packets_per_port = (n - 1) * m // payload  # 768
    # The last frame leaves the source at 768 frame times, is serialized again at the switch,
    # and crosses two 1 us links.
    expected = packets_per_port * t_frame + t_frame + 2e-6
    assert out["end_time_s"] == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(65.027e-6, rel=1e-4)
    wire_per_port = (n - 1) * (m + (m // payload) * 2)
    assert out["link_tx_bytes"].tolist() == [wire_per_port] * (2 * n)
    assert out["link_tx_packets"].tolist() == [packets_per_port] * (2 * n)
    assert out["hop_packets"] == 2 * n * packets_per_port
    assert np.array_equal(out["link_bin_bytes"].sum(axis=1), out["link_tx_bytes"])
    assert out["bin_s"] == pytest.approx(1e-6)
    # The permutation never queues more than the one frame waiting in the device queue.
    assert out["link_peak_queue_bytes"].max() == payload + 2
    assert np.all(out["flow_finish_s"] > out["flow_start_s"])
    assert out["events"] > 0 and out["wall_s"] > 0


def test_zero_byte_flow_and_python_lists():
    out = pe.run(**make_args(
        flow_src=[0, 1], flow_dst=[1, 1], flow_bytes=[0, 0], flow_earliest_start_s=[2e-6, 5e-6],
        flow_payload_per_packet=[100, 100], route_offsets=[0, 1, 1], route_links=[0],
        dep_offsets=[0, 0, 0], dep_flows=[]))
    assert out["flow_start_s"].tolist() == pytest.approx([2e-6, 5e-6])
    assert out["flow_finish_s"].tolist() == out["flow_start_s"].tolist()
    assert out["hop_packets"] == 0
    assert out["link_bin_bytes"].shape[0] == 2


def test_dependencies():
    # f0: 0->1; f1 after f0; f2 after f0 but not before 1 ms; f3 (0 B) after f1;
    # f4 after f2 and f3.
    args = make_args(
        flow_src=np.array([0, 1, 0, 0, 1], np.int32), flow_dst=np.array([1, 0, 1, 0, 0], np.int32),
        flow_bytes=np.array([10_000, 5000, 3000, 0, 100], np.int64),
        flow_earliest_start_s=np.array([0, 0, 1e-3, 0, 0]),
        flow_payload_per_packet=np.full(5, 4000, np.int32),
        route_offsets=np.array([0, 1, 2, 3, 3, 4], np.int64), route_links=np.array([0, 1, 0, 1], np.int32),
        dep_offsets=np.array([0, 0, 1, 2, 3, 5], np.int64), dep_flows=np.array([0, 0, 1, 2, 3], np.int32))
    out = pe.run(**args)
    start, finish = out["flow_start_s"], out["flow_finish_s"]
    assert start[1] == finish[0]
    assert start[2] == pytest.approx(1e-3)
    assert start[3] == finish[3] == finish[1]
    assert start[4] == max(finish[2], finish[3])
    assert out["end_time_s"] == finish.max()


# --------------------------------------------------------------------------------------
# PFC, time series, repeatability, progress
# --------------------------------------------------------------------------------------

def test_pfc_bounds_queues_without_loss():
    n, rate, delay, frame = 4, 100e9, 1e-6, 4098
    total_wire = n * ((1 << 20) + 256 * 2)
    free = incast(n, xoff=10**9, xon=10**9 - 1)
    pfc = incast(n, xoff=20_000, xon=10_000)
    for out in (free, pfc):
        # Lossless and work conserving at the bottleneck (switch -> receiver, link 2n+1).
        assert out["link_tx_bytes"][2 * n + 1] == total_wire
        assert out["link_tx_bytes"][0:2 * n:2].tolist() == [total_wire // n] * n
        assert out["end_time_s"] == pytest.approx(total_wire * 8 / rate, rel=0.01)
    assert free["link_pause_count"].sum() == 0
    assert pfc["link_pause_count"][0:2 * n:2].min() > 0
    assert np.all(pfc["link_paused_s"][0:2 * n:2] > 0)
    assert np.all(pfc["link_paused_s"] <= pfc["end_time_s"])
    # Per ingress: xoff + what is in flight while the pause propagates (2 delays + frames).
    headroom = 20_000 + 2 * delay * rate / 8 + 3 * frame
    assert pfc["link_peak_queue_bytes"][2 * n + 1] <= n * headroom
    assert free["link_peak_queue_bytes"][2 * n + 1] > 2 * pfc["link_peak_queue_bytes"][2 * n + 1]


def test_pfc_deadlock_raises_runtime_error():
    # Ring of 3 switches with 2 hosts each; every host sends 2 switches clockwise.
    s, h = 3, 2
    a = [i for i in range(s)] + [s + i for i in range(s * h)]
    b = [(i + 1) % s for i in range(s)] + [i // h for i in range(s * h)]
    src, dst, routes, offsets = [], [], [], [0]
    for sw in range(s):
        for k in range(h):
            host, dsw = s + sw * h + k, (sw + 2) % s
            dhost = s + dsw * h + k
            routes += [2 * (host), 2 * sw, 2 * ((sw + 1) % s), 2 * dhost + 1]
            src.append(host)
            dst.append(dhost)
            offsets.append(len(routes))
    n_flows, n_links = len(src), len(a)
    args = dict(
        n_nodes=s + s * h, link_node_a=np.array(a, np.int32), link_node_b=np.array(b, np.int32),
        link_rate_bps=np.full(n_links, 100e9), link_delay_s=np.full(n_links, 1e-6),
        flow_src=np.array(src, np.int32), flow_dst=np.array(dst, np.int32),
        flow_bytes=np.full(n_flows, 4 << 20, np.int64), flow_earliest_start_s=np.zeros(n_flows),
        flow_payload_per_packet=np.full(n_flows, 4096, np.int32),
        route_offsets=np.array(offsets, np.int64), route_links=np.array(routes, np.int32),
        dep_offsets=np.zeros(n_flows + 1, np.int64), dep_flows=np.zeros(0, np.int32),
        header_bytes=2, pfc_xoff_bytes=20_000, pfc_xon_bytes=10_000, max_bins=10)
    with pytest.raises(RuntimeError, match="deadlock"):
        pe.run(**args)
    args.update(pfc_xoff_bytes=10**9, pfc_xon_bytes=10**9 - 1)
    assert np.all(np.isfinite(pe.run(**args)["flow_finish_s"]))


def test_adaptive_bins():
    fine = star_all_to_all(4, max_bins=1000)
    coarse = star_all_to_all(4, max_bins=8)
    assert fine["bin_s"] == pytest.approx(1e-6)
    last_tx_start = fine["end_time_s"] - 1e-6 - frame_time(4098, 400e9)
    assert fine["link_bin_bytes"].shape == (8, math.floor(last_tx_start / 1e-6) + 1)
    n_bins = coarse["link_bin_bytes"].shape[1]
    assert n_bins <= 8
    k = round(math.log2(coarse["bin_s"] / 1e-6))
    assert coarse["bin_s"] == pytest.approx(1e-6 * 2**k)
    assert n_bins * coarse["bin_s"] > last_tx_start
    assert np.array_equal(coarse["link_bin_bytes"].sum(axis=1), coarse["link_tx_bytes"])
    # Coarse bins are sums of fine bins.
    group = int(round(coarse["bin_s"] / fine["bin_s"]))
    padded = np.zeros((8, n_bins * group), np.int64)
    padded[:, :fine["link_bin_bytes"].shape[1]] = fine["link_bin_bytes"]
    assert np.array_equal(padded.reshape(8, n_bins, group).sum(axis=2), coarse["link_bin_bytes"])
    one = star_all_to_all(4, max_bins=1)
    assert one["link_bin_bytes"].shape == (8, 1)


def test_repeatable_in_one_process():
    a, b = incast(3, xoff=20_000, xon=10_000), incast(3, xoff=20_000, xon=10_000)
    for key in a:
        if key != "wall_s":
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key


def test_progress_exception_stops_and_is_reraised():
    calls = []

    def progress(n_finished, sim_time):
        calls.append((n_finished, sim_time))
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        star_all_to_all(48, progress=progress)
    assert len(calls) == 1 and calls[0][1] > 0
    # The simulator was torn down: a new run gives the closed form again.
    assert star_all_to_all(4)["end_time_s"] == pytest.approx(65.027e-6, rel=1e-4)


# --------------------------------------------------------------------------------------
# Validation: bad input raises ValueError before ns-3 sees it
# --------------------------------------------------------------------------------------

def i32(*v):
    return np.array(v, np.int32)


def i64(*v):
    return np.array(v, np.int64)


BAD_INPUTS = [
    (dict(n_nodes=0), "n_nodes"),
    (dict(link_node_b=i32(1, 0)), r"link_node_b: expected length 1"),
    (dict(link_node_a=i32(5)), r"link_node_a\[0\] = 5 is out of range"),
    (dict(link_node_a=i64(2**40)), r"link_node_a\[0\] = .* does not fit in int32"),
    (dict(link_node_b=i32(0)), "link 0 connects node 0 to itself"),
    (dict(link_rate_bps=np.array([0.0])), r"link_rate_bps\[0\]"),
    (dict(link_rate_bps=np.array([np.nan])), r"link_rate_bps\[0\]"),
    (dict(link_rate_bps=np.array([np.inf])), r"link_rate_bps\[0\]"),
    (dict(link_delay_s=np.array([-1e-9])), r"link_delay_s\[0\]"),
    (dict(link_delay_s=np.array([np.nan])), r"link_delay_s\[0\]"),
    (dict(link_node_a=np.array([0.0])), "link_node_a: expected an integer array"),
    (dict(link_node_a=np.zeros((1, 1), np.int32)), "link_node_a: expected a 1-D array"),
    (dict(flow_src=i32(2)), r"flow_src\[0\] = 2 is out of range"),
    (dict(flow_dst=i32(-1)), r"flow_dst\[0\] = -1 is out of range"),
    (dict(flow_bytes=i64(-5)), r"flow_bytes\[0\] = -5 is negative"),
    (dict(flow_dst=i32(0)), "flow 0: src == dst"),
    (dict(flow_earliest_start_s=np.array([-1.0])), r"flow_earliest_start_s\[0\]"),
    (dict(flow_earliest_start_s=np.array([np.inf])), r"flow_earliest_start_s\[0\]"),
    (dict(flow_payload_per_packet=i32(0)), r"flow_payload_per_packet\[0\] = 0"),
    (dict(flow_payload_per_packet=i32(65534)), r"flow_payload_per_packet\[0\] = 65534"),
    (dict(flow_bytes=i64(1, 2)), "flow_bytes: expected length 1"),
    (dict(header_bytes=1), "header_bytes = 1"),
    (dict(header_bytes=1025), "header_bytes = 1025"),
    (dict(route_offsets=i64(0)), "route_offsets: expected length 2"),
    (dict(route_offsets=i64(1, 1)), r"route_offsets\[0\] = 1, expected 0"),
    (dict(route_offsets=i64(0, 2)), r"route_offsets\[1\] = 2, expected len\(route_links\) = 1"),
    (dict(route_links=i32(2)), r"route_links\[0\] = 2 is out of range"),
    (dict(route_links=i32(1)), "route of flow 0: link 1 starts at node 1, expected node 0"),
    (dict(route_offsets=i64(0, 0), route_links=i32()), "route of flow 0 is empty"),
    (dict(route_offsets=i64(0, 2), route_links=i32(0, 1)), "route of flow 0: ends at node 0"),
    (dict(dep_offsets=i64(0, 1), dep_flows=i32(3)), r"dep_flows\[0\] .* out of range"),
    (dict(dep_offsets=i64(0, 1), dep_flows=i32(0)), "flow 0 depends on itself"),
    (dict(dep_offsets=i64(0, 1, 0), dep_flows=i32(0)), r"dep_offsets: expected length 2"),
    (dict(pfc_xoff_bytes=100, pfc_xon_bytes=100), "pfc_xoff_bytes = 100"),
    (dict(pfc_xon_bytes=-1), "pfc_xon_bytes = -1"),
    (dict(max_bins=0), "max_bins = 0"),
    (dict(link_rate_bps=np.array([1.0]), flow_bytes=i64(10**12)), "workload too long"),
    (dict(progress=42), "progress"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
def test_bad_input_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        pe.run(**make_args(**overrides))


def test_dependency_cycle_and_repeated_link_rejected():
    three = dict(
        flow_src=i32(0, 0, 0), flow_dst=i32(1, 1, 1), flow_bytes=i64(1, 1, 1),
        flow_earliest_start_s=np.zeros(3), flow_payload_per_packet=i32(10, 10, 10),
        route_offsets=i64(0, 1, 2, 3), route_links=i32(0, 0, 0))
    # 0 <- 1 <- 2 <- 1 : flows 1 and 2 form a cycle.
    with pytest.raises(ValueError, match="not a DAG; flow [12] is on a dependency cycle"):
        pe.run(**make_args(**three, dep_offsets=i64(0, 1, 2, 3), dep_flows=i32(1, 2, 1)))
    # A route that uses the same directed link twice (0 -> 1 -> 0 -> 1).
    with pytest.raises(ValueError, match="directed link 0 is used more than once"):
        pe.run(**make_args(route_offsets=i64(0, 3), route_links=i32(0, 1, 0)))
    # Still usable afterwards.
    assert pe.run(**make_args())["hop_packets"] == 3
