"""Shared fixtures: small topologies built in code so tests state their parameters."""

from __future__ import annotations

import os

import pytest

from cosim.network.packet_backend import engine_available
from cosim.topology import topology_from_dict

BACKENDS = ["flow", "packet"]

if os.environ.get("COSIM_REQUIRE_ENGINE") and not engine_available():
    raise RuntimeError("COSIM_REQUIRE_ENGINE is set but cosim.network._packet_engine cannot be imported")

requires_engine = pytest.mark.skipif(not engine_available(), reason="native ns-3 engine not built")


def star(num_gpus: int, bandwidth: str = "400Gbps", latency: str = "1us", mtu: int = 4096, header: int = 2):
    """``num_gpus`` GPUs on one switch; header 2 B so frames are MTU + the 2-byte PPP header."""
    return topology_from_dict({
        "name": f"star{num_gpus}",
        "generator": {"kind": "star", "num_gpus": num_gpus, "bandwidth": bandwidth, "latency": latency, "mtu": mtu},
        "transport": {"header_bytes": header},
    })


def backend_param():
    """Parametrize over both backends, skipping ``packet`` when the engine is missing."""
    return pytest.mark.parametrize("backend", [
        "flow", pytest.param("packet", marks=requires_engine)])
