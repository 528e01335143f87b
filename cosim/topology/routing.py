"""Deterministic routes between GPUs: shortest paths, per-switch ECMP hashing, rail alignment.

GPUs are endpoints, never transit nodes, except for the explicit PXN hop of
:attr:`RoutingPolicy.cross_rail`: a cross-rail, cross-domain transfer first crosses NVLink to the
source domain's GPU on the destination's rail, then stays on that rail.

The rules, in full (:class:`ReferenceRouter` states them in Python):

- the hop distance of every node to the destination is a breadth-first search from it that
  reaches GPUs but does not cross them;
- at node ``u`` the candidates are ``u``'s neighbours one hop closer (the destination itself or a
  non-GPU node), in increasing node index; with ``ecmp: hash`` and several candidates the next
  hop is ``candidates[zlib.crc32(b"src,dst,key,u") % len(candidates)]`` (node indices and the
  path key in decimal), else the first candidate;
- PXN: when the two GPUs are in different domains and on different rails, and the source
  domain's first GPU on the destination's rail shares a scale-up switch with the source, the
  route is source -> that GPU -> destination, each leg routed (and hashed) on its own.

:class:`Router` computes the same routes in compiled code (``cosim.topology._route_engine``) for
any number of (source, destination, key) triples at once: :meth:`Router.routes` returns them as
CSR arrays. Its tables (adjacency, rail peers, and the route engine with its per-destination
distances) are built once per topology object and shared by every Router of it. Without the
compiled module (a source tree that was not built), the Python rules are used.
"""

from __future__ import annotations

import weakref
import zlib
from collections import deque
from typing import Literal

import numpy as np

from cosim.errors import ConfigError
from cosim.topology.model import Topology

try:  # the compiled route engine; the Python rules below are the fallback
    from cosim.topology._route_engine import RouteEngine as _RouteEngine
except ImportError:  # pragma: no cover - a source tree without the built extension
    _RouteEngine = None

RouterEngine = Literal["auto", "compiled", "python"]


def compiled_routes_available() -> bool:
    """Whether the compiled route engine is importable."""
    return _RouteEngine is not None


def _stable_hash(*parts: int) -> int:
    return zlib.crc32(",".join(map(str, parts)).encode())


def _no_route(topo: Topology, src: int, dst: int) -> ConfigError:
    return ConfigError(topo.source, "links", f"no route from {topo.nodes[src].name!r} to {topo.nodes[dst].name!r} "
                                             "(GPUs are endpoints, not transit nodes)")


class ReferenceRouter:
    """The routing rules in plain Python, one route at a time (the reference the compiled engine
    is tested against, and the fallback without it)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self._dist: dict[int, dict[int, int]] = {}
        self._adj = {u: sorted(topology.graph.neighbors(u)) for u in topology.graph.nodes}
        self._is_gpu = [n.kind == "gpu" for n in topology.nodes]
        self._rail_peer: dict[tuple[int, int], int] = {}
        for rank, node in enumerate(topology.gpu_nodes):
            n = topology.nodes[node]
            if n.domain is not None and n.rail is not None:
                self._rail_peer.setdefault((n.domain, n.rail), rank)

    def route(self, src_rank: int, dst_rank: int, path_key: int = 0) -> tuple[int, ...]:
        topo = self.topology
        src, dst = topo.gpu_nodes[src_rank], topo.gpu_nodes[dst_rank]
        via = self._pxn_peer(src, dst)
        if via is None:
            path = self._node_path(src, dst, path_key)
        else:
            path = self._node_path(src, via, path_key) + self._node_path(via, dst, path_key)[1:]
        return tuple(topo.directed_link(u, v) for u, v in zip(path, path[1:]))

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
            raise _no_route(self.topology, src, dst)
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


class _RouteTables:
    """What routing needs of one topology, built once: the compiled engine with the adjacency,
    the ECMP policy, the GPU ranks' domains and rails (PXN relays) and its cached
    per-destination distances."""

    def __init__(self, topology: Topology):
        self.topology_ref = weakref.ref(topology)  # not a strong reference: the cache must not keep it alive
        nodes = topology.nodes
        self.engine = _RouteEngine(*self._adjacency(topology), topology.routing.ecmp == "hash")
        placed = [(nodes[v].domain, nodes[v].rail) if nodes[v].domain is not None and nodes[v].rail is not None
                  else None for v in topology.gpu_nodes]
        domains = {d: i for i, d in enumerate(sorted({p[0] for p in placed if p}))}
        rails = {r: i for i, r in enumerate(sorted({p[1] for p in placed if p}))}
        domain = np.array([domains[p[0]] if p else -1 for p in placed], dtype=np.int32)
        rail = np.array([rails[p[1]] if p else -1 for p in placed], dtype=np.int32)
        first = np.full(len(domains) * len(rails), -1, dtype=np.int32)
        for rank in range(len(placed) - 1, -1, -1):  # the first rank of each (domain, rail) wins
            if domain[rank] >= 0:
                first[domain[rank] * len(rails) + rail[rank]] = rank
        self.engine.set_gpus(np.asarray(topology.gpu_nodes, dtype=np.int32), domain, rail, first, len(rails),
                             topology.routing.cross_rail == "pxn")

    @staticmethod
    def _adjacency(topology: Topology):
        """CSR adjacency with sorted neighbours and the directed link id of every edge (the
        networkx graph's: for repeated node pairs the last link wins)."""
        n = len(topology.nodes)
        links = topology.links
        a = np.fromiter((l.a for l in links), dtype=np.int64, count=len(links))
        b = np.fromiter((l.b for l in links), dtype=np.int64, count=len(links))
        li = np.arange(len(links), dtype=np.int64)
        keep = a != b
        u = np.concatenate([a[keep], b[keep]])
        v = np.concatenate([b[keep], a[keep]])
        lk = np.concatenate([li[keep], li[keep]])
        order = np.lexsort((lk, v, u))       # by u, then v, then link (last link last)
        u, v, lk = u[order], v[order], lk[order]
        last = np.ones(len(u), dtype=bool)
        last[:-1] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
        u, v, lk = u[last], v[last], lk[last]
        directed = np.where(a[lk] == u, 2 * lk, 2 * lk + 1)
        start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n), out=start[1:])
        is_gpu = np.array([node.kind == "gpu" for node in topology.nodes], dtype=np.uint8)
        return start, v.astype(np.int32), directed.astype(np.int32), is_gpu


_TABLES: dict[int, _RouteTables] = {}


def _tables_for(topology: Topology) -> _RouteTables:
    """The route tables of ``topology``, built on first use and dropped with the topology."""
    key = id(topology)
    tables = _TABLES.get(key)
    if tables is None or tables.topology_ref() is not topology:
        tables = _RouteTables(topology)
        _TABLES[key] = tables
        weakref.finalize(topology, _TABLES.pop, key, None)
    return tables


class Router:
    """Routes (directed link ids) between GPU ranks of a topology.

    ``engine``: ``auto`` (compiled when built, else Python), ``compiled`` or ``python``
    (:class:`ReferenceRouter`). :meth:`route` caches single routes; :meth:`routes` computes
    many at once.
    """

    def __init__(self, topology: Topology, engine: RouterEngine = "auto"):
        if engine not in ("auto", "compiled", "python"):
            raise ConfigError("<api>", "engine", f"expected 'auto', 'compiled' or 'python', got {engine!r}")
        if engine == "compiled" and _RouteEngine is None:
            raise ConfigError("<api>", "engine", "the compiled route engine (cosim.topology._route_engine) is not built")
        self.topology = topology
        self._cache: dict[tuple[int, int, int], tuple[int, ...]] = {}
        self._reference = ReferenceRouter(topology) if engine == "python" or _RouteEngine is None else None
        self._tables = _tables_for(topology) if self._reference is None else None

    @property
    def engine(self) -> str:
        """``compiled`` or ``python``: which implementation computes the routes."""
        return "python" if self._reference is not None else "compiled"

    def route(self, src_rank: int, dst_rank: int, path_key: int = 0) -> tuple[int, ...]:
        """Directed link ids from GPU ``src_rank`` to GPU ``dst_rank``.

        ``path_key`` plays the role of a queue pair / UDP source port: flows of the same pair with
        different keys may hash onto different equal-cost paths.
        """
        key = (src_rank, dst_rank, path_key)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if self._reference is not None:
            links = self._reference.route(src_rank, dst_rank, path_key)
        else:
            _, arr = self.routes(np.array([src_rank]), np.array([dst_rank]), np.array([path_key]))
            links = tuple(arr.tolist())
        self._cache[key] = links
        return links

    def routes(self, src_ranks, dst_ranks, path_keys=None) -> tuple[np.ndarray, np.ndarray]:
        """Routes of many (source, destination, path key) rank triples at once.

        Returns CSR arrays ``(offsets, links)``: route ``i`` is ``links[offsets[i]:offsets[i + 1]]``
        (int64 offsets, int32 directed link ids); a rank routed to itself gets an empty route.
        """
        src = np.asarray(src_ranks).reshape(-1)
        dst = np.asarray(dst_ranks).reshape(-1)
        keys = (np.zeros(len(src), dtype=np.int64) if path_keys is None
                else np.asarray(path_keys, dtype=np.int64).reshape(-1))
        if not len(src) == len(dst) == len(keys):
            raise ConfigError("<api>", "routes", f"src, dst and path keys differ in length "
                                                 f"({len(src)}, {len(dst)}, {len(keys)})")
        g = self.topology.num_gpus
        for name, arr in (("src", src), ("dst", dst)):
            bad = np.nonzero((arr < 0) | (arr >= g))[0]
            if len(bad):
                raise ConfigError("<api>", name, f"GPU rank {int(arr[bad[0]])} does not exist; topology "
                                                 f"{self.topology.name!r} has GPUs 0..{g - 1}")
        if self._reference is not None:
            routes = [self._reference.route(int(s), int(d), int(k)) if s != d else ()
                      for s, d, k in zip(src, dst, keys)]
            offsets = np.zeros(len(routes) + 1, dtype=np.int64)
            np.cumsum([len(r) for r in routes], out=offsets[1:])
            links = np.fromiter((l for r in routes for l in r), dtype=np.int32, count=int(offsets[-1]))
            return offsets, links
        offsets, links, failed_from, failed_to = self._tables.engine.route(
            src.astype(np.int32, copy=False), dst.astype(np.int32, copy=False), keys)
        if failed_from >= 0:
            raise _no_route(self.topology, failed_from, failed_to)
        return offsets, links
