"""Network core: flows, collectives, and the ``packet`` (ns-3) and ``flow`` (max-min) backends."""

from cosim.network.backends import BACKENDS, CONCURRENT_BACKENDS, simulate, simulate_many
from cosim.network.flows import Flow, FlowSet, RoutedFlows, route_flows
from cosim.network.live import Completion, LiveNetwork
from cosim.network.results import LinkCounters, NetworkResult

__all__ = ["BACKENDS", "CONCURRENT_BACKENDS", "Completion", "Flow", "FlowSet", "LinkCounters", "LiveNetwork",
           "NetworkResult", "RoutedFlows", "route_flows", "simulate", "simulate_many"]
