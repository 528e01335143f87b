"""One network API over interchangeable backends, chosen by name."""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

from cosim.errors import ConfigError
from cosim.network.flow_backend import simulate_flow_level
from cosim.network.flows import FlowSet, RoutedFlows, route_flows
from cosim.network.packet_backend import simulate_packet_level
from cosim.network.results import NetworkResult
from cosim.topology import Router, Topology


class Backend(Protocol):
    def __call__(self, topology: Topology, flows: FlowSet, routed: RoutedFlows, *, max_bins: int,
                 progress: Callable[[int, float], None] | None) -> NetworkResult: ...


#: ``time_tolerance`` of the ``flow_fast`` backend: flows whose drains fall within 0.1 % of the
#: event time of the first drain together (each flow's finish at most ~0.1 % late; a DeepSeek-V3
#: EP256 decode step +0.03 %, about 10x faster: docs/network.md).
FAST_TIME_TOLERANCE = 1e-3

#: Registry of network backends by name: ``packet`` (ns-3), ``flow`` (exact max-min fluid) and
#: ``flow_fast`` (the same with :data:`FAST_TIME_TOLERANCE`).
BACKENDS: dict[str, Backend] = {
    "packet": simulate_packet_level,
    "flow": simulate_flow_level,
    "flow_fast": functools.partial(simulate_flow_level, time_tolerance=FAST_TIME_TOLERANCE),
}

#: Backends whose runs may share a process in concurrent threads (:func:`simulate_many`): the
#: compiled flow loop keeps no global state and releases the GIL while it runs. ns-3 has one
#: simulator per process, so ``packet`` runs one at a time.
CONCURRENT_BACKENDS: frozenset[str] = frozenset({"flow", "flow_fast"})


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def simulate(topology: Topology, flows: FlowSet, backend: str = "flow", *, router: Router | None = None,
             max_bins: int = 2048, progress: Callable[[int, float], None] | None = None) -> NetworkResult:
    """Simulate ``flows`` on ``topology`` with the named backend (:data:`BACKENDS`).

    Args:
        topology: a loaded :class:`~cosim.topology.Topology`.
        flows: the traffic, e.g. built by :mod:`cosim.network.collectives`.
        backend: ``packet`` (ns-3, packet by packet), ``flow`` (max-min fair fluid, exact) or
            ``flow_fast`` (the fluid model with finishes grouped within 0.1 %).
        router: reuse a :class:`~cosim.topology.Router` (and its route cache) across calls.
        max_bins: most time-series bins per link; bins widen to cover the whole run.
        progress: called as ``progress(finished_flows, sim_time_s)`` during the run.

    Returns:
        a :class:`~cosim.network.results.NetworkResult` with per-flow start/finish times and
        per-link counters; ``wall_s`` includes routing.
    """
    _check_args(backend, max_bins)
    routed, route_s = _route(topology, flows, router)
    return _run(topology, flows, routed, route_s, backend, max_bins, progress)


def simulate_many(topology: Topology, flow_sets: Sequence[FlowSet], backend: str = "flow", *,
                  routers: Sequence[Router | None] | None = None, max_bins: int = 2048,
                  workers: int | None = None) -> list[NetworkResult]:
    """:func:`simulate` of every flow set of ``flow_sets`` (independent simulations), in order.

    Routes are computed in the calling thread (``routers[i]`` for ``flow_sets[i]``, default a
    fresh one each); the backend runs go to up to ``workers`` threads (default
    :func:`available_cpus`) when the backend is in :data:`CONCURRENT_BACKENDS`, one after the
    other otherwise. The results are the same as those of one :func:`simulate` call per flow set
    (each run is its own simulation); only the wall time changes.
    """
    _check_args(backend, max_bins)
    if routers is None:
        routers = [None] * len(flow_sets)
    if len(routers) != len(flow_sets):
        raise ConfigError("<api>", "routers", f"expected one router per flow set ({len(flow_sets)}), "
                                              f"got {len(routers)}")
    if workers is None:
        workers = available_cpus()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError("<api>", "workers", f"expected a positive integer, got {workers!r}")
    jobs = [(fs, *_route(topology, fs, r)) for fs, r in zip(flow_sets, routers)]
    workers = min(workers, len(jobs)) if backend in CONCURRENT_BACKENDS else 1
    if workers <= 1:
        return [_run(topology, fs, routed, route_s, backend, max_bins, None) for fs, routed, route_s in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cosim-net") as pool:
        futures = [pool.submit(_run, topology, fs, routed, route_s, backend, max_bins, None)
                   for fs, routed, route_s in jobs]
        return [f.result() for f in futures]


def _check_args(backend: str, max_bins: int) -> None:
    if backend not in BACKENDS:
        raise ConfigError("<api>", "backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(max_bins, int) or max_bins < 1:
        raise ConfigError("<api>", "max_bins", f"expected a positive integer, got {max_bins!r}")


def _route(topology: Topology, flows: FlowSet, router: Router | None) -> tuple[RoutedFlows, float]:
    wall0 = time.perf_counter()
    routed = route_flows(topology, flows, router)
    return routed, time.perf_counter() - wall0


def _run(topology: Topology, flows: FlowSet, routed: RoutedFlows, route_s: float, backend: str, max_bins: int,
         progress) -> NetworkResult:
    result = BACKENDS[backend](topology, flows, routed, max_bins=max_bins, progress=progress)
    result.stats["route_s"] = route_s
    return result
