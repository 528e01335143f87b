"""MoE token routing: how many tokens and (token, expert) selections go from each EP rank to
each rank and node. The one routing module of cosim, used by the step traces
(:mod:`cosim.trace.builder`) and the communication validation (:mod:`cosim.validation.comm`).

Each of ``num_tokens`` tokens on every EP rank picks ``topk`` distinct experts. Experts are placed
contiguously: expert ``e`` lives on rank ``e // (num_experts / ep)``. Ranks are grouped into nodes
(scale-up domains) of ``gpus_per_node`` consecutive EP ranks, or by an explicit ``node_of`` (node
index of every EP rank, non-decreasing). Three counts describe the traffic
(:class:`RoutingCounts`):

- ``selections[i, j]``: (token, expert) pairs of rank i whose expert is on rank j, no
  deduplication (DeepEP low-latency mode sends each one);
- ``tokens[i, j]``: tokens of rank i with at least one expert on rank j (deduplicated per
  destination rank: DeepEP normal mode inside a node, and the per-rank all-to-all);
- ``node_tokens[i, m]``: tokens of rank i with at least one expert on node m (deduplicated per
  node: DeepEP normal mode's RDMA copies).

Routing is uniform (``skew = 0``, iid random expert scores as in DeepEP's tests) or skewed: expert
popularity follows a power law ``p_e ~ (e + 1) ** -skew`` over a random permutation of experts
(Gumbel top-k). ``0 < topk_nodes < nodes`` limits every token to the ``topk_nodes`` nodes
holding its highest expert scores, then top-k inside them (DeepSeek-V3 node-limited routing, as
DeepEP's internode test draws it).

Two ways to get the counts: :func:`sampled_routing_counts` draws one routing per rank,
reproducibly from ``seed`` (cached: every layer of a step reuses the same sample);
:func:`expected_routing_counts` is the expectation (closed form for uniform routing, Monte Carlo
under node-limited routing), the same for every pair of ranks. :func:`routing_counts` selects
one with ``traffic='sampled' | 'expected'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import Sequence

import numpy as np

from cosim.network.deepep import DEFAULT_GPUS_PER_NODE


@dataclass(frozen=True)
class RoutingCounts:
    """Traffic counts of one routing (per rank; floats after scaling or in expectation).

    Arrays are read-only (cached samples are shared).
    """

    selections: np.ndarray   # [ep, ep] (token, expert) pairs, no dedup
    tokens: np.ndarray       # [ep, ep] tokens, deduplicated per destination rank
    node_tokens: np.ndarray  # [ep, nodes] tokens, deduplicated per destination node

    @property
    def expert_tokens(self) -> np.ndarray:
        """(token, expert) pairs computed on each rank (column sums of ``selections``)."""
        return self.selections.sum(axis=0)


def expert_rank(num_experts: int, ep: int) -> np.ndarray:
    """Rank holding each expert under contiguous placement: expert ``e`` on rank
    ``e * ep // num_experts`` (``e // (num_experts / ep)`` when ``ep`` divides the experts;
    otherwise ranks hold ``floor`` or ``ceil(num_experts / ep)`` experts, e.g. 256 experts on 56
    FFN GPUs of an AFD group)."""
    if not 1 <= ep <= num_experts:
        raise ValueError(f"ep={ep} must be in 1..num_experts={num_experts}")
    return np.arange(num_experts) * ep // num_experts


def expert_popularity(num_experts: int, skew: float, seed: int = 0) -> np.ndarray:
    """Routing probability of each expert: uniform for ``skew = 0``, else a shuffled power law."""
    if skew < 0:
        raise ValueError(f"skew must be >= 0, got {skew}")
    weights = (np.arange(num_experts) + 1.0) ** -skew
    rng = np.random.default_rng(seed)
    return rng.permutation(weights / weights.sum())


@dataclass(frozen=True)
class ExpertPlacement:
    """Where the replicas of every expert live (expert-parallel load balancing, EPLB).

    ``replica_ranks[e, i]`` is the rank of replica ``i`` of expert ``e`` (``-1`` padding beyond
    ``replicas[e]``). Hashable, so routing samples that use it can be cached.
    """

    replica_ranks: tuple[tuple[int, ...], ...]
    replicas: tuple[int, ...]

    @property
    def num_slots(self) -> int:
        return sum(self.replicas)

    def rank_load(self, popularity: np.ndarray) -> np.ndarray:
        """Expected share of all selections that each rank receives (replicas split evenly)."""
        ep = 1 + max(r for row in self.replica_ranks for r in row)
        load = np.zeros(ep)
        for e, (row, k) in enumerate(zip(self.replica_ranks, self.replicas)):
            for r in row[:k]:
                load[r] += popularity[e] / k
        return load


def eplb_placement(popularity: Sequence[float], redundant: int, ep: int) -> ExpertPlacement:
    """Redundant-expert placement as EPLB does it: every extra slot replicates the expert with
    the highest load per replica; then replicas are packed onto the ``ep`` ranks (the same
    number of slots each) heaviest first, each to the least-loaded rank that has room and no
    replica of that expert yet (greedy longest-processing-time)."""
    p = np.asarray(popularity, dtype=np.float64)
    num_experts = len(p)
    slots = num_experts + int(redundant)
    if redundant < 0 or slots % ep:
        raise ValueError(f"num_experts + redundant = {slots} must be a multiple of ep={ep} (redundant >= 0)")
    replicas = np.ones(num_experts, dtype=np.int64)
    for _ in range(int(redundant)):
        replicas[int(np.argmax(p / replicas))] += 1
    per_rank = slots // ep
    items = sorted(((p[e] / replicas[e], e) for e in range(num_experts) for _ in range(replicas[e])), reverse=True)
    load = np.zeros(ep)
    free = np.full(ep, per_rank)
    hosts: list[list[int]] = [[] for _ in range(num_experts)]
    for share, e in items:
        allowed = (free > 0) & ~np.isin(np.arange(ep), hosts[e])
        if not allowed.any():
            allowed = free > 0
        r = int(np.flatnonzero(allowed)[np.argmin(load[allowed])])
        hosts[e].append(r)
        load[r] += share
        free[r] -= 1
    width = int(replicas.max())
    rows = tuple(tuple(h + [-1] * (width - len(h))) for h in hosts)
    return ExpertPlacement(rows, tuple(int(k) for k in replicas))


def _node_of(ep: int, gpus_per_node: int, node_of: Sequence[int] | None) -> tuple[int, ...]:
    if node_of is None:
        return tuple(r // gpus_per_node for r in range(ep))
    node_of = tuple(int(m) for m in node_of)
    if len(node_of) != ep:
        raise ValueError(f"node_of has {len(node_of)} entries for ep={ep}")
    if node_of[:1] != (0,) or any(b - a not in (0, 1) for a, b in zip(node_of, node_of[1:])):
        raise ValueError(f"node_of must number nodes 0, 1, ... in rank order, got {list(node_of)}")
    return node_of


def _freeze(*arrays: np.ndarray) -> RoutingCounts:
    for a in arrays:
        a.setflags(write=False)
    return RoutingCounts(*arrays)


def routing_counts(num_tokens: int, num_experts: int, topk: int, ep: int, *, traffic: str = "expected",
                   topk_nodes: int = 0, gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
                   node_of: Sequence[int] | None = None, selections: int | None = None, skew: float = 0.0,
                   seed: int = 0, max_sampled: int | None = None) -> RoutingCounts:
    """Routing counts of ``num_tokens`` tokens per rank: ``traffic='expected'``
    (:func:`expected_routing_counts`) or ``'sampled'`` (:func:`sampled_routing_counts`).
    ``selections`` (per rank) keeps only that many (token, expert) pairs (DeepEP's low-latency
    test masks a few)."""
    if traffic == "sampled":
        return sampled_routing_counts(num_tokens, num_experts, topk, ep, topk_nodes=topk_nodes,
                                      gpus_per_node=gpus_per_node, node_of=None if node_of is None else tuple(node_of),
                                      selections=selections, skew=skew, seed=seed, max_sampled=max_sampled)
    if traffic != "expected":
        raise ValueError(f"traffic must be 'expected' or 'sampled', got {traffic!r}")
    if skew:
        raise ValueError("expected routing counts exist for uniform routing only (skew = 0)")
    return expected_routing_counts(num_tokens, num_experts, topk, ep, topk_nodes=topk_nodes,
                                   gpus_per_node=gpus_per_node, node_of=node_of, selections=selections)


def expected_routing_counts(num_tokens: int, num_experts: int, topk: int, ep: int, *, topk_nodes: int = 0,
                            gpus_per_node: int = DEFAULT_GPUS_PER_NODE, node_of: Sequence[int] | None = None,
                            selections: int | None = None) -> RoutingCounts:
    """Expected counts of uniform routing: with experts spread evenly every pair of ranks carries
    the same amount (``T k / ep`` selections, ``T p_rank`` tokens, ``T p_node`` tokens per node;
    :func:`hit_probabilities`), which keeps a simulation symmetric and fast. Masking
    (``selections`` < ``T k``) thins every pair alike."""
    if num_experts % ep:
        raise ValueError(f"num_experts={num_experts} is not divisible by ep={ep}")
    nodes_of = _node_of(ep, gpus_per_node, node_of)
    nodes = max(nodes_of) + 1 if nodes_of else 1
    sizes = tuple(int(s) for s in np.bincount(nodes_of, minlength=nodes))
    p_rank, p_nodes = _hit_probabilities(num_experts, topk, ep, topk_nodes, sizes)
    sel_total = num_tokens * topk if selections is None else selections
    kept = sel_total / (num_tokens * topk) if num_tokens else 0.0
    sel = np.full((ep, ep), sel_total / ep)
    tok = np.full((ep, ep), num_tokens * p_rank * kept)
    node_tok = np.tile(num_tokens * np.asarray(p_nodes) * kept, (ep, 1)) if len(set(p_nodes)) > 1 else \
        np.full((ep, nodes), num_tokens * p_nodes[0] * kept)
    return _freeze(sel, tok, node_tok)


def hit_probabilities(num_experts: int, topk: int, ep: int, topk_nodes: int = 0,
                      gpus_per_node: int = DEFAULT_GPUS_PER_NODE) -> tuple[float, float]:
    """Probability that a token has at least one expert on a given rank, and on a given node
    (nodes of ``gpus_per_node`` ranks).

    Uniform routing: ``1 - C(E - E/ep, k) / C(E, k)`` (and the same with the experts of a node).
    Node-limited routing (``0 < topk_nodes < nodes``): Monte Carlo over 200k tokens (std < 0.2 %).
    """
    nodes_of = _node_of(ep, gpus_per_node, None)
    sizes = tuple(int(s) for s in np.bincount(nodes_of))
    p_rank, p_nodes = _hit_probabilities(num_experts, topk, ep, topk_nodes, sizes)
    return p_rank, p_nodes[0]


@lru_cache(maxsize=None)
def _hit_probabilities(num_experts: int, topk: int, ep: int, topk_nodes: int, node_sizes: tuple[int, ...],
                       mc_tokens: int = 200_000, seed: int = 12345) -> tuple[float, tuple[float, ...]]:
    """(p_rank, p_node per node). Nodes of equal size share one value (for node-limited routing
    the mean over all (rank, node) pairs of the Monte Carlo sample)."""
    nodes = len(node_sizes)
    per_rank = num_experts // ep
    if not 0 < topk_nodes < nodes:
        p_rank = 1.0 - comb(num_experts - per_rank, topk) / comb(num_experts, topk)
        p_nodes = tuple(1.0 - comb(num_experts - per_rank * s, topk) / comb(num_experts, topk) for s in node_sizes)
        return p_rank, p_nodes
    node_of = tuple(m for m, s in enumerate(node_sizes) for _ in range(s))
    t = mc_tokens // ep
    counts = sampled_routing_counts(t, num_experts, topk, ep, topk_nodes=topk_nodes, node_of=node_of,
                                    seed=seed, max_sampled=mc_tokens)
    p_rank = float(counts.tokens.mean() / t)
    if len(set(node_sizes)) == 1:
        return p_rank, (float(counts.node_tokens.mean() / t),) * nodes
    return p_rank, tuple(float(x) for x in counts.node_tokens.mean(axis=0) / t)


def sampled_routing_counts(num_tokens: int, num_experts: int, topk: int, ep: int, *, topk_nodes: int = 0,
                           gpus_per_node: int = DEFAULT_GPUS_PER_NODE, node_of: Sequence[int] | None = None,
                           selections: int | None = None, skew: float = 0.0, seed: int = 0,
                           max_sampled: int | None = None, redundant_experts: int = 0,
                           num_sources: int | None = None) -> RoutingCounts:
    """One random routing per rank, reproducible from ``seed`` and cached (the arrays are
    read-only and shared by every caller with the same arguments).

    ``num_sources`` (default ``ep``): ranks whose ``num_tokens`` tokens are routed, when they
    are not the EP ranks themselves (AFD: the attention ranks route to the FFN group's EP
    ranks); the matrices are then ``[num_sources, ep]`` and ``[num_sources, nodes]``.

    Uniform routing draws iid scores per (token, expert), as DeepEP's tests do; ``skew > 0``
    draws Gumbel top-k over :func:`expert_popularity`. Every source rank draws its tokens from a
    stream of its own (:class:`_Stream`), so samples are nested: the routing of ``t`` tokens is
    that of the first ``t`` tokens of any larger sample, and counts move smoothly (monotonically)
    with the token count instead of jumping between independent draws. Token counts above ``max_sampled`` (None:
    no limit) are sampled on ``max_sampled`` tokens and scaled (float counts). ``selections``
    masks random (token, slot) pairs down to that count per rank (only when not scaled).
    ``redundant_experts`` > 0 places replicas of the most popular experts by
    :func:`eplb_placement` (from the expected popularity) and sends every selection to one of its
    expert's replicas at random; it cannot be combined with node-limited routing.
    """
    nodes_of = _node_of(ep, gpus_per_node, node_of)
    placement = None
    if redundant_experts:
        if topk_nodes:
            raise ValueError("redundant experts with node-limited routing (DeepEP normal mode across nodes) "
                             "are not modelled")
        placement = eplb_placement(expert_popularity(num_experts, skew, seed), redundant_experts, ep)
    return _sampled(int(num_tokens), int(num_experts), int(topk), int(ep), int(topk_nodes), nodes_of,
                    None if selections is None else int(selections), float(skew), int(seed),
                    None if max_sampled is None else int(max_sampled), placement,
                    int(ep if num_sources is None else num_sources))


class _Stream:
    """The routing of one source rank's tokens, token after token: row ``i`` of ``chosen`` is the
    top-k experts of its ``i``-th token, drawn from a generator of its own (``(seed, source)``), so
    the first ``t`` tokens route the same whatever the batch (a sample of ``t`` tokens is a prefix
    of a sample of more) and a draw for ``t`` tokens is a slice of what was drawn before.
    ``uniform`` holds one uniform number per (token, slot) for the choice among an expert's
    replicas, drawn from a second generator when asked for."""

    __slots__ = ("rng", "pick_rng", "chosen", "uniform", "draw")

    def __init__(self, rng, pick_rng, draw):
        self.rng, self.pick_rng, self.draw = rng, pick_rng, draw
        self.chosen = np.zeros((0, 0), dtype=np.int32)
        self.uniform = np.zeros((0, 0))

    def rows(self, t: int) -> np.ndarray:
        self.chosen = _grown(self.chosen, t, lambda n: self.draw(self.rng, n))
        return self.chosen[:t]

    def picks(self, t: int, topk: int) -> np.ndarray:
        self.uniform = _grown(self.uniform, t, lambda n: self.pick_rng.random((n, topk)))
        return self.uniform[:t]


def _grown(have: np.ndarray, t: int, draw) -> np.ndarray:
    """``have`` extended to at least ``t`` rows by ``draw(n)`` (at least doubling it: geometric
    growth, so a stream asked for growing token counts draws O(log) times)."""
    if t <= len(have):
        return have
    more = draw(max(t - len(have), len(have)))
    return more if not len(have) else np.concatenate([have, more])


@lru_cache(maxsize=2048)  # int32 rows of top-k: 64 KiB per 2,048 tokens of a top-8 model
def _stream(num_experts: int, topk: int, skew: float, seed: int, topk_nodes: int, node_of_expert: tuple[int, ...],
            source: int) -> _Stream:
    """Source rank ``source``'s :class:`_Stream` under uniform (``skew = 0``: iid scores per
    (token, expert), as DeepEP's tests draw them) or skewed routing (Gumbel top-k over
    :func:`expert_popularity`), node-limited to ``topk_nodes`` nodes when ``0 < topk_nodes <
    nodes`` (experts on nodes by ``node_of_expert``)."""
    experts_node = np.asarray(node_of_expert, dtype=np.int64)
    nodes = int(experts_node.max()) + 1
    node_starts = np.searchsorted(experts_node, np.arange(nodes))
    log_p = np.log(expert_popularity(num_experts, skew, seed)) if skew else None

    def draw(rng, n: int) -> np.ndarray:
        if log_p is not None:
            scores = log_p[None, :] + rng.gumbel(size=(n, num_experts))
        else:
            scores = rng.random((n, num_experts))
        if 0 < topk_nodes < nodes:
            group_max = np.maximum.reduceat(scores, node_starts, axis=1)
            kept = np.argpartition(-group_max, topk_nodes - 1, axis=1)[:, :topk_nodes]
            allowed = np.zeros((n, nodes), dtype=bool)
            np.put_along_axis(allowed, kept, True, axis=1)
            scores = np.where(allowed[:, experts_node], scores, -np.inf)
        return np.argpartition(-scores, topk - 1, axis=1)[:, :topk].astype(np.int32)

    base = seed + 1 if skew else seed
    return _Stream(np.random.default_rng([base, source]), np.random.default_rng([seed + 2, source]), draw)


@lru_cache(maxsize=4096)  # a few KiB each; a step-time model asks for hundreds of token counts
def _sampled(num_tokens: int, num_experts: int, topk: int, ep: int, topk_nodes: int, node_of: tuple[int, ...],
             selections: int | None, skew: float, seed: int, max_sampled: int | None,
             placement: ExpertPlacement | None = None, num_sources: int | None = None) -> RoutingCounts:
    if not 1 <= topk <= num_experts:
        raise ValueError(f"topk must be in 1..{num_experts}, got {topk}")
    owner = expert_rank(num_experts, ep) if placement is None else None
    if placement is not None:
        replica_ranks = np.asarray(placement.replica_ranks, dtype=np.int64)
        replicas = np.asarray(placement.replicas, dtype=np.int64)
    rank_node = np.asarray(node_of, dtype=np.int64)
    nodes = int(rank_node.max()) + 1
    node_of_expert = rank_node[owner] if owner is not None else np.zeros(num_experts, dtype=np.int64)
    t = num_tokens if max_sampled is None else min(num_tokens, max_sampled)
    scale = num_tokens / t if t else 1.0
    sources = ep if num_sources is None else num_sources
    sel = np.zeros((sources, ep))
    tok = np.zeros((sources, ep))
    node_tok = np.zeros((sources, nodes))
    rows = np.arange(t)[:, None]
    limited = topk_nodes if 0 < topk_nodes < nodes else 0
    experts_node = tuple(int(v) for v in node_of_expert) if limited else (0,) * num_experts
    for src in range(sources):
        if t == 0:
            continue
        stream = _stream(num_experts, topk, float(skew), int(seed), limited, experts_node, src)
        chosen = stream.rows(t)
        valid = np.ones((t, topk), dtype=bool)
        if selections is not None and scale == 1.0 and selections < t * topk:
            drop = np.random.default_rng([seed + 3, src, t]).choice(t * topk, size=t * topk - selections,
                                                                     replace=False)
            valid.reshape(-1)[drop] = False
        if placement is None:
            dest = owner[chosen]
        else:  # one replica of each chosen expert, at random
            dest = replica_ranks[chosen, (stream.picks(t, topk) * replicas[chosen]).astype(np.int64)]
        token_of = np.broadcast_to(rows, dest.shape)[valid]
        sel[src] = np.bincount(dest[valid], minlength=ep)
        hit = np.zeros((t, ep), dtype=bool)
        hit[token_of, dest[valid]] = True
        tok[src] = hit.sum(axis=0)
        node_hit = np.zeros((t, nodes), dtype=bool)
        node_hit[token_of, rank_node[dest[valid]]] = True
        node_tok[src] = node_hit.sum(axis=0)
    if scale != 1.0:
        sel, tok, node_tok = sel * scale, tok * scale, node_tok * scale
    return _freeze(sel, tok, node_tok)


def counts_from_choices(choices: Sequence[np.ndarray], num_experts: int, ep: int,
                        node_of: Sequence[int] | None = None,
                        gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
                        owner: np.ndarray | None = None, replicas: ExpertPlacement | None = None,
                        seed: int | Sequence[int] = 0) -> RoutingCounts:
    """The traffic counts of given expert choices: ``choices[s]`` is the ``[tokens, top_k]``
    expert ids of the tokens of source rank ``s`` (a routing model's draw or a replayed routing
    trace), experts on ``ep`` ranks by ``owner`` (rank of every expert; default contiguous,
    :func:`expert_rank`; :mod:`cosim.trace.placement` for the others), ranks grouped into
    nodes as in :func:`sampled_routing_counts`. With ``replicas`` (EPLB) every selection goes to
    one of its expert's replicas at random (drawn from ``seed``, per source rank)."""
    nodes_of = np.asarray(_node_of(ep, gpus_per_node, node_of), dtype=np.int64)
    nodes = int(nodes_of.max()) + 1
    if replicas is not None and owner is not None:
        raise ValueError("give an owner per expert or EPLB replicas, not both")
    owner = expert_rank(num_experts, ep) if owner is None else np.asarray(owner, dtype=np.int64)
    if replicas is not None:
        replica_ranks = np.asarray(replicas.replica_ranks, dtype=np.int64)
        copies = np.asarray(replicas.replicas, dtype=np.int64)
        if len(copies) != num_experts or replica_ranks.max() >= ep:
            raise ValueError(f"the replicas place {len(copies)} experts on {replica_ranks.max() + 1} ranks; "
                             f"expected {num_experts} experts on {ep} ranks")
    sources = len(choices)
    sel = np.zeros((sources, ep))
    tok = np.zeros((sources, ep))
    node_tok = np.zeros((sources, nodes))
    for s, ch in enumerate(choices):
        ch = np.asarray(ch, dtype=np.int64)
        if ch.size == 0:
            continue
        if ch.min() < 0 or ch.max() >= num_experts:
            raise ValueError(f"expert ids must be in 0..{num_experts - 1}")
        if replicas is None:
            dest = owner[ch]
        else:
            parts = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(v) for v in seed]
            pick = np.random.default_rng([*parts, 6, s]).random(ch.shape)
            dest = replica_ranks[ch, (pick * copies[ch]).astype(np.int64)]
        rows = np.broadcast_to(np.arange(len(ch))[:, None], dest.shape)
        sel[s] = np.bincount(dest.ravel(), minlength=ep)
        hit = np.zeros((len(ch), ep), dtype=bool)
        hit[rows, dest] = True
        tok[s] = hit.sum(axis=0)
        node_hit = np.zeros((len(ch), nodes), dtype=bool)
        node_hit[rows, nodes_of[dest]] = True
        node_tok[s] = node_hit.sum(axis=0)
    return _freeze(sel, tok, node_tok)


# --- per-rank deduplicated helpers (kept for callers of the first routing API) ------------------


def routed_token_counts(tokens_per_rank: int, num_experts: int, top_k: int, ep: int, *,
                        skew: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sampled routing as (tokens[i, j] deduplicated per destination rank, expert_tokens[j] =
    token-expert pairs computed on rank j), fresh int64 copies of the cached sample."""
    c = sampled_routing_counts(tokens_per_rank, num_experts, top_k, ep, skew=skew, seed=seed)
    return c.tokens.astype(np.int64), c.expert_tokens.astype(np.int64)


def expected_dispatch_tokens(tokens_per_rank: int, num_experts: int, top_k: int, ep: int) -> float:
    """Expected tokens one rank sends to one other rank under uniform routing, deduplicated per
    rank: ``T * (1 - C(E - E/ep, k) / C(E, k))``."""
    local = num_experts // ep
    return tokens_per_rank * (1.0 - comb(num_experts - local, top_k) / comb(num_experts, top_k))


def dispatch_bytes_matrix(tokens_per_rank: int, num_experts: int, top_k: int, ep: int,
                          bytes_per_token: float, *, skew: float = 0.0, seed: int = 0,
                          include_self: bool = False) -> np.ndarray:
    """Bytes each EP rank sends to each other in a dispatch deduplicated per destination rank.

    The diagonal (tokens whose experts are local) is zeroed unless ``include_self``.
    """
    counts, _ = routed_token_counts(tokens_per_rank, num_experts, top_k, ep, skew=skew, seed=seed)
    matrix = np.rint(counts * bytes_per_token).astype(np.int64)
    if not include_self:
        np.fill_diagonal(matrix, 0)
    return matrix


def combine_bytes_matrix(dispatch_tokens: np.ndarray, bytes_per_token: float) -> np.ndarray:
    """Combine traffic: every dispatched token's output returns to its source (transpose)."""
    return np.rint(dispatch_tokens.T * bytes_per_token).astype(np.int64)
