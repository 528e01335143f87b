"""Write and read step traces as cosim protobuf files (``.pb``).

A ``.pb`` file holds one ``cosim.trace.StepTrace`` message (schema:
``cosim/trace/proto/cosim_trace.proto``). Integers round-trip exactly; every compute duration is
stored both as integer nanoseconds (``duration_ns``) and as the exact float seconds, so
:func:`read_step_trace` gives back the very trace that was written.

Public API: :func:`write_step_trace`, :func:`read_step_trace`, :func:`to_proto`,
:func:`from_proto`, :class:`TraceFormatError`.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from cosim.errors import CosimError
from cosim.io_atomic import atomic_write_bytes
from cosim.ops import AttentionOp, ComputeOp, GemmOp, MemoryOp, MoeOp
from cosim.trace.model import MOE_LIBRARIES, CollectiveSpec, CommNode, ComputeNode, RankTrace, StepTrace, TraceNode
from cosim.trace.proto import cosim_trace_pb2 as pb

#: Version written to ``StepTrace.schema_version``; the reader accepts only this one.
SCHEMA_VERSION = 1

# oneof case name in ComputeNode.op <-> op dataclass
_OP_CASES: dict[str, type] = {"gemm": GemmOp, "attention": AttentionOp, "moe": MoeOp, "memory": MemoryOp}
_CASE_OF_OP: dict[type, str] = {cls: case for case, cls in _OP_CASES.items()}


class TraceFormatError(CosimError, ValueError):
    """A trace file cannot be read: not a trace, truncated, corrupt, or inconsistent."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")


# --- public API --------------------------------------------------------------------------------

def write_step_trace(trace: StepTrace, path: str | Path) -> Path:
    """Write ``trace`` to ``path`` as one serialized ``cosim.trace.StepTrace`` message.

    The file is written atomically (:func:`cosim.io_atomic.atomic_write_bytes`: a temporary file
    in the same folder, fsync-ed and renamed), so a writer killed mid-file leaves the earlier file
    at ``path`` intact. Returns the path written. Raises ``ValueError`` for a duration that is
    negative or not finite.
    """
    return atomic_write_bytes(path, to_proto(trace).SerializeToString())


def read_step_trace(path: str | Path) -> StepTrace:
    """Read a ``.pb`` file written by :func:`write_step_trace` back into a :class:`StepTrace`.

    Raises :class:`TraceFormatError` if the file is not a cosim step trace (wrong schema version,
    truncated or corrupt bytes, dangling node or collective references).
    """
    path = Path(path)
    msg = pb.StepTrace()
    try:
        msg.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise TraceFormatError(path, f"not a cosim step trace: protobuf decode failed ({exc})") from None
    if msg.schema_version != SCHEMA_VERSION:
        raise TraceFormatError(path, f"not a cosim step trace or unsupported schema_version {msg.schema_version} "
                                     f"(expected {SCHEMA_VERSION})")
    try:
        return from_proto(msg)
    except (ValueError, TypeError, KeyError) as exc:
        raise TraceFormatError(path, f"inconsistent step trace: {exc}") from None


def to_proto(trace: StepTrace) -> pb.StepTrace:
    """Convert a :class:`StepTrace` to its protobuf message."""
    msg = pb.StepTrace(schema_version=SCHEMA_VERSION)
    msg.metadata.update(trace.metadata)
    for rt in trace.ranks:
        rmsg = msg.ranks.add(rank=rt.rank)
        for node in rt.nodes:
            _node_to_proto(node, rmsg.nodes.add())
    for spec in trace.collectives:
        _collective_to_proto(spec, msg.collectives.add())
    if trace.gpus is not None:
        msg.gpus.extend(int(g) for g in trace.gpus)
    for name, members in (trace.groups or {}).items():
        msg.groups[name].ranks.extend(int(r) for r in members)
    return msg


def from_proto(msg: pb.StepTrace) -> StepTrace:
    """Convert a protobuf ``StepTrace`` message back to a :class:`StepTrace` (validating references)."""
    collectives = [_collective_from_proto(c) for c in msg.collectives]
    for i, c in enumerate(collectives):
        if c.id != i:
            raise ValueError(f"collective {c.name!r} has id {c.id} at position {i}")
    ranks = []
    for rmsg in msg.ranks:
        nodes = [_node_from_proto(n) for n in rmsg.nodes]
        _check_rank(rmsg.rank, nodes, len(collectives))
        ranks.append(RankTrace(rmsg.rank, nodes))
    gpus = tuple(msg.gpus) if len(msg.gpus) else None
    if gpus is not None and len(gpus) != len(ranks):
        raise ValueError(f"gpus lists {len(gpus)} GPUs for {len(ranks)} ranks")
    groups = {name: tuple(g.ranks) for name, g in msg.groups.items()} or None
    return StepTrace(ranks, collectives, dict(msg.metadata), gpus, groups)


def duration_ns(seconds: float) -> int:
    """Integer nanoseconds of a duration in seconds (rounded half to even)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be finite and non-negative, got {seconds!r} s")
    return int(round(seconds * 1e9))


# --- nodes -------------------------------------------------------------------------------------

def _node_to_proto(node: TraceNode, out: pb.Node) -> None:
    out.id = node.id
    out.name = node.name
    out.deps.extend(node.deps)
    out.layer = node.layer
    out.microbatch = node.microbatch
    if isinstance(node, ComputeNode):
        c = out.compute
        _op_to_proto(node.op, c)
        c.duration_ns = duration_ns(node.duration_s)
        c.duration_s = node.duration_s
        c.source = node.source
        c.op_class = node.op_class
    elif isinstance(node, CommNode):
        out.comm.collective_id = node.collective_id
        out.comm.stream = node.stream
    else:
        raise TypeError(f"unknown trace node type {type(node).__name__}")


def _node_from_proto(msg: pb.Node) -> TraceNode:
    common = dict(id=msg.id, name=msg.name, deps=tuple(msg.deps), layer=msg.layer, microbatch=msg.microbatch)
    kind = msg.WhichOneof("kind")
    if kind == "compute":
        c = msg.compute
        seconds = c.duration_s if c.HasField("duration_s") else c.duration_ns * 1e-9
        return ComputeNode(op=_op_from_proto(c), duration_s=seconds, source=c.source, op_class=c.op_class, **common)
    if kind == "comm":
        return CommNode(collective_id=msg.comm.collective_id, stream=msg.comm.stream, **common)
    raise ValueError(f"node {msg.id} ({msg.name!r}) is neither compute nor comm")


def _check_rank(rank: int, nodes: list[TraceNode], n_collectives: int) -> None:
    """Node ids are positions, deps point backwards, comm nodes name existing collectives."""
    for i, node in enumerate(nodes):
        if node.id != i:
            raise ValueError(f"rank {rank}: node {node.name!r} has id {node.id} at position {i}")
        if any(d >= i for d in node.deps):
            raise ValueError(f"rank {rank}: node {i} depends on a later or missing node {list(node.deps)}")
        if isinstance(node, CommNode) and node.collective_id >= n_collectives:
            raise ValueError(f"rank {rank}: node {i} refers to missing collective {node.collective_id}")


# --- ops ---------------------------------------------------------------------------------------

def _op_to_proto(op: ComputeOp, out: pb.ComputeNode) -> None:
    case = _CASE_OF_OP.get(type(op))
    if case is None:
        raise TypeError(f"unknown compute op type {type(op).__name__}")
    getattr(out, case).CopyFrom(getattr(pb, type(op).__name__)(**_op_fields(op)))


def _op_from_proto(msg: pb.ComputeNode) -> ComputeOp:
    case = msg.WhichOneof("op")
    if case is None:
        raise ValueError("compute node without an op")
    cls = _OP_CASES[case]
    sub = getattr(msg, case)
    return cls(**{f.name: getattr(sub, f.name) for f in fields(cls)})


def _op_fields(op: ComputeOp) -> dict:
    return {f.name: getattr(op, f.name) for f in fields(op)}


# --- collectives -------------------------------------------------------------------------------

def _whole_bytes(spec: CollectiveSpec, what: str, matrix) -> np.ndarray:
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"collective {spec.name!r}: {what} must be 2-D, got shape {m.shape}")
    as_int = m.astype(np.int64)
    if not np.array_equal(as_int, m):
        raise ValueError(f"collective {spec.name!r}: {what} must hold whole bytes")
    return as_int


def _collective_to_proto(spec: CollectiveSpec, out: pb.Collective) -> None:
    m = _whole_bytes(spec, "bytes_matrix", spec.bytes_matrix)
    out.id = spec.id
    out.name = spec.name
    out.kind = spec.kind
    out.library = spec.library
    out.ranks.extend(int(r) for r in spec.ranks)
    out.bytes_matrix.extend(m.ravel().tolist())
    out.dims.extend(m.shape)
    out.layer = spec.layer
    out.microbatch = spec.microbatch
    out.num_senders = spec.num_senders
    if spec.node_bytes_matrix is not None:
        nm = _whole_bytes(spec, "node_bytes_matrix", spec.node_bytes_matrix)
        out.node_bytes_matrix.extend(nm.ravel().tolist())
        out.node_dims.extend(nm.shape)
    out.qps_per_peer = spec.qps_per_peer
    out.op = spec.op


def _matrix(name: str, what: str, values, dims) -> np.ndarray:
    dims = tuple(dims)
    if len(dims) != 2 or dims[0] * dims[1] != len(values):
        raise ValueError(f"collective {name!r}: dims {list(dims)} do not match {len(values)} {what} entries")
    return np.array(values, dtype=np.int64).reshape(dims)


def _collective_from_proto(msg: pb.Collective) -> CollectiveSpec:
    matrix = _matrix(msg.name, "bytes_matrix", msg.bytes_matrix, msg.dims)
    node = (_matrix(msg.name, "node_bytes_matrix", msg.node_bytes_matrix, msg.node_dims)
            if len(msg.node_dims) or len(msg.node_bytes_matrix) else None)
    op = msg.op
    if not op and msg.library in MOE_LIBRARIES:  # written before the op field: the name's last part
        op = msg.name.rsplit(".", 1)[-1]
    return CollectiveSpec(msg.id, msg.name, msg.kind, msg.library, tuple(msg.ranks), matrix,
                          msg.layer, msg.microbatch, msg.num_senders, node, msg.qps_per_peer, op)
