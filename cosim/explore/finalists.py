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

import functools
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
                      progress: Callable[[int, int], None] | None = None, *, runner: str = "local",
                      workers: int = 1, address: str | None = None) -> list[dict[str, Any]]:
    """:func:`examine_finalist` for every finalist of ``rows`` not yet in ``OUT/finalists/``, on
    the exploration's runner (:data:`~cosim.explore.runners.RUNNERS`: ``workers`` processes, or
    the Ray cluster at ``address``); returns every finalist's record in key order (written ones
    read back)."""
    from cosim.explore.runners import RUNNERS

    folder = Path(out_dir) / "finalists"
    folder.mkdir(parents=True, exist_ok=True)
    by_key = {p.key: p for p in points}
    keys = [k for k in finalist_keys(rows) if k in by_key]
    todo = [by_key[k] for k in keys if not (folder / f"{k}.json").exists()]
    done = len(keys) - len(todo)
    if progress:
        progress(done, len(keys))

    def record(rec: dict[str, Any]) -> None:
        nonlocal done
        path = folder / f"{rec['key']}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, default=_json_default))
        os.replace(tmp, path)
        done += 1
        if progress:
            progress(done, len(keys))

    if todo:
        row_of = {r["key"]: r for r in rows if r["key"] in {p.key for p in todo}}
        RUNNERS[runner](spec, todo, cache_dir, record, workers=workers, address=address,
                        task=functools.partial(_finalist_task, row_of, packet))
    return [json.loads((folder / f"{k}.json").read_text()) for k in keys]


def _finalist_task(row_of: dict[str, dict], packet: bool, spec: ExperimentSpec, point: DesignPoint,
                   cache_dir: str | Path | None) -> dict[str, Any]:
    """A runner task: :func:`examine_finalist` of ``point`` with its row."""
    return examine_finalist(spec, point, row_of[point.key], cache_dir, packet)


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
