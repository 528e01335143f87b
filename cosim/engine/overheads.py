"""Per-library communication overheads: what a collective costs beyond the simulated network.

The network backends return ``network_s``: the time the bytes need on the topology (links,
sharing, latency). A real library adds a fixed cost per call (kernel launch, handshakes, the
notify/metadata exchange, reductions) and moves bytes more slowly than the links allow when its
kernels, not the links, are the bottleneck (a DeepEP kernel on 24 SMs cannot fill NVLink). Two
models, both fitted on single-node measurements only (:mod:`cosim.validation.comm`):

* **plain** (always available): ``duration = fixed_s + network_s / bandwidth_efficiency``.
* **kernel-rate** (when :attr:`LibraryOverhead.kernel_rate_bytes_per_s` is set and the caller
  passes ``gpu_bytes``, the largest number of bytes one GPU emits in the collective):
  ``duration = fixed_s + max(network_s, gpu_bytes / kernel_rate_bytes_per_s)``. The library's
  kernels move at most ``kernel_rate`` bytes/s per GPU; when the network is slower (an RDMA NIC at
  50 GB/s) the network bound wins and no efficiency penalty is applied on top. Within one node both
  models agree; they differ across nodes, which is what the multi-node DeepEP rows test
  (see ``docs/validation-comm.md``).

**Cross-node terms** (DeepEP only, :attr:`LibraryOverhead.cross_node_fixed_s` and
:attr:`LibraryOverhead.rdma_efficiency`): a group spanning several nodes pays
``remote_fraction * cross_node_fixed_s`` more (``remote_fraction``: the mean share of a rank's
peers on other nodes; DeepEP sends one completion signal per remote destination, and
GPU-initiated RDMA signals cost far more than NVLink stores) and its network time is divided by
``rdma_efficiency``. Single-node rows cannot reveal either, so they are fitted on the **2-node**
rows only and tested on the 4- and 8-node rows (``fit_cross_node`` in
:mod:`cosim.validation.comm`); with both at their neutral values (0 and 1) the model is the
single-node one.

The frameworks' custom all-reduce has two operations, ``custom_allreduce.one_shot`` and
``.two_shot``, with their own fixed costs; a call takes the algorithm with the shorter predicted
duration (:func:`custom_allreduce_choice`). TensorRT-LLM's NVLink all-to-all (``nvlink_a2a``) has
kernel-rate constants fitted on gb200 rows of one compute tray (:mod:`cosim.validation.nvlink_a2a`).

Per-operation constants (``nccl.all_reduce``, ``deepep_normal.dispatch`` ...) override the
library's when the caller names the operation; without an operation the library-wide constants
(fitted on all of the library's rows) are used, so ``duration_s(library, network_s)`` always works.
"""

from __future__ import annotations

from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from cosim.errors import ConfigError
from cosim.network.libraries import LIBRARIES as _REGISTRY

#: Libraries a collective can be implemented by (the registry :data:`cosim.network.libraries.LIBRARIES`).
LIBRARIES = tuple(_REGISTRY)


@dataclass(frozen=True)
class LinkEfficiency:
    """Achievable fraction of each link tier's line rate: what any library can get out of the
    wire once protocol and packetization overheads are paid (NVLink flit headers and flow
    control, RDMA headers, acknowledgements, PCIe TLP headers). A property of the link, the same
    for every library and every GPU with that link; kept apart from the libraries' kernel-side
    constants. The network backends simulate line rate; the overhead model divides the simulated
    time by the efficiency of the tier that carries the call (``nvlink`` within one scale-up
    domain, ``rdma`` across, see :meth:`LibraryOverhead.duration_s`).

    Attributes:
        nvlink: NVLink / NVSwitch (scale-up) tier.
        rdma: scale-out tier (NIC, rail and spine links).
        pcie: GPU <-> NIC PCIe links (no measured collective is PCIe-bound: not fitted, 1).
    """

    nvlink: float = 1.0
    rdma: float = 1.0
    pcie: float = 1.0

    def __post_init__(self) -> None:
        for name in ("nvlink", "rdma", "pcie"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ConfigError("<api>", f"link_efficiency.{name}", f"must be in (0, 1], got {v!r}")


#: NVLink bandwidth per GPU per direction of the system the constants were fitted on (h200_sxm,
#: NVLink4): what :attr:`CommOverheads.scale_up_bytes_per_s` assumes when no topology says otherwise.
REFERENCE_SCALE_UP_BYTES_PER_S = 450e9


@dataclass(frozen=True)
class LibraryOverhead:
    """Cost model of one library (or one operation or algorithm of it); times in seconds, rates in
    bytes/s.

    Kernel-side attributes (fitted per library):
        fixed_s: fixed cost per call.
        bandwidth_efficiency: fraction of the achievable link rate the library's kernels reach
            within one scale-up domain (plain model; the network time is divided by it).
        kernel_rate_bytes_per_s: most bytes per second one GPU's kernels emit (kernel-rate model,
            e.g. DeepEP normal mode's SM-bound copy rate); ``None`` = not modelled.
        cross_node_fixed_s: extra fixed cost of a call whose every peer is on another node
            (scaled by the remote fraction of the group).
        rdma_efficiency: fraction of the achievable RDMA rate the library's kernels reach when
            the group spans nodes (1 = all of it).
        wire_bytes_factor: bytes on the wire per payload byte of the protocol (NCCL's LL: 2, half
            of every 8-byte word is a flag; Simple: 1). A protocol constant, not fitted.
        alternatives: other regimes of the same call (NCCL's LL protocol beside Simple); the
            library takes the fastest, as NCCL's tuner does.

    Link-side attributes (not stored with the fitted constants: :meth:`CommOverheads.overhead`
    fills them in from :class:`LinkEfficiency` and the topology):
        link_efficiency: achievable fraction of the NVLink line rate.
        rdma_link_efficiency: achievable fraction of the RDMA line rate.
        scale_up_bytes_per_s: NVLink bandwidth of a GPU (per direction); prices the extra wire
            bytes of a protocol with ``wire_bytes_factor`` > 1.
    """

    fixed_s: float
    bandwidth_efficiency: float = 1.0
    kernel_rate_bytes_per_s: float | None = None
    cross_node_fixed_s: float = 0.0
    rdma_efficiency: float = 1.0
    wire_bytes_factor: float = 1.0
    alternatives: tuple["LibraryOverhead", ...] = ()
    link_efficiency: float = 1.0
    rdma_link_efficiency: float = 1.0
    scale_up_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if not self.fixed_s >= 0:
            raise ConfigError("<api>", "fixed_s", f"must be >= 0, got {self.fixed_s!r}")
        if not self.bandwidth_efficiency > 0:
            raise ConfigError("<api>", "bandwidth_efficiency", f"must be > 0, got {self.bandwidth_efficiency!r}")
        if self.kernel_rate_bytes_per_s is not None and not self.kernel_rate_bytes_per_s > 0:
            raise ConfigError("<api>", "kernel_rate_bytes_per_s",
                              f"must be > 0 or None, got {self.kernel_rate_bytes_per_s!r}")
        if not self.cross_node_fixed_s >= 0:
            raise ConfigError("<api>", "cross_node_fixed_s", f"must be >= 0, got {self.cross_node_fixed_s!r}")
        for name in ("rdma_efficiency", "link_efficiency", "rdma_link_efficiency"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ConfigError("<api>", name, f"must be in (0, 1], got {v!r}")
        if not self.wire_bytes_factor >= 1:
            raise ConfigError("<api>", "wire_bytes_factor", f"must be >= 1, got {self.wire_bytes_factor!r}")
        if self.scale_up_bytes_per_s is not None and not self.scale_up_bytes_per_s > 0:
            raise ConfigError("<api>", "scale_up_bytes_per_s", f"must be > 0 or None, got {self.scale_up_bytes_per_s!r}")
        object.__setattr__(self, "alternatives", tuple(self.alternatives))

    def with_links(self, links: "LinkEfficiency", scale_up_bytes_per_s: float | None) -> "LibraryOverhead":
        """These kernel-side constants on links of the given efficiencies and scale-up bandwidth."""
        return dataclasses.replace(
            self, link_efficiency=links.nvlink, rdma_link_efficiency=links.rdma,
            scale_up_bytes_per_s=scale_up_bytes_per_s,
            alternatives=tuple(a.with_links(links, scale_up_bytes_per_s) for a in self.alternatives))

    def duration_s(self, network_s: float, gpu_bytes: float | None = None, remote_fraction: float = 0.0) -> float:
        """Duration of a call whose traffic takes ``network_s`` on the simulated network (line
        rate); ``gpu_bytes`` (the most bytes one GPU emits) selects the kernel-rate model when the
        rate is known; ``remote_fraction`` (mean share of a rank's peers on other nodes, 0
        within one node) selects the RDMA tier and adds the cross-node terms:

            within a node:  fixed + max(network / link_eff, gpu_bytes / kernel_rate)
                            or fixed + network / (link_eff x bandwidth_efficiency)   (plain)
            across nodes:   fixed + rf x cross_fixed
                            + max(network / (rdma_link_eff x rdma_eff), gpu_bytes / kernel_rate)

        plus, for a protocol with ``wire_bytes_factor`` w > 1, the time of its extra wire bytes:
        ``(w - 1) x gpu_bytes / (link_eff x scale_up)`` within a node (the latency part of the
        network time is not multiplied), the network term w times across nodes. The fastest of
        this regime and its :attr:`alternatives` is returned."""
        if not 0 <= remote_fraction <= 1:
            raise ValueError(f"remote_fraction must be in [0, 1], got {remote_fraction}")
        best = self._regime_s(network_s, gpu_bytes, remote_fraction)
        for alt in self.alternatives:
            t = alt._regime_s(network_s, gpu_bytes, remote_fraction)
            if t is not None and (best is None or t < best):
                best = t
        if best is None:
            raise ValueError("no regime of this library can price the call (a protocol with extra wire bytes "
                             "needs gpu_bytes and scale_up_bytes_per_s)")
        return best

    def _regime_s(self, network_s: float, gpu_bytes: float | None, remote_fraction: float) -> float | None:
        fixed = self.fixed_s
        if remote_fraction > 0:
            fixed += remote_fraction * self.cross_node_fixed_s
            net = network_s / (self.rdma_link_efficiency * self.rdma_efficiency)
        else:
            net = network_s / self.link_efficiency
        if self.wire_bytes_factor > 1:
            if remote_fraction > 0:  # the extra bytes cross the NIC too: the whole time, w times
                net *= self.wire_bytes_factor
            elif gpu_bytes is None or self.scale_up_bytes_per_s is None:
                return None
            else:
                net += (self.wire_bytes_factor - 1) * gpu_bytes / (self.link_efficiency * self.scale_up_bytes_per_s)
        if self.kernel_rate_bytes_per_s is None or gpu_bytes is None:
            return fixed + (net / self.bandwidth_efficiency if remote_fraction == 0 else net)
        return fixed + max(net, gpu_bytes / self.kernel_rate_bytes_per_s)


@dataclass(frozen=True)
class CommOverheads:
    """Overheads of every communication library, with optional per-operation overrides.

    ``ops`` maps ``"<library>.<op>"`` (e.g. ``"nccl.all_reduce"``, ``"deepep_ll.combine"``) or
    ``"<library>.<algorithm>"`` (``"custom_allreduce.nvls"``) to the kernel-side constants of
    that operation. ``custom_allreduce`` is the frameworks' own all-reduce kernel (one node;
    ``None`` falls back to NCCL's all-reduce constants), ``nvlink_a2a`` TensorRT-LLM's NVLink MoE
    all-to-all (one NVLink domain; ``None``: NCCL's all-to-all constants). ``links`` holds the
    achievable efficiency of each link tier (shared by every library) and
    ``scale_up_bytes_per_s`` the NVLink bandwidth of the GPUs the constants are applied to
    (:meth:`for_topology`); :meth:`overhead` returns constants with both filled in.
    """

    nccl: LibraryOverhead
    deepep_normal: LibraryOverhead
    deepep_ll: LibraryOverhead
    p2p: LibraryOverhead
    ops: Mapping[str, LibraryOverhead] = field(default_factory=dict, hash=False)
    custom_allreduce: LibraryOverhead | None = None  # None: NCCL's all-reduce constants
    nvlink_a2a: LibraryOverhead | None = None  # None: NCCL's all-to-all constants
    bipartite: LibraryOverhead | None = None  # None: the p2p constants (M->N sends are p2p sends)
    links: LinkEfficiency = field(default_factory=LinkEfficiency)
    scale_up_bytes_per_s: float = REFERENCE_SCALE_UP_BYTES_PER_S

    def __post_init__(self) -> None:
        for key in self.ops:
            lib, _, op = key.partition(".")
            if lib not in LIBRARIES or not op:
                raise ConfigError("<api>", f"ops[{key!r}]", f"expected '<library>.<op>' with library in {LIBRARIES}")
        object.__setattr__(self, "ops", MappingProxyType(dict(self.ops)))
        if not self.scale_up_bytes_per_s > 0:
            raise ConfigError("<api>", "scale_up_bytes_per_s", f"must be > 0, got {self.scale_up_bytes_per_s!r}")

    def overhead(self, library: str, op: str | None = None) -> LibraryOverhead:
        """Constants for ``library`` (and ``op`` when it has its own), on this object's links."""
        return self._kernel_side(library, op).with_links(self.links, self.scale_up_bytes_per_s)

    def _kernel_side(self, library: str, op: str | None) -> LibraryOverhead:
        if library not in LIBRARIES:
            raise ConfigError("<api>", "library", f"expected one of {', '.join(LIBRARIES)}, got {library!r}")
        if op is not None:
            specific = self.ops.get(f"{library}.{op}")
            if specific is not None:
                return specific
        if library == "custom_allreduce" and self.custom_allreduce is None:
            return self._kernel_side("nccl", "all_reduce")
        if library == "nvlink_a2a" and self.nvlink_a2a is None:
            return self._kernel_side("nccl", "all_to_all")
        if library == "bipartite" and self.bipartite is None:
            return self._kernel_side("p2p", op)
        return getattr(self, library)

    def duration_s(self, library: str, network_s: float, op: str | None = None,
                   gpu_bytes: float | None = None, remote_fraction: float = 0.0) -> float:
        """Duration of one call of ``library`` (optionally its operation ``op``) whose traffic
        takes ``network_s`` on the simulated network; see :meth:`LibraryOverhead.duration_s`."""
        return self.overhead(library, op).duration_s(network_s, gpu_bytes, remote_fraction)

    def for_topology(self, topology) -> "CommOverheads":
        """These constants applied to ``topology``'s GPUs: :attr:`scale_up_bytes_per_s` becomes
        the NVLink bandwidth of its first GPU (:func:`topology_scale_up_bytes_per_s`)."""
        bw = topology_scale_up_bytes_per_s(topology)
        return self if bw is None else dataclasses.replace(self, scale_up_bytes_per_s=bw)


def topology_scale_up_bytes_per_s(topology) -> float | None:
    """NVLink bandwidth per direction of GPU rank 0 of ``topology`` (bytes/s): the sum of its
    ``nvlink``-tier links; ``None`` when it has none."""
    if not topology.gpu_nodes:
        return None
    gpu = topology.gpu_nodes[0]
    bps = sum(l.bandwidth_bps for l in topology.links if l.tier == "nvlink" and gpu in (l.a, l.b))
    return bps / 8.0 if bps > 0 else None


def custom_allreduce_choice(overheads: CommOverheads, network_s: Mapping[str, float],
                            library: str = "custom_allreduce") -> str:
    """The algorithm of ``library`` (custom all-reduce: ``one_shot`` / ``two_shot``) with the
    shorter predicted duration, given each algorithm's simulated network time: what the kernels'
    AUTO strategy aims at. Used by the step engine and the validation alike."""
    return min(network_s, key=lambda a: overheads.duration_s(library, network_s[a], op=a))


def remote_fraction(nodes: Sequence[int]) -> float:
    """Mean share of a rank's peers that sit on another node, for a group whose members are on
    ``nodes`` (node index per member): 0 within one node, ``(N-1)g / (Ng-1)`` for N nodes of g
    members each (0.533, 0.774, 0.889 for 2, 4, 8 HGX nodes)."""
    n = len(nodes)
    if n < 2:
        return 0.0
    counts = Counter(nodes)
    return sum((n - counts[m]) for m in nodes) / (n * (n - 1))


#: Fitted by ``python benchmarks/validate_comm.py`` (``cosim.validation.comm.fit_overheads`` and
#: ``fit_cross_node``) on h200_sxm rows ONLY, simulated with the flow backend on the h200 presets.
#: Single-node rows (``h200-hgx-node``): nccl-tests (2.26.2 folder; all_reduce, all_gather,
#: reduce_scatter, alltoall; 2/4/8 GPUs; half and int8; 504 rows), TensorRT-LLM's custom all-reduce
#: (1.3.0rc20, bf16, 2/4/8 GPUs, 69 rows), DeepEP normal mode (sglang 0.5.12, node_num 1, every
#: shape; the kernel rate on every SM count, 2484 + 2484 rows; the rest on the best SM count,
#: 414 + 414 rows) and DeepEP low-latency mode (sglang 0.5.12 and 0.5.6.post2, node_num 1;
#: 193 + 193 rows). Criterion: least mean absolute relative error.
#:
#: * ``links.nvlink``: the achievable fraction of NVLink's line rate, shared by every library
#:   (NCCL, the custom all-reduce and DeepEP normal mode's link bound use it with no kernel-side
#:   bandwidth factor); golden-section search with every library refitted at each trial value.
#: * ``links.rdma``: fitted on the 2-node low-latency rows (``h200-hgx-2node``; its kernels are
#:   not SM-bound) with their cross-node fixed costs; then the normal-mode cross-node terms
#:   (a kernel-side ``rdma_efficiency`` <= 1) on the 2-node normal rows. The 4- and 8-node rows
#:   were used for no fit and are the test (docs/validation-comm.md).
#: * NCCL: Simple protocol (fixed, the achievable link) and LL protocol (its own fixed cost,
#:   twice the wire bytes) per operation, the faster per call; ``nccl.nvls`` the NVLS all-reduce
#:   (in-switch reduction; algorithm ``nvls``). ``p2p`` reuses the pooled NCCL constants.
#: * custom all-reduce: one-shot / two-shot fixed costs on the achievable link, NVLS with its own
#:   fixed cost and switch efficiency; the fastest per call.
#: * DeepEP normal: kernel rate = SM-bound copy rate at 24 SMs (the same per SM on H100, H200 and
#:   B200 in the tables; a row on ``s`` SMs runs at ``rate x s / 24``), bound by the link above.
#: * DeepEP low-latency: plain, a fraction of the achievable NVLink rate (so it scales with the
#:   GPU's NVLink bandwidth); across nodes the NIC bounds it.
#:
#: Reported unchanged on h100_sxm, b200_sxm and gb200 by ``benchmarks/validate_comm_systems.py``.
DEFAULT_LINK_EFFICIENCY = LinkEfficiency(nvlink=0.694, rdma=0.952)
_NCCL_POOLED = LibraryOverhead(20.0e-6, alternatives=(LibraryOverhead(4.90e-6, wire_bytes_factor=2.0),))
DEFAULT_OVERHEADS = CommOverheads(
    nccl=_NCCL_POOLED,
    deepep_normal=LibraryOverhead(30.5e-6, 0.713, 346e9, rdma_efficiency=0.864),
    deepep_ll=LibraryOverhead(8.84e-6, 0.757, cross_node_fixed_s=17.8e-6),
    p2p=_NCCL_POOLED,
    ops={
        "nccl.all_reduce": LibraryOverhead(17.7e-6, alternatives=(LibraryOverhead(4.26e-6, wire_bytes_factor=2.0),)),
        "nccl.all_gather": LibraryOverhead(22.2e-6, alternatives=(LibraryOverhead(4.83e-6, wire_bytes_factor=2.0),)),
        "nccl.reduce_scatter": LibraryOverhead(19.0e-6,
                                               alternatives=(LibraryOverhead(4.33e-6, wire_bytes_factor=2.0),)),
        "nccl.all_to_all": LibraryOverhead(14.8e-6, alternatives=(LibraryOverhead(7.42e-6, wire_bytes_factor=2.0),)),
        "nccl.nvls": LibraryOverhead(71.1e-6, 0.984),
        "deepep_normal.dispatch": LibraryOverhead(26.2e-6, 0.685, 321e9, rdma_efficiency=0.960),
        "deepep_normal.combine": LibraryOverhead(37.4e-6, 0.766, 383e9, cross_node_fixed_s=18.4e-6,
                                                 rdma_efficiency=0.782),
        "deepep_ll.dispatch": LibraryOverhead(9.03e-6, 0.831, cross_node_fixed_s=15.6e-6),
        "deepep_ll.combine": LibraryOverhead(8.84e-6, 0.728, cross_node_fixed_s=26.0e-6),
        "custom_allreduce.one_shot": LibraryOverhead(1.87e-6),
        "custom_allreduce.two_shot": LibraryOverhead(16.5e-6),
        "custom_allreduce.nvls": LibraryOverhead(69.1e-6, 0.993),
        # Fitted by benchmarks/validate_nvlink_a2a.py on gb200 EP 2/4 rows (fp8 dispatch, bf16
        # combine) on the NVLink efficiency above; EP 8-64 are the test (docs/validation-comm.md
        # section 9). No h200 table measures this kernel.
        "nvlink_a2a.dispatch": LibraryOverhead(9.83e-6, 0.758, 417e9),
        "nvlink_a2a.combine": LibraryOverhead(11.0e-6, 0.581, 347e9),
    },
    custom_allreduce=LibraryOverhead(1.87e-6),
    nvlink_a2a=LibraryOverhead(9.83e-6, 0.758, 417e9),
    links=DEFAULT_LINK_EFFICIENCY,
)
