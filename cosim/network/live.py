"""A live flow-level network: transfers start at times decided by a caller (the serving
simulation's P->D KV-cache moves) and share links max-min fairly while they are in flight.

The batch API (:func:`cosim.network.simulate`) needs every flow up front; a discrete-event
simulator only learns about a transfer when a prefill ends. :class:`LiveNetwork` keeps the flow
backend's state between calls instead, with the flow backend's model unchanged:

- routes come from the topology's :class:`~cosim.topology.Router` (ECMP by path key; a transfer
  over ``channels`` queue pairs is split like :func:`~cosim.network.collectives.point_to_point`),
  and packetization from :func:`~cosim.network.flows.route_flows` (wire bytes = payload plus one
  header per packet of the route's smallest MTU), computed from per-route constants cached on
  the first transfer of a (source, destination, path key): the same numbers, without building
  a flow set per transfer;
- rates are max-min fair over the directed link bandwidths, solved by the compiled solver (numpy
  fallback) of :mod:`cosim.network.flow_backend` whenever a flow starts, drains or is cancelled;
  only the flows connected to the change through shared links are re-solved (max-min rates
  decompose exactly over connected components, so the rates are the same as a full solve);
- a flow frees its links when its last byte has left (drained), and is received one *path
  latency* later (propagation plus store-and-forward of one frame on every hop but the slowest,
  the flow backend's ``_path_latency_s``); a transfer completes when its last channel is
  received; a 0-byte transfer completes when it starts.

A caller drives it like this::

    net = LiveNetwork(topology)
    tid = net.start(src_gpu, dst_gpu, size_bytes, now_s, tag="req-17")
    ...
    t = net.next_event_s()          # wake the network then (inf: nothing in flight)
    for c in net.advance(t):        # Completion records, in finish order, maybe none
        ...

``next_event_s`` is the earliest time the network's state changes: a flow draining (rates are
re-solved) or a transfer completing. No completion can happen before it, so a simulator that
wakes the network at that time never sees a completion late; advancing to it may return no
completion (only a re-solve). Call ``advance(now)`` before ``start(..., now)`` so completions up
to ``now`` are handed out in time (``start`` advances the network itself, and keeps what
completed for the next ``advance``).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from cosim.errors import FlowError
from cosim.network.flow_backend import _REL_EPS, max_min_rates
from cosim.network.results import AdaptiveBins, LinkCounters
from cosim.topology import Router, Topology

#: Full re-solves after a component search found most flows connected, before searching again.
_SKIP_SEARCH = 16

#: Largest transfer accepted: byte counts are float64 in the rate model and stay exact below it.
MAX_TRANSFER_BYTES = 1 << 53


@dataclass(frozen=True)
class Completion:
    """A transfer received in full: ``finish_s`` is when its last byte arrived at ``dst``."""

    id: int
    tag: str
    src: int
    dst: int
    size_bytes: int
    start_s: float
    finish_s: float

    @property
    def duration_s(self) -> float:
        return self.finish_s - self.start_s


@dataclass
class _Transfer:
    tag: str
    src: int
    dst: int
    size_bytes: int
    start_s: float
    flows: list[int]          # flow ids of its channels
    pending: int              # channels not drained yet
    finish_s: float = -math.inf  # latest receive time of its drained channels
    landed: bool = False      # all channels drained; (finish_s, id) is in the landing heap


@dataclass
class _Flow:
    transfer: int
    route: np.ndarray         # directed link ids
    wire_bytes: int
    packets: int
    payload_bytes: int
    latency_s: float


class LiveNetwork:
    """Flow-level network state that transfers enter and leave at arbitrary times.

    Args:
        topology: the cluster.
        router: routes to use (default: a new :class:`~cosim.topology.Router`; pass the one the
            rest of the simulation uses to share its route cache).
        latency: add the path latency to every finish time, as the flow backend does (``False``:
            a transfer is complete when its last byte has left the network).
        series: keep a per-link time series of bytes (``link_counters().bin_bytes``, adaptive bins
            as in the flow backend; costs time at every event).
        max_bins: bound of that series.
        incremental: re-solve only the flows connected to a change through shared links (the
            same rates as re-solving all; ``False`` re-solves every active flow). When a change's
            component holds most active flows, the next re-solves skip the search and solve all.

    Attributes and properties of note: ``now_s`` (the network's time), ``in_flight`` (transfers
    started, neither completed nor cancelled), ``link_tx_bytes`` / ``link_tx_packets`` /
    ``link_payload_bytes`` / ``link_busy_s`` (per directed link; bytes are counted when they are
    sent: a flow's when it drains, a cancelled flow's sent part when it is cancelled), ``stats``.
    """

    def __init__(self, topology: Topology, router: Router | None = None, *, latency: bool = True,
                 series: bool = False, max_bins: int = 2048, incremental: bool = True):
        self.topology = topology
        self.router = router or Router(topology)
        self.latency = bool(latency)
        num_links = topology.num_directed_links
        self._bw_bps = topology.directed_bandwidth_bps
        self._capacity = self._bw_bps / 8.0
        self._t = 0.0
        self._next_id = 0
        self._next_flow = 0
        self._transfers: dict[int, _Transfer] = {}
        self._flows: dict[int, _Flow] = {}
        self._landing: list[tuple[float, int]] = []   # (finish_s, transfer id)
        # Active (draining) flows: parallel arrays, and their (flow position, link) incidences.
        self._act = np.zeros(0, dtype=np.int64)
        self._rem = np.zeros(0)
        self._rate = np.zeros(0)
        self._e_flow = np.zeros(0, dtype=np.int64)
        self._e_link = np.zeros(0, dtype=np.int64)
        self._touched = np.zeros(num_links, dtype=bool)  # links whose flows changed since the last solve
        self._dirty = False
        self.incremental = bool(incremental)
        self._skip_search = 0
        self._link_rate = np.zeros(num_links)
        self._route_cache: dict[tuple[int, int, int], tuple] = {}
        self._tx_bytes = np.zeros(num_links, dtype=np.int64)
        self._tx_packets = np.zeros(num_links, dtype=np.int64)
        self._payload = np.zeros(num_links, dtype=np.int64)
        self._bins = AdaptiveBins(num_links, max_bins) if series else None
        self._stats = {"transfers": 0, "completed": 0, "cancelled": 0, "events": 0,
                       "re_solves": 0, "solved_flows": 0, "solve_wall_s": 0.0, "wall_s": 0.0}

    # ------------------------------------------------------------------ queries

    @property
    def now_s(self) -> float:
        """The network's time: everything before it has been simulated."""
        return self._t

    @property
    def in_flight(self) -> int:
        """Transfers started and neither completed (handed out by :meth:`advance`) nor cancelled."""
        return len(self._transfers)

    def in_flight_ids(self) -> list[int]:
        return sorted(self._transfers)

    @property
    def active_flows(self) -> int:
        """Flows (channels) still draining, i.e. holding bandwidth."""
        return len(self._act)

    def rate_Bps(self, transfer_id: int) -> float:
        """Current total rate (bytes/s) of a transfer's draining channels (0 once all drained)."""
        tr = self._get(transfer_id)
        self._solve()
        return float(self._rate[np.isin(self._act, tr.flows)].sum())

    @property
    def link_tx_bytes(self) -> np.ndarray:
        """Wire bytes (payload + headers) sent on every directed link so far."""
        return self._tx_bytes.copy()

    @property
    def link_tx_packets(self) -> np.ndarray:
        return self._tx_packets.copy()

    @property
    def link_payload_bytes(self) -> np.ndarray:
        """Payload bytes (transfer sizes, no headers) sent on every directed link so far."""
        return self._payload.copy()

    @property
    def link_busy_s(self) -> np.ndarray:
        """Time every directed link spent sending, ``tx_bytes * 8 / bandwidth``."""
        return self._tx_bytes * 8.0 / self._bw_bps

    def link_counters(self) -> LinkCounters:
        """The counters as a :class:`~cosim.network.results.LinkCounters` (utilization over a run:
        ``mean_utilization(window_s)``; the time series only with ``series=True``)."""
        n = self.topology.num_directed_links
        bins = self._bins.bins.copy() if self._bins is not None else np.zeros((n, 0))
        return LinkCounters(
            tx_bytes=self._tx_bytes.copy(), tx_packets=self._tx_packets.copy(), busy_s=self.link_busy_s,
            peak_queue_bytes=np.full(n, np.nan), pause_count=np.zeros(n, dtype=np.int64),
            paused_s=np.zeros(n), bin_s=self._bins.bin_s if self._bins is not None else 0.0,
            bin_bytes=bins, bandwidth_bps=self._bw_bps)

    @property
    def stats(self) -> dict:
        """Counts and wall times: ``transfers``, ``completed``, ``cancelled``, ``events`` (drain
        steps), ``re_solves``, ``solved_flows`` (summed over re-solves), ``solve_wall_s``, ``wall_s``
        (inside this object's methods)."""
        return dict(self._stats)

    def next_event_s(self) -> float:
        """Earliest time the state changes given current rates: a flow draining or a transfer
        completing (inf when nothing is in flight). No completion happens before it."""
        wall0 = time.perf_counter()
        self._solve()
        t = self._t + float((self._rem / self._rate).min()) if len(self._act) else math.inf
        land = self._peek_landing()
        self._stats["wall_s"] += time.perf_counter() - wall0
        return min(t, land)

    # ------------------------------------------------------------------ changes

    def start(self, src_gpu: int, dst_gpu: int, size_bytes: int, now_s: float, *, tag: str = "",
              channels: int = 1) -> int:
        """Start moving ``size_bytes`` from ``src_gpu`` to ``dst_gpu`` at ``now_s``; return its id.

        ``channels > 1`` splits it over that many queue pairs (path keys 0..channels-1, which ECMP
        may hash onto different paths), as :func:`~cosim.network.collectives.point_to_point`.
        """
        wall0 = time.perf_counter()
        g = self.topology.num_gpus
        for name, gpu in (("src_gpu", src_gpu), ("dst_gpu", dst_gpu)):
            if isinstance(gpu, bool) or not isinstance(gpu, Integral) or not 0 <= gpu < g:
                raise FlowError(f"LiveNetwork.start: {name} {gpu!r} does not exist; topology "
                                f"{self.topology.name!r} has GPUs 0..{g - 1}")
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, Integral) or not 0 <= size_bytes <= MAX_TRANSFER_BYTES:
            raise FlowError(f"LiveNetwork.start: size_bytes must be an integer in 0..2**53, got {size_bytes!r}")
        if isinstance(channels, bool) or not isinstance(channels, Integral) or channels < 1:
            raise FlowError(f"LiveNetwork.start: channels must be an integer >= 1, got {channels!r}")
        self._check_time(now_s, "start")
        if src_gpu == dst_gpu and size_bytes > 0:
            raise FlowError(f"LiveNetwork.start: src and dst are both GPU {src_gpu}; "
                            "only 0-byte transfers may do that")
        self._run(float(now_s), None)
        tid = self._next_id
        self._next_id += 1
        tr = _Transfer(str(tag), int(src_gpu), int(dst_gpu), int(size_bytes), float(now_s), [], 0)
        self._transfers[tid] = tr
        self._stats["transfers"] += 1
        if size_bytes == 0:  # as the flow backend: a 0-byte flow finishes when it starts
            tr.finish_s, tr.landed = tr.start_s, True
            heapq.heappush(self._landing, (tr.start_s, tid))
        else:
            parts = self._routed_parts(tr.src, tr.dst, tr.size_bytes, int(channels))
            k_flows = len(parts)
            first = self._next_flow
            self._next_flow += k_flows
            for k, (route, wire, packets, payload, lat) in enumerate(parts):
                self._flows[first + k] = _Flow(tid, route, wire, packets, payload, lat if self.latency else 0.0)
            tr.flows = list(range(first, first + k_flows))
            tr.pending = k_flows
            links = np.concatenate([p[0] for p in parts])
            offsets = np.cumsum([0] + [len(p[0]) for p in parts])
            self._touched[links] = True
            self._dirty = True
            self._e_link = np.concatenate([self._e_link, links])
            self._e_flow = np.concatenate([self._e_flow, len(self._act) + np.repeat(
                np.arange(k_flows), np.diff(offsets))])
            self._act = np.concatenate([self._act, np.arange(first, first + k_flows)])
            self._rem = np.concatenate([self._rem, np.array([float(p[1]) for p in parts])])
            self._rate = np.concatenate([self._rate, np.zeros(k_flows)])
        self._stats["wall_s"] += time.perf_counter() - wall0
        return tid

    def _routed_parts(self, src: int, dst: int, size: int, channels: int) -> list[tuple]:
        """The flows of one transfer, exactly as ``route_flows`` of a
        :func:`~cosim.network.collectives.point_to_point` would make them (the same routes,
        packetization and path latency as the flow backend), from cached per-route constants:
        ``(route links, wire bytes, packets, payload bytes, path latency)`` per channel."""
        out = []
        header = self.topology.transport.header_bytes
        base, extra = divmod(size, channels)
        for c in range(channels):
            part = base + (1 if c < extra else 0)
            if not part and c:
                continue
            key = (src, dst, c)
            hit = self._route_cache.get(key)
            if hit is None:
                links = np.asarray(self.router.route(src, dst, c), dtype=np.int64)
                und = links // 2
                mtu = int(self.topology.link_mtu_bytes[und].min()) if len(links) else int(
                    self.topology.link_mtu_bytes.max())
                hit = (links, mtu, float(self.topology.link_latency_s[und].sum()),
                       self.topology.link_bandwidth_bps[und])
                self._route_cache[key] = hit
            links, mtu, prop, bw = hit
            packets = -(-part // mtu)
            if len(links):
                ser = (min(mtu, part) + header) * 8.0 / bw
                lat = prop + float(ser.sum()) - float(ser.max())
            else:
                lat = 0.0
            out.append((links, part + packets * header, packets, part, lat))
        return out

    def advance(self, to_s: float) -> list[Completion]:
        """Simulate up to ``to_s`` (``inf``: until nothing is in flight) and return the transfers
        received at or before it, in finish order (ties by id), with their exact finish times."""
        wall0 = time.perf_counter()
        self._check_time(to_s, "advance", allow_inf=True)
        out: list[tuple[float, int]] = []
        self._run(float(to_s), out)
        result = []
        for finish, tid in out:
            tr = self._transfers.pop(tid)
            for fid in tr.flows:
                del self._flows[fid]
            result.append(Completion(tid, tr.tag, tr.src, tr.dst, tr.size_bytes, tr.start_s, finish))
        self._stats["completed"] += len(result)
        self._stats["wall_s"] += time.perf_counter() - wall0
        return result

    def cancel(self, transfer_id: int, now_s: float | None = None) -> None:
        """Stop a transfer in flight (at ``now_s``, default the network's time); the bytes it
        already sent stay in the link counters."""
        wall0 = time.perf_counter()
        tr = self._get(transfer_id)
        if now_s is not None:
            self._check_time(now_s, "cancel")
            self._run(float(now_s), None)
        mask = np.isin(self._act, np.asarray(tr.flows, dtype=np.int64))
        if mask.any():
            for fid, rem in zip(self._act[mask].tolist(), self._rem[mask].tolist()):
                fl = self._flows[fid]
                sent = fl.wire_bytes - rem
                self._credit(fl, round(sent), round(fl.packets * sent / fl.wire_bytes),
                             round(fl.payload_bytes * sent / fl.wire_bytes))
            self._keep(~mask)
        for fid in tr.flows:
            del self._flows[fid]
        del self._transfers[transfer_id]
        self._stats["cancelled"] += 1
        self._stats["wall_s"] += time.perf_counter() - wall0

    # ------------------------------------------------------------------ internals

    def _get(self, transfer_id: int) -> _Transfer:
        tr = self._transfers.get(transfer_id)
        if tr is None:
            raise FlowError(f"LiveNetwork: transfer {transfer_id!r} is not in flight "
                            "(unknown, completed or cancelled)")
        return tr

    def _check_time(self, t, what: str, allow_inf: bool = False) -> None:
        if isinstance(t, bool) or not isinstance(t, Real) or math.isnan(t) or (math.isinf(t) and not (allow_inf and t > 0)):
            raise FlowError(f"LiveNetwork.{what}: time must be a finite number of seconds, got {t!r}")
        if t < self._t:
            raise FlowError(f"LiveNetwork.{what}: time goes backwards ({t!r} s < the network's "
                            f"time {self._t!r} s)")

    def _peek_landing(self) -> float:
        while self._landing and self._landing[0][1] not in self._transfers:
            heapq.heappop(self._landing)  # cancelled after landing
        return self._landing[0][0] if self._landing else math.inf

    def _keep(self, mask: np.ndarray) -> None:
        """Keep the active flows where ``mask`` is set; the others leave their links."""
        on_kept = mask[self._e_flow]
        self._touched[self._e_link[~on_kept]] = True
        self._dirty = True
        self._e_link = self._e_link[on_kept]
        self._e_flow = (np.cumsum(mask) - 1)[self._e_flow[on_kept]]
        self._act, self._rem, self._rate = self._act[mask], self._rem[mask], self._rate[mask]

    def _credit(self, fl: _Flow, wire: int, packets: int, payload: int) -> None:
        np.add.at(self._tx_bytes, fl.route, wire)
        np.add.at(self._tx_packets, fl.route, packets)
        np.add.at(self._payload, fl.route, payload)

    def _solve(self) -> None:
        """Re-solve the rates of the flows connected (through shared links) to a change.

        Max-min rates decompose over the connected components of the flow-link incidence graph,
        and the solver treats each component on its own, so the rates equal a full re-solve."""
        if not self._dirty:
            return
        wall0 = time.perf_counter()
        self._dirty = False
        e_flow, e_link, n = self._e_flow, self._e_link, len(self._act)
        component = None  # None: every active flow
        if self.incremental and n and self._skip_search:
            self._skip_search -= 1
        elif self.incremental and n:
            links = self._touched
            while True:  # grow the component: flows on marked links, then all their links
                flows = np.zeros(n, dtype=bool)
                flows[e_flow[links[e_link]]] = True
                grown = links.copy()
                grown[e_link[flows[e_flow]]] = True
                if np.array_equal(grown, links):
                    break
                links = grown
            if not flows.all():
                component = flows
            if flows.sum() > n // 2:  # components span most flows: full solves are cheaper for a while
                self._skip_search = _SKIP_SEARCH
        self._touched = np.zeros(len(self._touched), dtype=bool)
        if component is None:
            if n:
                self._rate = max_min_rates(e_flow, e_link, n, self._capacity)
            solved = n
        else:
            idx = np.nonzero(component)[0]
            solved = len(idx)
            if solved:
                on = component[e_flow]
                renumber = np.cumsum(component) - 1
                self._rate = self._rate.copy()
                self._rate[idx] = max_min_rates(renumber[e_flow[on]], e_link[on], solved, self._capacity)
        if self._bins is not None:
            self._link_rate = np.bincount(e_link, weights=self._rate[e_flow], minlength=len(self._link_rate))
        self._stats["re_solves"] += 1
        self._stats["solved_flows"] += solved
        self._stats["solve_wall_s"] += time.perf_counter() - wall0

    def _run(self, to_s: float, out: list | None) -> None:
        """Drain flows up to ``to_s``; with ``out``, pop the transfers received by then into it
        (in order: a landing is final once no drain can come before it)."""
        while True:
            self._solve()
            if len(self._act):
                time_left = self._rem / self._rate
                dmin = float(time_left.min())
                next_drain = self._t + dmin
            else:
                time_left, dmin, next_drain = None, math.inf, math.inf
            if out is not None:
                horizon = min(next_drain, to_s)
                while self._landing and self._peek_landing() <= horizon:
                    out.append(heapq.heappop(self._landing))
            if next_drain <= to_s:
                self._step(dmin, next_drain, time_left)
                continue
            if self._t < to_s:
                if time_left is None:
                    if math.isinf(to_s):
                        return
                    self._t = to_s
                    return
                if self._step(to_s - self._t, to_s, time_left):
                    continue  # a flow within rounding of draining drained: its receipt may be due
            return

    def _step(self, dt: float, t_end: float, time_left: np.ndarray) -> bool:
        """Drain every active flow at its rate for ``dt`` (the time becomes ``t_end``); retire
        those done (the flow backend's rounding rule). Returns whether any flow drained."""
        if self._bins is not None:
            self._bins.add(self._t, t_end, self._link_rate)
        self._rem -= self._rate * dt
        self._t = t_end
        finished = time_left <= dt * (1 + _REL_EPS) + 1e-15
        self._stats["events"] += 1
        if not finished.any():
            return False
        t = self._t
        for fid in self._act[finished].tolist():
            fl = self._flows[fid]
            self._credit(fl, fl.wire_bytes, fl.packets, fl.payload_bytes)
            tid = fl.transfer
            tr = self._transfers[tid]
            tr.pending -= 1
            tr.finish_s = max(tr.finish_s, t + fl.latency_s)
            if tr.pending == 0:
                tr.landed = True
                heapq.heappush(self._landing, (tr.finish_s, tid))
        self._keep(~finished)
        return True
