"""The finalists of an exploration, looked at closely: packet-backend re-check and step details.

The finalists are the points of every Pareto front and the best point of every mode (status
``ok``). For each, :func:`examine_finalist` serves the point again at its chosen load (flow
backend, the same requests: the same run as its row), takes each pool's representative step (the
mean busiest-rank batch of its replica 0: decode requests, their mean context, its mean prefill
chunks, as :func:`cosim.serving.run.step_link_bytes` does) and simulates that step on both
backends (flow and ns-3 packet). It records:

- per pool, the step time on each backend and their relative difference (the re-check: the whole
  exploration ran on the flow backend);
- the step breakdown (:func:`cosim.engine.summary.step_summary` of the flow step: compute by op
  class, exposed communication by collective, AFD group busy/idle time);
- the per-link utilization of the step over time (:func:`cosim.engine.summary.step_link_series`,
  links with traffic only) and its hottest links.

Written as ``OUT/finalists/<key>.json`` (atomic); a resumed run skips finalists already written.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cosim.explore.analysis import best_per_mode, pareto_fronts
from cosim.explore.evaluate import _grid_for, _kernels
from cosim.explore.space import DesignPoint, workload_of
from cosim.explore.spec import ExperimentSpec
from cosim.serving.deployment import deployment_from_dict
from cosim.serving.run import representative_step, serve
from cosim.serving.simulator import ServingOptions
from cosim.serving.workload import ClosedLoop, generate_requests

#: Time bins of a finalist step's link series.
LINK_BINS = 60


def finalist_keys(rows: list[dict]) -> list[str]:
    """Keys of the Pareto-front points and of the best point of every mode (status ``ok``), in
    key order."""
    keys = {r["key"] for front in pareto_fronts(rows).values() for r in front}
    keys |= {r["key"] for r in best_per_mode(rows) if r.get("status") == "ok"}
    return sorted(keys)


def examine_finalist(spec: ExperimentSpec, point: DesignPoint, row: dict, cache_dir: str | Path | None,
                     packet: bool = True) -> dict[str, Any]:
    """The close look at one finalist (module docstring) as a JSON-ready dict."""
    from cosim.engine.step import simulate_step
    from cosim.engine.summary import step_link_series, step_summary

    t0 = time.perf_counter()
    dep = deployment_from_dict(point.deployment_dict(), f"point {point.key}")
    kernels = _kernels(dep.system, dep.framework)
    wl = workload_of(spec, point)
    users = int(row["concurrency"])
    reqs = generate_requests(wl.spec.with_arrival(ClosedLoop(users)),
                             num_requests=max(spec.load.requests_per_user * users, spec.load.min_requests),
                             seed=spec.seed)
    res = serve(dep, reqs, slo=wl.slo, options=ServingOptions(ramp_s=max(0.1, users / 1000.0)),
                cache_dir=cache_dir, link_load=False, kernels=kernels, grid=_grid_for(spec))
    pools = {}
    for pool in dep.pools:
        st = res.run.replica_steps.get((pool.name, 0))
        if not st or not st["steps"]:
            continue
        step = representative_step(dep, pool, 0, st)
        flow = simulate_step(step, kernels, dep.topology, "flow")
        entry = {"decode_tokens": step.batch_per_rank, "context": step.prefix_tokens,
                 "chunks": [[c.prefix_tokens, c.new_tokens] for c in step.prefill_chunks],
                 "steps": st["steps"], "flow_step_s": flow.step_time_s, "packet_step_s": None,
                 "packet_vs_flow": None, "summary": step_summary(flow),
                 "links": step_link_series(flow, LINK_BINS).to_dict()}
        if packet:
            from cosim.network.packet_backend import engine_available

            if engine_available():
                pk = simulate_step(step, kernels, dep.topology, "packet")
                entry["packet_step_s"] = pk.step_time_s
                entry["packet_vs_flow"] = pk.step_time_s / flow.step_time_s - 1.0
        pools[pool.name] = entry
    return {"key": point.key, "mode": point.mode, "workload": point.workload, "model": point.model,
            "topology": point.topology, "pools_label": point.label("pools"), "concurrency": users,
            "tokens_per_s_per_gpu": row["tokens_per_s_per_gpu"], "tokens_per_s_per_user": row["tokens_per_s_per_user"],
            "pools": pools, "wall_s": time.perf_counter() - t0}


def examine_finalists(spec: ExperimentSpec, points: list[DesignPoint], rows: list[dict], out_dir: str | Path,
                      cache_dir: str | Path | None, packet: bool = True,
                      progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """:func:`examine_finalist` for every finalist of ``rows`` not yet in ``OUT/finalists/``;
    returns every finalist's record (written ones read back)."""
    folder = Path(out_dir) / "finalists"
    folder.mkdir(parents=True, exist_ok=True)
    by_key = {p.key: p for p in points}
    row_of = {r["key"]: r for r in rows}
    keys = [k for k in finalist_keys(rows) if k in by_key]
    out = []
    for i, key in enumerate(keys):
        path = folder / f"{key}.json"
        if path.exists():
            out.append(json.loads(path.read_text()))
        else:
            rec = examine_finalist(spec, by_key[key], row_of[key], cache_dir, packet)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(rec, default=_json_default))
            os.replace(tmp, path)
            out.append(rec)
        if progress:
            progress(i + 1, len(keys))
    return out


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
