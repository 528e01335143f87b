"""Typed topology model: nodes, full-duplex links, routing policy and transport settings.

A :class:`Topology` is what every network backend consumes. Each undirected :class:`Link` is a
full-duplex pair with the same bandwidth in both directions; directed link ``2*i`` carries traffic
from ``links[i].a`` to ``links[i].b`` and ``2*i + 1`` the reverse. GPUs are numbered by rank in the
order they appear in :attr:`Topology.nodes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import networkx as nx
import numpy as np

NodeKind = Literal["gpu", "nvswitch", "nic", "switch"]
NODE_KINDS: tuple[str, ...] = ("gpu", "nvswitch", "nic", "switch")


@dataclass(frozen=True)
class Node:
    """A device in the topology.

    Attributes:
        name: unique name, e.g. ``n0.gpu3``.
        kind: ``gpu`` (an endpoint), ``nvswitch``, ``nic`` or ``switch`` (Ethernet/IB leaf or spine).
        domain: scale-up (NVLink) domain of a GPU, e.g. the HGX node or NVL72 rack index.
        rail: rail of a GPU's NIC in a rail-optimized fabric (GPU ``i`` of every node on rail ``i``).
    """

    name: str
    kind: NodeKind
    domain: int | None = None
    rail: int | None = None


@dataclass(frozen=True)
class Link:
    """A full-duplex link between nodes ``a`` and ``b`` (indices into :attr:`Topology.nodes`).

    Attributes:
        bandwidth_bps: bandwidth per direction in bits/s.
        latency_s: one-way propagation latency in seconds.
        mtu_bytes: largest payload per packet on this link.
        tier: label used in reports (``nvlink``, ``pcie``, ``rail``, ``spine``, ...).
    """

    a: int
    b: int
    bandwidth_bps: float
    latency_s: float
    mtu_bytes: int
    tier: str = "link"


@dataclass(frozen=True)
class RoutingPolicy:
    """How routes are chosen among equal-cost paths.

    Attributes:
        ecmp: ``hash`` picks a next hop per switch by hashing the flow (src, dst, path key), like
            ECMP on a real fabric; ``first`` always takes the lowest-numbered candidate.
        cross_rail: for GPUs in different scale-up domains and on different rails, ``pxn`` first
            moves the data over NVLink to the GPU of the source domain on the destination's rail
            and then stays on that rail (NCCL's PXN, DeepEP's normal kernels); ``direct`` uses the
            scale-out fabric from the source GPU's own NIC (crossing the spine).
    """

    ecmp: Literal["hash", "first"] = "hash"
    cross_rail: Literal["pxn", "direct"] = "pxn"


@dataclass(frozen=True)
class TransportConfig:
    """Packet transport parameters shared by both backends.

    Attributes:
        header_bytes: bytes added to every packet's payload on the wire (RoCEv2: Ethernet + IP +
            UDP + BTH + ICRC + FCS = 62 bytes). Both backends count wire bytes.
        pfc_xoff_bytes: per ingress port, bytes queued in a switch above which the upstream sender
            is paused (packet backend only; the transport never drops).
        pfc_xon_bytes: level below which the paused sender resumes.
    """

    header_bytes: int = 62
    pfc_xoff_bytes: int = 512 * 1024
    pfc_xon_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Topology:
    """A loaded topology: nodes, links, routing policy, transport settings and where it came from.

    Attributes:
        gpu_system: name of the kernel-table system of the GPUs (``h100_sxm``, ``h200_sxm``,
            ``b200_sxm``, ``gb200`` ...; the names of aiconfigurator-core's ``systems`` folder),
            from the file's top-level ``gpu`` field; ``None`` when the file does not say. The
            topology does not check the name against the installed tables (the kernels stage,
            to the right of topology, does when it loads them).
    """

    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    transport: TransportConfig = field(default_factory=TransportConfig)
    description: str = ""
    source: str = "<api>"
    gpu_system: str | None = None

    @cached_property
    def node_index(self) -> dict[str, int]:
        """Map from node name to node index."""
        return {n.name: i for i, n in enumerate(self.nodes)}

    @cached_property
    def gpu_nodes(self) -> tuple[int, ...]:
        """Node index of each GPU rank (rank ``r`` is ``nodes[gpu_nodes[r]]``)."""
        return tuple(i for i, n in enumerate(self.nodes) if n.kind == "gpu")

    @cached_property
    def link_bandwidth_bps(self) -> np.ndarray:
        """Bandwidth per direction of every undirected link (index = link index)."""
        return np.array([l.bandwidth_bps for l in self.links], dtype=np.float64)

    @cached_property
    def link_latency_s(self) -> np.ndarray:
        """One-way latency of every undirected link."""
        return np.array([l.latency_s for l in self.links], dtype=np.float64)

    @cached_property
    def link_mtu_bytes(self) -> np.ndarray:
        """MTU of every undirected link."""
        return np.array([l.mtu_bytes for l in self.links], dtype=np.int64)

    @cached_property
    def directed_bandwidth_bps(self) -> np.ndarray:
        """Bandwidth of every directed link (index = directed link id)."""
        return np.repeat(self.link_bandwidth_bps, 2)

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_nodes)

    @property
    def num_directed_links(self) -> int:
        return 2 * len(self.links)

    @cached_property
    def graph(self) -> nx.Graph:
        """Undirected networkx graph; nodes are indices with ``name``/``kind`` attributes, edges
        carry ``link`` (the undirected link index) and the link's fields."""
        g = nx.Graph()
        for i, n in enumerate(self.nodes):
            g.add_node(i, name=n.name, kind=n.kind, domain=n.domain, rail=n.rail)
        for li, link in enumerate(self.links):
            g.add_edge(link.a, link.b, link=li, bandwidth_bps=link.bandwidth_bps,
                       latency_s=link.latency_s, mtu_bytes=link.mtu_bytes, tier=link.tier)
        return g

    def directed_link(self, u: int, v: int) -> int:
        """Directed link id carrying traffic from node ``u`` to adjacent node ``v``."""
        li = self.graph.edges[u, v]["link"]
        return 2 * li if self.links[li].a == u else 2 * li + 1

    def directed_endpoints(self, directed_link: int) -> tuple[int, int]:
        """(sending node, receiving node) of a directed link id."""
        link = self.links[directed_link // 2]
        return (link.a, link.b) if directed_link % 2 == 0 else (link.b, link.a)

    def describe_link(self, directed_link: int) -> str:
        """Human-readable name of a directed link, e.g. ``n0.gpu0 -> n0.nic0``."""
        u, v = self.directed_endpoints(directed_link)
        return f"{self.nodes[u].name} -> {self.nodes[v].name}"
