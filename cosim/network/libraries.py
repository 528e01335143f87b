"""Communication libraries: the one path from a collective call to flows.

Every collective cosim simulates (MoE dispatch and combine, tensor-parallel all-reduces, pipeline
sends, attention <-> FFN transfers, P/D KV-cache moves) is a :class:`CommCall`: a library, an
operation, the participating GPU ranks and a bytes matrix. :func:`add_call_flows` looks the
library up in :data:`LIBRARIES` and lets it append its flows to a :class:`FlowSet`. Each library
owns its flow builder and its routing (DeepEP's low-latency kernels send from every GPU's own NIC,
``cross_rail: direct``; the others follow the topology's policy). The step engine, the
communication validation and the serving layer all come through here; add a library with
:func:`register_library`, not with a branch.

Registered libraries and their operations:

========================  ==============================  ===========================================
library                   operations                      flows
========================  ==============================  ===========================================
``nccl``                  all_reduce, all_gather,          ring (one ring per rail across nodes, like
                          reduce_scatter, all_to_all       NCCL's channels), tree or NVLS all-reduce;
                                                           all-to-all-v
``custom_allreduce``      all_reduce                       one-shot / two-shot / NVLS (TRT-LLM, sglang,
                                                           vLLM)
``deepep_ll``             dispatch, combine                per-selection messages, own NIC
``deepep_normal``         dispatch, combine                hierarchical RDMA + NVLink forwarding
``nvlink_a2a``            dispatch, combine                direct all-to-all-v in one NVLink domain
``p2p``                   send                             one transfer (pipeline activations, KV)
``bipartite``             a2f, f2a, transfer               M -> N transfer (AFD, KV across pools)
========================  ==============================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Literal

import numpy as np

from cosim.errors import ConfigError, FlowError
from cosim.network import collectives as C
from cosim.network import deepep as D
from cosim.network.collectives import Collective
from cosim.network.flows import FlowSet
from cosim.registry import Registry

CrossRail = Literal["topology", "direct"]


@dataclass(frozen=True)
class CommCall:
    """One call of a communication library, in the terms the network understands.

    Attributes:
        library: name in :data:`LIBRARIES` (``nccl``, ``deepep_ll`` ...).
        op: the library's operation (``all_reduce``, ``dispatch``, ``a2f`` ...).
        ranks: participating topology GPU ranks in group order; ``bipartite``: senders then
            receivers.
        bytes_matrix: ``[i][j]`` bytes from ``ranks[i]`` to ``ranks[j]`` (all-to-all-v, p2p as a
            2x2 matrix); ``bipartite``: senders x receivers; ring collectives: 1x1, the buffer size.
        num_senders: ``bipartite``: the first ``num_senders`` ranks send to the others.
        node_bytes_matrix: DeepEP normal mode across nodes (see :mod:`cosim.network.deepep`).
        qps_per_peer: DeepEP low-latency mode: queue pairs per peer (0 = not set).
    """

    library: str
    op: str
    ranks: tuple[int, ...]
    bytes_matrix: np.ndarray
    num_senders: int = 0
    node_bytes_matrix: np.ndarray | None = None
    qps_per_peer: int = 0


@dataclass(frozen=True)
class BuildOptions:
    """How a library lays out one call's flows.

    Attributes:
        gpus_per_node: GPUs per node (scale-up domain); the node of rank r is ``r // gpus_per_node``.
        algorithm: for libraries with several algorithms (``custom_allreduce``: ``one_shot`` /
            ``two_shot``; ``nccl`` all-reduce: ``ring`` / ``tree``); ``None``: the library's default.
        chunk_bytes: pipelining chunk of ring and tree collectives (``None``: no chunking).
    """

    gpus_per_node: int = D.DEFAULT_GPUS_PER_NODE
    algorithm: str | None = None
    chunk_bytes: int | None = C.DEFAULT_CHUNK_BYTES


class CommLibrary:
    """A communication library: its operations, algorithms, routing and flow builder.

    Subclasses set :attr:`name`, :attr:`ops`, optionally :attr:`algorithms` (the first is the
    default) and :attr:`cross_rail`, and implement :meth:`build`.
    """

    name: ClassVar[str]
    ops: ClassVar[tuple[str, ...]]
    algorithms: ClassVar[tuple[str, ...]] = ()
    #: ``direct``: every GPU sends from its own NIC; ``topology``: the topology's routing policy.
    cross_rail: ClassVar[CrossRail] = "topology"
    #: MoE dispatch/combine libraries.
    moe: ClassVar[bool] = False
    #: The overhead model needs the group's remote fraction: it selects the link tier whose
    #: efficiency applies (RDMA across nodes) and scales the cross-node terms (DeepEP).
    cross_node_terms: ClassVar[bool] = False
    #: The engine simulates every algorithm and takes the one with the shorter predicted duration
    #: (the custom all-reduce kernels' AUTO strategy); otherwise the default algorithm is used.
    choose_fastest_algorithm: ClassVar[bool] = False

    def build(self, fs: FlowSet, call: CommCall, after: list[int], tag: str, opts: BuildOptions) -> Collective:
        raise NotImplementedError

    def check(self, call: CommCall, opts: BuildOptions) -> None:
        """Reject a call this library cannot make (unknown op or algorithm)."""
        if call.op not in self.ops:
            raise ConfigError("<trace>", "op", f"library {self.name!r} has no operation {call.op!r}; "
                                               f"expected one of {list(self.ops)}")
        if opts.algorithm is not None and opts.algorithm not in self.algorithms:
            raise ConfigError("<trace>", "algorithm", f"library {self.name!r} has no algorithm {opts.algorithm!r}"
                                                      + (f"; expected one of {list(self.algorithms)}"
                                                         if self.algorithms else ""))


#: Every communication library by name (one instance each).
LIBRARIES = Registry("communication library")


def register_library(cls: type[CommLibrary]) -> type[CommLibrary]:
    """Class decorator: add one instance of ``cls`` to :data:`LIBRARIES` under ``cls.name``."""
    LIBRARIES.add(cls.name, cls())
    return cls


def get_library(name: str) -> CommLibrary:
    """The registered library ``name``; ConfigError listing the known ones otherwise."""
    return LIBRARIES.lookup(name, "<trace>", "library")


def add_call_flows(fs: FlowSet, call: CommCall, *, after: Iterable[int] = (), tag: str = "",
                   opts: BuildOptions = BuildOptions()) -> list[int]:
    """Append the flows of ``call`` to ``fs`` (through its library) and return the flows whose
    completion ends it (``after`` when the call moves nothing, e.g. a 1-rank all-reduce)."""
    lib = get_library(call.library)
    lib.check(call, opts)
    _check_call(call, tag or call.op)
    after = list(after)
    if len(call.ranks) < 2:
        return after
    coll = lib.build(fs, call, after, tag, opts)
    return coll.last or after


def _check_call(call: CommCall, what: str) -> None:
    """Ranks are integers, byte matrices finite non-negative whole numbers within MAX_FLOW_BYTES."""
    C._check_ranks(call.ranks, what, minimum=0)
    for name in ("bytes_matrix", "node_bytes_matrix"):
        m = getattr(call, name)
        if m is None and name == "node_bytes_matrix":
            continue
        m = np.asarray(m) if not isinstance(m, np.ndarray) else m
        if m.ndim != 2:
            raise FlowError(f"{what}: {name} must be a 2-D array of byte counts, got shape {m.shape}")
        C._check_matrix(m, m.shape, what, fractional=True)  # each library applies its own integer rule


def _size(call: CommCall) -> int:
    return int(call.bytes_matrix.reshape(-1)[0])


@register_library
class Nccl(CommLibrary):
    """NCCL: ring collectives (chunk-pipelined) and all-to-all-v.

    A ring whose ranks span several nodes runs one ring per channel, like NCCL: channel c enters
    every node at its c-th GPU, so the inter-node hops of the c channels use c different rails
    (NICs) and the buffer is split evenly over the channels (as many channels as the group has
    GPUs per node). Inside one node there is one ring.
    """

    name = "nccl"
    ops = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
    algorithms = ("ring", "tree", "nvls")
    cross_node_terms = True

    def build(self, fs, call, after, tag, opts):
        ranks, m = list(call.ranks), call.bytes_matrix
        if call.op == "all_to_all":
            return C.all_to_all_v(fs, ranks, m, after=after, tag=tag)
        if call.op == "all_reduce" and opts.algorithm == "tree":
            return C.tree_all_reduce(fs, ranks, _size(call), chunk_bytes=opts.chunk_bytes, after=after, tag=tag)
        if call.op == "all_reduce" and opts.algorithm == "nvls":
            if len(set(D.group_nodes(ranks, opts.gpus_per_node))) > 1:
                raise ConfigError("<trace>", "algorithm", f"{tag}: NVLS all-reduce runs inside one NVSwitch "
                                                          f"domain; ranks {ranks} span several")
            return C.nvls_all_reduce(fs, ranks, _size(call), after=after, tag=tag)
        ring = {"all_reduce": C.ring_all_reduce, "all_gather": C.ring_all_gather,
                "reduce_scatter": C.ring_reduce_scatter}[call.op]
        channels = rail_rings(ranks, opts.gpus_per_node)
        if len(channels) == 1:
            return ring(fs, ranks, _size(call), chunk_bytes=opts.chunk_bytes, after=after, tag=tag)
        parts = C._split(_size(call), len(channels))
        phases = 2 if call.op == "all_reduce" else 1
        C.check_flow_count(sum(C.ring_flow_count(len(order), part, phases, opts.chunk_bytes)
                               for order, part in zip(channels, parts)), tag)
        out = Collective(tag)
        for c, (order, part) in enumerate(zip(channels, parts)):
            sub = ring(fs, order, part, chunk_bytes=opts.chunk_bytes, after=after, tag=f"{tag}:ch{c}")
            out.flows += sub.flows
            out.last += sub.last
        return out


def rail_rings(ranks: list[int], gpus_per_node: int) -> list[list[int]]:
    """Ring orders of NCCL's channels over ``ranks``: one ring inside a node; across nodes with
    ``g`` group members on every node, ``g`` rings, ring c visiting each node's members starting
    at its c-th (so its inter-node hop leaves from rail c - 1 and arrives on rail c)."""
    node = D.group_nodes(ranks, gpus_per_node)
    members: dict[int, list[int]] = {}
    for r, n in zip(ranks, node):
        members.setdefault(n, []).append(r)
    sizes = {len(v) for v in members.values()}
    if len(members) == 1 or len(sizes) != 1:
        return [ranks]
    g = sizes.pop()
    if g == 1:
        return [ranks]
    return [[r for n in sorted(members) for r in members[n][c:] + members[n][:c]] for c in range(g)]


@register_library
class CustomAllReduce(CommLibrary):
    """The frameworks' custom all-reduce kernels inside one NVLink domain (one-shot, two-shot,
    NVLS; default two-shot)."""

    name = "custom_allreduce"
    ops = ("all_reduce",)
    algorithms = C.CUSTOM_ALLREDUCE_ALGORITHMS
    choose_fastest_algorithm = True

    def build(self, fs, call, after, tag, opts):
        return C.custom_all_reduce(fs, list(call.ranks), _size(call), opts.algorithm or "two_shot",
                                   after=after, tag=tag)


@register_library
class DeepEPLowLatency(CommLibrary):
    """DeepEP low-latency dispatch / combine (:func:`cosim.network.deepep.deepep_ll_flows`)."""

    name = "deepep_ll"
    ops = ("dispatch", "combine")
    cross_rail = "direct"
    moe = True
    cross_node_terms = True

    def build(self, fs, call, after, tag, opts):
        return D.deepep_ll_flows(fs, list(call.ranks), call.bytes_matrix, max(1, call.qps_per_peer),
                                 opts.gpus_per_node, after=after, tag=tag)


@register_library
class DeepEPNormal(CommLibrary):
    """DeepEP normal-mode dispatch / combine (:func:`cosim.network.deepep.deepep_normal_flows`);
    across nodes the call needs its per-node matrix, checked against the topology's nodes."""

    name = "deepep_normal"
    ops = ("dispatch", "combine")
    moe = True
    cross_node_terms = True

    def build(self, fs, call, after, tag, opts):
        ranks = list(call.ranks)
        nodes = max(D.group_nodes(ranks, opts.gpus_per_node)) + 1
        node_m = call.node_bytes_matrix
        if nodes > 1:
            if node_m is None:
                raise ConfigError("<trace>", "node_bytes_matrix",
                                  f"{tag}: DeepEP normal mode across {nodes} nodes needs the bytes per "
                                  "destination node (node_bytes_matrix)")
            have = node_m.shape[1] if call.op == "dispatch" else node_m.shape[0]
            if have != nodes:
                raise ConfigError("<trace>", "node_bytes_matrix",
                                  f"{tag}: built for {have} nodes, but its ranks are on {nodes} nodes of "
                                  f"{opts.gpus_per_node} GPUs in this topology")
        return D.deepep_normal_flows(fs, ranks, call.bytes_matrix, node_m, opts.gpus_per_node, call.op,
                                     after=after, tag=tag)


@register_library
class NvlinkAllToAll(CommLibrary):
    """TensorRT-LLM's NVLink MoE all-to-all: a direct all-to-all-v inside one NVLink domain."""

    name = "nvlink_a2a"
    ops = ("dispatch", "combine")
    moe = True

    def build(self, fs, call, after, tag, opts):
        return C.all_to_all_v(fs, list(call.ranks), call.bytes_matrix, after=after, tag=tag)


@register_library
class PointToPoint(CommLibrary):
    """One transfer from ``ranks[0]`` to ``ranks[1]`` of ``bytes_matrix[0][1]`` bytes."""

    name = "p2p"
    ops = ("send",)

    cross_node_terms = True

    def build(self, fs, call, after, tag, opts):
        return C.point_to_point(fs, call.ranks[0], call.ranks[1], int(call.bytes_matrix[0, 1]), after=after, tag=tag)


@register_library
class Bipartite(CommLibrary):
    """M -> N transfer: ``bytes_matrix[i][j]`` from sender i (the first ``num_senders`` ranks) to
    receiver j (the rest). Attention -> FFN (``a2f``), FFN -> attention (``f2a``), any other
    group-to-group move (``transfer``)."""

    name = "bipartite"
    ops = ("a2f", "f2a", "transfer")

    cross_node_terms = True

    def build(self, fs, call, after, tag, opts):
        k = call.num_senders
        if not 0 < k < len(call.ranks):
            raise FlowError(f"{tag}: bipartite needs 0 < num_senders < {len(call.ranks)} ranks, got {k}")
        return C.bipartite(fs, list(call.ranks[:k]), list(call.ranks[k:]), call.bytes_matrix, after=after, tag=tag)


def library_names(predicate: Callable[[CommLibrary], bool] = lambda lib: True) -> tuple[str, ...]:
    """Names of the registered libraries satisfying ``predicate``, in registration order."""
    return tuple(name for name, lib in LIBRARIES.items() if predicate(lib))


#: MoE dispatch/combine libraries.
MOE_LIBRARIES = library_names(lambda lib: lib.moe)



@dataclass(frozen=True)
class NamedCollective:
    """A collective runnable by name (``cosim net --collective NAME``): a library call whose
    traffic is ``size_bytes`` over a group of ranks."""

    description: str
    library: str
    op: str
    algorithm: str | None = None
    pattern: Literal["buffer", "uniform", "halves", "ends"] = "buffer"

    def call(self, ranks: list[int], size_bytes: int) -> CommCall:
        """The library call over ``ranks``: ``buffer`` a 1x1 buffer size; ``uniform`` the size per
        pair; ``halves`` the first half sends the size to each rank of the second; ``ends`` the
        first rank sends it to the last."""
        n, size = len(ranks), C.check_size_bytes(size_bytes, f"{self.library} {self.op}")
        if self.pattern == "uniform":
            m = np.full((n, n), size, dtype=np.int64)
            np.fill_diagonal(m, 0)
            return CommCall(self.library, self.op, tuple(ranks), m)
        if self.pattern == "halves":
            half = n // 2
            return CommCall(self.library, self.op, tuple(ranks), np.full((half, n - half), size, dtype=np.int64),
                            num_senders=half)
        if self.pattern == "ends":
            return CommCall(self.library, self.op, (ranks[0], ranks[-1]), np.array([[0, size], [0, 0]], dtype=np.int64))
        return CommCall(self.library, self.op, tuple(ranks), np.array([[size]], dtype=np.int64))


#: Collectives runnable from the command line (``cosim net --collective NAME``), by name.
COLLECTIVES: dict[str, NamedCollective] = {
    "all_to_all": NamedCollective("uniform all-to-all, --size bytes per pair", "nccl", "all_to_all",
                                  pattern="uniform"),
    "all_reduce": NamedCollective("NCCL ring all-reduce of a --size buffer (one ring per rail across nodes)",
                                  "nccl", "all_reduce", "ring"),
    "tree_all_reduce": NamedCollective("binary-tree all-reduce of a --size buffer", "nccl", "all_reduce", "tree"),
    "nvls_all_reduce": NamedCollective("NVLink SHARP all-reduce of a --size buffer (in-switch reduction, one "
                                       "NVSwitch domain)", "nccl", "all_reduce", "nvls"),
    "one_shot_all_reduce": NamedCollective("one-shot all-reduce of a --size buffer (every rank sends it to every "
                                           "other)", "custom_allreduce", "all_reduce", "one_shot"),
    "two_shot_all_reduce": NamedCollective("two-shot all-reduce of a --size buffer (direct reduce-scatter + "
                                           "all-gather)", "custom_allreduce", "all_reduce", "two_shot"),
    "all_gather": NamedCollective("ring all-gather producing a --size buffer", "nccl", "all_gather"),
    "reduce_scatter": NamedCollective("ring reduce-scatter of a --size buffer", "nccl", "reduce_scatter"),
    "bipartite": NamedCollective("first half of the GPUs send --size bytes to each GPU of the second half",
                                 "bipartite", "transfer", pattern="halves"),
    "p2p": NamedCollective("GPU 0 sends --size bytes to the last GPU", "p2p", "send", pattern="ends"),
}


def build_collective(fs: FlowSet, name: str, ranks: Iterable[int], size_bytes: int,
                     chunk_bytes: int | None = C.DEFAULT_CHUNK_BYTES,
                     gpus_per_node: int = D.DEFAULT_GPUS_PER_NODE) -> Collective:
    """Build one of :data:`COLLECTIVES` over ``ranks`` through its library (used by the CLI and
    benchmarks); the returned collective's ``last`` flows end it."""
    if name not in COLLECTIVES:
        raise FlowError(f"unknown collective {name!r}; expected one of {', '.join(COLLECTIVES)}")
    named = COLLECTIVES[name]
    first = len(fs)
    last = add_call_flows(fs, named.call(list(ranks), size_bytes), tag=name,
                          opts=BuildOptions(gpus_per_node, named.algorithm, chunk_bytes))
    return Collective(name, range(first, len(fs)), last)
