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
        "moe_traffic": moe_traffic_summary(result),
        "network_simulations": result.network_simulations,
        "wall_s": result.wall_s,
    }


#: Collective operations that carry the tokens of an MoE layer (DeepEP / NVLink all-to-all, AFD).
MOE_OPS = ("dispatch", "combine", "a2f", "f2a")


@dataclass(frozen=True)
class MoeLayerTraffic:
    """Bytes of one MoE layer's token exchanges (``op``: dispatch, combine, a2f or f2a, summed
    over micro-batches) that stay inside a scale-up domain (NVLink) and that cross domains."""

    layer: int
    op: str
    intra_bytes: float
    inter_bytes: float

    @property
    def inter_fraction(self) -> float:
        total = self.intra_bytes + self.inter_bytes
        return self.inter_bytes / total if total else 0.0


def moe_traffic(result) -> list[MoeLayerTraffic]:
    """Per MoE layer and operation, the bytes that stay inside a node (scale-up domain) and that
    cross nodes: from each collective's bytes matrix on the step's GPUs (for DeepEP normal mode
    across nodes, the cross-node part is its per-node deduplicated RDMA matrix, what goes over
    the NICs). Where the topology has no domains every GPU counts as its own node."""
    topo, trace = result.topology, result.trace
    if topo is None:
        return []
    domain = [topo.nodes[n].domain for n in topo.gpu_nodes]
    acc: dict[tuple[int, str], list[float]] = {}
    for c in trace.collectives:
        op = c.op or ""
        if op not in MOE_OPS:
            continue
        gpus = [trace.gpu_of(r) for r in c.ranks]
        node = np.array([domain[g] if domain[g] is not None else -1 - g for g in gpus])
        m = np.asarray(c.bytes_matrix, dtype=np.float64)
        if c.kind == "bipartite":
            src, dst = node[:c.num_senders], node[c.num_senders:]
        else:
            src = dst = node
        same = src[:, None] == dst[None, :]
        intra = float(m[same].sum())
        inter = float(m[~same].sum())
        if c.node_bytes_matrix is not None:
            inter = float(np.asarray(c.node_bytes_matrix, dtype=np.float64).sum())
        a = acc.setdefault((c.layer, op), [0.0, 0.0])
        a[0] += intra
        a[1] += inter
    return [MoeLayerTraffic(layer, op, v[0], v[1]) for (layer, op), v in sorted(acc.items())]


def moe_traffic_summary(result) -> dict[str, Any] | None:
    """Totals of :func:`moe_traffic` per operation, the routed-expert imbalance (mean over MoE
    layers of the max / mean expert time of the ranks, and the slowest rank), JSON-ready;
    ``None`` for a step without MoE token exchanges."""
    layers = moe_traffic(result)
    if not layers:
        return None
    ops: dict[str, dict[str, float]] = {}
    for t in layers:
        o = ops.setdefault(t.op, {"intra_bytes": 0.0, "inter_bytes": 0.0, "layers": 0})
        o["intra_bytes"] += t.intra_bytes
        o["inter_bytes"] += t.inter_bytes
        o["layers"] += 1
    for o in ops.values():
        total = o["intra_bytes"] + o["inter_bytes"]
        o["inter_fraction"] = o["inter_bytes"] / total if total else 0.0
    factor, rank, count = result.expert_imbalance()
    per_rank = result.expert_time_per_rank()
    return {"by_op": ops, "straggler_factor": factor, "slowest_rank": rank, "slowest_rank_layers": count,
            "per_layer": [{"layer": t.layer, "op": t.op, "intra_bytes": t.intra_bytes, "inter_bytes": t.inter_bytes}
                          for t in layers],
            "rank_expert_s": {r: m for r, (m, _) in per_rank.items()},
            "rank_expert_max_s": {r: x for r, (_, x) in per_rank.items()}}


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
