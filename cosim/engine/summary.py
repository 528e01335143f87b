"""Step results and link counters as plain data: what a step summary file, a finalist record and
the reports read back.

:func:`step_summary` turns a :class:`~cosim.engine.step.StepResult` into a JSON-ready dict (step
time, breakdown, per-group figures, memory, hottest links). :class:`LinkSeries` is the per-link
utilization over time of one simulation, links with traffic only, in one shape for every source
(a step: :func:`step_link_series`; a network simulation: :func:`network_link_series`), so one
heat map and one hottest-links table draw all of them. Both live here, below the exploration
that stores them and the reports that draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Time bins of a step's link series (:func:`step_link_series`).
STEP_LINK_BINS = 60


def _memory(mem) -> dict | None:
    if mem is None:
        return None
    return {"weight_bytes": mem.weight_bytes, "kv_cache_bytes": mem.kv_cache_bytes,
            "activation_bytes": mem.activation_bytes, "total_bytes": mem.total_bytes,
            "capacity_bytes": mem.capacity_bytes, "fits": mem.fits}


def step_summary(result, top_links: int = 8) -> dict:
    """A JSON-ready summary of a :class:`cosim.engine.step.StepResult`."""
    topo = result.topology
    util = result.link_utilization() if topo is not None else np.zeros(0)
    links = []
    for d in np.argsort(-util)[:top_links]:
        if result.link_tx_bytes[d] == 0:
            break
        links.append({"link": topo.describe_link(int(d)), "tier": topo.links[d // 2].tier,
                      "bytes": float(result.link_tx_bytes[d]), "mean_utilization": float(util[d])})
    spec = result.spec
    return {
        "step_time_s": result.step_time_s,
        "backend": result.backend,
        "topology": topo.name if topo is not None else None,
        "layout": spec.layout if spec is not None else result.trace.metadata.get("layout", "colocated"),
        "gpus": list(result.trace.gpus) if result.trace.gpus is not None else list(range(result.num_gpus)),
        "tokens_per_step": result.tokens_per_step,
        "tokens_per_s_per_gpu": result.tokens_per_s_per_gpu,
        "critical_rank": result.critical_rank,
        "compute_by_class_s": {k: float(v) for k, v in result.compute_by_class_s.items()},
        "comm_by_collective_s": {k: float(v) for k, v in result.comm_by_collective_s.items()},
        "exposed_comm_by_collective_s": {k: float(v) for k, v in result.exposed_comm_by_collective_s.items()},
        "overlap_fraction": result.overlap_fraction,
        "groups": {name: {"gpus": len(g.ranks), "critical_rank": g.critical_rank, "busy_s": g.busy_s,
                          "idle_s": g.idle_s,
                          "compute_by_class_s": {k: float(v) for k, v in g.compute_by_class_s.items()},
                          "comm_by_collective_s": {k: float(v) for k, v in g.comm_by_collective_s.items()},
                          "exposed_comm_by_collective_s": {k: float(v) for k, v in
                                                           g.exposed_comm_by_collective_s.items()},
                          "memory": _memory(g.memory)} for name, g in result.groups.items()},
        "memory": _memory(result.memory),
        "duration_sources": dict(result.duration_sources),
        "hottest_links": links,
        "network_simulations": result.network_simulations,
        "wall_s": result.wall_s,
    }


@dataclass(frozen=True, eq=False)
class LinkSeries:
    """Utilization of the directed links that carried traffic, over time.

    Attributes:
        names / tiers: per link, ``"src -> dst"`` and its tier.
        bin_s: width of a time bin; ``utilization``: links x bins, the share of each bin the link
            spent sending (bytes x 8 / (bandwidth x bin width)).
        bytes: wire bytes per link; ``mean_utilization``: over the whole window.
        hottest: indices (into ``names``) of the links with the most bytes, most first.
        bandwidth_bps: per link (per direction), when known.
    """

    names: tuple[str, ...]
    tiers: tuple[str, ...]
    bin_s: float
    utilization: np.ndarray
    bytes: np.ndarray
    mean_utilization: np.ndarray
    hottest: tuple[int, ...]
    bandwidth_bps: np.ndarray | None = None

    @classmethod
    def of(cls, topology, tx_bytes: np.ndarray, utilization: np.ndarray, bin_s: float,
           mean_utilization: np.ndarray, top: int = 10) -> LinkSeries:
        """The links of ``topology`` with ``tx_bytes > 0`` out of per-directed-link arrays
        (``utilization``: every directed link x bins)."""
        used = np.flatnonzero(np.asarray(tx_bytes) > 0)
        order = np.argsort(-np.asarray(tx_bytes)[used], kind="stable")
        return cls(names=tuple(topology.describe_link(int(d)) for d in used),
                   tiers=tuple(topology.links[d // 2].tier for d in used), bin_s=float(bin_s),
                   utilization=np.round(np.asarray(utilization, dtype=float)[used], 5),
                   bytes=np.asarray(tx_bytes, dtype=float)[used],
                   mean_utilization=np.asarray(mean_utilization, dtype=float)[used],
                   hottest=tuple(int(i) for i in order[:top]),
                   bandwidth_bps=np.asarray(topology.directed_bandwidth_bps, dtype=float)[used])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists and floats)."""
        out = {"names": list(self.names), "tiers": list(self.tiers), "bin_s": self.bin_s,
               "utilization": self.utilization.tolist(), "bytes": self.bytes.tolist(),
               "mean_utilization": self.mean_utilization.tolist(), "hottest": list(self.hottest)}
        if self.bandwidth_bps is not None:
            out["bandwidth_bps"] = self.bandwidth_bps.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkSeries:
        """Inverse of :meth:`to_dict` (a finalist record's ``links``)."""
        n = len(d["names"])
        util = np.asarray(d["utilization"], dtype=float).reshape(n, -1)
        bw = d.get("bandwidth_bps")
        return cls(tuple(d["names"]), tuple(d["tiers"]), float(d["bin_s"]), util, np.asarray(d["bytes"], dtype=float),
                   np.asarray(d["mean_utilization"], dtype=float), tuple(int(i) for i in d["hottest"]),
                   None if bw is None else np.asarray(bw, dtype=float))

    def top(self, n: int) -> np.ndarray:
        """Indices of the ``n`` busiest links (highest mean utilization, i.e. bytes over
        bandwidth; then most bytes), busiest first."""
        return np.lexsort((-self.bytes, -self.mean_utilization))[:n]


def step_link_series(result, bins: int = STEP_LINK_BINS, top: int = 10) -> LinkSeries:
    """:class:`LinkSeries` of a step (:meth:`cosim.engine.step.StepResult.link_series`: each
    collective's link bytes over its scheduled interval) in ``bins`` bins."""
    topo = result.topology
    edges, series = result.link_series(bins)
    width = np.diff(edges)
    util = series * 8.0 / (topo.directed_bandwidth_bps[:, None] * width[None, :])
    return LinkSeries.of(topo, result.link_tx_bytes, util, float(width[0]) if len(width) else 0.0,
                         result.link_utilization(), top)


def network_link_series(result, top: int = 10) -> LinkSeries:
    """:class:`LinkSeries` of a :class:`cosim.network.results.NetworkResult` (its link counters'
    time series, over the completion time)."""
    end = result.completion_time_s
    links = result.links
    return LinkSeries.of(result.topology, links.tx_bytes, links.utilization_series(end), links.bin_s,
                         links.mean_utilization(end), top)
