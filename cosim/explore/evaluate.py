"""Evaluation of one design point: feasibility, then the best load that meets the SLOs.

:func:`evaluate_point` builds the point's deployment, checks every pool's memory (an infeasible
point is recorded with its reason and costs no simulation), then serves closed loops of the
workload at growing user counts with :func:`cosim.serving.run.serve` and keeps the largest count
whose SLO attainment (over the steady-state requests: :func:`steady_attainment`) reaches the
experiment's target: it serves the low end, then multiplies the
load by ``load.growth`` until a run misses the SLOs or the high end is reached (small, cheap runs
first: the cost of a run grows with its users), then bisects (geometrically, on integers) between
the last load that met them and the first that did not for ``load.steps`` more runs. The row holds the figures of
that run (tokens/s per GPU and per user, TTFT / TPOT percentiles, attainment, pool utilization)
or, when even the lowest load misses the SLOs, the lowest load's figures with status
``slo_unmet``. Step-time models are shared through ``cache_dir`` by every point and process
(their grids are sized to the whole space, so points that differ only in batch limits share
them). Deterministic: the same point, spec and seed give the same row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cosim.engine.step_model import StepCache, shared_step_cache
from cosim.errors import CosimError
from cosim.explore.space import DesignPoint, workload_of
from cosim.explore.spec import ExperimentSpec
from cosim.serving.deployment import BatchingSpec, PoolSpec, deployment_from_dict, pool_memory
from cosim.serving.run import pool_grid, serve
from cosim.serving.simulator import ServingOptions
from cosim.serving.workload import ClosedLoop, generate_requests

#: Row statuses: evaluated and meeting the SLOs at some load; evaluated but missing them even at
#: the lowest load; pruned before simulation (memory); a deployment cosim refuses (its error).
STATUSES = ("ok", "slo_unmet", "infeasible", "invalid")


@lru_cache(maxsize=8)
def _kernels(system: str, framework: str):
    from cosim.kernels import KernelTables

    return KernelTables.load(system, framework=framework)


def _grid_for(spec: ExperimentSpec):
    """Step-time grids sized to the space's largest batch limits (shared across its points), with
    the simulated contexts only where they change an answer (the kernel-work axes keep every
    context of :func:`pool_grid`'s, see :meth:`StepGrid.work_contexts`):

    - colocated pools (the ``decomposed`` method of :class:`StepTimeModel`): the first and last
      contexts. What is interpolated over the context is the residual ``T - W_dec - G``, and on
      these layouts it does not depend on the context (attention runs in series with the rest):
      measured on every colocated deployment of the quickstart and of the study's
      ``hgx-b200.yaml``, the answers of the two-context grid differ from the full grid's by
      < 1e-14 relative (``docs/step-model.md``), for half to a fifth of the decode steps;
    - a prefill pool, moreover, never decodes: its decode batches are already the smallest grid;
    - AFD pools keep every context (their residual moves with the context: up to 12 % off with
      two contexts on the study's long-context workload).
    """
    budget, batch = max(spec.space.token_budget), max(spec.space.max_batch)

    def grid(pool: PoolSpec, max_context: int):
        wide = dataclasses.replace(pool, batching=BatchingSpec(pool.batching.policy, max(budget, 1), max(batch, 1)))
        g = pool_grid(wide, max_context)
        if pool.afd is None:
            g = dataclasses.replace(g, contexts=(g.contexts[0], g.contexts[-1]))
        return g

    return grid


#: Row columns that are timings (they differ between runs; everything else is deterministic).
TIMING_COLUMNS = ("wall_s", "step_model_s", "step_simulate_s", "step_work_s", "serving_s")


def _figures(summary, users: int) -> dict[str, Any]:
    ms = 1e3
    return {
        "concurrency": users, "slo_attainment": summary.slo_attainment,
        "tokens_per_s": summary.output_tokens_per_s, "tokens_per_s_per_gpu": summary.output_tokens_per_s_per_gpu,
        "tokens_per_s_per_user": summary.output_tokens_per_s_per_user,
        "ttft_p50_ms": summary.ttft.p50_s * ms, "ttft_p90_ms": summary.ttft.p90_s * ms,
        "ttft_p99_ms": summary.ttft.p99_s * ms, "tpot_p50_ms": summary.tpot.p50_s * ms,
        "tpot_p90_ms": summary.tpot.p90_s * ms, "tpot_p99_ms": summary.tpot.p99_s * ms,
        "kv_transfer_p50_ms": summary.kv_transfer.p50_s * ms if summary.kv_transfer.count else math.nan,
        "preemptions": summary.preemptions, "utilization": json.dumps(summary.pool_utilization, sort_keys=True),
    }


def _steady(run, users: int) -> np.ndarray:
    """The steady-state requests: finished, after the first ``users`` (the first round arrives
    together, a start-up burst no steady load has); all finished ones when none is left."""
    done = run.finished
    steady = done.copy()
    steady[:users] = False
    return steady if steady.any() else done


def steady_attainment(run, slo, users: int) -> float | None:
    """Share of the steady-state requests (:func:`_steady`) that finished within both SLOs."""
    from cosim.serving.metrics import tpot_s, ttft_s

    steady = _steady(run, users)
    if not steady.any():
        return None
    tp = tpot_s(run)[steady]
    ok = (ttft_s(run)[steady] <= slo.ttft_s) & ((tp <= slo.tpot_s) | np.isnan(tp))
    return float(ok.mean())


def steady_summary(run, summary, slo, users: int):
    """``summary`` with its attainment and latency distributions over the steady-state requests
    (throughputs stay the run's)."""
    from cosim.serving.metrics import Distribution, tpot_s, ttft_s

    steady = _steady(run, users)
    return dataclasses.replace(summary, slo_attainment=steady_attainment(run, slo, users),
                               ttft=Distribution.of(ttft_s(run)[steady]), tpot=Distribution.of(tpot_s(run)[steady]),
                               kv_transfer=Distribution.of(run.kv_transfer_s[steady]))


def base_row(point: DesignPoint) -> dict[str, Any]:
    """The columns every row has: identity, labels, the deployment document."""
    row = {"key": point.key, "model": point.model, "topology": point.topology, "workload": point.workload,
           "mode": point.mode, "deployment": point.deployment}
    row.update({f"label_{k}": v for k, v in point.labels})
    return row


def evaluate_point(spec: ExperimentSpec, point: DesignPoint, cache_dir: str | Path | None) -> dict[str, Any]:
    """The result row of ``point`` (module docstring). Never raises for a bad point: cosim's
    errors become status ``invalid`` with the message."""
    t0 = time.perf_counter()
    row = base_row(point)
    row.update(status="invalid", reason="", gpus=0, evaluations=0)
    try:
        dep = deployment_from_dict(point.deployment_dict(), f"point {point.key}")
        row["gpus"] = dep.num_gpus
        kernels = _kernels(dep.system, dep.framework)
        memory = [pool_memory(dep, p, kernels.system.mem_capacity_bytes) for p in dep.pools]
        reasons = [m.reason for m in memory if m.reason]
        if reasons:
            row.update(status="infeasible", reason="; ".join(reasons))
            return _done(row, t0)
        wl = workload_of(spec, point)
        too_long = _kv_misfits(dep, memory, generate_requests(
            wl.spec.with_arrival(ClosedLoop(spec.load.concurrency[0])),
            num_requests=max(spec.load.requests_per_user * spec.load.concurrency[0], spec.load.min_requests),
            seed=spec.seed))
        if too_long:
            row.update(status="infeasible", reason="; ".join(too_long))
            return _done(row, t0)
        grid = _grid_for(spec)
        runs: dict[int, Any] = {}
        cache = shared_step_cache(cache_dir) if cache_dir is not None else StepCache()
        built0 = dataclasses.replace(cache.built)
        timing = {"step_model_s": 0.0, "serving_s": 0.0}

        def run(users: int):
            if users not in runs:
                w = wl.spec.with_arrival(ClosedLoop(users))
                n = max(spec.load.requests_per_user * users, spec.load.min_requests)
                reqs = generate_requests(w, num_requests=n, seed=spec.seed)
                options = ServingOptions(ramp_s=max(0.1, users / 1000.0))
                t = time.perf_counter()
                res = serve(dep, reqs, slo=wl.slo, options=options, cache_dir=cache_dir, link_load=False,
                            kernels=kernels, grid=grid, step_cache=cache)
                models_s = sum(m.get("wall_s", 0.0) for m in res.step_models.values()
                               if m.get("source") in ("built", "loaded"))
                timing["step_model_s"] += models_s
                timing["serving_s"] += time.perf_counter() - t - models_s
                runs[users] = steady_summary(res.run, res.summary, wl.slo, users)
            return runs[users]

        def meets(users: int) -> bool:
            a = run(users).slo_attainment
            return a is not None and a >= spec.load.attainment

        lo, hi = spec.load.concurrency
        if not meets(lo):
            low = run(lo)
            why = (f"SLO attainment {low.slo_attainment:.0%} at {lo} users, below {spec.load.attainment:.0%}"
                   if low.slo_attainment is not None else
                   f"no request finished at {lo} users ({low.finished} of {low.requests} requests; "
                   f"preemptions {low.preemptions})")
            row.update(status="slo_unmet", reason=why, **_figures(low, lo))
        else:
            # grow the load geometrically from the low end (cheap runs first), then bisect
            best, bad = lo, None
            while best < hi:
                nxt = min(hi, best * spec.load.growth)
                if meets(nxt):
                    best = nxt
                else:
                    bad = nxt
                    break
            if bad is not None:
                for _ in range(spec.load.steps):
                    mid = int(round(math.sqrt(best * bad)))
                    if mid <= best or mid >= bad:
                        break
                    if meets(mid):
                        best = mid
                    else:
                        bad = mid
            row.update(status="ok", **_figures(run(best), best))
            row["failing_concurrency"] = bad  # the smallest load tried that missed the SLOs (None: none did)
        row["evaluations"] = len(runs)
        row.update(timing, step_simulate_s=cache.built.simulate_wall_s - built0.simulate_wall_s,
                   step_work_s=cache.built.work_wall_s - built0.work_wall_s)
    except CosimError as exc:
        row.update(status="invalid", reason=str(exc)[:500])
    return _done(row, t0)


def _kv_misfits(dep, memory, reqs) -> list[str]:
    """Pools whose ranks cannot hold the KV cache of the workload's longest request (a request
    that never fits is never admitted): prefill pools its prompt, the others prompt + output."""
    prompt = reqs.prefix_tokens + reqs.input_tokens
    out = []
    for pool, mem in zip(dep.pools, memory):
        need = int((prompt if pool.role == "prefill" else prompt + reqs.output_tokens).max())
        if need > mem.kv_capacity_tokens:
            out.append(f"pool {pool.name!r}: a request of {need:,} tokens needs more KV cache than a rank holds "
                       f"({mem.kv_capacity_tokens:,} tokens)")
    return out


def _done(row: dict, t0: float) -> dict:
    row["wall_s"] = time.perf_counter() - t0
    return row
