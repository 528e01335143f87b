"""One call from a deployment and requests to a serving answer: :func:`serve`.

It loads the kernel tables of the deployment's system, sizes every pool's memory (infeasible
pools end the call with their reason, not a crash), builds or reloads one
:class:`~cosim.engine.step_model.StepTimeModel` per pool and distinct replica placement
(:func:`cosim.topology.placement.placement_signature`; a grid sized to the pool's batching
limits and the requests' contexts; saved under ``cache_dir`` and reused across runs and
processes), opens a :class:`~cosim.network.live.LiveNetwork` on the topology for the P/D KV
transfers, runs the discrete-event simulation and summarizes it.

**Domain grouping** (a pool whose ``routing`` has ``grouping``): its step-time model assumes that
a share ``grouping_purity`` of each rank's tokens belongs to the rank's home domain. Whether the
router achieves that is known only after the run (``ServingRun.grouping_purity``), so when the
measured purity differs from the assumed one by more than :data:`PURITY_TOLERANCE` the run is
repeated once with the measured purity (rounded to 0.01, so repeated calls share step models);
``ServeResult.grouping`` records both. Without the ``domain`` router requests land on ranks
regardless of their domain, and the second run prices grouping at what it really is.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cosim.engine.memo import MemoStepTimes
from cosim.engine.simulator import StepSimulator
from cosim.engine.step_model import StepGrid, StepTimeModel, ladder
from cosim.errors import ConfigError
from cosim.serving.deployment import Deployment, PoolMemory, PoolSpec, pool_memory
from cosim.serving.metrics import ServingSummary, summarize
from cosim.serving.simulator import ServingOptions, ServingRun, simulate_serving
from cosim.serving.workload import Requests
from cosim.topology import Router
from cosim.topology.placement import placement_signature


#: Largest difference between the grouping purity a step-time model assumed and the one a run
#: measured before the run is repeated with the measured one.
PURITY_TOLERANCE = 0.02


class ModelStepTimes:
    """A pool's step times from its :class:`StepTimeModel` (the simulator's ``StepTimes``)."""

    def __init__(self, model: StepTimeModel):
        self.model = model
        self.queries = 0
        self.simulated = 0

    def step_time_s(self, decode_tokens: int, context: int, chunks) -> float:
        self.queries += 1
        if not chunks:
            decode_tokens = max(decode_tokens, self.model.min_batch)
        answer = self.model.step_time(decode_tokens, context, chunks)
        self.simulated += answer.source == "simulated"
        return answer.seconds

    def decode_step_times_s(self, decode_tokens: int, contexts: np.ndarray) -> np.ndarray:
        """Step times of decode-only steps of ``decode_tokens`` requests at each of ``contexts``
        (one vectorized query: the simulator's macro-steps; the same answers as
        :meth:`step_time_s`)."""
        self.queries += len(contexts)
        b = max(decode_tokens, self.model.min_batch)
        answer = self.model.step_times(np.full(len(contexts), b), contexts)
        self.simulated += int(answer.simulated.sum())
        return answer.seconds


def pool_grid(pool: PoolSpec, max_context: int) -> StepGrid:
    """The step-time grid a pool needs: decode batches up to its ``max_batch`` (prefill pools: a
    token), contexts up to ``max_context`` and, for pools that run prefill chunks, mixed steps up
    to its token budget."""
    b = pool.batching
    contexts = tuple(sorted({0, *[c for c in (512, 2048, 8192, 32768, 131072, 524288) if c < max_context],
                             max(1, max_context)}))
    if pool.role == "prefill":
        batches = (1, 2)
    else:
        lo = pool.afd.micro_batches if pool.afd is not None else 1
        batches = tuple(x for x in ladder(lo, max(lo + 1, b.max_batch), 2))
    mixed = () if pool.role == "decode" else ladder(2, max(4, b.token_budget + b.max_batch), 2)
    return StepGrid(decode_batches=batches, contexts=contexts, mixed_tokens=mixed)


@dataclass
class ServeResult:
    """What :func:`serve` returns: the feasibility of every pool and, when feasible, the run.

    Attributes:
        memory: per pool, its memory and KV capacity (and reason when infeasible).
        run / summary: the simulation and its figures (``None`` when infeasible).
        step_models: per pool, where its step-time model came from (``built`` / ``loaded``) and
            its cost; ``wall_s``: the whole call.
        step_link_tx_bytes: estimated bytes of the steps' collectives per directed link over the
            run: for every replica, its step count times the link bytes of one simulated step at
            the replica's mean batch (decode tokens, context, chunk tokens of the busiest rank):
            MoE dispatch/combine and TP all-reduces on the replica's own GPUs. With
            ``run.link_tx_bytes`` (the KV transfers) it gives the run's per-link load.
        grouping: per pool with domain grouping, the ``assumed`` and ``measured`` grouping
            purity, whether the run was repeated with the measured one (``rerun``, then
            ``rerun_assumed`` and ``rerun_measured``); the result is the last run's.
    """

    deployment: Deployment
    memory: dict[str, PoolMemory]
    run: ServingRun | None = None
    summary: ServingSummary | None = None
    step_models: dict[str, dict] = field(default_factory=dict)
    wall_s: float = 0.0
    step_link_tx_bytes: np.ndarray | None = None
    grouping: dict[str, dict] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(m.feasible for m in self.memory.values())

    @property
    def reasons(self) -> list[str]:
        return [m.reason for m in self.memory.values() if m.reason]


def representative_step(dep: Deployment, pool: PoolSpec, replica: int, stats: dict):
    """The step a replica typically ran (``ServingRun.replica_steps[(pool, replica)]``): its mean
    busiest-rank decode requests at their mean context, and its mean prefill chunks (as many as
    it carried on average, of equal length, without prefix)."""
    import dataclasses

    from cosim.trace.builder import PrefillChunk

    batch = int(round(stats["decode_tokens"]))
    chunks: tuple = ()
    if stats["chunk_tokens"] >= 1:
        n = max(1, int(round(stats["chunks"])))
        per = max(1, int(round(stats["chunk_tokens"] / n)))
        chunks = tuple(PrefillChunk(0, per) for _ in range(n))
    if not chunks:
        batch = max(batch, pool.afd.micro_batches if pool.afd is not None else 1)
    return dataclasses.replace(dep.step_spec(pool, replica), batch_per_rank=batch,
                               prefix_tokens=int(round(stats["context"])), prefill_chunks=chunks)


def step_link_bytes(dep: Deployment, run: ServingRun, sim: StepSimulator) -> np.ndarray:
    """Bytes per directed link of the run's steps (see :attr:`ServeResult.step_link_tx_bytes`):
    one :func:`representative_step` simulated per replica, on the same simulator (its network
    memo)."""
    total = np.zeros(dep.topology.num_directed_links)
    pools = {p.name: p for p in dep.pools}
    for (name, index), st in run.replica_steps.items():
        spec = representative_step(dep, pools[name], index, st)
        total += st["steps"] * sim.simulate(spec).link_tx_bytes
    return total


def _cache_path(cache_dir: Path, fp: dict) -> Path:
    digest = hashlib.blake2b(json.dumps(fp, sort_keys=True).encode(), digest_size=10).hexdigest()
    return cache_dir / f"step-model-{digest}.json"


#: Models this process already loaded or built, by cache file (the file name is the digest of the
#: model's fingerprint, so a hit is the same model): a sweep serving many points reads each once.
_LOADED: dict[Path, StepTimeModel] = {}


def _pool_model(dep: Deployment, p: PoolSpec, replica: int, sim: StepSimulator, kernels, backend: str,
                grid: StepGrid, cache: Path | None, progress, label: str,
                step_cache=None) -> tuple[ModelStepTimes, dict]:
    """The step-time model of ``replica``'s placement of pool ``p``: loaded from ``cache`` when a
    saved one matches, else built (and saved)."""
    from cosim.engine.step_model import fingerprint

    base = dep.step_spec(p, replica)
    t0 = time.perf_counter()
    model = None
    path = None
    if cache is not None:
        path = _cache_path(cache, fingerprint(base, kernels, dep.topology, backend, sim.overheads, grid))
        model = _LOADED.get(path)
        if model is None and path.exists():
            try:
                model = StepTimeModel.load(path, base, kernels, dep.topology, backend, overheads=sim.overheads)
            except ConfigError:
                model = None
    how = "loaded" if model is not None else "built"
    if model is None:
        report = (lambda d, t: progress(f"step model {label}", d, t)) if progress else None
        model = StepTimeModel.build(base, sim, grid, progress=report, cache=step_cache)
        if path is not None:
            model.save(path)
    if path is not None:
        _LOADED[path] = model
    info = {"source": how, "wall_s": time.perf_counter() - t0, "replica": replica,
            "grid_points": len(grid.decode_batches) * len(grid.contexts) + len(grid.mixed_tokens),
            "path": str(path) if path else None}
    return ModelStepTimes(model), info


def serve(dep: Deployment, requests: Requests, *, slo=None, options: ServingOptions = ServingOptions(),
          backend: str = "flow", cache_dir: str | Path | None = None, link_load: bool = True,
          kernels=None, step_times: dict | None = None, steps: str = "model",
          grid: Callable[[PoolSpec, int], StepGrid] | None = None,
          progress: Callable[[str, int, int], None] | None = None, macro_steps: bool | None = None,
          step_cache=None) -> ServeResult:
    """Serve ``requests`` with ``dep`` (see the module docstring); ``slo`` (``ttft_s``,
    ``tpot_s``) adds SLO attainment to the summary; ``link_load`` estimates the steps' traffic per
    link over the run (one step simulated per replica); ``kernels``: the kernel tables to use
    (default: the deployment's system and framework); ``step_times``: per pool, a step-time
    source of the simulator's ``StepTimes`` protocol to use instead of building a
    :class:`StepTimeModel`; ``steps``: ``model`` (a :class:`StepTimeModel` per pool and placement,
    interpolated) or ``exact`` (:class:`~cosim.engine.memo.MemoStepTimes`: every distinct step
    simulated, slower); ``grid(pool, max_context)``: the step-time grid of a pool (default
    :func:`pool_grid`; a sweep passes one sized to its whole space so that points differing only
    in batch limits share models); ``progress(stage, done, total)``; ``macro_steps``: overrides
    ``options.macro_steps`` (``False``: every decode step is an event of its own); ``step_cache``:
    a :class:`~cosim.engine.step_model.StepCache` the step-time models it builds share their
    simulated steps through (a sweep passes one for all its points). Pools with
    domain grouping may run twice (module docstring, ``ServeResult.grouping``)."""
    import dataclasses

    from cosim.serving.deployment import with_pool

    kw = dict(slo=slo, options=options, backend=backend, cache_dir=cache_dir, link_load=link_load, kernels=kernels,
              step_times=step_times, steps=steps, grid=grid, progress=progress, macro_steps=macro_steps,
              step_cache=step_cache)
    wall0 = time.perf_counter()
    result = _serve_once(dep, requests, **kw)
    grouped = [p for p in dep.pools if p.routing is not None and p.routing.grouping
               and not (step_times and p.name in step_times)]
    if result.run is None or not grouped:
        return result
    info, changed = {}, dep
    for p in grouped:
        measured = result.run.grouping_purity("prefill" if p.role == "prefill" else "decode")
        info[p.name] = {"assumed": p.routing.grouping_purity, "measured": measured, "rerun": False}
        if measured == measured and abs(measured - p.routing.grouping_purity) > PURITY_TOLERANCE:
            purity = min(1.0, max(0.0, round(measured, 2)))
            changed = with_pool(changed, p.name, routing=dataclasses.replace(p.routing, grouping_purity=purity))
            info[p.name].update(rerun=True, rerun_assumed=purity)
    if changed is not dep:
        result = _serve_once(changed, requests, **kw)
        for name, d in info.items():
            if d["rerun"]:
                role = next(p.role for p in changed.pools if p.name == name)
                d["rerun_measured"] = result.run.grouping_purity("prefill" if role == "prefill" else "decode")
    result.grouping = info
    result.wall_s = time.perf_counter() - wall0
    return result


def _serve_once(dep: Deployment, requests: Requests, *, slo, options: ServingOptions, backend: str, cache_dir,
                link_load: bool, kernels, step_times: dict | None, steps: str, grid, progress,
                macro_steps: bool | None, step_cache) -> ServeResult:
    if steps not in ("model", "exact"):
        raise ConfigError("<api>", "steps", f"expected 'model' or 'exact', got {steps!r}")
    from cosim.kernels import KernelTables
    from cosim.network.live import LiveNetwork

    wall0 = time.perf_counter()
    if macro_steps is not None:
        import dataclasses

        options = dataclasses.replace(options, macro_steps=bool(macro_steps))
    kernels = kernels if kernels is not None else KernelTables.load(dep.system, framework=dep.framework)
    hbm = kernels.system.mem_capacity_bytes
    memory = {p.name: pool_memory(dep, p, hbm) for p in dep.pools}
    result = ServeResult(dep, memory)
    if not result.feasible:
        result.wall_s = time.perf_counter() - wall0
        return result
    max_context = int(np.max(requests.prefix_tokens + requests.input_tokens + requests.output_tokens))
    sim = StepSimulator(kernels, dep.topology, backend)
    cache = Path(cache_dir) if cache_dir is not None else None
    given = dict(step_times or {})
    step_times = {}
    router = Router(dep.topology)
    placement = dep.placement()
    labels: dict[int, str] = {}
    for p in dep.pools:
        if p.name in given:
            step_times[p.name] = given[p.name]
            result.step_models[p.name] = {"source": "given", "wall_s": 0.0}
            continue
        # one model per distinct placement (cosim.topology.placement): replica 0's serves the pool,
        # another class's serves its replicas, keyed (pool, replica)
        classes: dict[str, int] = {}
        for i, gpus in enumerate(placement[p.name]):
            first = classes.setdefault(placement_signature(dep.topology, gpus, router), i)
            if first == i:
                label = p.name if i == 0 else f"{p.name}[replica {i}]"
                if steps == "exact":
                    model, info = MemoStepTimes(sim, dep.step_spec(p, i)), {"source": "exact", "wall_s": 0.0,
                                                                           "replica": i}
                else:
                    model, info = _pool_model(dep, p, i, sim, kernels, backend, (grid or pool_grid)(p, max_context),
                                              cache, progress, label, step_cache)
                step_times[p.name if i == 0 else (p.name, i)] = model
                labels[id(model)] = label
                result.step_models[label] = info
            elif first != 0:
                step_times[(p.name, i)] = step_times[(p.name, first)]
    network = LiveNetwork(dep.topology) if dep.pools[0].role != "mixed" else None
    kv_bytes = {p.name: memory[p.name].kv_bytes_per_token for p in dep.pools}
    report = (lambda d, t: progress("requests", d, t)) if progress else None
    run = simulate_serving(dep, requests, step_times, kv_capacity_tokens={k: m.kv_capacity_tokens
                                                                          for k, m in memory.items()},
                           kv_bytes_per_token=kv_bytes, network=network, options=options, progress=report)
    result.run = run
    result.summary = summarize(run, slo)
    if link_load:
        result.step_link_tx_bytes = step_link_bytes(dep, run, sim)
    for st in step_times.values():
        if isinstance(st, ModelStepTimes):
            result.step_models[labels[id(st)]].update(queries=st.queries, simulated_answers=st.simulated)
        elif isinstance(st, MemoStepTimes):
            result.step_models[labels[id(st)]].update(queries=st.queries, simulated_answers=st.queries,
                                                      simulations=st.simulations, wall_s=st.simulate_wall_s)
    result.wall_s = time.perf_counter() - wall0
    return result

