"""One network API over interchangeable backends, chosen by name."""

from __future__ import annotations

import functools
import time
from typing import Callable, Protocol

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
#: EP256 decode step +0.03 %, 13x faster: docs/network.md).
FAST_TIME_TOLERANCE = 1e-3

#: Registry of network backends by name: ``packet`` (ns-3), ``flow`` (exact max-min fluid) and
#: ``flow_fast`` (the same with :data:`FAST_TIME_TOLERANCE`).
BACKENDS: dict[str, Backend] = {
    "packet": simulate_packet_level,
    "flow": simulate_flow_level,
    "flow_fast": functools.partial(simulate_flow_level, time_tolerance=FAST_TIME_TOLERANCE),
}


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
    if backend not in BACKENDS:
        raise ConfigError("<api>", "backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(max_bins, int) or max_bins < 1:
        raise ConfigError("<api>", "max_bins", f"expected a positive integer, got {max_bins!r}")
    wall0 = time.perf_counter()
    routed = route_flows(topology, flows, router)
    route_s = time.perf_counter() - wall0
    result = BACKENDS[backend](topology, flows, routed, max_bins=max_bins, progress=progress)
    result.stats["route_s"] = route_s
    return result
