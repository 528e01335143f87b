"""Topologies: YAML schema, generators for HGX / NVL72 / rail-optimized fabrics, routing."""

from cosim.topology.generators import GENERATORS
from cosim.topology.loader import (
    list_presets, load_topology, read_topology_file, topology_from_dict, validate_topology,
)
from cosim.topology.model import Link, Node, RoutingPolicy, Topology, TransportConfig
from cosim.topology.routing import Router

__all__ = [
    "GENERATORS", "Link", "Node", "Router", "RoutingPolicy", "Topology", "TransportConfig",
    "list_presets", "load_topology", "read_topology_file", "topology_from_dict", "validate_topology",
]
