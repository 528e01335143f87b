"""Deterministic routes between GPUs: shortest paths, per-switch ECMP hashing, rail alignment.

GPUs are endpoints, never transit nodes, except for the explicit PXN hop of
:attr:`RoutingPolicy.cross_rail`: a cross-rail, cross-domain transfer first crosses NVLink to the
source domain's GPU on the destination's rail, then stays on that rail.
"""

from __future__ import annotations

import zlib
from collections import deque

from cosim.errors import ConfigError
from cosim.topology.model import Topology


def _stable_hash(*parts: int) -> int:
    return zlib.crc32(",".join(map(str, parts)).encode())


class Router:
    """Computes and caches routes (lists of directed link ids) between GPU ranks of a topology."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self._dist: dict[int, dict[int, int]] = {}
        self._cache: dict[tuple[int, int, int], tuple[int, ...]] = {}
        self._adj = {u: sorted(topology.graph.neighbors(u)) for u in topology.graph.nodes}
        self._is_gpu = [n.kind == "gpu" for n in topology.nodes]
        self._rail_peer: dict[tuple[int, int], int] = {}
        for rank, node in enumerate(topology.gpu_nodes):
            n = topology.nodes[node]
            if n.domain is not None and n.rail is not None:
                self._rail_peer.setdefault((n.domain, n.rail), rank)

    def route(self, src_rank: int, dst_rank: int, path_key: int = 0) -> tuple[int, ...]:
        """Directed link ids from GPU ``src_rank`` to GPU ``dst_rank``.

        ``path_key`` plays the role of a queue pair / UDP source port: flows of the same pair with
        different keys may hash onto different equal-cost paths.
        """
        key = (src_rank, dst_rank, path_key)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        topo = self.topology
        src, dst = topo.gpu_nodes[src_rank], topo.gpu_nodes[dst_rank]
        via = self._pxn_peer(src, dst)
        if via is None:
            path = self._node_path(src, dst, path_key)
        else:
            path = self._node_path(src, via, path_key) + self._node_path(via, dst, path_key)[1:]
        links = tuple(topo.directed_link(u, v) for u, v in zip(path, path[1:]))
        self._cache[key] = links
        return links

    def _pxn_peer(self, src: int, dst: int) -> int | None:
        """Node of the GPU relaying a cross-rail transfer (PXN), or None for a direct route."""
        topo = self.topology
        if topo.routing.cross_rail != "pxn":
            return None
        s, d = topo.nodes[src], topo.nodes[dst]
        if None in (s.domain, s.rail, d.domain, d.rail) or s.domain == d.domain or s.rail == d.rail:
            return None
        peer_rank = self._rail_peer.get((s.domain, d.rail))
        if peer_rank is None:
            return None
        peer = topo.gpu_nodes[peer_rank]
        # PXN only helps if the peer shares a scale-up switch with the source (not another GPU hop).
        return peer if self._distances_to(peer).get(src) == 2 else None

    def _distances_to(self, dst: int) -> dict[int, int]:
        """Hop distance of every node to ``dst`` over paths whose interior avoids GPUs (BFS)."""
        dist = self._dist.get(dst)
        if dist is not None:
            return dist
        dist = {dst: 0}
        queue = deque([dst])
        while queue:
            u = queue.popleft()
            if self._is_gpu[u] and u != dst:
                continue  # a GPU is reached but not crossed
            for v in self._adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        self._dist[dst] = dist
        return dist

    def _node_path(self, src: int, dst: int, path_key: int) -> list[int]:
        dist = self._distances_to(dst)
        if src not in dist:
            topo = self.topology
            raise ConfigError(topo.source, "links", f"no route from {topo.nodes[src].name!r} to {topo.nodes[dst].name!r} "
                                                    "(GPUs are endpoints, not transit nodes)")
        path, u = [src], src
        ecmp_hash = self.topology.routing.ecmp == "hash"
        while u != dst:
            candidates = [v for v in self._adj[u]
                          if dist.get(v) == dist[u] - 1 and (v == dst or not self._is_gpu[v])]
            if ecmp_hash and len(candidates) > 1:
                u = candidates[_stable_hash(src, dst, path_key, u) % len(candidates)]
            else:
                u = candidates[0]
            path.append(u)
        return path
