"""Export step traces as Chakra execution traces (ET) for ASTRA-sim, and read Chakra files back.

One file per rank, ``{prefix}.{rank}.et``: a stream of protobuf messages of the Chakra schema
(``cosim/trace/proto/et_def.proto``), each prefixed with its byte length as a base-128 varint32;
first a ``GlobalMetadata``, then the ``Node`` messages. Beside them ``{prefix}.comm_groups.json``
maps each ``pg_name`` to its ranks (the communicator groups ASTRA-sim is given).

Mapping (see ``docs/traces.md`` for the full table and what does not map). The default export
runs to completion in ASTRA-sim 2.0; :mod:`cosim.trace.chakra_check` checks the rules below.

- :class:`ComputeNode` -> ``COMP_NODE``: ``duration_micros`` in whole microseconds, rounded with
  the remainder carried along the rank's compute stream (each rank's written total is its exact
  total rounded once); a kernel whose carried share is 0 µs is not written (ASTRA-sim aborts on
  zero delays) and its dependents wait on its parents. ``num_ops`` = FLOPs (at least 1),
  ``tensor_size`` = bytes moved.
- :class:`CommNode` of a ring collective -> ``COMM_COLL_NODE`` with ``comm_type``, ``pg_name``
  and ASTRA-sim's ``comm_size``: each rank's input for all-gather, the whole buffer for
  all-reduce and reduce-scatter. All-to-all-v and bipartite collectives: ``alltoallv`` (default
  ``auto``: one ``ALL_TO_ALL`` when the matrix is uniform, matched send/receive nodes otherwise).
  ``p2p`` collectives -> ``COMM_SEND_NODE`` on the sender, ``COMM_RECV_NODE`` on the receiver,
  matched by ``comm_src``/``comm_dst``/``comm_tag``. Collectives of one rank are not written
  (they never complete in ASTRA-sim); their dependents wait on their parents.
- ``deps`` -> ``data_deps``; the in-order compute and communication streams of cosim's scheduler
  (one per ``CommNode.stream``: AFD's A2F and F2A have their own) -> ``ctrl_deps`` on the
  previous node of the same stream.

Attributes named ``cosim.*`` carry what Chakra has no field for (exact nanoseconds, per-peer bytes
of an all-to-all-v, layer, micro-batch ...); Chakra consumers ignore them.

Outputs are atomic: each file is written to a temporary name and renamed into place, and an
export is complete only when its manifest ``{prefix}.manifest.json`` (every file's size and
SHA-256) is there; it is removed before and written after all other files
(:func:`verify_manifest`).

Public API: :func:`export_chakra`, :func:`read_chakra`, :func:`write_chakra`, :func:`comm_groups`,
:func:`lowering`, :func:`comm_size`, :func:`uniform_peer_bytes`, :data:`ALLTOALLV_MODES`,
:func:`write_trace_dir`, :func:`write_manifest`, :func:`verify_manifest`, :func:`remove_manifest`, :func:`manifest_path`,
:class:`IncompleteExportError`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from glob import escape as glob_escape
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence, get_args

import numpy as np
from google.protobuf.message import DecodeError

from cosim.io_atomic import atomic_write_bytes, atomic_write_text
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode, RankTrace, StepTrace, TraceNode
from cosim.trace.proto import et_def_pb2 as et
from cosim.trace.serialize import TraceFormatError, duration_ns

#: ``GlobalMetadata.version`` written by default: what ASTRA-sim 2.0's own generators write.
CHAKRA_VERSION = "0.0.4"

#: cosim collective kind -> Chakra ``CollectiveCommType`` (``p2p`` becomes send/recv nodes).
COMM_TYPES: dict[str, int] = {
    "all_to_all_v": et.ALL_TO_ALL,
    "bipartite": et.ALL_TO_ALL,
    "all_reduce": et.ALL_REDUCE,
    "all_gather": et.ALL_GATHER,
    "reduce_scatter": et.REDUCE_SCATTER,
}
_PEER_KINDS = ("all_to_all_v", "bipartite")
_MAX_VARINT32 = (1 << 32) - 1

#: How all-to-all-v and bipartite collectives are written (see :data:`ALLTOALLV_MODES`).
AllToAllMode = Literal["auto", "collective", "p2p"]
#: How a collective is written: one ``COMM_COLL_NODE`` per rank, matched sends and receives, or
#: not at all (a group of one rank).
Lowering = Literal["collective", "p2p", "drop"]


def uniform_peer_bytes(spec: CollectiveSpec) -> int | None:
    """Bytes every rank of an all-to-all-v sends to every other rank, if that is one positive
    number (the diagonal, which stays on the rank, is not looked at); ``None`` otherwise and for
    other kinds. Bipartite collectives are never uniform in Chakra's sense: an ``ALL_TO_ALL`` over
    senders and receivers would also move bytes from receivers and between ranks of one side."""
    if spec.kind != "all_to_all_v" or len(spec.ranks) < 2:
        return None
    m = np.asarray(spec.bytes_matrix)
    off = m[~np.eye(len(m), dtype=bool)]
    return int(off[0]) if off[0] > 0 and np.all(off == off[0]) else None


#: ``alltoallv`` mode -> whether an all-to-all-v / bipartite collective becomes matched sends and
#: receives (otherwise one ``ALL_TO_ALL`` node per rank). ``auto`` (the default) writes a uniform
#: all-to-all-v as a collective, which ASTRA-sim runs with its own algorithm, and anything uneven
#: as sends/receives: ASTRA-sim pairs a collective's ranks only when their ``comm_size`` match,
#: so an uneven ``ALL_TO_ALL`` never completes. ``collective`` always writes a collective (an
#: uneven one with each rank's row sum as ``comm_size``: lossy, and ASTRA-sim stalls on it);
#: ``p2p`` always writes sends/receives.
ALLTOALLV_MODES: dict[str, Callable[[CollectiveSpec], bool]] = {
    "auto": lambda spec: uniform_peer_bytes(spec) is None,
    "collective": lambda spec: False,
    "p2p": lambda spec: True,
}
assert tuple(ALLTOALLV_MODES) == get_args(AllToAllMode)


# --- public API --------------------------------------------------------------------------------

def export_chakra(trace: StepTrace, out_dir: str | Path, prefix: str = "cosim", *,
                  alltoallv: AllToAllMode = "auto", stream_order: bool = True,
                  version: str = CHAKRA_VERSION, extra_files: Sequence[str | Path] = ()) -> list[Path]:
    """Write ``trace`` as Chakra ET files ``{out_dir}/{prefix}.{rank}.et``, one per rank.

    Every file is written atomically, and the export's manifest ``{prefix}.manifest.json``
    (:func:`write_manifest`: each file's size and SHA-256) is removed first and written last, so
    an export interrupted at any point has no manifest and :func:`verify_manifest` (``cosim trace
    check``) calls it incomplete. Rank files ``{prefix}.{r}.et`` of an earlier, larger export in
    the same folder are removed.

    Args:
        trace: the step trace; its ranks must be numbered 0..N-1 (ASTRA-sim's NPU ids).
        out_dir: directory, created if missing.
        prefix: file name prefix (ASTRA-sim is given ``{out_dir}/{prefix}``).
        alltoallv: how all-to-all-v and bipartite collectives are written (:data:`ALLTOALLV_MODES`):
            ``auto`` (default) writes a uniform all-to-all-v as one ``ALL_TO_ALL`` node per rank
            with the same ``comm_size`` on every rank, and uneven ones and bipartite transfers as
            matched send/receive nodes, one per peer with traffic (exact per-peer bytes);
            ``collective`` writes every one as an ``ALL_TO_ALL`` (uneven: each rank's row sum,
            which ASTRA-sim does not run to completion; per-peer bytes only in ``cosim.*``
            attributes); ``p2p`` writes every one as sends/receives.
        stream_order: add ``ctrl_deps`` that keep each rank's compute and communication streams
            in order, as cosim's scheduler runs them.
        version: ``GlobalMetadata.version`` string.
        extra_files: files of the same folder written before this call that belong to the same
            export (``cosim step --trace-out`` passes ``step.pb``); the manifest lists them too.

    Returns:
        The ``.et`` paths in rank order. ``{prefix}.comm_groups.json`` (``pg_name`` -> ranks) is
        written beside them.
    """
    if alltoallv not in ALLTOALLV_MODES:
        raise ValueError(f"alltoallv must be one of {', '.join(ALLTOALLV_MODES)}, got {alltoallv!r}")
    ranks = sorted(trace.ranks, key=lambda rt: rt.rank)
    if [rt.rank for rt in ranks] != list(range(len(ranks))):
        raise ValueError(f"Chakra needs ranks 0..N-1, the trace has {[rt.rank for rt in ranks]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_manifest(out_dir, prefix)  # from here until the end the folder reads as incomplete
    groups = comm_groups(trace, alltoallv)
    name_of = {tuple(members): name for name, members in groups.items()}
    pg_of = {spec.id: name_of[_group_key(spec)] for spec in trace.collectives
             if lowering(spec, alltoallv) == "collective"}
    paths = []
    for rt in ranks:
        nodes = rank_nodes(trace, rt, pg_of, alltoallv=alltoallv, stream_order=stream_order)
        path = out_dir / f"{prefix}.{rt.rank}.et"
        write_chakra(path, global_metadata(trace, rt.rank, version, alltoallv), nodes)
        paths.append(path)
    groups_path = atomic_write_text(out_dir / f"{prefix}.comm_groups.json", json.dumps(groups, indent=1) + "\n")
    _remove_stale_rank_files(out_dir, prefix, len(ranks))
    write_manifest(out_dir, prefix, [*paths, groups_path, *(Path(f) for f in extra_files)], num_ranks=len(ranks))
    return paths


def read_chakra(path: str | Path, *, validate: bool = True) -> tuple[et.GlobalMetadata, list[et.Node]]:
    """Read a Chakra ET file (plain or gzip-compressed): its ``GlobalMetadata`` and its nodes.

    With ``validate`` the nodes must have known types, unique ids, and dependencies on ids of the
    same file. Raises :class:`~cosim.trace.serialize.TraceFormatError` for a truncated, corrupt or
    empty file.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise TraceFormatError(path, f"corrupt gzip stream ({exc})") from None
    chunks = list(_split_messages(path, data))
    if not chunks:
        raise TraceFormatError(path, "empty Chakra file: no GlobalMetadata")
    meta = _parse(path, et.GlobalMetadata, chunks[0], 0)
    nodes = [_parse(path, et.Node, c, i) for i, c in enumerate(chunks[1:], start=1)]
    if validate:
        _validate_nodes(path, nodes)
    return meta, nodes


def write_chakra(path: str | Path, metadata: et.GlobalMetadata, nodes: Iterable[et.Node]) -> Path:
    """Write one Chakra ET file: varint32-length-prefixed ``metadata`` then ``nodes``."""
    parts = [_delimited(metadata)]
    parts.extend(_delimited(n) for n in nodes)
    return atomic_write_bytes(path, b"".join(parts))


# --- manifest: an export is complete only when its manifest is there ---------------------------

#: ``format`` field of a manifest.
MANIFEST_FORMAT = "cosim-trace-export"
#: ``version`` field of a manifest written (the reader accepts only this one).
MANIFEST_VERSION = 1


class IncompleteExportError(TraceFormatError):
    """A trace folder has no manifest, or files that do not match it: the export was interrupted
    (or the folder was not written by cosim)."""


def manifest_path(out_dir: str | Path, prefix: str = "cosim") -> Path:
    """``{out_dir}/{prefix}.manifest.json``: the manifest of the export ``prefix``."""
    return Path(out_dir) / f"{prefix}.manifest.json"


def remove_manifest(out_dir: str | Path, prefix: str = "cosim") -> None:
    """Remove the manifest of ``prefix`` (before rewriting the export: the folder then reads as
    incomplete until :func:`write_manifest` runs again)."""
    manifest_path(out_dir, prefix).unlink(missing_ok=True)


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def write_manifest(out_dir: str | Path, prefix: str, files: Iterable[str | Path], *, num_ranks: int) -> Path:
    """Write ``{prefix}.manifest.json`` (atomically) listing ``files`` of ``out_dir`` with their
    sizes and SHA-256; call it after every listed file is in place."""
    out_dir = Path(out_dir)
    entries = []
    for f in files:
        f = Path(f)
        if f.parent.resolve() != out_dir.resolve():
            raise ValueError(f"{f} is not in the export folder {out_dir}")
        size, sha = _digest(f)
        entries.append({"name": f.name, "bytes": size, "sha256": sha})
    doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "prefix": prefix, "num_ranks": num_ranks,
           "files": entries}
    return atomic_write_text(manifest_path(out_dir, prefix), json.dumps(doc, indent=1) + "\n")


def verify_manifest(out_dir: str | Path, prefix: str = "cosim") -> dict:
    """Check that the export ``prefix`` of ``out_dir`` is complete: its manifest exists and every
    file it lists is there with the listed size and SHA-256, and no rank file of ``prefix`` is
    missing from it. Returns the manifest; raises :class:`IncompleteExportError` otherwise."""
    out_dir = Path(out_dir)
    mpath = manifest_path(out_dir, prefix)
    if not mpath.is_file():
        raise IncompleteExportError(out_dir, f"incomplete export {prefix!r}: no manifest {mpath.name} (cosim writes "
                                             f"it last; the export was interrupted, or was not written by cosim)")
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
        files = doc["files"]
        if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
        listed = {str(e["name"]): (int(e["bytes"]), str(e["sha256"])) for e in files}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IncompleteExportError(mpath, f"unreadable manifest ({type(exc).__name__}: {str(exc)[:200]})") from None
    for name, (size, sha) in listed.items():
        f = out_dir / name
        if not f.is_file():
            raise IncompleteExportError(out_dir, f"incomplete export {prefix!r}: {name} listed in {mpath.name} is "
                                                 f"missing")
        got_size, got_sha = _digest(f)
        if (got_size, got_sha) != (size, sha):
            raise IncompleteExportError(out_dir, f"export {prefix!r}: {name} does not match {mpath.name} "
                                                 f"({got_size:,} bytes, {size:,} listed): changed or partly "
                                                 f"rewritten after the export")
    for f in out_dir.glob(f"{glob_escape(prefix)}.*.et"):
        if _rank_of(f.name, prefix) is not None and f.name not in listed:
            raise IncompleteExportError(out_dir, f"export {prefix!r}: {f.name} is not in {mpath.name} (left by "
                                                 f"an interrupted or another export)")
    return doc


def write_trace_dir(trace: StepTrace, out_dir: str | Path, *, alltoallv: AllToAllMode = "auto",
                    prefix: str = "cosim") -> tuple[Path, list[Path]]:
    """The trace folder of ``cosim step --trace-out``: ``step.pb`` (cosim's protobuf) and the Chakra
    export, every file atomic; the manifest (listing ``step.pb`` too) is removed first and written
    last. Returns ``(step.pb path, Chakra rank files)``."""
    from cosim.trace.serialize import write_step_trace

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_manifest(out_dir, prefix)
    pb_path = write_step_trace(trace, out_dir / "step.pb")
    files = export_chakra(trace, out_dir, prefix, alltoallv=alltoallv, extra_files=[pb_path])
    return pb_path, files


def _rank_of(name: str, prefix: str) -> int | None:
    rest = name[len(prefix) + 1:] if name.startswith(prefix + ".") else ""
    rank = rest.removesuffix(".et")
    return int(rank) if rest.endswith(".et") and rank.isdigit() else None


def _remove_stale_rank_files(out_dir: Path, prefix: str, num_ranks: int) -> None:
    """Rank files of ``prefix`` beyond ``num_ranks`` (an earlier export of more ranks)."""
    for f in out_dir.glob(f"{glob_escape(prefix)}.*.et"):
        r = _rank_of(f.name, prefix)
        if r is not None and r >= num_ranks:
            f.unlink(missing_ok=True)


def comm_groups(trace: StepTrace, alltoallv: AllToAllMode = "auto") -> dict[str, list[int]]:
    """Communicator groups of the collectives written as ``COMM_COLL_NODE``: ``pg_name`` -> ranks.

    One group per distinct rank set (sorted), named ``"1"``, ``"2"`` ... in order of first use.
    """
    groups: dict[tuple[int, ...], str] = {}
    for spec in trace.collectives:
        if lowering(spec, alltoallv) == "collective":
            groups.setdefault(_group_key(spec), str(len(groups) + 1))
    return {name: list(key) for key, name in groups.items()}


def lowering(spec: CollectiveSpec, alltoallv: AllToAllMode = "auto") -> Lowering:
    """How ``spec`` is written: ``drop`` for a group of one rank (ASTRA-sim never completes a
    collective on one rank, and it moves nothing), ``p2p`` for point-to-point transfers and the
    all-to-all-v / bipartite collectives the mode expands, ``collective`` otherwise."""
    if len(set(spec.ranks)) < 2:
        return "drop"
    if spec.kind == "p2p" or (spec.kind in _PEER_KINDS and ALLTOALLV_MODES[alltoallv](spec)):
        return "p2p"
    return "collective"


def global_metadata(trace: StepTrace, rank: int, version: str = CHAKRA_VERSION,
                    alltoallv: AllToAllMode = "auto") -> et.GlobalMetadata:
    """The ``GlobalMetadata`` of one rank's file: version, rank, export mode and the trace's metadata."""
    meta = et.GlobalMetadata(version=version)
    meta.attr.extend([_attr("cosim.producer", string_val="cosim"), _attr("cosim.rank", int64_val=rank),
                      _attr("cosim.num_ranks", int64_val=len(trace.ranks)),
                      _attr("cosim.alltoallv", string_val=alltoallv)])
    meta.attr.extend(_attr(f"cosim.meta.{k}", string_val=str(v)) for k, v in sorted(trace.metadata.items()))
    return meta


def rank_nodes(trace: StepTrace, rt: RankTrace, pg_of: dict[int, str], *,
               alltoallv: AllToAllMode = "auto", stream_order: bool = True) -> list[et.Node]:
    """The Chakra nodes of one rank, ids 0.. in order; ``pg_of`` maps collective id -> ``pg_name``.

    A cosim node written as no Chakra node (a kernel of 0 carried µs, a collective of one rank,
    an all-to-all-v in which this rank neither sends nor receives) passes its dependencies on:
    its dependents depend on its parents instead.
    """
    out: list[et.Node] = []
    ends: dict[int, list[int]] = {}         # cosim node id -> Chakra ids a dependent must wait for
    tail: dict[object, list[int]] = {}     # last Chakra ids of each stream (compute, comm 0, 1 ...)
    clock = _MicrosClock()
    for node in rt.nodes:
        data = _unique(i for d in node.deps for i in ends[d])
        stream = "compute" if isinstance(node, ComputeNode) else ("comm", node.stream)
        ctrl = [i for i in tail.get(stream, []) if i not in data] if stream_order else []
        made = _convert(trace, rt.rank, node, pg_of, alltoallv, clock)
        for n in made:
            n.id = len(out)
            n.data_deps.extend(data)
            n.ctrl_deps.extend(ctrl)
            out.append(n)
        ids = [n.id for n in made]
        ends[node.id] = ids or data
        if ids:
            tail[stream] = ids
    return out


class _MicrosClock:
    """Whole-microsecond durations of one rank's kernels, in stream order, with the rounding
    remainder carried: after each kernel the written total is the exact total (integer ns)
    rounded half up to µs, so a rank's written sum is its exact sum rounded once and each kernel
    ends within 0.5 µs of its exact end. A kernel's share can be 0 µs (a short kernel after one
    rounded up)."""

    def __init__(self) -> None:
        self.exact_ns = 0
        self.written_us = 0

    def advance(self, ns: int) -> int:
        """Add a kernel of ``ns`` nanoseconds; return its whole microseconds."""
        self.exact_ns += ns
        total_us = (self.exact_ns + 500) // 1000
        step, self.written_us = total_us - self.written_us, total_us
        return step


# --- node conversion ---------------------------------------------------------------------------

def _convert(trace: StepTrace, rank: int, node: TraceNode, pg_of: dict[int, str],
             alltoallv: AllToAllMode, clock: _MicrosClock) -> list[et.Node]:
    if isinstance(node, ComputeNode):
        ns = duration_ns(node.duration_s)
        micros = clock.advance(ns)
        return [_compute_node(node, ns, micros)] if micros else []
    spec = trace.collectives[node.collective_id]
    if rank not in spec.ranks:
        raise ValueError(f"rank {rank} node {node.id} ({node.name!r}) is not a member of collective {spec.name!r}")
    how = lowering(spec, alltoallv)
    if how == "drop":
        return []
    if how == "p2p":
        made = [_p2p_node(node, spec, kind, src, dst, size) for kind, src, dst, size in _transfers(spec, rank)]
    else:
        made = [_collective_node(node, spec, rank, pg_of[spec.id])]
    for n in made:
        n.attr.extend(_common_attrs(node))
        n.attr.append(_attr("cosim.collective_id", int64_val=spec.id))
    return made


def _compute_node(node: ComputeNode, ns: int, micros: int) -> et.Node:
    n = et.Node(name=node.name, type=et.COMP_NODE, duration_micros=micros)
    n.attr.extend([
        _attr("is_cpu_op", bool_val=False),
        # ASTRA-sim's roofline mode times a kernel as num_ops / perf(num_ops / tensor_size): with
        # num_ops = 0 (memory-only kernels: copies, norms ...) that is 0 / 0 and the rank hangs.
        # One operation makes it tensor_size / memory bandwidth, the memory-bound time such a
        # kernel takes, and changes nothing for any kernel that does arithmetic.
        _attr("num_ops", int64_val=max(1, int(round(node.op.flops())))),
        _attr("tensor_size", uint64_val=int(round(node.op.bytes_moved()))),
        _attr("cosim.duration_ns", uint64_val=ns),
        _attr("cosim.op_kind", string_val=type(node.op).__name__),
        _attr("cosim.op_class", string_val=node.op_class),
        _attr("cosim.source", string_val=node.source),
    ])
    n.attr.extend(_common_attrs(node))
    return n


def _collective_node(node: CommNode, spec: CollectiveSpec, rank: int, pg_name: str) -> et.Node:
    if spec.kind not in COMM_TYPES:
        raise ValueError(f"collective {spec.name!r}: kind {spec.kind!r} has no Chakra collective type")
    n = et.Node(name=node.name, type=et.COMM_COLL_NODE)
    n.attr.extend([
        _attr("is_cpu_op", bool_val=False),
        _attr("comm_type", int64_val=COMM_TYPES[spec.kind]),
        _attr("comm_size", int64_val=comm_size(spec, rank)),
        _attr("pg_name", string_val=pg_name),
        _attr("cosim.collective_kind", string_val=spec.kind),
        _attr("cosim.library", string_val=spec.library),
    ])
    if spec.kind in _PEER_KINDS:
        peers, sent = _peer_bytes(spec, rank)
        n.attr.extend([_attr("cosim.peer_ranks", int64_list=et.Int64List(values=peers)),
                       _attr("cosim.peer_bytes", int64_list=et.Int64List(values=sent))])
    else:
        n.attr.append(_attr("cosim.buffer_bytes", int64_val=_buffer(spec)))
    return n


def comm_size(spec: CollectiveSpec, rank: int) -> int:
    """``comm_size`` of ``rank``'s ``COMM_COLL_NODE`` of ``spec``, in ASTRA-sim's convention.

    ASTRA-sim's collectives take the size of each rank's input: an all-reduce and a reduce-scatter
    the whole buffer (a reduce-scatter leaves comm_size / n on each rank), an all-gather the
    part each rank contributes (it ends with n x comm_size), an all-to-all the whole send buffer
    (comm_size / n to each peer, the rank's own part included). cosim's 1x1 matrix of an
    all-gather holds the gathered buffer, so it is divided by the group size. A uniform
    all-to-all-v is n x its per-peer bytes on every rank; an uneven one (``collective`` mode
    only) the rank's row sum, and a bipartite collective's receivers write 0: sizes that differ
    between ranks, which ASTRA-sim does not run.
    """
    return _COMM_SIZE[spec.kind](spec, rank)


def _buffer(spec: CollectiveSpec) -> int:
    """Buffer of a ring collective: its 1x1 matrix."""
    return int(np.asarray(spec.bytes_matrix)[0, 0])


def _all_to_all_size(spec: CollectiveSpec, rank: int) -> int:
    peer = uniform_peer_bytes(spec)
    return peer * len(spec.ranks) if peer is not None else int(sum(_peer_bytes(spec, rank)[1]))


#: collective kind -> ``comm_size`` of a rank (see :func:`comm_size`).
_COMM_SIZE: dict[str, Callable[[CollectiveSpec, int], int]] = {
    "all_reduce": lambda spec, rank: _buffer(spec),
    "reduce_scatter": lambda spec, rank: _buffer(spec),
    "all_gather": lambda spec, rank: int(round(_buffer(spec) / len(spec.ranks))),
    "all_to_all_v": _all_to_all_size,
    "bipartite": _all_to_all_size,
}
assert set(_COMM_SIZE) == set(COMM_TYPES)


def _p2p_node(node: CommNode, spec: CollectiveSpec, kind: int, src: int, dst: int, size: int) -> et.Node:
    arrow = f"send->{dst}" if kind == et.COMM_SEND_NODE else f"recv<-{src}"
    name = node.name if spec.kind == "p2p" else f"{node.name}.{arrow}"
    n = et.Node(name=name, type=kind)
    n.attr.extend([
        _attr("is_cpu_op", bool_val=False),
        _attr("comm_src", int32_val=src),
        _attr("comm_dst", int32_val=dst),
        _attr("comm_size", int64_val=size),
        _attr("comm_tag", int32_val=spec.id),
        _attr("cosim.collective_kind", string_val=spec.kind),
        _attr("cosim.library", string_val=spec.library),
    ])
    return n


def _common_attrs(node: TraceNode) -> list[et.AttributeProto]:
    return [_attr("cosim.node_id", int64_val=node.id), _attr("cosim.layer", int64_val=node.layer),
            _attr("cosim.microbatch", int64_val=node.microbatch)]


def _attr(name: str, **value) -> et.AttributeProto:
    return et.AttributeProto(name=name, **value)


# --- collective geometry -----------------------------------------------------------------------

def _group_key(spec: CollectiveSpec) -> tuple[int, ...]:
    return tuple(sorted(int(r) for r in spec.ranks))


def _senders_receivers(spec: CollectiveSpec) -> tuple[list[int], list[int]]:
    """Row and column ranks of the bytes matrix."""
    ranks = [int(r) for r in spec.ranks]
    if spec.kind == "bipartite":
        return ranks[:spec.num_senders], ranks[spec.num_senders:]
    return ranks, ranks


def _peer_bytes(spec: CollectiveSpec, rank: int) -> tuple[list[int], list[int]]:
    """Peers this rank sends to and the bytes to each (its row of the matrix; empty if none)."""
    m = np.asarray(spec.bytes_matrix)
    senders, receivers = _senders_receivers(spec)
    if rank not in senders:
        return [], []
    row = m[senders.index(rank)]
    return receivers, [int(b) for b in row]


def _transfers(spec: CollectiveSpec, rank: int) -> list[tuple[int, int, int, int]]:
    """(node type, src, dst, bytes) of this rank's sends then receives, skipping empty and self ones."""
    m = np.asarray(spec.bytes_matrix)
    senders, receivers = _senders_receivers(spec)
    if spec.kind == "p2p":
        senders, receivers, m = senders[:1], senders[1:2], m[:1, 1:2]
    out = []
    if rank in senders:
        i = senders.index(rank)
        out += [(et.COMM_SEND_NODE, rank, dst, int(m[i, j])) for j, dst in enumerate(receivers)
                if dst != rank and m[i, j] > 0]
    if rank in receivers:
        j = receivers.index(rank)
        out += [(et.COMM_RECV_NODE, src, rank, int(m[i, j])) for i, src in enumerate(senders)
                if src != rank and m[i, j] > 0]
    return out


def _unique(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


# --- wire format -------------------------------------------------------------------------------

def _delimited(msg) -> bytes:
    body = msg.SerializeToString()
    return _encode_varint(len(body)) + body


def _encode_varint(value: int) -> bytes:
    if not 0 <= value <= _MAX_VARINT32:
        raise ValueError(f"message of {value} bytes does not fit a varint32 length prefix")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_varint(path: Path, data: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint32 at ``pos``; return (value, position after it)."""
    value = shift = 0
    start = pos
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _MAX_VARINT32:
                raise TraceFormatError(path, f"length prefix at byte {start} exceeds 32 bits")
            return value, pos
        shift += 7
        if shift >= 35:
            raise TraceFormatError(path, f"length prefix at byte {start} is longer than a varint32")
    raise TraceFormatError(path, f"truncated length prefix at byte {start}")


def _split_messages(path: Path, data: bytes) -> Iterable[bytes]:
    pos = 0
    while pos < len(data):
        start = pos
        size, pos = _decode_varint(path, data, pos)
        if pos + size > len(data):
            raise TraceFormatError(path, f"truncated message at byte {start}: length {size}, "
                                         f"{len(data) - pos} bytes left")
        yield data[pos:pos + size]
        pos += size


def _parse(path: Path, cls, chunk: bytes, index: int):
    msg = cls()
    try:
        msg.ParseFromString(chunk)
    except (DecodeError, ValueError, RuntimeError) as exc:
        what = "GlobalMetadata" if index == 0 else f"node message {index}"
        raise TraceFormatError(path, f"corrupt {what}: {exc}") from None
    return msg


def _validate_nodes(path: Path, nodes: list[et.Node]) -> None:
    known = set(et.NodeType.values()) - {et.INVALID_NODE}
    ids = set()
    for k, n in enumerate(nodes):
        if n.type not in known:
            raise TraceFormatError(path, f"node message {k + 1} (id {n.id}) has invalid type {n.type}")
        if n.id in ids:
            raise TraceFormatError(path, f"duplicate node id {n.id}")
        ids.add(n.id)
    for n in nodes:
        missing = [d for d in (*n.data_deps, *n.ctrl_deps) if d not in ids]
        if missing:
            raise TraceFormatError(path, f"node {n.id} depends on ids {missing} not in the file")
