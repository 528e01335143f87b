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
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from cosim.errors import ConfigError
from cosim.network.libraries import LIBRARIES as _REGISTRY

#: Libraries a collective can be implemented by (the registry :data:`cosim.network.libraries.LIBRARIES`).
LIBRARIES = tuple(_REGISTRY)


@dataclass(frozen=True)
class LibraryOverhead:
    """Cost model of one library (or one operation of it); times in seconds, rates in bytes/s.

    Attributes:
        fixed_s: fixed cost per call.
        bandwidth_efficiency: fraction of the simulated network bandwidth the library achieves
            (plain model; ``network_s`` is divided by it).
        kernel_rate_bytes_per_s: most bytes per second one GPU's kernels emit (kernel-rate model);
            ``None`` = not modelled.
        cross_node_fixed_s: extra fixed cost of a call whose every peer is on another node
            (scaled by the remote fraction of the group).
        rdma_efficiency: fraction of the simulated network rate achieved when the group spans
            nodes (1 = the simulated rate).
    """

    fixed_s: float
    bandwidth_efficiency: float = 1.0
    kernel_rate_bytes_per_s: float | None = None
    cross_node_fixed_s: float = 0.0
    rdma_efficiency: float = 1.0

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
        if not 0 < self.rdma_efficiency <= 1:
            raise ConfigError("<api>", "rdma_efficiency", f"must be in (0, 1], got {self.rdma_efficiency!r}")

    def duration_s(self, network_s: float, gpu_bytes: float | None = None, remote_fraction: float = 0.0) -> float:
        """Duration of a call whose traffic takes ``network_s`` on the network; ``gpu_bytes`` (the
        most bytes one GPU emits) selects the kernel-rate model when the rate is known;
        ``remote_fraction`` (mean share of a rank's peers on other nodes, 0 within one node)
        adds the cross-node terms."""
        if not 0 <= remote_fraction <= 1:
            raise ValueError(f"remote_fraction must be in [0, 1], got {remote_fraction}")
        fixed = self.fixed_s
        if remote_fraction > 0:
            fixed += remote_fraction * self.cross_node_fixed_s
            network_s = network_s / self.rdma_efficiency
        if self.kernel_rate_bytes_per_s is None or gpu_bytes is None:
            return fixed + network_s / self.bandwidth_efficiency
        return fixed + max(network_s, gpu_bytes / self.kernel_rate_bytes_per_s)


@dataclass(frozen=True)
class CommOverheads:
    """Overheads of every communication library, with optional per-operation overrides.

    ``ops`` maps ``"<library>.<op>"`` (e.g. ``"nccl.all_reduce"``, ``"deepep_ll.combine"``) to the
    constants of that operation. ``custom_allreduce`` is the frameworks' own all-reduce kernel
    (one node; ``None`` falls back to NCCL's all-reduce constants), ``nvlink_a2a`` TensorRT-LLM's
    NVLink MoE all-to-all (one NVLink domain; ``None``: NCCL's all-to-all constants).
    """

    nccl: LibraryOverhead
    deepep_normal: LibraryOverhead
    deepep_ll: LibraryOverhead
    p2p: LibraryOverhead
    ops: Mapping[str, LibraryOverhead] = field(default_factory=dict, hash=False)
    custom_allreduce: LibraryOverhead | None = None  # None: NCCL's all-reduce constants
    nvlink_a2a: LibraryOverhead | None = None  # None: NCCL's all-to-all constants
    bipartite: LibraryOverhead | None = None  # None: the p2p constants (M->N sends are p2p sends)

    def __post_init__(self) -> None:
        for key in self.ops:
            lib, _, op = key.partition(".")
            if lib not in LIBRARIES or not op:
                raise ConfigError("<api>", f"ops[{key!r}]", f"expected '<library>.<op>' with library in {LIBRARIES}")
        object.__setattr__(self, "ops", MappingProxyType(dict(self.ops)))

    def overhead(self, library: str, op: str | None = None) -> LibraryOverhead:
        """Constants for ``library`` (and ``op`` when it has its own)."""
        if library not in LIBRARIES:
            raise ConfigError("<api>", "library", f"expected one of {', '.join(LIBRARIES)}, got {library!r}")
        if op is not None:
            specific = self.ops.get(f"{library}.{op}")
            if specific is not None:
                return specific
        if library == "custom_allreduce" and self.custom_allreduce is None:
            return self.overhead("nccl", "all_reduce")
        if library == "nvlink_a2a" and self.nvlink_a2a is None:
            return self.overhead("nccl", "all_to_all")
        if library == "bipartite" and self.bipartite is None:
            return self.overhead("p2p", op)
        return getattr(self, library)

    def duration_s(self, library: str, network_s: float, op: str | None = None,
                   gpu_bytes: float | None = None, remote_fraction: float = 0.0) -> float:
        """Duration of one call of ``library`` (optionally its operation ``op``) whose traffic
        takes ``network_s`` on the simulated network; see the module docstring for the models."""
        return self.overhead(library, op).duration_s(network_s, gpu_bytes, remote_fraction)


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


#: Fitted by ``python benchmarks/validate_comm.py`` (``cosim.validation.comm.fit_overheads``) on
#: single-node h200_sxm rows ONLY, simulated with the flow backend on the ``h200-hgx-node`` preset:
#: nccl-tests (2.26.2 folder; all_reduce, all_gather, reduce_scatter, alltoall; 2/4/8 GPUs; half
#: and int8; 504 rows), TensorRT-LLM's custom all-reduce (1.3.0rc20, bf16, 2/4/8 GPUs, 69 rows;
#: one-shot and two-shot fixed costs with one efficiency, the faster algorithm per call),
#: DeepEP normal mode (sglang 0.5.12, node_num 1, every shape, best time over
#: the SM counts; 414 dispatch + 414 combine rows) and DeepEP low-latency mode (sglang 0.5.12 and
#: 0.5.6.post2, node_num 1; 193 + 193 rows). Criterion: least mean absolute relative error. The
#: DeepEP cross-node terms (``cross_node_fixed_s``, ``rdma_efficiency``) are fitted afterwards on
#: the 2-node rows ONLY (``fit_cross_node``; 23 + 23 normal, 26 + 26 low-latency rows on
#: ``h200-hgx-2node``); the 4- and 8-node rows were used for neither fit and are the test
#: (docs/validation-comm.md). Library-wide entries pool all operations of the library; ``p2p``
#: has no measured table and reuses the pooled NCCL constants.
DEFAULT_OVERHEADS = CommOverheads(
    nccl=LibraryOverhead(5.13e-6, 0.656),
    deepep_normal=LibraryOverhead(29.9e-6, 0.644, 283e9, cross_node_fixed_s=0.0, rdma_efficiency=0.822),
    deepep_ll=LibraryOverhead(9.82e-6, 0.558, 228e9, cross_node_fixed_s=16.0e-6, rdma_efficiency=0.952),
    p2p=LibraryOverhead(5.13e-6, 0.656),
    ops={
        "nccl.all_reduce": LibraryOverhead(4.85e-6, 0.701),
        "nccl.all_gather": LibraryOverhead(4.68e-6, 0.575),
        "nccl.reduce_scatter": LibraryOverhead(4.43e-6, 0.618),
        "nccl.all_to_all": LibraryOverhead(8.39e-6, 0.637),
        "deepep_normal.dispatch": LibraryOverhead(25.8e-6, 0.637, 277e9, cross_node_fixed_s=0.0, rdma_efficiency=0.868),
        "deepep_normal.combine": LibraryOverhead(37.6e-6, 0.657, 290e9, cross_node_fixed_s=18.0e-6,
                                                 rdma_efficiency=0.744),
        "deepep_ll.dispatch": LibraryOverhead(9.82e-6, 0.593, 253e9, cross_node_fixed_s=14.0e-6, rdma_efficiency=0.948),
        "deepep_ll.combine": LibraryOverhead(9.96e-6, 0.519, 222e9, cross_node_fixed_s=23.8e-6, rdma_efficiency=0.954),
        "custom_allreduce.one_shot": LibraryOverhead(2.0e-6, 0.750),
        "custom_allreduce.two_shot": LibraryOverhead(17.8e-6, 0.750),
        # Fitted by benchmarks/validate_nvlink_a2a.py on gb200 EP 2/4 rows (fp8 dispatch, bf16
        # combine); EP 8-64 are the test (docs/validation-comm.md section 9).
        "nvlink_a2a.dispatch": LibraryOverhead(10.2e-6, 0.530, 423e9),
        "nvlink_a2a.combine": LibraryOverhead(11.6e-6, 0.406, 353e9),
    },
    custom_allreduce=LibraryOverhead(2.0e-6, 0.750),
    nvlink_a2a=LibraryOverhead(10.2e-6, 0.530, 423e9),
)
