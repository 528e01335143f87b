"""Topology generators: short YAML presets expand into full node and link lists.

Each generator is a dataclass of parameters (units in the field names) registered under a
``kind``. In YAML the unit suffix is dropped and the value carries its unit::

    generator:
      kind: hgx_cluster
      num_nodes: 2
      nic_bandwidth: 400Gbps     # -> nic_bandwidth_bps
      fabric_latency: 500ns      # -> fabric_latency_s
      mtu: 4096                  # -> mtu_bytes

A parameter's YAML reader follows from its unit suffix or its type; ``metadata={"parse": f}``
on a field names another one (``oversubscription`` takes ``2``, ``1.5`` or the ratio ``"2:1"``).

Generators produce (nodes, links); :mod:`cosim.topology.loader` validates the result exactly like
a hand-written file. Before building, :meth:`Generator.check` bounds every parameter
(:mod:`cosim.limits`: counts, bandwidths, latencies, MTU, oversubscription) and the size the
generator would build (:meth:`Generator.planned_size`: GPUs, nodes, links), so ``num_gpus:
10000000`` is refused without allocating anything.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from cosim import limits as L
from cosim.topology.model import Link, Node
from cosim.registry import Registry
from cosim.units import parse_ratio

#: Topology generators by kind (the class doubles as the YAML schema of its parameters).
GENERATORS = Registry("topology generator", name_attr="kind")
#: Class decorator adding a generator to :data:`GENERATORS` under a kind.
register = GENERATORS.register


class _Builder:
    """Accumulates nodes and links while a generator runs."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.links: list[Link] = []
        self._index: dict[str, int] = {}

    def node(self, name: str, kind: str, domain: int | None = None, rail: int | None = None) -> int:
        self._index[name] = len(self.nodes)
        self.nodes.append(Node(name, kind, domain, rail))  # type: ignore[arg-type]
        return self._index[name]

    def link(self, a: int, b: int, bandwidth_bps: float, latency_s: float, mtu_bytes: int, tier: str) -> None:
        self.links.append(Link(a, b, bandwidth_bps, latency_s, mtu_bytes, tier))


class Generator:
    """Base class: subclasses are dataclasses with a ``build`` method."""

    kind: ClassVar[str] = ""

    def build(self) -> tuple[list[Node], list[Link]]:  # pragma: no cover - abstract
        raise NotImplementedError

    #: integer parameters for which 0 is meaningful (0 spines: no spine tier; 0 nodes per leaf: one leaf per rail)
    ZERO_ALLOWED: ClassVar[frozenset[str]] = frozenset({"spines", "nodes_per_leaf"})

    def check(self) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for parameters out of range (types, :mod:`cosim.limits`
        bounds, and the GPUs/nodes/links the generator would build); empty when valid."""
        problems = []
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(value, int):
                low = 0 if name in self.ZERO_ALLOWED else 1
                if name.endswith("mtu_bytes"):
                    if not L.MIN_MTU_BYTES.value <= value <= L.MAX_MTU_BYTES.value:
                        problems.append((name, f"expected an MTU between {L.MIN_MTU_BYTES.value} and "
                                               f"{L.MAX_MTU_BYTES.value:,} bytes, got {L.quote(value)}"))
                elif value < low:
                    problems.append((name, f"must be >= {low}, got {L.quote(value)}"))
                elif value > L.MAX_TIER_COUNT.value:
                    problems.append((name, f"{L.quote(value)} exceeds the limit MAX_TIER_COUNT = "
                                           f"{L.MAX_TIER_COUNT.value:,} ({L.MAX_TIER_COUNT.reason})"))
            elif not math.isfinite(value) or value < 0 or (name.endswith("_bps") and value <= 0):
                problems.append((name, f"must be finite and {'> 0' if name.endswith('_bps') else '>= 0'}, "
                                       f"got {L.quote(value)}"))
            elif name.endswith("_bps") and not L.MIN_BANDWIDTH_BPS.value <= value <= L.MAX_BANDWIDTH_BPS.value:
                problems.append((name, f"{value:g} bit/s is out of range: expected MIN_BANDWIDTH_BPS = "
                                       f"{L.MIN_BANDWIDTH_BPS.value:g} to MAX_BANDWIDTH_BPS = "
                                       f"{L.MAX_BANDWIDTH_BPS.value:g} bit/s"))
            elif name.endswith("_s") and value > L.MAX_LATENCY_S.value:
                problems.append((name, f"{value:g} s exceeds the limit MAX_LATENCY_S = {L.MAX_LATENCY_S.value:g} s "
                                       f"({L.MAX_LATENCY_S.reason})"))
            elif "oversubscription" in name and not 1.0 <= value <= L.MAX_OVERSUBSCRIPTION.value:
                problems.append((name, f"must be >= 1 (1 = non-blocking) and at most the limit "
                                       f"MAX_OVERSUBSCRIPTION = {L.MAX_OVERSUBSCRIPTION.value:g}, got {L.quote(value)}"))
        if problems:
            return problems
        gpus, nodes, links = self.planned_size()
        first = next((f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), int)), "kind")
        for count, limit in ((gpus, L.MAX_GPUS), (nodes, L.MAX_NODES), (links, L.MAX_LINKS)):
            if count > limit.value:
                problems.append((first, L.count_error("", "", count, limit, "these parameters would build").message))
                break
        return problems

    def planned_size(self) -> tuple[int, int, int]:
        """(GPUs, nodes, links) the generator would build, computed without building (an upper
        bound where the exact count needs the build)."""
        raise NotImplementedError


def _rail_fabric_size(domains: int, gpus_per_domain: int, rails: int, spines: int,
                      nodes_per_leaf: int) -> tuple[int, int]:
    """(nodes, links) of :func:`_rail_fabric` beyond the domains: NICs, leaves, spines."""
    gpus = domains * gpus_per_domain
    per_leaf = nodes_per_leaf if nodes_per_leaf > 0 else domains
    leaves = rails * -(-domains // per_leaf)
    spine_links = leaves * spines if spines and leaves > 1 else 0
    return gpus + leaves + (spines if spine_links else 0), 2 * gpus + spine_links


def _nvlink_domain(b: _Builder, domain: int, prefix: str, gpus: int, bw_bps: float, lat_s: float,
                   mtu: int, switch_name: str) -> list[int]:
    """GPUs of one scale-up domain, each joined to one logical NVSwitch (one hop of the switch tier)."""
    sw = b.node(switch_name, "nvswitch")
    gpu_ids = []
    for g in range(gpus):
        gid = b.node(f"{prefix}gpu{g}", "gpu", domain=domain, rail=g)
        b.link(gid, sw, bw_bps, lat_s, mtu, "nvlink")
        gpu_ids.append(gid)
    return gpu_ids


def _rail_fabric(b: _Builder, domains: list[list[int]], rails: int, nic_bps: float, pcie_bps: float,
                 pcie_lat_s: float, fabric_lat_s: float, mtu: int, spines: int,
                 oversubscription: float, nodes_per_leaf: int, domain_prefix: str) -> None:
    """Rail-optimized leaf/spine fabric: GPU ``g`` of every domain has a NIC on rail ``g % rails``.

    Each rail has ``ceil(domains / nodes_per_leaf)`` leaves (one leaf per rail when
    ``nodes_per_leaf`` is 0). Every leaf connects to every spine; the uplink bandwidth of a leaf is
    its downlink bandwidth divided by ``oversubscription``, split evenly across spines.
    """
    num_domains = len(domains)
    per_leaf = nodes_per_leaf if nodes_per_leaf > 0 else num_domains
    leaves_per_rail = math.ceil(num_domains / per_leaf)
    leaf_ids: dict[tuple[int, int], int] = {}
    for r in range(rails):
        for k in range(leaves_per_rail):
            name = f"leaf{r}" if leaves_per_rail == 1 else f"leaf{r}.{k}"
            leaf_ids[r, k] = b.node(name, "switch")
    for d, gpu_ids in enumerate(domains):
        for g, gid in enumerate(gpu_ids):
            nic = b.node(f"{domain_prefix}{d}.nic{g}", "nic")
            b.link(gid, nic, pcie_bps, pcie_lat_s, mtu, "pcie")
            b.link(nic, leaf_ids[g % rails, d // per_leaf], nic_bps, fabric_lat_s, mtu, "rail")
    if spines == 0 or len(leaf_ids) == 1:
        return
    spine_ids = [b.node(f"spine{s}", "switch") for s in range(spines)]
    gpus_per_domain = len(domains[0])
    for (r, k), leaf in leaf_ids.items():
        domains_on_leaf = min(per_leaf, num_domains - k * per_leaf)
        nics_on_leaf = domains_on_leaf * len(range(r, gpus_per_domain, rails))
        uplink_bps = nics_on_leaf * nic_bps / oversubscription / spines
        for s in spine_ids:
            b.link(leaf, s, uplink_bps, fabric_lat_s, mtu, "spine")


@register("star")
@dataclass
class Star(Generator):
    """``num_gpus`` GPUs on one non-blocking switch (the textbook all-to-all test bed)."""

    num_gpus: int = 8
    bandwidth_bps: float = 400e9
    latency_s: float = 1e-6
    mtu_bytes: int = 4096
    switch_kind: str = "switch"

    def build(self) -> tuple[list[Node], list[Link]]:
        b = _Builder()
        sw = b.node("switch", self.switch_kind)
        for g in range(self.num_gpus):
            gid = b.node(f"gpu{g}", "gpu", domain=0, rail=g)
            b.link(gid, sw, self.bandwidth_bps, self.latency_s, self.mtu_bytes, "star")
        return b.nodes, b.links

    def planned_size(self) -> tuple[int, int, int]:
        return self.num_gpus, self.num_gpus + 1, self.num_gpus

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.switch_kind not in ("switch", "nvswitch"):
            problems.append(("switch_kind", f"expected 'switch' or 'nvswitch', got {self.switch_kind!r}"))
        return problems


@register("hgx_node")
@dataclass
class HgxNode(Generator):
    """One HGX board: ``gpus`` GPUs on NVSwitch (NVLink4: 450 GB/s per direction per GPU)."""

    gpus: int = 8
    nvlink_bandwidth_bps: float = 450e9 * 8
    nvlink_latency_s: float = 0.35e-6
    mtu_bytes: int = 4096

    def build(self) -> tuple[list[Node], list[Link]]:
        b = _Builder()
        _nvlink_domain(b, 0, "", self.gpus, self.nvlink_bandwidth_bps, self.nvlink_latency_s,
                       self.mtu_bytes, "nvswitch")
        return b.nodes, b.links

    def planned_size(self) -> tuple[int, int, int]:
        return self.gpus, self.gpus + 1, self.gpus


@register("hgx_cluster")
@dataclass
class HgxCluster(Generator):
    """``num_nodes`` HGX nodes, one NIC per GPU, on a rail-optimized leaf/spine fabric."""

    num_nodes: int = 2
    gpus_per_node: int = 8
    nvlink_bandwidth_bps: float = 450e9 * 8
    nvlink_latency_s: float = 0.35e-6
    nic_bandwidth_bps: float = 400e9
    pcie_bandwidth_bps: float = 64e9 * 8
    pcie_latency_s: float = 0.5e-6
    fabric_latency_s: float = 0.5e-6
    spines: int = 4
    oversubscription: float = field(default=1.0, metadata={"parse": parse_ratio})
    nodes_per_leaf: int = 0
    mtu_bytes: int = 4096

    def build(self) -> tuple[list[Node], list[Link]]:
        b = _Builder()
        domains = [
            _nvlink_domain(b, n, f"n{n}.", self.gpus_per_node, self.nvlink_bandwidth_bps,
                           self.nvlink_latency_s, self.mtu_bytes, f"n{n}.nvswitch")
            for n in range(self.num_nodes)
        ]
        if self.num_nodes > 1:
            _rail_fabric(b, domains, self.gpus_per_node, self.nic_bandwidth_bps, self.pcie_bandwidth_bps,
                         self.pcie_latency_s, self.fabric_latency_s, self.mtu_bytes, self.spines,
                         self.oversubscription, self.nodes_per_leaf, "n")
        return b.nodes, b.links

    def planned_size(self) -> tuple[int, int, int]:
        gpus = self.num_nodes * self.gpus_per_node
        nodes, links = gpus + self.num_nodes, gpus
        if self.num_nodes > 1:
            n, l = _rail_fabric_size(self.num_nodes, self.gpus_per_node, self.gpus_per_node, self.spines,
                                     self.nodes_per_leaf)
            nodes, links = nodes + n, links + l
        return gpus, nodes, links

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.oversubscription < 1.0:
            problems.append(("oversubscription", f"must be >= 1 (1 = non-blocking), got {self.oversubscription}"))
        return problems


@register("nvl72_rack")
@dataclass
class Nvl72Rack(Generator):
    """One GB200 NVL72 rack: 72 GPUs in one NVLink domain (NVLink5: 900 GB/s per direction)."""

    gpus: int = 72
    nvlink_bandwidth_bps: float = 900e9 * 8
    nvlink_latency_s: float = 0.5e-6
    mtu_bytes: int = 4096

    def build(self) -> tuple[list[Node], list[Link]]:
        b = _Builder()
        _nvlink_domain(b, 0, "", self.gpus, self.nvlink_bandwidth_bps, self.nvlink_latency_s,
                       self.mtu_bytes, "nvswitch")
        return b.nodes, b.links

    def planned_size(self) -> tuple[int, int, int]:
        return self.gpus, self.gpus + 1, self.gpus


@register("nvl72_cluster")
@dataclass
class Nvl72Cluster(Generator):
    """Several NVL72 racks joined by a rail-optimized RDMA fabric (one NIC per GPU)."""

    num_racks: int = 2
    gpus_per_rack: int = 72
    nvlink_bandwidth_bps: float = 900e9 * 8
    nvlink_latency_s: float = 0.5e-6
    nic_bandwidth_bps: float = 400e9
    pcie_bandwidth_bps: float = 64e9 * 8
    pcie_latency_s: float = 0.5e-6
    fabric_latency_s: float = 0.5e-6
    rails: int = 4
    spines: int = 4
    oversubscription: float = field(default=1.0, metadata={"parse": parse_ratio})
    nodes_per_leaf: int = 0
    mtu_bytes: int = 4096

    def build(self) -> tuple[list[Node], list[Link]]:
        b = _Builder()
        domains = [
            _nvlink_domain(b, r, f"r{r}.", self.gpus_per_rack, self.nvlink_bandwidth_bps,
                           self.nvlink_latency_s, self.mtu_bytes, f"r{r}.nvswitch")
            for r in range(self.num_racks)
        ]
        # In a rack, the GPU's rail is its position modulo the number of rails.
        for r, gpu_ids in enumerate(domains):
            for g, gid in enumerate(gpu_ids):
                b.nodes[gid] = Node(b.nodes[gid].name, "gpu", domain=r, rail=g % self.rails)
        if self.num_racks > 1:
            _rail_fabric(b, domains, self.rails, self.nic_bandwidth_bps, self.pcie_bandwidth_bps,
                         self.pcie_latency_s, self.fabric_latency_s, self.mtu_bytes, self.spines,
                         self.oversubscription, self.nodes_per_leaf, "r")
        return b.nodes, b.links

    def planned_size(self) -> tuple[int, int, int]:
        gpus = self.num_racks * self.gpus_per_rack
        nodes, links = gpus + self.num_racks, gpus
        if self.num_racks > 1:
            n, l = _rail_fabric_size(self.num_racks, self.gpus_per_rack, self.rails, self.spines,
                                     self.nodes_per_leaf)
            nodes, links = nodes + n, links + l
        return gpus, nodes, links

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.oversubscription < 1.0:
            problems.append(("oversubscription", f"must be >= 1 (1 = non-blocking), got {self.oversubscription}"))
        return problems


@register("fat_tree")
@dataclass
class FatTree(Generator):
    """A 3-tier fat-tree (leaf / spine / core) of nodes with ``gpus_per_node`` GPUs each,
    rail-optimized inside every pod.

    Nodes are grouped into pods of ``nodes_per_pod``; inside a pod, GPU ``g`` of every node has a
    NIC on rail ``g``, and each rail has one leaf per ``nodes_per_leaf`` nodes. Every leaf of a pod
    joins every spine of the pod; spine ``s`` of every pod joins the cores ``s, s + spines_per_pod,
    s + 2 spines_per_pod ...`` (a core tier only when there are several pods). A leaf's uplinks carry
    its downlink bandwidth divided by ``oversubscription``, split evenly over the pod's spines; a
    spine's uplinks carry its downlink bandwidth divided by ``core_oversubscription``, split evenly
    over its cores. With ``gpus_per_node`` 1 there is no NVLink: each GPU is its own node.
    """

    num_nodes: int = 64
    gpus_per_node: int = 8
    nvlink_bandwidth_bps: float = 450e9 * 8
    nvlink_latency_s: float = 0.35e-6
    nic_bandwidth_bps: float = 400e9
    pcie_bandwidth_bps: float = 64e9 * 8
    pcie_latency_s: float = 0.5e-6
    fabric_latency_s: float = 0.5e-6
    nodes_per_leaf: int = 4
    nodes_per_pod: int = 32
    spines_per_pod: int = 8
    cores: int = 16
    oversubscription: float = field(default=1.0, metadata={"parse": parse_ratio})
    core_oversubscription: float = field(default=1.0, metadata={"parse": parse_ratio})
    mtu_bytes: int = 4096

    @property
    def num_pods(self) -> int:
        return math.ceil(self.num_nodes / self.nodes_per_pod)

    def planned_size(self) -> tuple[int, int, int]:
        gpus = self.num_nodes * self.gpus_per_node
        pods = self.num_pods
        leaves = self.gpus_per_node * min(self.num_nodes, self.num_nodes // self.nodes_per_leaf + pods)
        spines = pods * self.spines_per_pod
        cores = self.cores if pods > 1 else 0
        nvlink = gpus if self.gpus_per_node > 1 else 0
        nodes = gpus + (self.num_nodes if nvlink else 0) + gpus + leaves + spines + cores
        links = nvlink + 2 * gpus + leaves * self.spines_per_pod + spines * (-(-cores // self.spines_per_pod))
        return gpus, nodes, links

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if problems:
            return problems
        if self.nodes_per_pod % self.nodes_per_leaf:
            problems.append(("nodes_per_pod", f"must be a multiple of nodes_per_leaf ({self.nodes_per_leaf}), "
                                              f"got {self.nodes_per_pod}"))
        if self.num_pods > 1 and self.cores % self.spines_per_pod:
            problems.append(("cores", f"must be a multiple of spines_per_pod ({self.spines_per_pod}) so that "
                                      f"every spine reaches the same number of cores, got {self.cores}"))
        for name in ("oversubscription", "core_oversubscription"):
            if getattr(self, name) < 1.0:
                problems.append((name, f"must be >= 1 (1 = non-blocking), got {getattr(self, name)}"))
        return problems

    def build(self) -> tuple[list[Node], list[Link]]:
        b = _Builder()
        g_per = self.gpus_per_node
        nodes = []
        for n in range(self.num_nodes):
            if g_per > 1:
                nodes.append(_nvlink_domain(b, n, f"n{n}.", g_per, self.nvlink_bandwidth_bps, self.nvlink_latency_s,
                                            self.mtu_bytes, f"n{n}.nvswitch"))
            else:
                nodes.append([b.node(f"n{n}.gpu0", "gpu", domain=n, rail=0)])
        nic_bps, lat, mtu = self.nic_bandwidth_bps, self.fabric_latency_s, self.mtu_bytes
        leaves_per_rail = self.nodes_per_pod // self.nodes_per_leaf
        cores = [b.node(f"core{c}", "switch") for c in range(self.cores)] if self.num_pods > 1 else []
        for p in range(self.num_pods):
            pod_nodes = range(p * self.nodes_per_pod, min((p + 1) * self.nodes_per_pod, self.num_nodes))
            leaves: list[tuple[int, int]] = []  # (leaf node, NICs on it)
            for g in range(g_per):
                for k in range(leaves_per_rail):
                    lo = pod_nodes.start + k * self.nodes_per_leaf
                    members = range(lo, min(lo + self.nodes_per_leaf, pod_nodes.stop))
                    if not members:
                        continue
                    leaf = b.node(f"p{p}.leaf{g}.{k}", "switch")
                    leaves.append((leaf, len(members)))
                    for n in members:
                        nic = b.node(f"n{n}.nic{g}", "nic")
                        b.link(nodes[n][g], nic, self.pcie_bandwidth_bps, self.pcie_latency_s, mtu, "pcie")
                        b.link(nic, leaf, nic_bps, lat, mtu, "rail")
            if len(leaves) == 1 and not cores:
                continue
            spines = [b.node(f"p{p}.spine{s}", "switch") for s in range(self.spines_per_pod)]
            spine_down_bps = 0.0
            for leaf, nics in leaves:
                uplink_bps = nics * nic_bps / self.oversubscription / self.spines_per_pod
                spine_down_bps += uplink_bps
                for s in spines:
                    b.link(leaf, s, uplink_bps, lat, mtu, "spine")
            if cores:
                per_spine = self.cores // self.spines_per_pod
                core_bps = spine_down_bps / self.core_oversubscription / per_spine
                for si, s in enumerate(spines):
                    for c in range(si, self.cores, self.spines_per_pod):
                        b.link(s, cores[c], core_bps, lat, mtu, "core")
        return b.nodes, b.links
