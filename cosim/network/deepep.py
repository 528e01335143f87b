"""DeepEP dispatch and combine as flows: the traffic model validated against measured DeepEP
kernels (``docs/validation-comm.md``) and used by the step engine (:mod:`cosim.engine.step`).

**Low-latency mode** (decode, :func:`deepep_ll_flows`): no deduplication, one message per
(token, expert) selection (dispatch: fp8 payload + fp32 scales + a 16-byte header, or the payload
in the dispatch dtype + header; combine: bf16), straight from the source GPU to the expert's GPU:
NVLink inside a node, the source GPU's own NIC across nodes (route with
``cross_rail: direct``). DeepEP opens one queue pair per local expert towards every peer, so each
inter-node pair is split over ``qps_per_peer`` flows with distinct path keys (hashed
independently by ECMP); NVLink pairs stay one flow.

**Normal mode** (prefill, :func:`deepep_normal_flows`), DeepEP's hierarchical internode kernels:
intra-node pairs directly over NVLink (tokens deduplicated per destination rank); for every
(source rank, remote node) **one RDMA stream** to the GPU with the same local index on that node
(same rail), carrying each token once (deduplicated per node), which forwards it over NVLink to the
ranks of its node that need it, chunk by chunk (forwarding of chunk c waits for chunk c from
every source). Combine is the reverse: NVLink gather to the rail-matched GPU, one RDMA copy back.
A group within one node is a plain all-to-all-v (DeepEP's intranode kernels).

Ranks are topology GPU ranks in group order; the node of a rank is ``rank // gpus_per_node``
(:func:`topology_gpus_per_node` reads it from the topology's GPU ``domain`` attributes). The byte
matrices are what each side actually sends, in the direction of the operation (combine matrices
are the transposes of dispatch ones); :func:`ll_bytes_matrix` and :func:`normal_bytes_matrices`
make them from routing counts (:mod:`cosim.trace.moe_traffic`).
"""

from __future__ import annotations

from math import ceil
from typing import Iterable, Literal, Sequence

import numpy as np

from cosim.errors import ConfigError, FlowError
from cosim.network import collectives as C
from cosim.network.collectives import Collective
from cosim.network.flows import FlowSet

DeepEPOp = Literal["dispatch", "combine"]

#: GPUs per node DeepEP assumes (``NUM_MAX_NVL_PEERS``) when nothing else says.
DEFAULT_GPUS_PER_NODE = 8
#: Per-message header DeepEP's low-latency kernels send (and its test counts) with every selection.
LL_HEADER_BYTES = 16
#: fp8 dispatch carries one fp32 scale per this many values.
FP8_SCALE_BLOCK = 128
#: Normal-mode inter-node pipelining: at most this many chunks per RDMA stream, of >= this size.
MAX_CHUNKS = 8
MIN_CHUNK_BYTES = 256 * 1024
#: DeepEP's internode (normal-mode) test limits every token to at most this many nodes.
MAX_TOPK_NODES = 4

_DTYPE_BYTES = {"bfloat16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5625, "int8": 1.0}


# --------------------------------------------------------------------------- bytes per token


def _payload_bytes(hidden: int, dtype: str) -> float:
    if dtype in ("fp8", "fp8_block"):
        return hidden + hidden // FP8_SCALE_BLOCK * 4  # fp8 values + one fp32 scale per 128
    try:
        return hidden * _DTYPE_BYTES[dtype]
    except KeyError:
        raise ConfigError("<api>", "dtype", f"unknown DeepEP payload dtype {dtype!r}") from None


def normal_dispatch_bytes_per_token(hidden: int, dtype: str = "fp8") -> float:
    """Normal-mode dispatch: fp8 payload plus one fp32 scale per 128 values (or ``hidden`` values
    of ``dtype``)."""
    return _payload_bytes(hidden, dtype)


def normal_combine_bytes_per_token(hidden: int, dtype: str = "bfloat16") -> float:
    """Normal-mode combine: the expert output, bf16 (``2 * hidden``)."""
    return _payload_bytes(hidden, dtype)


def ll_dispatch_bytes_per_selection(hidden: int, dtype: str = "fp8") -> float:
    """Low-latency dispatch message: the payload (fp8 + scales, or ``dtype``) and the 16-byte header."""
    return _payload_bytes(hidden, dtype) + LL_HEADER_BYTES


def ll_combine_bytes_per_selection(hidden: int, dtype: str = "bfloat16") -> float:
    """Low-latency combine message: the expert output, bf16 (``2 * hidden``)."""
    return _payload_bytes(hidden, dtype)


def ll_qps_per_peer(num_experts: int, ep: int) -> int:
    """Queue pairs DeepEP's low-latency mode opens towards every peer (one per local expert)."""
    return max(1, num_experts // ep)


def topk_nodes_limit(num_nodes: int) -> int:
    """Node limit of DeepEP's normal-mode routing (``min(nodes, 4)``; 0 = none on one node)."""
    return min(num_nodes, MAX_TOPK_NODES) if num_nodes > 1 else 0


# ------------------------------------------------------------------------------ matrices


def ll_bytes_matrix(selections: np.ndarray, bytes_per_selection: float, op: DeepEPOp) -> np.ndarray:
    """Low-latency bytes per pair from ``selections[i, j]`` ((token, expert) pairs of rank i with
    the expert on rank j): dispatch ``i -> j``; combine the transpose (outputs return). Whole
    bytes, zero diagonal."""
    sel = np.asarray(selections, dtype=np.float64)
    m = np.rint((sel if op == "dispatch" else sel.T) * bytes_per_selection).astype(np.int64)
    np.fill_diagonal(m, 0)
    return m


def normal_bytes_matrices(tokens: np.ndarray, node_tokens: np.ndarray, bytes_per_token: float,
                          op: DeepEPOp) -> tuple[np.ndarray, np.ndarray]:
    """Normal-mode (per-rank, per-node) byte matrices from ``tokens[i, j]`` (tokens of rank i
    needed on rank j) and ``node_tokens[i, m]`` (tokens of rank i needed on node m), in the
    direction of ``op``: dispatch ``[ranks x ranks]`` and ``[ranks x nodes]``; combine their
    transposes. Floats (not rounded), zero diagonal on the per-rank matrix."""
    tok = np.asarray(tokens, dtype=np.float64) * bytes_per_token
    np.fill_diagonal(tok, 0.0)
    node = np.asarray(node_tokens, dtype=np.float64) * bytes_per_token
    return (tok, node) if op == "dispatch" else (tok.T.copy(), node.T.copy())


# ------------------------------------------------------------------------------ topology


def topology_gpus_per_node(topology) -> int:
    """GPUs per node (scale-up domain) from the topology's GPU ``domain`` attributes: ranks must
    be numbered node by node with equal node sizes. A topology without domains is one node."""
    domains = [topology.nodes[i].domain for i in topology.gpu_nodes]
    if not domains:
        return 1
    if all(d is None for d in domains):
        return len(domains)
    if any(d is None for d in domains):
        raise ConfigError(topology.source, "nodes", "some GPUs have a domain and others not")
    runs: list[int] = []
    seen: set = set()
    for k, d in enumerate(domains):
        if k == 0 or d != domains[k - 1]:
            if d in seen:
                raise ConfigError(topology.source, "nodes", f"GPUs of domain {d} are not numbered consecutively")
            seen.add(d)
            runs.append(0)
        runs[-1] += 1
    if len(set(runs)) > 1:
        raise ConfigError(topology.source, "nodes", f"domains of unequal size {sorted(set(runs))}: DeepEP traffic "
                                                    "needs the same number of GPUs in every node")
    return runs[0]


def group_nodes(ranks: Sequence[int], gpus_per_node: int) -> tuple[int, ...]:
    """Node index of every member of a group of topology ``ranks``: the node of a rank is
    ``rank // gpus_per_node``, numbered 0, 1, ... in order of first appearance."""
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be >= 1, got {gpus_per_node}")
    index: dict[int, int] = {}
    return tuple(index.setdefault(int(r) // gpus_per_node, len(index)) for r in ranks)


def _groups(ranks: list[int], gpus_per_node: int) -> tuple[np.ndarray, list[list[int]]]:
    """Node index of every group position and the positions of every node, in local-index order."""
    node = np.asarray(group_nodes(ranks, gpus_per_node), dtype=np.int64)
    members: list[list[int]] = [[] for _ in range(int(node.max()) + 1)]
    for pos, m in enumerate(node):
        members[m].append(pos)
    for mem in members:
        mem.sort(key=lambda p: ranks[p] % gpus_per_node)
    return node, members


def _relay(ranks: list[int], members: list[int], pos: int, gpus_per_node: int) -> int:
    """Position on a node (``members``) that receives the RDMA stream of ``pos``: the GPU with the
    same local index (same rail), or one chosen by local index if the group lacks it."""
    local = ranks[pos] % gpus_per_node
    for p in members:
        if ranks[p] % gpus_per_node == local:
            return p
    return members[local % len(members)]


def _rotation(members: list[int], pos: int) -> list[int]:
    """The other members of ``pos``'s node, starting after it (rotated order, as DeepEP's kernels)."""
    i = members.index(pos)
    return [members[(i + k) % len(members)] for k in range(1, len(members))]


def _chunks(size: int, n: int) -> list[int]:
    base, extra = divmod(int(size), n)
    return [base + (1 if k < extra else 0) for k in range(n)]


def _check(ranks: Sequence[int], m: np.ndarray, shape: tuple[int, int], what: str) -> None:
    if m.shape != shape:
        raise FlowError(f"{what} must have shape {shape}, got {m.shape}")
    if (m < 0).any() or not np.isfinite(m).all():
        raise FlowError(f"{what} entries must be finite and non-negative")


# ------------------------------------------------------------------------------ flows


def deepep_ll_flows(fs: FlowSet, ranks: Sequence[int], bytes_matrix, qps_per_peer: int, gpus_per_node: int, *,
                    after: Iterable[int] = (), tag: str = "deepep_ll") -> Collective:
    """Low-latency dispatch or combine: ``bytes_matrix[i][j]`` bytes from ``ranks[i]`` to
    ``ranks[j]`` (:func:`ll_bytes_matrix`; rounded to whole bytes here), visited in the rotated
    order of an all-to-all; pairs on different nodes are split over ``qps_per_peer`` flows with
    path keys ``0..qps_per_peer-1``. Route with ``cross_rail: direct`` (each GPU's own NIC)."""
    ranks = [int(r) for r in ranks]
    n = len(ranks)
    m = np.asarray(bytes_matrix, dtype=np.float64)
    _check(ranks, m, (n, n), f"{tag}: bytes_matrix")
    m = np.rint(m).astype(np.int64)
    if qps_per_peer < 1:
        raise FlowError(f"{tag}: qps_per_peer must be >= 1, got {qps_per_peer}")
    node, _ = _groups(ranks, gpus_per_node)
    after = list(after)
    coll = Collective(tag)
    # As arrays, in the order of the loops "for k in 1..n-1, for i: j = (i + k) % n, for each
    # QP q" (one block; the same flows as adding them one by one).
    kk, ii = np.meshgrid(np.arange(1, n), np.arange(n), indexing="ij")
    ii = ii.ravel()
    jj = (ii + kk.ravel()) % n
    size = m[ii, jj]
    keep = size > 0
    ii, jj, size = ii[keep], jj[keep], size[keep]
    q = np.where(node[ii] != node[jj], qps_per_peer, 1)  # parts per pair
    pair = np.repeat(np.arange(len(size)), q)
    qp = np.arange(len(pair)) - np.repeat(np.cumsum(q) - q, q)  # part index within its pair
    base, extra = np.divmod(size[pair], q[pair])
    part = base + (qp < extra)  # _chunks: the first `extra` parts carry one byte more
    live = part > 0
    rk = np.asarray(ranks, dtype=np.int64)
    if len(pair):
        block = fs.add_many(rk[ii[pair[live]]], rk[jj[pair[live]]], part[live], after=after, tag=tag,
                            path_key=qp[live])
        coll.flows = list(block)
    coll.last = list(coll.flows)
    return coll


def deepep_normal_flows(fs: FlowSet, ranks: Sequence[int], bytes_matrix, node_bytes_matrix, gpus_per_node: int,
                        op: DeepEPOp, *, after: Iterable[int] = (), tag: str = "") -> Collective:
    """Normal-mode dispatch or combine (hierarchical, see the module docstring).

    Dispatch: ``bytes_matrix[i][j]`` bytes of the tokens of ``ranks[i]`` needed on ``ranks[j]``
    (deduplicated per rank) and ``node_bytes_matrix[i][m]`` bytes of its tokens needed on node
    ``m`` (deduplicated per node; nodes numbered in order of first appearance in ``ranks``;
    entries for a rank's own node are not sent and are ignored). Combine: the transposes
    (``[j][i]`` and ``[m][i]``: what comes back). Entries may be floats; each flow's size is
    rounded. Flow tags are ``{tag}:nvl_direct``, ``:rdma``, ``:nvl_forward``
    (dispatch) / ``:nvl_gather`` (combine), or the bare part names when ``tag`` is empty.
    """
    if op not in ("dispatch", "combine"):
        raise FlowError(f"{tag}: op must be 'dispatch' or 'combine', got {op!r}")
    ranks = [int(r) for r in ranks]
    n = len(ranks)
    node, members = _groups(ranks, gpus_per_node)
    nodes = len(members)
    tok = np.asarray(bytes_matrix, dtype=np.float64)
    nb = np.asarray(node_bytes_matrix, dtype=np.float64)
    if op == "combine":
        tok, nb = tok.T, nb.T
    _check(ranks, tok, (n, n), f"{tag}: bytes_matrix")
    after = list(after)
    coll = Collective(tag or "deepep_normal")
    if nodes == 1:  # DeepEP's intranode kernels: a per-rank-deduplicated all-to-all-v over NVLink
        m = np.rint(tok).astype(np.int64)
        np.fill_diagonal(m, 0)
        return C.all_to_all_v(fs, ranks, m if op == "dispatch" else m.T, after=after,
                              tag=tag or f"normal_{op}")
    _check(ranks, nb, (n, nodes), f"{tag}: node_bytes_matrix")

    def name(part: str) -> str:
        return f"{tag}:{part}" if tag else part

    def add(src: int, dst: int, size: int, deps: list[int], sent: list[int], part: str) -> int:
        f = fs.add(ranks[src], ranks[dst], size, after=deps, after_sent=sent, tag=name(part))
        coll.flows.append(f)
        return f

    remote = node[:, None] != np.arange(nodes)[None, :]
    n_chunks = int(np.clip(ceil(nb[remote].max() / MIN_CHUNK_BYTES), 1, MAX_CHUNKS))
    # Intra-node pairs: direct NVLink (dispatch s -> d; combine d -> s).
    for s in range(n):
        for d in _rotation(members[node[s]], s):
            size = int(round(tok[s, d]))
            if size:
                src, dst = (s, d) if op == "dispatch" else (d, s)
                add(src, dst, size, after, [], "nvl_direct")
    # Relay of every (source, remote node), and the volume it forwards to each rank of its node.
    relay = {(s, m): _relay(ranks, members[m], s, gpus_per_node) for s in range(n) for m in range(nodes)
             if m != node[s]}
    fwd = np.zeros((n, n))
    for (s, m), r in relay.items():
        fwd[r, members[m]] += tok[s, members[m]]
    np.fill_diagonal(fwd, 0)
    if op == "dispatch":
        rdma: dict[int, list[list[int]]] = {r: [[] for _ in range(n_chunks)] for r in range(n)}
        for k in range(1, nodes):
            for s in range(n):
                m = (node[s] + k) % nodes
                r = relay[(s, m)]
                for c, f in enumerate(_chunk_stream(add, s, r, int(round(nb[s, m])), n_chunks, after, "rdma")):
                    if f is not None:
                        rdma[r][c].append(f)
        for r in range(n):
            for d in _rotation(members[node[r]], r):
                _chunk_stream(add, r, d, int(round(fwd[r, d])), n_chunks, after, "nvl_forward", rdma[r])
    else:
        gathered: dict[int, list[list[int]]] = {r: [[] for _ in range(n_chunks)] for r in range(n)}
        for r in range(n):
            for d in _rotation(members[node[r]], r):
                for c, f in enumerate(_chunk_stream(add, d, r, int(round(fwd[r, d])), n_chunks, after, "nvl_gather")):
                    if f is not None:
                        gathered[r][c].append(f)
        for k in range(1, nodes):
            for s in range(n):
                m = (node[s] + k) % nodes
                r = relay[(s, m)]
                _chunk_stream(add, r, s, int(round(nb[s, m])), n_chunks, after, "rdma", gathered[r])
    coll.last = list(coll.flows)
    return coll


def _chunk_stream(add, src: int, dst: int, size: int, n_chunks: int, after: list[int], tag: str,
                  chunk_deps: list[list[int]] | None = None) -> list[int | None]:
    """One chunked stream from ``src`` to ``dst``: chunk ``c`` waits for ``chunk_deps[c]`` and
    ``after``, and for chunk ``c-1`` to have left the sender. Returns the flow of each chunk
    (None for empty chunks)."""
    flows: list[int | None] = [None] * n_chunks
    prev = None
    for c, part in enumerate(_chunks(size, n_chunks)):
        if not part:
            continue
        deps = (chunk_deps[c] if chunk_deps is not None else []) + after
        prev = flows[c] = add(src, dst, part, deps, [prev] if prev is not None else [], tag)
    return flows


def gpu_bytes_sent(fs: FlowSet, flows: Iterable[int] | None = None) -> float:
    """Most bytes one GPU emits over ``flows`` (default: all of ``fs``), NVLink and RDMA,
    forwarded bytes included: the input of the kernel-rate overhead model."""
    idx = np.arange(len(fs)) if flows is None else np.fromiter(flows, dtype=np.int64)
    if not len(idx):
        return 0.0
    src = np.asarray(fs.src)[idx]
    size = np.asarray(fs.size_bytes, dtype=np.float64)[idx]
    return float(np.bincount(src, weights=size).max())
