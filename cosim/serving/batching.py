"""Batching policies: which requests an attention rank runs in its next step.

A policy sees one attention rank's state (its running decodes and its queue of requests waiting
for prefill) and returns the rank's share of the next step: the decode requests and the prefill
chunks (request, new tokens). Policies are registered by name (:data:`POLICIES`); the pool's
:class:`~cosim.serving.deployment.BatchingSpec` names one and gives its limits.

- ``chunked_prefill`` (mixed pools, Sarathi / vLLM / SGLang chunked prefill): every running
  decode takes one token of the budget, then waiting requests are prefilled in arrival order in
  chunks that fill the rest of ``token_budget``; a request's prefill may span several steps.
- ``prefill_only`` (prefill pools): waiting requests in arrival order, chunked to the budget.
- ``decode_only`` (decode pools): the running decodes, up to ``max_batch``.

Admission (KV capacity) and preemption are the simulator's; a policy only orders work.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Callable, Collection, Protocol, Sequence

from cosim.registry import Registry


@dataclass(frozen=True)
class RankWork:
    """One attention rank's share of a step: decode requests and prefill chunks ``(request,
    new_tokens)``."""

    decodes: tuple[int, ...]
    chunks: tuple[tuple[int, int], ...]

    @property
    def tokens(self) -> int:
        return len(self.decodes) + sum(n for _, n in self.chunks)

    @property
    def empty(self) -> bool:
        return not self.decodes and not self.chunks


class RankView(Protocol):
    """What a policy may read of a rank: running decodes (in admission order) and the queue of
    requests being or waiting to be prefilled, with their remaining prefill tokens."""

    running: Collection[int]      # in admission order
    prefill_queue: Sequence[int]

    def remaining_prefill(self, request: int) -> int: ...


Policy = Callable[[RankView, int, int], RankWork]
#: Batching policies by name: ``policy(rank, token_budget, max_batch) -> RankWork``.
POLICIES = Registry("batching policy")
#: Decorator registering a batching policy under a name.
register_policy = POLICIES.register


def get_policy(name: str) -> Policy:
    return POLICIES.lookup(name, "<deployment>", "batching.policy")


def _fill_chunks(rank: RankView, budget: int, max_requests: int) -> tuple[tuple[int, int], ...]:
    chunks = []
    for r in rank.prefill_queue:
        if budget <= 0 or len(chunks) >= max_requests:
            break
        n = min(rank.remaining_prefill(r), budget)
        if n > 0:
            chunks.append((r, n))
            budget -= n
    return tuple(chunks)


@register_policy("chunked_prefill")
def chunked_prefill(rank: RankView, token_budget: int, max_batch: int) -> RankWork:
    """Decodes first (one token each, up to ``max_batch``), then prefill chunks filling the budget."""
    decodes = tuple(islice(rank.running, min(max_batch, token_budget)))
    room = max_batch - len(decodes)
    return RankWork(decodes, _fill_chunks(rank, token_budget - len(decodes), room))


@register_policy("prefill_only")
def prefill_only(rank: RankView, token_budget: int, max_batch: int) -> RankWork:
    """Prefill chunks in arrival order filling ``token_budget`` (at most ``max_batch`` requests)."""
    return RankWork((), _fill_chunks(rank, token_budget, max_batch))


@register_policy("decode_only")
def decode_only(rank: RankView, token_budget: int, max_batch: int) -> RankWork:
    """The running decodes, oldest first, up to ``max_batch``."""
    return RankWork(tuple(islice(rank.running, max_batch)), ())
