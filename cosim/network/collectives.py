"""Collectives expressed as flows with dependencies.

Each function appends flows to a :class:`~cosim.network.flows.FlowSet` and returns a
:class:`Collective` naming all its flows and the ones whose completion ends it, so collectives can
be chained (``after=previous.last``) and their completion read off a result
(``result.finish_s(coll.last)``).

Ranks are GPU ranks of the topology; ``ranks`` lists the members of the communicator in ring order.
Large messages are split into chunks of ``chunk_bytes`` that are pipelined the way NCCL does:
chunk ``c`` of a step waits for chunk ``c`` of the previous step to be received, and for chunk
``c-1`` of its own step to have left the sender (the channel streams chunks back to back).

Inputs are checked before any flow is built (:mod:`cosim.limits`): ranks and sizes are integers
(a float size is an error, not truncated), a buffer is at most ``MAX_FLOW_BYTES``, and a
collective that would make more than ``MAX_FLOWS_PER_COLLECTIVE`` flows (a ring all-reduce
chunked into 1-byte pieces) is refused with the count it would have made.
"""

from __future__ import annotations

import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from cosim import limits as L
from cosim.errors import FlowError
from cosim.limits import quote
from cosim.network.flows import FlowSet

#: Default pipelining chunk, close to NCCL's default (chunks of a few hundred KiB per channel).
DEFAULT_CHUNK_BYTES = 1 << 20


@dataclass
class Collective:
    """Flows of one collective: ``flows`` (all) and ``last`` (completion = latest finish among them).

    Both are sequences of flow indices: lists, or ranges for collectives added as one block.
    """

    name: str
    flows: Sequence[int] = field(default_factory=list)
    last: Sequence[int] = field(default_factory=list)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _check_ranks(ranks: Sequence[int], what: str, minimum: int = 2) -> list[int]:
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise FlowError(f"{what}: ranks must be a list of GPU ranks, got {quote(ranks)}")
    if isinstance(ranks, np.ndarray) and ranks.dtype.kind in "iu":
        ranks = ranks.reshape(-1).tolist()
    out = []
    for r in ranks:
        if not _is_int(r):
            raise FlowError(f"{what}: ranks must be integers (GPU ranks), got {type(r).__name__} {quote(r)}")
        if not 0 <= int(r) < (1 << 31):
            raise FlowError(f"{what}: GPU rank {quote(int(r))} out of range")
        out.append(int(r))
        if len(out) > L.MAX_GPUS.value:
            raise FlowError(f"{what}: more than MAX_GPUS = {L.MAX_GPUS.value:,} ranks")
    ranks = out
    if len(ranks) < minimum:
        raise FlowError(f"{what}: needs at least {minimum} ranks, got {len(ranks)}")
    if len(set(ranks)) != len(ranks):
        raise FlowError(f"{what}: ranks must be distinct, got {quote(ranks)}")
    return ranks


def check_size_bytes(size_bytes: Any, what: str) -> int:
    """A collective's buffer size: an integer from 0 to ``MAX_FLOW_BYTES`` (FlowError otherwise;
    a float such as ``1.5`` or ``1024.0`` is an error, not truncated)."""
    if not _is_int(size_bytes):
        raise FlowError(f"{what}: size_bytes must be an integer number of bytes, got "
                        f"{type(size_bytes).__name__} {quote(size_bytes)}")
    v = int(size_bytes)
    if v < 0:
        raise FlowError(f"{what}: size_bytes must be >= 0, got {quote(v)}")
    if v > L.MAX_FLOW_BYTES.value:
        raise FlowError(f"{what}: size_bytes {quote(v)} exceeds the limit MAX_FLOW_BYTES = 2**50 bytes "
                        f"({L.MAX_FLOW_BYTES.reason})")
    return v


def _check_channels(channels: Any, what: str) -> int:
    if not _is_int(channels) or not 1 <= int(channels) <= L.MAX_TIER_COUNT.value:
        raise FlowError(f"{what}: channels must be an integer from 1 to {L.MAX_TIER_COUNT.value:,}, "
                        f"got {quote(channels)}")
    return int(channels)


def check_flow_count(count: int, what: str) -> None:
    """Refuse a collective that would make more than ``MAX_FLOWS_PER_COLLECTIVE`` flows, before
    building any."""
    if count > L.MAX_FLOWS_PER_COLLECTIVE.value:
        raise FlowError(f"{what}: would make {count:,} flows, more than the limit MAX_FLOWS_PER_COLLECTIVE = "
                        f"{L.MAX_FLOWS_PER_COLLECTIVE.value:,} ({L.MAX_FLOWS_PER_COLLECTIVE.reason}); use larger "
                        "chunk_bytes or fewer ranks")


def _check_matrix(m: Any, shape: tuple[int, int], what: str, fractional: bool = False) -> np.ndarray:
    """A bytes matrix of ``shape``: finite, non-negative, entries <= MAX_FLOW_BYTES, and
    integer-valued unless ``fractional`` (then floats are truncated by the caller)."""
    try:
        m = np.asarray(m)
    except (ValueError, TypeError, OverflowError):
        raise FlowError(f"{what}: bytes_matrix must be a {shape[0]}x{shape[1]} array of byte counts") from None
    if m.shape != shape:
        raise FlowError(f"{what}: bytes_matrix must be {shape[0]}x{shape[1]} for {shape[0]} ranks, got shape {m.shape}")
    if m.dtype.kind not in "iubf":
        raise FlowError(f"{what}: bytes_matrix entries must be non-negative integers, got dtype {m.dtype}")
    if m.size == 0:
        return m
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise FlowError(f"{what}: bytes_matrix entries must be finite non-negative integers")
    if (m < 0).any() or (m.dtype.kind == "f" and not fractional and not np.all(np.mod(m, 1) == 0)):
        raise FlowError(f"{what}: bytes_matrix entries must be non-negative integers")
    if float(m.max()) > L.MAX_FLOW_BYTES.value:
        raise FlowError(f"{what}: bytes_matrix entry {float(m.max()):.4g} exceeds the limit MAX_FLOW_BYTES = "
                        "2**50 bytes")
    return m


def _split(total: int, parts: int) -> list[int]:
    """``total`` bytes in ``parts`` near-equal pieces (first pieces one byte larger)."""
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def _check_chunk(chunk_bytes: Any) -> int | None:
    if chunk_bytes is None:
        return None
    if not _is_int(chunk_bytes) or int(chunk_bytes) < L.MIN_CHUNK_BYTES.value:
        raise FlowError(f"chunk_bytes must be a positive integer (or None: no chunking), got {quote(chunk_bytes)}")
    return int(chunk_bytes)


def _num_chunks(size: int, chunk_bytes: int | None) -> int:
    chunk_bytes = _check_chunk(chunk_bytes)
    if chunk_bytes is None or size == 0:
        return 1
    return max(1, -(-size // chunk_bytes))


def all_to_all_v(fs: FlowSet, ranks: Sequence[int], bytes_matrix, *, after: Iterable[int] = (),
                 tag: str = "all_to_all", channels: int = 1) -> Collective:
    """All-to-all with per-pair sizes: ``bytes_matrix[i][j]`` bytes from ``ranks[i]`` to ``ranks[j]``.

    This is MoE dispatch (and, transposed, combine). Each source visits its destinations in the
    rotated order ``i+1, i+2, ...`` so that at any moment the senders target distinct receivers,
    as NCCL and DeepEP do. ``channels`` > 1 splits each pair over several queue pairs, which ECMP
    may hash onto different paths. Zero entries and the diagonal produce no flow.
    """
    ranks = _check_ranks(ranks, tag)
    n = len(ranks)
    channels = _check_channels(channels, tag)
    check_flow_count(n * (n - 1) * channels, tag)
    m = _check_matrix(bytes_matrix, (n, n), tag)
    after = list(after)
    coll = Collective(tag)
    i = np.tile(np.arange(n, dtype=np.int32), n - 1)
    j = np.repeat(np.arange(1, n, dtype=np.int32), n)
    j += i
    np.remainder(j, n, out=j)
    return _rotated_transfers(fs, coll, ranks, ranks, m, (i, j), after, tag, channels)


def all_to_all(fs: FlowSet, ranks: Sequence[int], bytes_per_pair: int, **kwargs) -> Collective:
    """Uniform all-to-all: ``bytes_per_pair`` from every rank to every other rank."""
    tag = kwargs.get("tag", "all_to_all")
    ranks = _check_ranks(ranks, tag)
    n = len(ranks)
    check_flow_count(n * (n - 1), tag)
    matrix = np.full((n, n), check_size_bytes(bytes_per_pair, tag), dtype=np.int64)
    np.fill_diagonal(matrix, 0)
    return all_to_all_v(fs, ranks, matrix, **kwargs)


def bipartite(fs: FlowSet, senders: Sequence[int], receivers: Sequence[int], bytes_matrix, *,
              after: Iterable[int] = (), tag: str = "bipartite", channels: int = 1) -> Collective:
    """M->N transfer: ``bytes_matrix[i][j]`` bytes from ``senders[i]`` to ``receivers[j]``.

    Attention->FFN (A2F) and FFN->attention (F2A) in attention-FFN disaggregation. Sender ``i``
    visits receivers starting at ``i mod N`` so concurrent senders spread over receivers.
    """
    senders = _check_ranks(senders, f"{tag} senders", 1)
    receivers = _check_ranks(receivers, f"{tag} receivers", 1)
    m_, n_ = len(senders), len(receivers)
    channels = _check_channels(channels, tag)
    check_flow_count(m_ * n_ * channels, tag)
    m = _check_matrix(bytes_matrix, (m_, n_), tag, fractional=True)  # floats truncated, as before
    after = list(after)
    coll = Collective(tag)
    i = np.tile(np.arange(m_, dtype=np.int32), n_)
    j = np.repeat(np.arange(n_, dtype=np.int32), m_)
    j += i
    np.remainder(j, n_, out=j)
    return _rotated_transfers(fs, coll, senders, receivers, m, (i, j), after, tag, channels)


def _rotated_transfers(fs: FlowSet, coll: Collective, senders: list[int], receivers: list[int], m,
                       pairs: tuple[np.ndarray, np.ndarray], after: list[int], tag: str, channels: int) -> Collective:
    """Add ``m[i][j]`` bytes from ``senders[i]`` to ``receivers[j]`` for each (i, j) of ``pairs``
    (index arrays, in that order), split over ``channels`` queue pairs; self-transfers and zeros
    are skipped. The flows are added as one block (:meth:`FlowSet.add_many`)."""
    if channels < 1:
        raise FlowError(f"{tag}: channels must be >= 1, got {channels}")
    pi, pj = pairs
    size = np.asarray(m)[pi, pj].astype(np.int64, copy=False)  # floats are truncated, as int() does
    src = np.asarray(senders, dtype=np.int32)[pi]
    dst = np.asarray(receivers, dtype=np.int32)[pj]
    del pi, pj
    keep = size != 0
    keep &= src != dst
    if not keep.all():
        src, dst, size = src[keep], dst[keep], size[keep]
    del keep
    if channels == 1:
        block = fs.add_many(src, dst, size, after=after, tag=tag)
    else:
        base, extra = np.divmod(size, channels)
        parts = base[:, None] + (np.arange(channels)[None, :] < extra[:, None])
        nonzero = parts > 0
        key = np.broadcast_to(np.arange(channels), parts.shape)[nonzero]
        rows = np.nonzero(nonzero)[0]
        block = fs.add_many(src[rows], dst[rows], parts[nonzero], after=after, tag=tag, path_key=key)
    coll.flows = block
    coll.last = block
    return coll


def point_to_point(fs: FlowSet, src: int, dst: int, size_bytes: int, *, after: Iterable[int] = (),
                   tag: str = "p2p", channels: int = 1) -> Collective:
    """One transfer (KV-cache move in P/D disaggregation), optionally over ``channels`` queue pairs."""
    size_bytes = check_size_bytes(size_bytes, tag)
    channels = _check_channels(channels, tag)
    coll = Collective(tag)
    for c, part in enumerate(_split(size_bytes, channels)):
        if part or c == 0:
            coll.flows.append(fs.add(src, dst, part, after=after, tag=tag, path_key=c))
    coll.last = list(coll.flows)
    return coll


def ring_flow_count(num_ranks: int, size_bytes: int, phases: int, chunk_bytes: int | None) -> int:
    """Flows a ring of ``num_ranks`` over ``phases`` phases makes for a ``size_bytes`` buffer in
    chunks of ``chunk_bytes`` (computed without building them)."""
    segments = _split(check_size_bytes(size_bytes, "ring"), num_ranks)
    per_step = sum(count * _num_chunks(s, chunk_bytes) for s, count in Counter(segments).items())
    return per_step * phases * (num_ranks - 1)


def _ring(fs: FlowSet, ranks: list[int], size_bytes: int, phases: Sequence[str], chunk_bytes: int | None,
          after: Iterable[int], tag: str) -> Collective:
    """Ring algorithm over ``phases`` (each ``rs`` or ``ag``) of n-1 steps each.

    The buffer is cut into n segments. In step ``s`` rank ``i`` sends one segment to rank ``i+1``:
    segment ``(i - s) mod n`` during reduce-scatter, ``(i + 1 - s) mod n`` during all-gather. Each
    segment travels in chunks; chunk ``c`` waits for chunk ``c`` of the previous step from rank
    ``i-1`` to be received and for chunk ``c-1`` of its own step to have been sent (same channel).
    Each step is added as one block of flows (rank-major, then chunk).
    """
    n = len(ranks)
    segments = _split(check_size_bytes(size_bytes, tag), n)
    per_step = sum(count * _num_chunks(s, chunk_bytes) for s, count in Counter(segments).items())
    check_flow_count(per_step * len(phases) * (n - 1), tag)
    chunks_per_segment = [_split(s, _num_chunks(s, chunk_bytes)) for s in segments]
    counts = np.array([len(c) for c in chunks_per_segment], dtype=np.int64)
    max_chunks = int(counts.max())
    chunk_size = np.zeros((n, max_chunks), dtype=np.int64)
    for seg, chunks in enumerate(chunks_per_segment):
        chunk_size[seg, :len(chunks)] = chunks
    after = [int(a) for a in after]
    coll = Collective(tag)
    first = len(fs)
    rank = np.asarray(ranks, dtype=np.int64)
    succ = np.roll(np.arange(n), -1)
    # prev[i, c]: flow that delivered chunk c to rank i in the previous step (-1: none).
    prev = np.full((n, max_chunks), -1, dtype=np.int64)
    step = 0
    for phase in phases:
        for s in range(n - 1):
            seg = (np.arange(n) - s) % n if phase == "rs" else (np.arange(n) + 1 - s) % n
            k = counts[seg]
            sender = np.repeat(np.arange(n), k)
            start = np.cumsum(k) - k
            chunk = np.arange(len(sender)) - np.repeat(start, k)
            ids = len(fs) + np.arange(len(sender))
            received = np.full(len(sender), -1, dtype=np.int64) if step == 0 else prev[sender, chunk]
            sent = np.where(chunk > 0, ids - 1, -1)
            # per-flow dependencies: `after` (first step), the chunk received, then the chunk sent
            shared = len(after) if step == 0 else 0
            per = shared + (received >= 0) + (sent >= 0)
            offsets = np.zeros(len(sender) + 1, dtype=np.int64)
            np.cumsum(per, out=offsets[1:])
            enc = np.empty(int(offsets[-1]), dtype=np.int64)
            pos = offsets[:-1].copy()
            for a in after if step == 0 else ():
                enc[pos] = a
                pos += 1
            has = received >= 0
            enc[pos[has]] = received[has]
            pos += has
            has = sent >= 0
            enc[pos[has]] = -sent[has] - 1
            block = fs.add_many(rank[sender], rank[succ[sender]], chunk_size[seg[sender], chunk],
                                tag=f"{tag}:{phase}{s}", deps=(offsets, enc))
            prev = np.full((n, max_chunks), -1, dtype=np.int64)
            prev[succ[sender], chunk] = np.arange(block.start, block.stop)
            step += 1
    coll.flows = range(first, len(fs))
    coll.last = prev[prev >= 0].tolist()
    return coll


def ring_all_reduce(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *,
                    chunk_bytes: int | None = DEFAULT_CHUNK_BYTES, after: Iterable[int] = (),
                    tag: str = "all_reduce") -> Collective:
    """Ring all-reduce of a ``size_bytes`` buffer: reduce-scatter then all-gather, 2(n-1) steps;
    each rank sends 2(n-1)/n of the buffer."""
    return _ring(fs, _check_ranks(ranks, tag), size_bytes, ("rs", "ag"), chunk_bytes, after, tag)


def ring_reduce_scatter(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *,
                        chunk_bytes: int | None = DEFAULT_CHUNK_BYTES, after: Iterable[int] = (),
                        tag: str = "reduce_scatter") -> Collective:
    """Ring reduce-scatter of a ``size_bytes`` buffer (n-1 steps, (n-1)/n of it sent per rank)."""
    return _ring(fs, _check_ranks(ranks, tag), size_bytes, ("rs",), chunk_bytes, after, tag)


def ring_all_gather(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *,
                    chunk_bytes: int | None = DEFAULT_CHUNK_BYTES, after: Iterable[int] = (),
                    tag: str = "all_gather") -> Collective:
    """Ring all-gather producing a ``size_bytes`` buffer on every rank (each contributes 1/n)."""
    return _ring(fs, _check_ranks(ranks, tag), size_bytes, ("ag",), chunk_bytes, after, tag)


def tree_all_reduce(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *,
                    chunk_bytes: int | None = DEFAULT_CHUNK_BYTES, after: Iterable[int] = (),
                    tag: str = "tree_all_reduce") -> Collective:
    """Binary-tree all-reduce: reduce towards ``ranks[0]``, then broadcast back, chunk-pipelined.

    Latency grows with the tree depth (2 log2 n hops) instead of the ring's 2(n-1) steps, which
    wins for small messages on many ranks; interior ranks send the whole buffer up and down.
    """
    ranks = _check_ranks(ranks, tag)
    n = len(ranks)
    size_bytes = check_size_bytes(size_bytes, tag)
    check_flow_count(2 * (n - 1) * _num_chunks(size_bytes, chunk_bytes), tag)
    chunks = _split(size_bytes, _num_chunks(size_bytes, chunk_bytes))
    children = {i: [c for c in (2 * i + 1, 2 * i + 2) if c < n] for i in range(n)}
    after = list(after)
    coll = Collective(tag)
    up: dict[tuple[int, int], int] = {}    # (child, chunk) -> flow child->parent
    order = sorted(range(1, n), key=lambda i: -i)  # deepest first
    for c, chunk in enumerate(chunks):
        for i in order:
            deps = list(after) + [up[(k, c)] for k in children[i]]
            sent = [up[(i, c - 1)]] if c > 0 else []
            up[(i, c)] = fs.add(ranks[i], ranks[(i - 1) // 2], chunk, after=deps, after_sent=sent,
                                tag=f"{tag}:reduce")
            coll.flows.append(up[(i, c)])
    down: dict[tuple[int, int], int] = {}  # (child, chunk) -> flow parent->child
    for c, chunk in enumerate(chunks):
        for i in range(1, n):
            parent = (i - 1) // 2
            deps = [up[(k, c)] for k in children[0]] if parent == 0 else [down[(parent, c)]]
            sent = [down[(i, c - 1)]] if c > 0 else []
            down[(i, c)] = fs.add(ranks[parent], ranks[i], chunk, after=deps, after_sent=sent,
                                  tag=f"{tag}:broadcast")
            coll.flows.append(down[(i, c)])
    coll.last = [down[(i, len(chunks) - 1)] for i in range(1, n)]
    return coll


def one_shot_all_reduce(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *, after: Iterable[int] = (),
                        tag: str = "one_shot_all_reduce") -> Collective:
    """One-shot all-reduce (the framework kernels' small-message path, e.g. TensorRT-LLM's and
    vLLM's custom all-reduce): every rank pushes its whole ``size_bytes`` buffer to every other
    rank over direct peer-to-peer paths, then reduces locally. One step; each rank sends
    (n-1) x the buffer."""
    ranks = _check_ranks(ranks, tag)
    return all_to_all(fs, ranks, check_size_bytes(size_bytes, tag), after=after, tag=tag)


def two_shot_all_reduce(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *, after: Iterable[int] = (),
                        tag: str = "two_shot_all_reduce") -> Collective:
    """Two-shot all-reduce over direct peer-to-peer paths (custom all-reduce kernels, larger
    messages): reduce-scatter (rank i sends its slice j of the buffer to rank j), then all-gather
    (rank j sends its reduced slice to every other rank once all slices for it have arrived).
    Two steps; each rank sends 2(n-1)/n of the buffer, like a ring, but with 2 latencies instead
    of 2(n-1)."""
    ranks = _check_ranks(ranks, tag)
    n = len(ranks)
    check_flow_count(2 * n * (n - 1), tag)
    slices = _split(check_size_bytes(size_bytes, tag), n)
    after = list(after)
    coll = Collective(tag)
    arrived: list[list[int]] = [[] for _ in range(n)]
    for k in range(1, n):
        for i in range(n):
            j = (i + k) % n
            if slices[j]:
                f = fs.add(ranks[i], ranks[j], slices[j], after=after, tag=f"{tag}:rs")
                coll.flows.append(f)
                arrived[j].append(f)
    for k in range(1, n):
        for j in range(n):
            if slices[j]:
                coll.flows.append(fs.add(ranks[j], ranks[(j + k) % n], slices[j], after=arrived[j] + after,
                                         tag=f"{tag}:ag"))
    coll.last = list(coll.flows)
    return coll


def nvls_all_reduce(fs: FlowSet, ranks: Sequence[int], size_bytes: int, *, after: Iterable[int] = (),
                    tag: str = "nvls_all_reduce") -> Collective:
    """NVLink SHARP all-reduce (NVLS: the NVSwitch reduces and multicasts) as GPU-to-GPU flows
    with the same bytes on every GPU's NVLink port.

    Rank ``i`` owns slice ``i`` (``size/n``): the switch reads slice ``i`` from every GPU and
    delivers the sum to rank ``i`` (``multimem.ld_reduce``), which then stores it once to the
    switch, which writes it to every GPU (``multimem.st``). Pipelined, each GPU's port carries
    ``(1 + 1/n) x size`` each way (a ring all-reduce: ``2(n-1)/n x size``). Flows cannot reduce
    or replicate in the switch, so the same port load is laid out as a uniform all-to-all of
    ``(n+1) / (n(n-1)) x size`` per pair: one switch hop, ``(1 + 1/n) x size`` out of and into
    every GPU. Only meaningful inside one NVSwitch domain."""
    ranks = _check_ranks(ranks, tag)
    n = len(ranks)
    per_pair = -(-check_size_bytes(size_bytes, tag) * (n + 1) // (n * (n - 1)))
    return all_to_all(fs, ranks, per_pair, after=after, tag=tag)


#: Algorithms of the frameworks' custom all-reduce kernels (:func:`custom_all_reduce`):
#: one-shot, two-shot and NVLink SHARP (TensorRT-LLM's AUTO strategy also hands large buffers to
#: NCCL, which runs NVLS on NVSwitch systems).
CUSTOM_ALLREDUCE_ALGORITHMS = ("one_shot", "two_shot", "nvls")


def custom_all_reduce(fs: FlowSet, ranks: Sequence[int], size_bytes: int, algorithm: str, *,
                      after: Iterable[int] = (), tag: str = "custom_all_reduce") -> Collective:
    """A framework's custom all-reduce (TensorRT-LLM / sglang / vLLM kernels inside one NVLink
    domain) with ``algorithm`` ``one_shot``, ``two_shot`` or ``nvls``. Which one a call uses is decided by
    the caller (the step engine takes the one with the shorter predicted duration, as the kernels'
    AUTO strategy aims to: one-shot has less fixed cost, two-shot moves fewer bytes)."""
    if algorithm == "one_shot":
        return one_shot_all_reduce(fs, ranks, size_bytes, after=after, tag=tag)
    if algorithm == "two_shot":
        return two_shot_all_reduce(fs, ranks, size_bytes, after=after, tag=tag)
    if algorithm == "nvls":
        return nvls_all_reduce(fs, ranks, size_bytes, after=after, tag=tag)
    raise FlowError(f"{tag}: unknown custom all-reduce algorithm {algorithm!r}; "
                    f"expected one of {CUSTOM_ALLREDUCE_ALGORITHMS}")
