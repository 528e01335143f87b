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
- ``domain``: each node hosts the hot experts of its domains (:func:`node_domains`: with at least
  as many nodes as domains, domain ``d`` on every node ``n`` with ``n % domains == d``; with
  fewer, node ``n`` hosts every domain ``d`` with ``d % nodes == n``): every expert goes to a node
  of the domain that uses it most (the one with most room), under capacity, then LPT inside each
  node. Pays with **grouping** (requests of one domain on the ranks of its nodes:
  :func:`rank_domains`), which :class:`~cosim.trace.expert_routing.StepRouting` does with
  ``grouping=True`` and the serving router ``domain`` does with requests that carry a domain;
- ``eplb``: EPLB without redundant slots, the same as ``balanced``; with redundant experts
  (``StepSpec.redundant_experts`` > 0) the step replicates the hottest experts of each layer from
  the same statistics (:func:`eplb_replicas`, the rule of
  :func:`cosim.trace.moe_traffic.eplb_placement`) and every selection goes to one of its expert's
  replicas at random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cosim.registry import Registry
from cosim.trace.moe_traffic import ExpertPlacement, eplb_placement, expert_rank

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


def node_domains(nodes: int, domains: int) -> list[tuple[int, ...]]:
    """The domains each of ``nodes`` node groups hosts: with ``nodes >= domains`` domain ``d`` on
    every node ``n`` with ``n % domains == d`` (one domain per node, each domain on
    ``nodes // domains`` or one more nodes); with fewer nodes, node ``n`` hosts every ``d`` with
    ``d % nodes == n``. The one map the ``domain`` placement, a step's grouping and the serving
    router share."""
    if nodes < 1 or domains < 1:
        raise ValueError(f"nodes and domains must be >= 1, got {nodes}, {domains}")
    if nodes >= domains:
        return [(n % domains,) for n in range(nodes)]
    return [tuple(range(n, domains, nodes)) for n in range(nodes)]


def rank_domains(rank_node, domains: int) -> np.ndarray:
    """The home domain of every rank (``rank_node[i]``: node of rank ``i``, numbered 0, 1, ...):
    its node's domains (:func:`node_domains`) dealt round robin to the node's ranks in order."""
    rank_node = np.asarray(rank_node, dtype=np.int64)
    hosted = node_domains(int(rank_node.max()) + 1 if len(rank_node) else 1, int(domains))
    out = np.empty(len(rank_node), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, n in enumerate(rank_node.tolist()):
        j = seen.get(n, 0)
        seen[n] = j + 1
        out[i] = hosted[n][j % len(hosted[n])]
    return out


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
    hosts: list[list[int]] = [[] for _ in range(num_domains)]  # nodes of every domain
    for n, ds in enumerate(node_domains(nodes, num_domains)):
        for d in ds:
            hosts[d].append(n)
    # the experts a domain leans on most first (share of the expert's load from its top domain)
    share = dl / np.maximum(loads, 1e-12)[None, :]
    order = sorted(range(num_experts), key=lambda e: (-dl[:, e].max(), e))
    for e in order:
        prefs = sorted(range(num_domains), key=lambda d: (-share[d, e], d))
        for d in prefs:
            open_nodes = [n for n in hosts[d] if room[n] > 0]
            if open_nodes:
                m = max(open_nodes, key=lambda n: (room[n], -n))
                break
        else:
            m = max(range(nodes), key=lambda m: (room[m], -m))
        members[m].append(e)
        room[m] -= 1
    return _by_node(members, loads, rank_node, cap)


PLACEMENTS.register("eplb")(balanced)


def eplb_replicas(stats: LayerStats, redundant: int, ep: int) -> ExpertPlacement:
    """EPLB's replicas of one layer from its routing statistics: ``redundant`` extra slots for
    the experts with the highest load per replica, packed LPT on the ``ep`` ranks
    (:func:`cosim.trace.moe_traffic.eplb_placement`)."""
    loads = stats.loads
    return eplb_placement(loads / max(float(loads.sum()), 1e-12), int(redundant), int(ep))


def place(policy: str, stats: LayerStats, ep: int, rank_node) -> np.ndarray:
    """The owner rank of every expert under ``policy`` (checked: every rank keeps the contiguous
    placement's expert count)."""
    fn: Callable = PLACEMENTS[policy]
    rank_node = np.asarray(rank_node, dtype=np.int64)
    owner = np.asarray(fn(stats, ep, rank_node), dtype=np.int64)
    assert (np.bincount(owner, minlength=ep) == _capacity(len(stats.loads), ep)).all(), policy
    return owner
