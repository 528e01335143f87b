"""Flow-level backend: max-min fair sharing of link bandwidth, recomputed at every flow arrival
and departure, over the same routes the packet backend uses.

Each flow is a fluid that drains at its max-min fair rate; it is received ``path latency`` after
its last byte left the source, where the path latency is the propagation delay plus the
store-and-forward delay of one frame on every hop but the bottleneck (whose serialization the
fluid already counts). For a single flow this equals the packet backend's pipeline exactly.

The event loop runs in compiled code (``cosim.network._flow_solver.simulate_flows``) and
re-solves rates incrementally. Water-filling below a level L0 is the same
before and after a flow starts or finishes when L0 is at most the finished flows' rates (no link
of their routes saturated below them) and at most every new flow's smallest fair share
capacity / flows over its links (no link of its route can saturate below that): the flows slower
than L0 keep their rates exactly, and only the others are re-solved, on the capacity the kept
flows leave. The rates are those of a full re-solve up to floating point (``rate_solver="full"``
re-solves every flow at every change; tests check both against the Python loop). Without the
compiled module the Python loop below (:func:`_simulate_python`, full re-solves) runs.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from cosim.errors import ConfigError, FlowError
from cosim.network.flows import FlowSet, RoutedFlows
from cosim.network.results import AdaptiveBins, LinkCounters, NetworkResult
from cosim.topology import Topology

_REL_EPS = 1e-9


try:  # the compiled solver (cosim.network._flow_solver); numpy fallback below
    from cosim.network._flow_solver import max_min_rates as _native_max_min_rates
except ImportError:  # pragma: no cover - a source tree without the built extension
    _native_max_min_rates = None
try:
    from cosim.network._flow_solver import simulate_flows as _native_simulate_flows
except ImportError:  # pragma: no cover - an extension built before the compiled event loop
    _native_simulate_flows = None

#: Rate solvers of :func:`simulate_flow_level`: incremental and full re-solves in the compiled
#: event loop, and the Python loop (full re-solves, the reference).
RATE_SOLVERS = ("incremental", "full", "python")
#: Initial width of the link time bins (they double as the run grows past ``max_bins``).
INITIAL_BIN_S = 1e-6


def native_solver_available() -> bool:
    """Whether the compiled max-min solver is importable."""
    return _native_max_min_rates is not None


def max_min_rates(flow_of_entry: np.ndarray, link_of_entry: np.ndarray, num_flows: int,
                  capacity_Bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates (bytes/s per flow).

    ``flow_of_entry[k]`` and ``link_of_entry[k]`` list the (flow, link) incidences of the active
    flows (flows numbered 0..num_flows-1, each on at least one link; links index
    ``capacity_Bps``). Uses the compiled bottleneck-order solver (``cosim.network._flow_solver``,
    O(E log L)) when it is built, else :func:`max_min_rates_numpy`; both give the same rates.
    """
    if _native_max_min_rates is not None:
        return _native_max_min_rates(flow_of_entry, link_of_entry, int(num_flows), capacity_Bps)
    return max_min_rates_numpy(flow_of_entry, link_of_entry, num_flows, capacity_Bps)


def max_min_rates_numpy(flow_of_entry: np.ndarray, link_of_entry: np.ndarray, num_flows: int,
                        capacity_Bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates by progressive filling, in numpy: each round raises every unfrozen flow
    by the smallest fair share left on a link, freezes the flows of the links that saturate, and
    drops their incidences, so rounds get cheaper."""
    rate = np.zeros(num_flows)
    live = np.ones(num_flows, dtype=bool)
    remaining = capacity_Bps.astype(np.float64).copy()
    floor = capacity_Bps * _REL_EPS + 1e-12
    num_links = len(remaining)
    fe, le = flow_of_entry, link_of_entry
    level = 0.0
    while fe.size:
        count = np.bincount(le, minlength=num_links)
        loaded = count > 0
        share = np.full(num_links, np.inf)
        share[loaded] = remaining[loaded] / count[loaded]
        step = share.min()
        level += step
        remaining -= step * count
        saturated = loaded & ((remaining <= floor) | (share <= step * (1 + _REL_EPS)))
        newly = fe[saturated[le]]
        rate[newly] = level
        live[newly] = False
        keep = live[fe]
        fe, le = fe[keep], le[keep]
    return rate


def _path_latency_s(topology: Topology, routed: RoutedFlows) -> np.ndarray:
    """Propagation plus store-and-forward of the first frame on every hop except the slowest."""
    n = routed.num_flows
    latency = np.zeros(n)
    if not len(routed.route_links):
        return latency
    links = routed.route_links // 2
    prop = topology.link_latency_s[links]
    bw = topology.link_bandwidth_bps[links]
    flow_of_hop = np.repeat(np.arange(n), np.diff(routed.route_offsets))
    frame_bits = (np.minimum(routed.payload_per_packet, routed.size_bytes) + routed.header_bytes) * 8.0
    ser = frame_bits[flow_of_hop] / bw
    np.add.at(latency, flow_of_hop, prop + ser)
    has = np.diff(routed.route_offsets) > 0
    slowest = np.zeros(n)
    slowest[has] = np.maximum.reduceat(ser, routed.route_offsets[:-1][has])
    return latency - slowest


def _check_times(finish_s: np.ndarray) -> None:
    """Finish times must be finite and non-negative: an overflow in the solver is an error, never a
    result (inputs within :mod:`cosim.limits` do not overflow)."""
    done = finish_s[~np.isnan(finish_s)]
    if len(done) and (not np.isfinite(done).all() or float(done.min()) < 0):
        raise FlowError(f"the flow backend produced an invalid finish time ({float(done.min()):g} s to "
                        f"{float(done.max()):g} s): sizes, bandwidths or latencies beyond cosim.limits")


def simulate_flow_level(topology: Topology, flows: FlowSet, routed: RoutedFlows, *,
                        max_bins: int = 2048, progress=None, rate_solver: str = "incremental",
                        time_tolerance: float = 0.0) -> NetworkResult:
    """Run ``routed`` with max-min fair sharing; see the module docstring for the model.

    ``rate_solver``: one of :data:`RATE_SOLVERS` (``incremental`` and ``full`` need the compiled
    module and fall back to ``python`` without it).

    ``time_tolerance`` (default 0: exact): opt-in approximation of the compiled loop. The flows
    whose projected drains fall within ``time_tolerance`` x the event time of the first one drain
    together (each at its own projected time) and the others' rates are re-solved once, at the
    last of them; finish times come out about ``time_tolerance`` (relative) late at most
    (docs/network.md, "Scale", has the measured error).
    """
    if rate_solver not in RATE_SOLVERS:
        raise ConfigError("<api>", "rate_solver", f"expected one of {', '.join(RATE_SOLVERS)}, got {rate_solver!r}")
    if not (isinstance(time_tolerance, (int, float)) and 0.0 <= time_tolerance < 1.0):
        raise ConfigError("<api>", "time_tolerance", f"expected a number in [0, 1), got {time_tolerance!r}")
    if time_tolerance and (rate_solver == "python" or _native_simulate_flows is None):
        raise ConfigError("<api>", "time_tolerance", "needs the compiled flow solver (rate_solver incremental or full)")
    if rate_solver == "python" or _native_simulate_flows is None:
        return _simulate_python(topology, flows, routed, max_bins=max_bins, progress=progress)
    wall0 = time.perf_counter()
    num_links = topology.num_directed_links
    bw_bps = topology.directed_bandwidth_bps
    out = _native_simulate_flows(
        routed.route_offsets, routed.route_links, bw_bps / 8.0, np.repeat(topology.link_latency_s, 2), bw_bps,
        routed.size_bytes, routed.wire_bytes, routed.num_packets, routed.payload_per_packet, int(routed.header_bytes),
        routed.earliest_start_s, routed.dep_offsets, routed.dep_flows, int(max_bins), INITIAL_BIN_S,
        rate_solver == "incremental", progress, time_tolerance=float(time_tolerance))
    _check_times(out["finish_s"])
    bins = out["bin_bytes"]
    bin_bytes = np.zeros((num_links, bins.shape[1]))
    bin_bytes[out["used_links"]] = bins
    tx_bytes = out["tx_bytes"]
    counters = LinkCounters(
        tx_bytes=tx_bytes, tx_packets=out["tx_packets"],
        busy_s=tx_bytes * 8.0 / bw_bps, peak_queue_bytes=np.full(num_links, np.nan),
        pause_count=np.zeros(num_links, dtype=np.int64), paused_s=np.zeros(num_links),
        bin_s=out["bin_s"], bin_bytes=bin_bytes, bandwidth_bps=bw_bps,
    )
    return NetworkResult("flow", topology, flows, routed, out["start_s"], out["finish_s"], counters,
                         time.perf_counter() - wall0, dict(out["stats"], rate_solver=rate_solver, time_tolerance=float(time_tolerance)))


def _simulate_python(topology: Topology, flows: FlowSet, routed: RoutedFlows, *,
                     max_bins: int = 2048, progress=None) -> NetworkResult:
    """The event loop in Python with a full max-min re-solve at every change (the reference of
    the compiled loop, and its fallback)."""
    wall0 = time.perf_counter()
    n = routed.num_flows
    num_links = topology.num_directed_links
    bw_bps = topology.directed_bandwidth_bps
    used_links, compact = np.unique(routed.route_links, return_inverse=True)
    capacity = bw_bps[used_links] / 8.0
    hops = np.diff(routed.route_offsets)
    latency = _path_latency_s(topology, routed)
    remaining = routed.wire_bytes.astype(np.float64)

    # Dependency bookkeeping (Python lists: touched one flow at a time): dependents on a flow's
    # receipt, and on its last byte being sent.
    waiting = np.diff(routed.dep_offsets).tolist()
    dependents: list[list[int]] = [[] for _ in range(n)]
    sent_dependents: list[list[int]] = [[] for _ in range(n)]
    owners = np.repeat(np.arange(n), np.diff(routed.dep_offsets)).tolist()
    for f, d in zip(owners, routed.dep_flows.tolist()):
        if d >= 0:
            dependents[d].append(f)
        else:
            sent_dependents[-d - 1].append(f)
    has_dependents = np.array([bool(a or b) for a, b in zip(dependents, sent_dependents)], dtype=bool)
    ready_at = routed.earliest_start_s.tolist()
    is_empty = (routed.size_bytes == 0).tolist()
    start = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    roots = [f for f in range(n) if waiting[f] == 0]
    arrivals: list[tuple[float, int]] = [(ready_at[f], f) for f in roots]
    heapq.heapify(arrivals)

    bins = AdaptiveBins(len(used_links), max_bins, INITIAL_BIN_S)
    active = np.zeros(0, dtype=np.int64)
    rates = link_rate = np.zeros(0)
    dirty = True
    t = 0.0
    done = 0
    rate_updates = 0

    def release(waiters: list[int], when: float) -> None:
        for g in waiters:
            if when > ready_at[g]:
                ready_at[g] = when
            waiting[g] -= 1
            if waiting[g] == 0:
                heapq.heappush(arrivals, (ready_at[g], g))

    while arrivals or len(active):
        # Admit every flow whose start time has come.
        admitted = []
        while arrivals and arrivals[0][0] <= t * (1 + _REL_EPS) + 1e-18:
            when, f = heapq.heappop(arrivals)
            start[f] = when
            if is_empty[f]:
                finish[f] = when
                done += 1
                release(sent_dependents[f], when)
                release(dependents[f], when)
            else:
                admitted.append(f)
        if admitted:
            active = np.concatenate([active, np.asarray(admitted, dtype=np.int64)])
            dirty = True
        if not len(active):
            if arrivals:
                t = arrivals[0][0]
            continue
        if dirty:
            lengths = hops[active]
            entries_flow = np.repeat(np.arange(len(active)), lengths)
            first = routed.route_offsets[active]
            entries_link = compact[np.repeat(first - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]
            rates = max_min_rates(entries_flow, entries_link, len(active), capacity)
            link_rate = np.bincount(entries_link, weights=rates[entries_flow], minlength=len(used_links))
            rate_updates += 1
            dirty = False
        time_left = remaining[active] / rates
        dt = time_left.min()
        if arrivals:
            dt = min(dt, arrivals[0][0] - t)
        bins.add(t, t + dt, link_rate)
        remaining[active] -= rates * dt
        t += dt
        finished = time_left <= dt * (1 + _REL_EPS) + 1e-15
        if finished.any():
            gone = active[finished]
            remaining[gone] = 0.0
            finish[gone] = t + latency[gone]
            done += len(gone)
            for f in gone[has_dependents[gone]].tolist():
                release(sent_dependents[f], t)
                release(dependents[f], float(finish[f]))
            active = active[~finished]
            dirty = True
            if progress is not None:
                progress(done, t)

    # Counters on all directed links.
    flow_of_hop = np.repeat(np.arange(n), hops)
    tx_bytes = np.bincount(routed.route_links, weights=routed.wire_bytes[flow_of_hop], minlength=num_links)
    tx_packets = np.bincount(routed.route_links, weights=routed.num_packets[flow_of_hop], minlength=num_links)
    _check_times(finish)
    bin_bytes = np.zeros((num_links, bins.bins.shape[1]))
    bin_bytes[used_links] = bins.bins
    counters = LinkCounters(
        tx_bytes=tx_bytes.astype(np.int64), tx_packets=tx_packets.astype(np.int64),
        busy_s=tx_bytes * 8.0 / bw_bps, peak_queue_bytes=np.full(num_links, np.nan),
        pause_count=np.zeros(num_links, dtype=np.int64), paused_s=np.zeros(num_links),
        bin_s=bins.bin_s, bin_bytes=bin_bytes, bandwidth_bps=bw_bps,
    )
    return NetworkResult("flow", topology, flows, routed, start, finish, counters,
                         time.perf_counter() - wall0, {"rate_updates": rate_updates, "rate_solver": "python"})
