"""Execution traces of one forward step: per rank, a DAG of compute and communication nodes.

A :class:`StepTrace` holds one :class:`RankTrace` per GPU rank and the list of
:class:`CollectiveSpec` the ranks take part in. A :class:`CommNode` on a rank refers to a
collective by id; every participant of a collective has one such node. Durations are in seconds
(float); serialization to protobuf keeps nanosecond resolution (``cosim.trace.serialize``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cosim.errors import ConfigError
from cosim.network.libraries import LIBRARIES, MOE_LIBRARIES, CommCall, get_library
from cosim.ops import ComputeOp

__all__ = ["MOE_LIBRARIES", "CollectiveKind", "CollectiveSpec", "CommNode", "ComputeNode", "RankTrace",
           "StepTrace", "TraceNode"]

CollectiveKind = Literal["all_to_all_v", "all_reduce", "all_gather", "reduce_scatter", "bipartite", "p2p"]
#: The operation a collective of each kind performs when the trace does not say (ring collectives
#: and all-to-all-v of NCCL; MoE libraries always name theirs: dispatch / combine).
DEFAULT_OP = {"all_to_all_v": "all_to_all", "all_reduce": "all_reduce", "all_gather": "all_gather",
              "reduce_scatter": "reduce_scatter", "bipartite": "transfer", "p2p": "send"}


@dataclass(frozen=True)
class CollectiveSpec:
    """One collective of the step, shared by all its participants.

    Attributes:
        id: index in :attr:`StepTrace.collectives`.
        name: e.g. ``L5.mb0.dispatch``.
        kind: communication pattern.
        library: implementation, a name in :data:`cosim.network.libraries.LIBRARIES` (NCCL,
            DeepEP normal / low-latency, bipartite ...): builds the flows and selects the overheads.
        ranks: participating GPU ranks (topology ranks), in group order.
        bytes_matrix: ``[i][j]`` bytes from ``ranks[i]`` to ``ranks[j]`` (all-to-all-v, p2p as 2x2);
            bipartite: ``ranks = senders + receivers`` and a senders x receivers matrix; ring
            collectives: a 1x1 matrix holding the buffer size.
        layer: decoder layer index (-1 for head ops).
        microbatch: micro-batch index (two-batch overlap uses 0 and 1).
        num_senders: bipartite: the first ``num_senders`` ranks send to the others.
        node_bytes_matrix: DeepEP normal mode across nodes: bytes deduplicated per destination
            node, which go by RDMA once per (rank, remote node) and are forwarded over NVLink
            (:func:`cosim.network.deepep.deepep_normal_flows`); dispatch ``[ranks x nodes]``
            (``[i][m]`` from ``ranks[i]`` to node ``m``), combine ``[nodes x ranks]``. Nodes are
            numbered in order of first appearance in ``ranks``; entries of a rank's own node are
            0. ``None`` otherwise. ``bytes_matrix`` stays the per-rank (deduplicated per rank)
            matrix.
        qps_per_peer: DeepEP low-latency mode: queue pairs per peer (one per local expert), over
            which every inter-node pair's bytes are split; 0 = not set.
        op: the library's operation (``dispatch``, ``combine``, ``all_reduce``, ``a2f``, ``send``
            ...); empty: :data:`DEFAULT_OP` of the kind. MoE libraries need it explicitly.
    """

    id: int
    name: str
    kind: CollectiveKind
    library: str
    ranks: tuple[int, ...]
    bytes_matrix: np.ndarray
    layer: int = -1
    microbatch: int = 0
    num_senders: int = 0
    node_bytes_matrix: np.ndarray | None = None
    qps_per_peer: int = 0
    op: str = ""

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            get_library(self.library)  # raises, naming the known libraries
        if not self.op:
            if self.library in MOE_LIBRARIES:
                raise ConfigError("<trace>", f"collectives[{self.id}].op",
                                  f"{self.name}: a {self.library} collective needs its operation (dispatch or combine)")
            object.__setattr__(self, "op", DEFAULT_OP[self.kind])

    @property
    def total_bytes(self) -> float:
        return float(self.bytes_matrix.sum())

    def call(self) -> CommCall:
        """This collective as a call of its communication library (what the network builds)."""
        return CommCall(self.library, self.op, self.ranks, self.bytes_matrix, self.num_senders,
                        self.node_bytes_matrix, self.qps_per_peer)

    def shape_key(self) -> tuple:
        """Identity of the traffic (kind, library, placement, bytes and DeepEP parameters): equal
        keys need one network simulation."""
        h = hashlib.blake2b(digest_size=12)
        m = np.ascontiguousarray(self.bytes_matrix, dtype=np.int64)
        h.update(repr(m.shape).encode())
        h.update(m.tobytes())
        if self.node_bytes_matrix is not None:
            nm = np.ascontiguousarray(self.node_bytes_matrix, dtype=np.int64)
            h.update(b"node" + repr(nm.shape).encode())
            h.update(nm.tobytes())
        return (self.kind, self.library, self.op, self.ranks, self.num_senders, self.qps_per_peer, h.hexdigest())


@dataclass(frozen=True, slots=True)
class ComputeNode:
    """A kernel on the rank's compute stream."""

    id: int
    name: str
    op: ComputeOp
    duration_s: float
    source: str  # measured | interpolated | roofline (see cosim.kernels)
    deps: tuple[int, ...] = ()
    layer: int = -1
    microbatch: int = 0
    op_class: str = ""  # attention | moe | dense_ffn | gemm | memory | head


@dataclass(frozen=True, slots=True)
class CommNode:
    """This rank's part in collective ``collective_id``, on the rank's communication stream
    ``stream`` (0 by default; AFD sends A2F on stream 1 and receives F2A on stream 2, like
    separate send/receive streams, so one direction never waits behind the other)."""

    id: int
    name: str
    collective_id: int
    deps: tuple[int, ...] = ()
    layer: int = -1
    microbatch: int = 0
    stream: int = 0


TraceNode = ComputeNode | CommNode


@dataclass
class RankTrace:
    """The DAG of one rank; node ids are indices into :attr:`nodes` and deps point backwards."""

    rank: int
    nodes: list[TraceNode] = field(default_factory=list)


@dataclass
class StepTrace:
    """All ranks of one forward step plus the collectives they share.

    ``metadata`` records how the trace was made (model, system, phase, batch, context,
    parallelism, overlap) as strings so it survives serialization. Ranks and collective members
    are step ranks (positions in :attr:`ranks`); ``gpus[r]`` is the topology GPU step rank ``r``
    runs on (``None``: GPU ``r``). ``groups`` names sets of step ranks (AFD: ``attention`` and
    ``ffn``; ``None``: one group ``all``).
    """

    ranks: list[RankTrace]
    collectives: list[CollectiveSpec]
    metadata: dict[str, str] = field(default_factory=dict)
    gpus: tuple[int, ...] | None = None
    groups: dict[str, tuple[int, ...]] | None = None

    def gpu_of(self, rank: int) -> int:
        """Topology GPU of step rank ``rank``."""
        return rank if self.gpus is None else self.gpus[rank]

    def rank_groups(self) -> dict[str, tuple[int, ...]]:
        """``groups``, or every rank in one group ``all``."""
        return self.groups or {"all": tuple(range(len(self.ranks)))}
