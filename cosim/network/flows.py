"""Flows: the unit of traffic every collective is expressed in and every backend simulates.

A flow moves ``size_bytes`` from GPU ``src`` to GPU ``dst`` (ranks of the topology). It starts at
the latest of ``earliest_start_s``, the finish times of the flows in ``after`` (their last byte
received) and the send times of the flows in ``after_sent`` (their last byte has left the source:
this is how a communication library keeps several chunks in flight on one channel). Dependencies
may only point at flows added before, so a :class:`FlowSet` is always a DAG.

In the arrays handed to the backends (:class:`RoutedFlows`), a "sent" dependency on flow ``k`` is
encoded as ``-k - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from cosim.errors import FlowError
from cosim.topology import Router, Topology


@dataclass(frozen=True)
class Flow:
    """One flow as seen by users (a row of a :class:`FlowSet`)."""

    src: int
    dst: int
    size_bytes: int
    earliest_start_s: float = 0.0
    deps: tuple[int, ...] = ()
    tag: str = ""
    path_key: int = 0
    sent_deps: tuple[int, ...] = ()


class FlowSet:
    """A growing, columnar list of flows with dependencies.

    >>> fs = FlowSet()
    >>> a = fs.add(0, 1, 1 << 20)
    >>> b = fs.add(1, 2, 1 << 20, after=[a])   # starts when flow a has been received
    >>> len(fs), fs[b].deps
    (2, (0,))
    """

    def __init__(self) -> None:
        self.src: list[int] = []
        self.dst: list[int] = []
        self.size_bytes: list[int] = []
        self.earliest_start_s: list[float] = []
        self.deps: list[tuple[int, ...]] = []
        self.tags: list[str] = []
        self.path_keys: list[int] = []
        self.sent_deps: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> Flow:
        return Flow(self.src[i], self.dst[i], self.size_bytes[i], self.earliest_start_s[i],
                    self.deps[i], self.tags[i], self.path_keys[i], self.sent_deps[i])

    def add(self, src: int, dst: int, size_bytes: int, *, after: Iterable[int] = (),
            earliest_start_s: float = 0.0, tag: str = "", path_key: int = 0,
            after_sent: Iterable[int] = ()) -> int:
        """Append a flow and return its index.

        ``after`` lists flows that must be received first; ``after_sent`` flows whose last byte
        must have left their source first.
        """
        deps = tuple(int(d) for d in after)
        sent_deps = tuple(int(d) for d in after_sent)
        n = len(self.src)
        for d in deps + sent_deps:
            if not 0 <= d < n:
                raise FlowError(f"flow {n}: dependency {d} must be the index of an earlier flow (0..{n - 1})")
        if isinstance(size_bytes, (bool, float)) or int(size_bytes) != size_bytes or size_bytes < 0:
            raise FlowError(f"flow {n}: size_bytes must be a non-negative integer, got {size_bytes!r}")
        if not np.isfinite(earliest_start_s) or earliest_start_s < 0:
            raise FlowError(f"flow {n}: earliest_start_s must be finite and >= 0, got {earliest_start_s!r}")
        if src == dst and size_bytes > 0:
            raise FlowError(f"flow {n}: src and dst are both GPU {src}; only 0-byte flows (barriers) may do that")
        self.src.append(int(src))
        self.dst.append(int(dst))
        self.size_bytes.append(int(size_bytes))
        self.earliest_start_s.append(float(earliest_start_s))
        self.deps.append(deps)
        self.tags.append(tag)
        self.path_keys.append(int(path_key))
        self.sent_deps.append(sent_deps)
        return n

    def barrier(self, after: Iterable[int], gpu: int = 0, tag: str = "barrier") -> int:
        """A 0-byte flow that finishes when all flows in ``after`` have finished (a join point)."""
        return self.add(gpu, gpu, 0, after=after, tag=tag)

    def extend(self, flows: Sequence[Flow]) -> list[int]:
        """Append :class:`Flow` records (their deps index this set) and return their indices."""
        return [self.add(f.src, f.dst, f.size_bytes, after=f.deps, earliest_start_s=f.earliest_start_s,
                         tag=f.tag, path_key=f.path_key, after_sent=f.sent_deps) for f in flows]

    def total_bytes(self) -> int:
        return int(sum(self.size_bytes))


@dataclass
class RoutedFlows:
    """A flow set resolved on a topology: the arrays both backends consume (CSR routes and deps)."""

    src_node: np.ndarray           # int32 [F]
    dst_node: np.ndarray           # int32 [F]
    size_bytes: np.ndarray         # int64 [F]
    earliest_start_s: np.ndarray   # float64 [F]
    payload_per_packet: np.ndarray  # int32 [F], min MTU along the route
    num_packets: np.ndarray        # int64 [F]
    wire_bytes: np.ndarray         # int64 [F], payload + one header per packet
    route_offsets: np.ndarray      # int64 [F+1]
    route_links: np.ndarray        # int32 [sum of hops], directed link ids
    dep_offsets: np.ndarray        # int64 [F+1]
    dep_flows: np.ndarray          # int32, k = after flow k received, -k-1 = after flow k sent
    header_bytes: int

    @property
    def num_flows(self) -> int:
        return len(self.size_bytes)

    def route(self, f: int) -> np.ndarray:
        return self.route_links[self.route_offsets[f]:self.route_offsets[f + 1]]


def route_flows(topology: Topology, flows: FlowSet, router: Router | None = None) -> RoutedFlows:
    """Validate ``flows`` against ``topology`` and compute routes and packetization."""
    n = len(flows)
    g = topology.num_gpus
    for name, column in (("src", flows.src), ("dst", flows.dst)):
        arr = np.asarray(column, dtype=np.int64)
        bad = np.nonzero((arr < 0) | (arr >= g))[0]
        if len(bad):
            i = int(bad[0])
            raise FlowError(f"flow {i}: {name} GPU {column[i]} does not exist; topology "
                            f"{topology.name!r} has GPUs 0..{g - 1}")
    router = router or Router(topology)
    mtu = topology.link_mtu_bytes
    routes = [router.route(s, d, k) if s != d else () for s, d, k in zip(flows.src, flows.dst, flows.path_keys)]
    hops = np.fromiter((len(r) for r in routes), dtype=np.int64, count=n)
    route_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(hops, out=route_offsets[1:])
    route_links = np.fromiter((l for r in routes for l in r), dtype=np.int32, count=int(route_offsets[-1]))
    link_mtu = mtu[route_links // 2] if len(route_links) else np.zeros(0, dtype=np.int64)
    payload = np.full(n, int(mtu.max()), dtype=np.int64)
    if len(route_links):
        has_route = hops > 0
        payload[has_route] = np.minimum.reduceat(link_mtu, route_offsets[:-1][has_route])
    size = np.asarray(flows.size_bytes, dtype=np.int64)
    num_packets = -(-size // payload)
    header = topology.transport.header_bytes
    all_deps = [ds + tuple(-d - 1 for d in ss) for ds, ss in zip(flows.deps, flows.sent_deps)]
    dep_counts = np.fromiter((len(d) for d in all_deps), dtype=np.int64, count=n)
    dep_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(dep_counts, out=dep_offsets[1:])
    dep_flows = np.fromiter((d for ds in all_deps for d in ds), dtype=np.int32, count=int(dep_offsets[-1]))
    return RoutedFlows(
        src_node=np.asarray(topology.gpu_nodes, dtype=np.int32)[np.asarray(flows.src, dtype=np.int64)] if n else np.zeros(0, np.int32),
        dst_node=np.asarray(topology.gpu_nodes, dtype=np.int32)[np.asarray(flows.dst, dtype=np.int64)] if n else np.zeros(0, np.int32),
        size_bytes=size,
        earliest_start_s=np.asarray(flows.earliest_start_s, dtype=np.float64),
        payload_per_packet=payload.astype(np.int32),
        num_packets=num_packets,
        wire_bytes=size + num_packets * header,
        route_offsets=route_offsets,
        route_links=route_links,
        dep_offsets=dep_offsets,
        dep_flows=dep_flows,
        header_bytes=header,
    )
