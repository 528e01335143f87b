"""Expert placement policies: which EP rank holds each expert of a layer (issue 11, second part).

A policy maps the ``num_experts`` experts of one MoE layer onto ``ep`` ranks grouped into nodes,
``num_experts / ep`` experts per rank (or the floor/ceil split of :func:`expert_rank`), from
routing statistics of that layer (:class:`LayerStats`: per-domain loads and the co-activation of
expert pairs, sampled from the routing model or read from a trace). Every policy keeps the number
of experts per rank, so the weights per GPU do not change (the memory check is the
contiguous one). Registered in :data:`PLACEMENTS`:

- ``contiguous``: expert ``e`` on rank ``e * ep // num_experts`` (cosim's default);
- ``balanced``: experts sorted by load, dealt to the least loaded rank with room (LPT): no
  locality, every rank's load close to the mean (the non-redundant part of EPLB);
- ``locality``: experts that tokens pick together go to the same node (greedy on the
  co-activation counts, the most loaded expert first, each to the node where its partners
  already are, under the node's expert capacity), then LPT inside each node;
- ``domain``: each node hosts the hot experts of the domains routed to it (domain ``d`` to node
  ``d % nodes``): every expert goes to the node of the domain that uses it most, under capacity,
  then LPT inside each node. Pays with **grouping** (requests of one domain on the ranks of its
  node), which :class:`~cosim.trace.expert_routing.StepRouting` does with ``grouping=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cosim.registry import Registry
from cosim.trace.moe_traffic import expert_rank

#: Placement policies by name: ``fn(stats, ep, rank_node) -> owner`` (rank of every expert).
PLACEMENTS = Registry("expert placement")


@dataclass(frozen=True)
class LayerStats:
    """Routing statistics of one MoE layer: ``domain_loads[d, e]`` selections of expert ``e`` by
    tokens of domain ``d``; ``coactivation[e, f]`` tokens that picked both (diagonal 0)."""

    domain_loads: np.ndarray
    coactivation: np.ndarray

    @property
    def loads(self) -> np.ndarray:
        return self.domain_loads.sum(axis=0)

    @classmethod
    def of(cls, choices: np.ndarray, domains: np.ndarray, num_experts: int, num_domains: int) -> LayerStats:
        """From ``[tokens, top_k]`` choices and each token's domain."""
        ch = np.asarray(choices, dtype=np.int64)
        dl = np.zeros((num_domains, num_experts))
        np.add.at(dl, (np.repeat(np.asarray(domains, dtype=np.int64), ch.shape[1]), ch.ravel()), 1.0)
        onehot = np.zeros((len(ch), num_experts))
        onehot[np.arange(len(ch))[:, None], ch] = 1.0
        co = onehot.T @ onehot
        np.fill_diagonal(co, 0.0)
        return cls(dl, co)


def _capacity(num_experts: int, ep: int) -> np.ndarray:
    """Experts per rank of the contiguous placement (kept by every policy)."""
    return np.bincount(expert_rank(num_experts, ep), minlength=ep)


def _lpt(experts: list[int], loads: np.ndarray, ranks: list[int], cap: np.ndarray, owner: np.ndarray) -> None:
    """Deal ``experts`` (heaviest first) to the least loaded of ``ranks`` with room."""
    load = {r: 0.0 for r in ranks}
    room = {r: int(cap[r]) for r in ranks}
    for e in sorted(experts, key=lambda x: (-loads[x], x)):
        r = min((r for r in ranks if room[r] > 0), key=lambda r: (load[r], r))
        owner[e] = r
        load[r] += loads[e]
        room[r] -= 1


def _by_node(node_experts: list[list[int]], loads: np.ndarray, rank_node: np.ndarray, cap: np.ndarray) -> np.ndarray:
    owner = np.full(len(loads), -1, dtype=np.int64)
    for m, experts in enumerate(node_experts):
        _lpt(experts, loads, [int(r) for r in np.flatnonzero(rank_node == m)], cap, owner)
    return owner


def _node_capacity(cap: np.ndarray, rank_node: np.ndarray) -> np.ndarray:
    return np.bincount(rank_node, weights=cap).astype(np.int64)


@PLACEMENTS.register("contiguous")
def contiguous(stats: LayerStats, ep: int, rank_node: np.ndarray) -> np.ndarray:
    return expert_rank(len(stats.loads), ep)


@PLACEMENTS.register("balanced")
def balanced(stats: LayerStats, ep: int, rank_node: np.ndarray) -> np.ndarray:
    loads = stats.loads
    owner = np.full(len(loads), -1, dtype=np.int64)
    _lpt(list(range(len(loads))), loads, list(range(ep)), _capacity(len(loads), ep), owner)
    return owner


@PLACEMENTS.register("locality")
def locality(stats: LayerStats, ep: int, rank_node: np.ndarray) -> np.ndarray:
    loads, co = stats.loads, stats.coactivation
    num_experts = len(loads)
    cap = _capacity(num_experts, ep)
    room = _node_capacity(cap, rank_node)
    nodes = len(room)
    members: list[list[int]] = [[] for _ in range(nodes)]
    affinity = np.zeros((num_experts, nodes))  # co-activation of each expert with each node's experts
    for e in sorted(range(num_experts), key=lambda x: (-loads[x], x)):
        open_nodes = [m for m in range(nodes) if room[m] > 0]
        node_load = [sum(loads[f] for f in members[m]) for m in range(nodes)]
        m = max(open_nodes, key=lambda m: (affinity[e, m], -node_load[m], -m))
        members[m].append(e)
        room[m] -= 1
        affinity[:, m] += co[:, e]
    return _by_node(members, loads, rank_node, cap)


@PLACEMENTS.register("domain")
def domain(stats: LayerStats, ep: int, rank_node: np.ndarray) -> np.ndarray:
    dl = stats.domain_loads
    loads = stats.loads
    num_domains, num_experts = dl.shape
    cap = _capacity(num_experts, ep)
    room = _node_capacity(cap, rank_node)
    nodes = len(room)
    members: list[list[int]] = [[] for _ in range(nodes)]
    # the experts a domain leans on most first (share of the expert's load from its top domain)
    share = dl / np.maximum(loads, 1e-12)[None, :]
    order = sorted(range(num_experts), key=lambda e: (-dl[:, e].max(), e))
    for e in order:
        prefs = sorted(range(num_domains), key=lambda d: (-share[d, e], d))
        for d in prefs:
            m = d % nodes
            if room[m] > 0:
                break
        else:
            m = max(range(nodes), key=lambda m: (room[m], -m))
        members[m].append(e)
        room[m] -= 1
    return _by_node(members, loads, rank_node, cap)


def place(policy: str, stats: LayerStats, ep: int, rank_node) -> np.ndarray:
    """The owner rank of every expert under ``policy`` (checked: every rank keeps the contiguous
    placement's expert count)."""
    fn: Callable = PLACEMENTS[policy]
    rank_node = np.asarray(rank_node, dtype=np.int64)
    owner = np.asarray(fn(stats, ep, rank_node), dtype=np.int64)
    assert (np.bincount(owner, minlength=ep) == _capacity(len(stats.loads), ep)).all(), policy
    return owner
