"""What a network simulation returns: per-flow times and per-directed-link counters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from cosim.network.flows import FlowSet, RoutedFlows
from cosim.topology import Topology


@dataclass
class LinkCounters:
    """Counters of every directed link (index = directed link id, see :class:`~cosim.topology.Topology`).

    Attributes:
        tx_bytes: wire bytes sent (payload + headers).
        tx_packets: frames sent.
        busy_s: time spent serializing, ``tx_bytes * 8 / bandwidth``.
        peak_queue_bytes: peak bytes waiting at the sending port (packet backend; NaN for ``flow``).
        pause_count / paused_s: PFC pauses of the sending port and their total duration (packet backend).
        bin_s / bin_bytes: time series, wire bytes per bin of width ``bin_s`` (shape links x bins).
    """

    tx_bytes: np.ndarray
    tx_packets: np.ndarray
    busy_s: np.ndarray
    peak_queue_bytes: np.ndarray
    pause_count: np.ndarray
    paused_s: np.ndarray
    bin_s: float
    bin_bytes: np.ndarray
    bandwidth_bps: np.ndarray

    def mean_utilization(self, window_s: float) -> np.ndarray:
        """Fraction of ``window_s`` each link spent sending."""
        return self.busy_s / window_s if window_s > 0 else np.zeros_like(self.busy_s)

    def utilization_series(self, end_time_s: float) -> np.ndarray:
        """Per-bin utilization (links x bins); the last bin is normalized by its covered part."""
        n_bins = self.bin_bytes.shape[1]
        if n_bins == 0:
            return np.zeros_like(self.bin_bytes, dtype=np.float64)
        width = np.full(n_bins, self.bin_s)
        width[-1] = max(min(self.bin_s, end_time_s - self.bin_s * (n_bins - 1)), self.bin_s * 1e-3)
        return self.bin_bytes * 8.0 / (self.bandwidth_bps[:, None] * width[None, :])

    def peak_utilization(self, end_time_s: float) -> np.ndarray:
        """Highest per-bin utilization of each link (capped at 1: bins are sampled at tx start)."""
        series = self.utilization_series(end_time_s)
        return np.minimum(series.max(axis=1), 1.0) if series.shape[1] else np.zeros(len(self.tx_bytes))


@dataclass
class NetworkResult:
    """Outcome of :func:`cosim.network.simulate`.

    Attributes:
        backend: ``packet`` or ``flow``.
        flow_start_s / flow_finish_s: per flow (finish = last byte received).
        links: per-directed-link counters.
        wall_s: wall-clock time of the simulation itself.
        stats: backend-specific figures (``hop_packets``, ``events``, ``rate_updates`` ...).
    """

    backend: str
    topology: Topology
    flows: FlowSet
    routed: RoutedFlows
    flow_start_s: np.ndarray
    flow_finish_s: np.ndarray
    links: LinkCounters
    wall_s: float
    stats: dict = field(default_factory=dict)

    @property
    def completion_time_s(self) -> float:
        """Time the last flow finished (0 for an empty flow set)."""
        return float(self.flow_finish_s.max()) if len(self.flow_finish_s) else 0.0

    def finish_s(self, flow_indices) -> float:
        """Latest finish time among ``flow_indices``."""
        if isinstance(flow_indices, range):  # collectives added as one block
            idx = np.arange(flow_indices.start, flow_indices.stop, flow_indices.step, dtype=np.int64)
        else:
            idx = np.asarray(list(flow_indices), dtype=np.int64)
        return float(self.flow_finish_s[idx].max()) if len(idx) else 0.0

    def link_table(self) -> pa.Table:
        """All directed links with their counters and utilization time series, as an Arrow table."""
        topo = self.topology
        end = self.completion_time_s
        n = topo.num_directed_links
        ends = [topo.directed_endpoints(d) for d in range(n)]
        series = self.links.utilization_series(end)
        return pa.table({
            "link_id": np.arange(n, dtype=np.int32),
            "src": [topo.nodes[u].name for u, _ in ends],
            "dst": [topo.nodes[v].name for _, v in ends],
            "tier": [topo.links[d // 2].tier for d in range(n)],
            "bandwidth_gbps": self.links.bandwidth_bps / 1e9,
            "tx_bytes": self.links.tx_bytes,
            "tx_packets": self.links.tx_packets,
            "busy_s": self.links.busy_s,
            "mean_utilization": self.links.mean_utilization(end),
            "peak_utilization": self.links.peak_utilization(end),
            "peak_queue_bytes": self.links.peak_queue_bytes,
            "pause_count": self.links.pause_count,
            "paused_s": self.links.paused_s,
            "utilization_series": pa.array([row for row in series], type=pa.list_(pa.float64())),
        }).replace_schema_metadata({
            "backend": self.backend, "topology": topo.name, "bin_s": repr(self.links.bin_s),
            "completion_time_s": repr(end), "wall_s": repr(self.wall_s),
        })

    def flow_table(self) -> pa.Table:
        """Per-flow rows: endpoints, size, tag, hops, start and finish."""
        r = self.routed
        return pa.table({
            "flow": np.arange(r.num_flows, dtype=np.int32),
            "src": np.asarray(self.flows.src, dtype=np.int32),
            "dst": np.asarray(self.flows.dst, dtype=np.int32),
            "size_bytes": r.size_bytes,
            "tag": self.flows.tags,
            "hops": np.diff(r.route_offsets).astype(np.int32),
            "start_s": self.flow_start_s,
            "finish_s": self.flow_finish_s,
        })


class AdaptiveBins:
    """Per-link byte counts in time bins whose width doubles when ``max_bins`` would be exceeded.

    Mirrors the binning of the packet engine so both backends report comparable series.
    """

    def __init__(self, num_links: int, max_bins: int, initial_bin_s: float = 1e-6):
        self.bin_s = initial_bin_s
        self.max_bins = max_bins
        self.bins = np.zeros((num_links, 0))

    def _ensure(self, t_end: float) -> None:
        needed = int(np.ceil(t_end / self.bin_s - 1e-9))
        while needed > self.max_bins:
            cols = self.bins.shape[1]
            if cols % 2:
                self.bins = np.hstack([self.bins, np.zeros((self.bins.shape[0], 1))])
            self.bins = self.bins[:, 0::2] + self.bins[:, 1::2]
            self.bin_s *= 2
            needed = int(np.ceil(t_end / self.bin_s - 1e-9))
        if needed > self.bins.shape[1]:
            self.bins = np.hstack([self.bins, np.zeros((self.bins.shape[0], needed - self.bins.shape[1]))])

    def add(self, t0: float, t1: float, rate_bytes_per_s: np.ndarray) -> None:
        """Add bytes sent at constant per-link rates during [t0, t1)."""
        if t1 <= t0:
            return
        self._ensure(t1)
        b0 = int(t0 // self.bin_s)
        b1 = min(int(np.ceil(t1 / self.bin_s - 1e-9)), self.bins.shape[1])
        edges = np.arange(b0, b1 + 1) * self.bin_s
        overlap = np.minimum(edges[1:], t1) - np.maximum(edges[:-1], t0)
        self.bins[:, b0:b1] += rate_bytes_per_s[:, None] * np.clip(overlap, 0, None)[None, :]
