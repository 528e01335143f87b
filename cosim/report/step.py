"""Step results as plain data (``cosim step --json``): step time, breakdown, per-group figures,
memory, tokens/s per GPU and the hottest links."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


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


def write_step_json(result, path: str | Path, top_links: int = 8) -> Path:
    """Write :func:`step_summary` to ``path`` atomically (a temporary file, then renamed)."""
    path = Path(path)
    data = step_summary(result, top_links)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v)
                              else (v.item() if hasattr(v, "item") else str(v))))
    os.replace(tmp, path)
    return path
