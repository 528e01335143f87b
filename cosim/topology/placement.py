"""Which GPU placements a step cannot tell apart.

A step simulated on GPUs ``A`` and the same step on GPUs ``B`` (rank ``i`` on ``A[i]`` and on
``B[i]``) take the same time when every ordered pair of ranks sees the same path: the same
sequence of hops, each of the same tier, bandwidth and latency. Replicas of a pool placed on
different nodes of a regular cluster (every HGX node, every NVL72 rack) are equivalent; a replica
split over two racks, or over two leaf groups where the others stay in one, is not.
:func:`placement_signature` is that path profile as a short digest; the serving layer builds one
step-time model per distinct signature of a pool's replicas.

What the profile leaves out: which physical link a hop takes. Two replicas whose cross-node
flows hash onto different spines (ECMP) get the same signature although their flows may collide
differently; that difference is the ECMP noise of one routing choice, not a property of the
placement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cosim.identity_cache import IdentityCache
from cosim.topology.model import Topology
from cosim.topology.routing import Router


def placement_signature(topology: Topology, gpus: Sequence[int], router: Router | None = None) -> str:
    """Digest of the path profile of the ordered GPU list ``gpus`` (module docstring): equal
    digests mean every ordered pair of positions sees the same hops (tier, bandwidth, latency).
    Kept per topology object and GPU list (a sweep asks for the same ones at every point)."""
    gpus = tuple(int(g) for g in gpus)
    return _SIGNATURES.get(topology, lambda: _signature(topology, gpus, router), gpus)


_SIGNATURES = IdentityCache(4096)


def _signature(topology: Topology, gpus: tuple[int, ...], router: Router | None) -> str:
    router = router or Router(topology)
    links = topology.links
    h = hashlib.blake2b(digest_size=12)
    for src in gpus:
        for dst in gpus:
            if src == dst:
                continue
            for d in router.route(int(src), int(dst)):
                link = links[d // 2]
                h.update(f"{link.tier}:{link.bandwidth_bps:.6g}:{link.latency_s:.6g};".encode())
            h.update(b"|")
    return h.hexdigest()
