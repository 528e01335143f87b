"""Flow-level backend: max-min fair sharing of link bandwidth, recomputed at every flow arrival
and departure, over the same routes the packet backend uses.

Each flow is a fluid that drains at its max-min fair rate; it is received ``path latency`` after
its last byte left the source, where the path latency is the propagation delay plus the
store-and-forward delay of one frame on every hop but the bottleneck (whose serialization the
fluid already counts). For a single flow this equals the packet backend's pipeline exactly.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from cosim.network.flows import FlowSet, RoutedFlows
from cosim.network.results import AdaptiveBins, LinkCounters, NetworkResult
from cosim.topology import Topology

_REL_EPS = 1e-9


def max_min_rates(flow_of_entry: np.ndarray, link_of_entry: np.ndarray, num_flows: int,
                  capacity_Bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates by progressive filling.

    ``flow_of_entry[k]`` and ``link_of_entry[k]`` list the (flow, link) incidences of the active
    flows (flows numbered 0..num_flows-1, links index ``capacity_Bps``). Returns bytes/s per flow.
    """
    rate = np.zeros(num_flows)
    frozen = np.zeros(num_flows, dtype=bool)
    remaining = capacity_Bps.astype(np.float64).copy()
    while True:
        live = ~frozen[flow_of_entry]
        if not live.any():
            return rate
        count = np.bincount(link_of_entry[live], minlength=len(remaining))
        loaded = count > 0
        share = np.full(len(remaining), np.inf)
        share[loaded] = remaining[loaded] / count[loaded]
        level = share.min()
        rate[~frozen] += level
        remaining -= level * count
        saturated = loaded & (remaining <= capacity_Bps * _REL_EPS + 1e-12)
        saturated |= loaded & (share <= level * (1 + _REL_EPS))
        newly = np.unique(flow_of_entry[live & saturated[link_of_entry]])
        frozen[newly] = True


def _path_latency_s(topology: Topology, routed: RoutedFlows) -> np.ndarray:
    """Propagation plus store-and-forward of the first frame on every hop except the slowest."""
    n = routed.num_flows
    latency = np.zeros(n)
    if not len(routed.route_links):
        return latency
    links = routed.route_links // 2
    prop = np.array([l.latency_s for l in topology.links])[links]
    bw = np.array([l.bandwidth_bps for l in topology.links])[links]
    flow_of_hop = np.repeat(np.arange(n), np.diff(routed.route_offsets))
    frame_bits = (np.minimum(routed.payload_per_packet, routed.size_bytes) + routed.header_bytes) * 8.0
    ser = frame_bits[flow_of_hop] / bw
    np.add.at(latency, flow_of_hop, prop + ser)
    has = np.diff(routed.route_offsets) > 0
    slowest = np.zeros(n)
    slowest[has] = np.maximum.reduceat(ser, routed.route_offsets[:-1][has])
    return latency - slowest


def simulate_flow_level(topology: Topology, flows: FlowSet, routed: RoutedFlows, *,
                        max_bins: int = 2048, progress=None) -> NetworkResult:
    """Run ``routed`` with max-min fair sharing; see the module docstring for the model."""
    wall0 = time.perf_counter()
    n = routed.num_flows
    num_links = topology.num_directed_links
    bw_bps = np.repeat([l.bandwidth_bps for l in topology.links], 2)
    used_links, compact = np.unique(routed.route_links, return_inverse=True)
    capacity = bw_bps[used_links] / 8.0
    hops = np.diff(routed.route_offsets)
    latency = _path_latency_s(topology, routed)
    remaining = routed.wire_bytes.astype(np.float64)

    # Dependency bookkeeping: dependents on a flow's receipt, and on its last byte being sent.
    waiting = np.diff(routed.dep_offsets).copy()
    dependents: list[list[int]] = [[] for _ in range(n)]
    sent_dependents: list[list[int]] = [[] for _ in range(n)]
    for f in range(n):
        for d in routed.dep_flows[routed.dep_offsets[f]:routed.dep_offsets[f + 1]]:
            if d >= 0:
                dependents[d].append(f)
            else:
                sent_dependents[-d - 1].append(f)
    ready_at = routed.earliest_start_s.copy()
    start = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    arrivals: list[tuple[float, int]] = [(ready_at[f], f) for f in range(n) if waiting[f] == 0]
    heapq.heapify(arrivals)

    bins = AdaptiveBins(len(used_links), max_bins)
    active: list[int] = []
    rates = np.zeros(0)
    entries_flow = entries_link = np.zeros(0, dtype=np.int64)
    dirty = True
    t = 0.0
    done = 0
    rate_updates = 0

    def release(waiters: list[int], when: float) -> None:
        for g in waiters:
            ready_at[g] = max(ready_at[g], when)
            waiting[g] -= 1
            if waiting[g] == 0:
                heapq.heappush(arrivals, (ready_at[g], g))

    def complete(f: int, sent: float, received: float) -> None:
        nonlocal done
        finish[f] = received
        done += 1
        release(sent_dependents[f], sent)
        release(dependents[f], received)

    while arrivals or active:
        # Admit every flow whose start time has come.
        while arrivals and arrivals[0][0] <= t * (1 + _REL_EPS) + 1e-18:
            when, f = heapq.heappop(arrivals)
            start[f] = when
            if routed.size_bytes[f] == 0:
                complete(f, when, when)
            else:
                active.append(f)
                dirty = True
        if not active:
            if arrivals:
                t = arrivals[0][0]
            continue
        if dirty:
            act = np.asarray(active, dtype=np.int64)
            lengths = hops[act]
            entries_flow = np.repeat(np.arange(len(act)), lengths)
            starts = routed.route_offsets[act]
            entries_link = compact[np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]
            rates = max_min_rates(entries_flow, entries_link, len(act), capacity)
            link_rate = np.bincount(entries_link, weights=rates[entries_flow], minlength=len(used_links))
            rate_updates += 1
            dirty = False
        act = np.asarray(active, dtype=np.int64)
        time_left = remaining[act] / rates
        dt = time_left.min()
        if arrivals:
            dt = min(dt, arrivals[0][0] - t)
        bins.add(t, t + dt, link_rate)
        remaining[act] -= rates * dt
        t += dt
        finished = time_left <= dt * (1 + _REL_EPS) + 1e-15
        if finished.any():
            still = []
            for k, f in enumerate(active):
                if finished[k]:
                    remaining[f] = 0.0
                    complete(f, t, t + latency[f])
                else:
                    still.append(f)
            active = still
            dirty = True
            if progress is not None:
                progress(done, t)

    # Counters on all directed links.
    flow_of_hop = np.repeat(np.arange(n), hops)
    tx_bytes = np.bincount(routed.route_links, weights=routed.wire_bytes[flow_of_hop], minlength=num_links)
    tx_packets = np.bincount(routed.route_links, weights=routed.num_packets[flow_of_hop], minlength=num_links)
    bin_bytes = np.zeros((num_links, bins.bins.shape[1]))
    bin_bytes[used_links] = bins.bins
    counters = LinkCounters(
        tx_bytes=tx_bytes.astype(np.int64), tx_packets=tx_packets.astype(np.int64),
        busy_s=tx_bytes * 8.0 / bw_bps, peak_queue_bytes=np.full(num_links, np.nan),
        pause_count=np.zeros(num_links, dtype=np.int64), paused_s=np.zeros(num_links),
        bin_s=bins.bin_s, bin_bytes=bin_bytes, bandwidth_bps=bw_bps,
    )
    return NetworkResult("flow", topology, flows, routed, start, finish, counters,
                         time.perf_counter() - wall0, {"rate_updates": rate_updates})
