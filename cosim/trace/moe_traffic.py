"""MoE dispatch/combine traffic matrices from token routing.

Each of ``tokens_per_rank`` tokens on every EP rank picks ``top_k`` distinct experts. Experts are
placed contiguously: expert ``e`` lives on rank ``e // (num_experts / ep)``. A token headed to
several experts on one rank is sent to that rank once (DeepEP deduplicates), so the dispatch
matrix counts, for every (source, destination) pair, the tokens of the source with at least one
expert on the destination. The combine matrix is its transpose (outputs come back).

Routing is uniform (``skew = 0``) or skewed: expert popularity follows a power law
``p_e ~ (e + 1) ** -skew`` over a random permutation of experts, the hot experts landing on
random ranks. Top-k is drawn without replacement (Gumbel top-k), reproducibly from ``seed``.
With ``tokens_per_rank`` large the sampled matrix converges to the expectation; for uniform
routing :func:`expected_dispatch_tokens` gives it in closed form.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np


def expert_rank(num_experts: int, ep: int) -> np.ndarray:
    """Rank holding each expert under contiguous placement."""
    if num_experts % ep:
        raise ValueError(f"num_experts={num_experts} is not divisible by ep={ep}")
    return np.arange(num_experts) // (num_experts // ep)


def expert_popularity(num_experts: int, skew: float, seed: int = 0) -> np.ndarray:
    """Routing probability of each expert: uniform for ``skew = 0``, else a shuffled power law."""
    if skew < 0:
        raise ValueError(f"skew must be >= 0, got {skew}")
    weights = (np.arange(num_experts) + 1.0) ** -skew
    rng = np.random.default_rng(seed)
    return rng.permutation(weights / weights.sum())


def routed_token_counts(tokens_per_rank: int, num_experts: int, top_k: int, ep: int, *,
                        skew: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample routing; return (tokens[i, j] deduplicated per destination rank,
    expert_tokens[j] = token-expert pairs computed on rank j). Results are cached: every layer of
    a step reuses the same sample; the returned arrays are fresh copies."""
    counts, expert_tokens = _routed_token_counts(tokens_per_rank, num_experts, top_k, ep, float(skew), seed)
    return counts.copy(), expert_tokens.copy()


@lru_cache(maxsize=64)
def _routed_token_counts(tokens_per_rank: int, num_experts: int, top_k: int, ep: int, skew: float,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in 1..{num_experts}, got {top_k}")
    owner = expert_rank(num_experts, ep)
    log_p = np.log(expert_popularity(num_experts, skew, seed))
    rng = np.random.default_rng(seed + 1)
    counts = np.zeros((ep, ep), dtype=np.int64)
    expert_tokens = np.zeros(ep, dtype=np.int64)
    for src in range(ep):
        if tokens_per_rank == 0:
            continue
        gumbel = log_p[None, :] + rng.gumbel(size=(tokens_per_rank, num_experts))
        chosen = np.argpartition(-gumbel, top_k - 1, axis=1)[:, :top_k]
        dest = owner[chosen]                                   # [tokens, top_k]
        hit = np.zeros((tokens_per_rank, ep), dtype=bool)
        np.put_along_axis(hit, dest, True, axis=1)
        counts[src] = hit.sum(axis=0)
        expert_tokens += np.bincount(dest.ravel(), minlength=ep)
    return counts, expert_tokens


def expected_dispatch_tokens(tokens_per_rank: int, num_experts: int, top_k: int, ep: int) -> float:
    """Expected tokens one rank sends to one other rank under uniform routing:
    ``T * (1 - C(E - E/ep, k) / C(E, k))``."""
    local = num_experts // ep
    return tokens_per_rank * (1.0 - comb(num_experts - local, top_k) / comb(num_experts, top_k))


def dispatch_bytes_matrix(tokens_per_rank: int, num_experts: int, top_k: int, ep: int,
                          bytes_per_token: float, *, skew: float = 0.0, seed: int = 0,
                          include_self: bool = False) -> np.ndarray:
    """Bytes each EP rank sends to each other in the dispatch (deduplicated per destination).

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
