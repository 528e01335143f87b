"""Packet-level backend: the flows run as MTU-sized packets in ns-3 (``cosim.network._packet_engine``).

Every link is an ns-3 point-to-point channel; every packet is serialized on every hop; switches
store and forward with per-port queues; the transport is lossless (PFC-style pause per ingress
port) and sources serve their active flows round-robin, one packet at a time. All inputs are
validated in Python and again in C++ before ns-3 sees them, because ns-3's fatal errors abort the
interpreter.
"""

from __future__ import annotations

import threading

import numpy as np

from cosim.network.flows import FlowSet, RoutedFlows
from cosim.network.results import LinkCounters, NetworkResult
from cosim.topology import Topology

# ns-3's Simulator is a process-wide singleton: one packet simulation at a time per process.
_ENGINE_LOCK = threading.Lock()


def engine_available() -> bool:
    """True when the native ns-3 extension is importable."""
    try:
        from cosim.network import _packet_engine  # noqa: F401
    except ImportError:
        return False
    return True


def simulate_packet_level(topology: Topology, flows: FlowSet, routed: RoutedFlows, *,
                          max_bins: int = 2048, progress=None) -> NetworkResult:
    """Run ``routed`` through ns-3; see the module docstring for the model. More than
    ``cosim.limits.MAX_PACKETS`` packets is a FlowError before the engine starts."""
    from cosim.network.flows import check_packet_budget

    check_packet_budget(routed)
    from cosim.network import _packet_engine

    links = topology.links
    link_a = np.array([l.a for l in links], dtype=np.int32)
    link_b = np.array([l.b for l in links], dtype=np.int32)
    rate_bps = topology.link_bandwidth_bps
    delay_s = topology.link_latency_s
    transport = topology.transport
    with _ENGINE_LOCK:
        out = _packet_engine.run(
            len(topology.nodes), link_a, link_b, rate_bps, delay_s,
            routed.src_node, routed.dst_node, routed.size_bytes, routed.earliest_start_s,
            routed.payload_per_packet, routed.route_offsets, routed.route_links,
            routed.dep_offsets, routed.dep_flows,
            transport.header_bytes, transport.pfc_xoff_bytes, transport.pfc_xon_bytes,
            max_bins, progress,
        )
    bw = topology.directed_bandwidth_bps
    tx_bytes = np.asarray(out["link_tx_bytes"], dtype=np.int64)
    counters = LinkCounters(
        tx_bytes=tx_bytes,
        tx_packets=np.asarray(out["link_tx_packets"], dtype=np.int64),
        busy_s=tx_bytes * 8.0 / bw,
        peak_queue_bytes=np.asarray(out["link_peak_queue_bytes"], dtype=np.float64),
        pause_count=np.asarray(out["link_pause_count"], dtype=np.int64),
        paused_s=np.asarray(out["link_paused_s"], dtype=np.float64),
        bin_s=float(out["bin_s"]),
        bin_bytes=np.asarray(out["link_bin_bytes"], dtype=np.float64),
        bandwidth_bps=bw,
    )
    stats = {"hop_packets": int(out["hop_packets"]), "events": int(out["events"]),
             "engine_wall_s": float(out["wall_s"]), "end_time_s": float(out["end_time_s"])}
    return NetworkResult("packet", topology, flows, routed, np.asarray(out["flow_start_s"]),
                         np.asarray(out["flow_finish_s"]), counters, float(out["wall_s"]), stats)
