"""Step co-simulation: trace -> network simulations of its collectives -> schedule -> step time.

:func:`simulate_step` builds the step's trace (:mod:`cosim.trace.builder`), simulates every
distinct collective on the chosen network backend (memoized by traffic shape, placement,
topology and backend, so the 58 identical MoE layers of DeepSeek-V3 cost one simulation each
for dispatch and combine), adds each library's fixed overhead (:mod:`cosim.engine.overheads`),
and schedules the per-rank DAGs on compute and communication streams
(:mod:`cosim.engine.schedule`). Collectives of disjoint rank groups that overlap in time are then
re-simulated together, so congestion between concurrent collectives is real, and the schedule is
recomputed until the durations settle.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from cosim.engine.overheads import DEFAULT_OVERHEADS, CommOverheads, custom_allreduce_choice, remote_fraction
from cosim.engine.schedule import Schedule, schedule
from cosim.errors import ConfigError
from cosim.models.memory import StepMemory, kv_cache_bytes_per_request, step_memory
from cosim.trace.afd import afd_memory
from cosim.network import FlowSet, simulate_many
from cosim.network import deepep as D
from cosim.network.libraries import BuildOptions, add_call_flows, get_library
from cosim.topology import Router, RoutingPolicy, Topology
from cosim.trace.builder import StepSpec, build_step_trace
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode, StepTrace


def add_collective_flows(fs: FlowSet, spec: CollectiveSpec, earliest_start_s: float = 0.0,
                         gpus_per_node: int | None = None, algorithm: str | None = None) -> list[int]:
    """Append the flows of ``spec`` to ``fs`` through its communication library
    (:func:`cosim.network.libraries.add_call_flows`), starting ``earliest_start_s`` after time 0,
    with nodes of ``gpus_per_node`` GPUs (the topology's; ``None``: DeepEP's 8) and the
    library's ``algorithm`` (``None``: its default); return the flows that end it."""
    after = [fs.barrier([], gpu=spec.ranks[0], tag=f"{spec.name}:start")] if earliest_start_s > 0 else []
    if after:
        fs.earliest_start_s[after[0]] = earliest_start_s
    opts = BuildOptions(gpus_per_node or D.DEFAULT_GPUS_PER_NODE, algorithm)
    return add_call_flows(fs, spec.call(), after=after, tag=spec.name, opts=opts)


@dataclass
class _NetworkRun:
    """Outcome of one network simulation of one or more concurrent collectives."""

    network_s: dict[int, float]      # position in the batch -> time from its start to its end
    tx_bytes: np.ndarray
    peak_queue_bytes: np.ndarray
    wall_s: float
    gpu_bytes: dict[int, float] = field(default_factory=dict)  # position -> most bytes one GPU emits


class CollectiveNetwork:
    """Simulates collectives on a topology with one backend, memoizing by traffic shape.

    Each library says how its traffic is routed (:attr:`CommLibrary.cross_rail`): DeepEP
    low-latency traffic leaves each GPU through its own NIC (``direct``); everything else follows
    the topology's routing policy (PXN on rail-optimized fabrics).

    :meth:`prefetch` simulates several not-yet-memoized batches at once, on up to ``workers``
    threads (default: the CPUs of the process) when the backend allows it
    (:data:`cosim.network.backends.CONCURRENT_BACKENDS`); every simulation is its own, so the
    results are those of one :meth:`run` after the other.

    Attributes:
        simulations: backend runs (memo misses); ``wall_s`` the wall time spent in them
            (concurrent runs counted once).
        lookups / hits: :meth:`run` calls, and those answered by an earlier simulation (a
            batch :meth:`prefetch` simulated counts as a miss at its first lookup).
    """

    def __init__(self, topology: Topology, backend: str, workers: int | None = None):
        self.topology = topology
        self.backend = backend
        self.workers = workers
        self._routers = {
            "topology": Router(topology),
            "direct": Router(dataclasses.replace(topology, routing=RoutingPolicy(topology.routing.ecmp, "direct"))),
        }
        self._memo: dict[tuple, _NetworkRun] = {}
        self._prefetched: set[tuple] = set()  # simulated by prefetch, not looked up yet
        self._algorithms: dict[tuple, str] = {}
        self._gpus_per_node: int | None = None
        self.simulations = 0
        self.wall_s = 0.0
        self.lookups = 0
        self.hits = 0

    @property
    def gpus_per_node(self) -> int:
        """GPUs per node (scale-up domain) of the topology (DeepEP traffic, NCCL rings)."""
        if self._gpus_per_node is None:
            self._gpus_per_node = D.topology_gpus_per_node(self.topology)
        return self._gpus_per_node

    def _build_gpus_per_node(self) -> int | None:
        """The topology's GPUs per node, or ``None`` (DeepEP's 8) when it has no node structure."""
        try:
            return self.gpus_per_node
        except ConfigError:
            return None

    def remote_fraction(self, spec: CollectiveSpec) -> float:
        """Mean share of a member's peers on other nodes (libraries with cross-node overhead
        terms, DeepEP; 0 for the others)."""
        if not get_library(spec.library).cross_node_terms or len(spec.ranks) < 2:
            return 0.0
        return remote_fraction(D.group_nodes(spec.ranks, self.gpus_per_node))

    def choose_algorithm(self, spec: CollectiveSpec, overheads: CommOverheads) -> str | None:
        """For a custom all-reduce, the algorithm (one-shot / two-shot) with the shorter predicted
        duration, each simulated alone (memoized by traffic shape); ``None`` for other collectives.
        Later :meth:`run` calls build the chosen algorithm's flows."""
        lib = get_library(spec.library)
        if not (lib.choose_fastest_algorithm and len(spec.ranks) > 1):
            return None
        key = spec.shape_key()
        if key not in self._algorithms:
            times = {a: self.run([spec], [0.0], [a]).network_s[0] for a in lib.algorithms}
            self._algorithms[key] = custom_allreduce_choice(overheads, times, spec.library)
        return self._algorithms[key]

    def run(self, specs: list[CollectiveSpec], offsets_s: list[float],
            algorithms: list[str | None] | None = None) -> _NetworkRun:
        """Simulate ``specs`` together, each starting ``offsets_s`` after the first; custom
        all-reduces use ``algorithms`` (default: the ones :meth:`choose_algorithm` chose)."""
        algorithms = self._chosen(specs, algorithms)
        key = self._key(specs, algorithms, offsets_s)
        self.lookups += 1
        hit = self._memo.get(key)
        if hit is not None:
            if key in self._prefetched:
                self._prefetched.discard(key)  # simulated for this lookup
            else:
                self.hits += 1
            return hit
        self._simulate({key: (specs, algorithms, offsets_s)})
        return self._memo[key]

    def prefetch(self, batches: list[tuple[list[CollectiveSpec], list[float]]]) -> None:
        """Simulate every batch ``(specs, offsets_s)`` of ``batches`` not in the memo yet (with
        the algorithms :meth:`choose_algorithm` chose), concurrently when the backend allows;
        later :meth:`run` calls of these batches answer from the memo."""
        todo: dict[tuple, tuple] = {}
        for specs, offsets_s in batches:
            algorithms = self._chosen(specs, None)
            key = self._key(specs, algorithms, offsets_s)
            if key not in self._memo:
                todo[key] = (specs, algorithms, offsets_s)
        if todo:
            self._simulate(todo)
            self._prefetched.update(todo)

    def _chosen(self, specs: list[CollectiveSpec], algorithms: list[str | None] | None) -> list[str | None]:
        return [self._algorithms.get(s.shape_key()) for s in specs] if algorithms is None else algorithms

    @staticmethod
    def _key(specs, algorithms, offsets_s) -> tuple:
        return tuple((s.shape_key(), a, round(o * 1e9)) for s, a, o in zip(specs, algorithms, offsets_s))

    def _simulate(self, todo: dict[tuple, tuple]) -> None:
        """Build, simulate (together, :func:`cosim.network.simulate_many`) and memoize ``todo``."""
        g = self._build_gpus_per_node()
        built = []
        for specs, algorithms, offsets_s in todo.values():
            routing = "direct" if all(get_library(s.library).cross_rail == "direct" for s in specs) else "topology"
            fs = FlowSet()
            ends, gpu_bytes = [], {}
            for i, (s, a, o) in enumerate(zip(specs, algorithms, offsets_s)):
                first = len(fs)
                ends.append(add_collective_flows(fs, s, o, g, a))
                gpu_bytes[i] = D.gpu_bytes_sent(fs, range(first, len(fs)))
            built.append((fs, self._routers[routing], ends, gpu_bytes, offsets_s))
        t0 = time.perf_counter()
        results = simulate_many(self.topology, [b[0] for b in built], self.backend,
                                routers=[b[1] for b in built], workers=self.workers)
        self.wall_s += time.perf_counter() - t0
        self.simulations += len(built)
        for key, (_, _, ends, gpu_bytes, offsets_s), result in zip(todo, built, results):
            self._memo[key] = _NetworkRun(
                network_s={i: (result.finish_s(e) - o if e else 0.0) for i, (e, o) in enumerate(zip(ends, offsets_s))},
                tx_bytes=result.links.tx_bytes.astype(np.float64),
                peak_queue_bytes=np.nan_to_num(result.links.peak_queue_bytes, nan=0.0),
                wall_s=result.wall_s + result.stats.get("route_s", 0.0), gpu_bytes=gpu_bytes)


@dataclass(frozen=True)
class GroupResult:
    """One group of ranks of a step (AFD: ``attention``, ``ffn``; otherwise ``all``), on its
    slowest rank.

    Attributes:
        ranks: step ranks of the group; ``critical_rank`` the one that finishes last.
        busy_s: compute-stream busy time of that rank; ``idle_s`` = step time - busy (bubbles).
        compute_by_class_s / comm_by_collective_s / exposed_comm_by_collective_s: as in
            :class:`StepResult`, on that rank (``a2f``, ``f2a``, ``dispatch`` ...).
        memory: weights, KV cache and buffers per GPU of the group (``None`` for a bare trace).
    """

    ranks: tuple[int, ...]
    critical_rank: int
    busy_s: float
    idle_s: float
    compute_by_class_s: dict[str, float]
    comm_by_collective_s: dict[str, float]
    exposed_comm_by_collective_s: dict[str, float]
    memory: StepMemory | None = None


@dataclass
class StepResult:
    """Step time and where it goes.

    Attributes:
        step_time_s: time from the first op to the last, over all ranks.
        compute_by_class_s: busy compute time per op class on the critical (slowest) rank.
        comm_by_collective_s: time spent in each collective type on that rank (dispatch, combine ...).
        exposed_comm_by_collective_s: part of it during which the compute stream was idle.
        overlap_fraction: 1 - exposed / total communication time on that rank.
        duration_sources: count of compute durations per source (measured, interpolated, roofline).
        link_tx_bytes / link_peak_queue_bytes: per directed link over the whole step.
        network_simulations / network_wall_s / wall_s: cost of the run.
        memory: weights, KV cache and activations on the most loaded GPU and its capacity
            (:func:`simulate_step` only; ``None`` for a bare trace).
        groups: per group of ranks (AFD: ``attention`` and ``ffn``), busy and idle time,
            communication and its exposed part, memory per GPU.
        tokens_per_step: output tokens the step produces over all its GPUs (decode requests; a
            mixed step adds one per prefill chunk; MTP drafts not counted: multiply by the mean
            accepted length).
    """

    spec: StepSpec | None
    trace: StepTrace
    schedule: Schedule
    collective_duration_s: np.ndarray
    critical_rank: int
    compute_by_class_s: dict[str, float]
    comm_by_collective_s: dict[str, float]
    exposed_comm_by_collective_s: dict[str, float]
    overlap_fraction: float
    duration_sources: dict[str, int]
    link_tx_bytes: np.ndarray
    link_peak_queue_bytes: np.ndarray
    network_simulations: int
    network_wall_s: float
    congestion_iterations: int
    wall_s: float = 0.0
    topology: Topology | None = None
    backend: str = ""
    extra: dict = field(default_factory=dict)
    memory: StepMemory | None = None
    groups: dict[str, GroupResult] = field(default_factory=dict)
    tokens_per_step: int = 0
    collective_link_bytes: list = field(default_factory=list, repr=False)

    @property
    def step_time_s(self) -> float:
        return self.schedule.step_time_s

    @property
    def num_gpus(self) -> int:
        return len(self.trace.ranks)

    @property
    def tokens_per_s_per_gpu(self) -> float:
        """Output tokens per second per GPU of the step's GPUs (every group counted)."""
        return self.tokens_per_step / max(self.step_time_s, 1e-30) / self.num_gpus

    def compute_per_rank_s(self, op_class: str) -> np.ndarray:
        """Busy time of ``op_class`` (e.g. ``moe_experts``) on every rank of the trace, in rank
        order: where per-rank expert load makes stragglers."""
        return np.array([sum(n.duration_s for n in rt.nodes if isinstance(n, ComputeNode) and n.op_class == op_class)
                         for rt in self.trace.ranks])

    def expert_imbalance(self) -> tuple[float, int | None, int]:
        """Routed-expert load across the ranks that run the same MoE layer: the mean over MoE
        layers (and micro-batches) of ``max / mean`` of the ranks' expert time, the rank that is
        slowest most often, and how many layers it is slowest in. ``(1.0, None, 0)`` without
        MoE layers."""
        per_layer: dict[tuple[int, int], list[tuple[float, int]]] = defaultdict(list)
        for rt in self.trace.ranks:
            for n in rt.nodes:
                if isinstance(n, ComputeNode) and n.op_class == "moe_experts":
                    per_layer[(n.layer, n.microbatch)].append((n.duration_s, rt.rank))
        if not per_layer:
            return 1.0, None, 0
        ratios, slowest = [], defaultdict(int)
        for entries in per_layer.values():
            times = np.array([t for t, _ in entries])
            ratios.append(times.max() / times.mean() if times.mean() > 0 else 1.0)
            slowest[max(entries)[1]] += 1
        hot = max(slowest, key=slowest.get)
        return float(np.mean(ratios)), hot, slowest[hot]

    def expert_time_per_rank(self) -> dict[int, tuple[float, float]]:
        """Per rank running routed experts, its mean and its largest routed-expert time over the
        MoE layers (and micro-batches): the per-rank expert load behind
        :meth:`expert_imbalance`."""
        out: dict[int, list[float]] = defaultdict(list)
        for rt in self.trace.ranks:
            for n in rt.nodes:
                if isinstance(n, ComputeNode) and n.op_class == "moe_experts":
                    out[rt.rank].append(n.duration_s)
        return {r: (float(np.mean(v)), float(np.max(v))) for r, v in sorted(out.items())}

    def link_utilization(self) -> np.ndarray:
        """Mean utilization of every directed link over the step."""
        bw = self.topology.directed_bandwidth_bps
        return self.link_tx_bytes * 8.0 / bw / max(self.step_time_s, 1e-30)

    def link_series(self, num_bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Bytes per directed link per time bin over the step: ``(edges_s, bytes)`` with
        ``num_bins + 1`` edges from 0 to the step time and ``bytes`` of shape links x bins. Each
        collective's link bytes (its own network simulation) are spread evenly over its
        scheduled interval, so a bin shows which collectives were on the wire then; the sum over
        bins is :attr:`link_tx_bytes`. Utilization: ``bytes * 8 / (bandwidth x bin width)``."""
        if not isinstance(num_bins, int) or num_bins < 1:
            raise ConfigError("<api>", "num_bins", f"expected an integer >= 1, got {num_bins!r}")
        edges = np.linspace(0.0, max(self.step_time_s, 1e-30), num_bins + 1)
        out = np.zeros((len(self.link_tx_bytes), num_bins))
        starts, finishes = self.schedule.collective_start_s, self.schedule.collective_finish_s
        for c, link_bytes in enumerate(self.collective_link_bytes):
            nz = np.flatnonzero(link_bytes)
            if not nz.size:
                continue
            s, f = float(starts[c]), float(finishes[c])
            if f > s:
                w = np.clip(np.minimum(edges[1:], f) - np.maximum(edges[:-1], s), 0.0, None) / (f - s)
            else:
                w = np.zeros(num_bins)
                w[min(int(np.searchsorted(edges, s, side="right")) - 1, num_bins - 1)] = 1.0
            out[nz] += np.outer(link_bytes[nz], w)
        return edges, out


def collective_duration_s(overheads: CommOverheads, spec: CollectiveSpec, network_s: float,
                          gpu_bytes: float | None = None, remote_fraction: float = 0.0, op: str | None = None) -> float:
    """Network time plus the library's overhead model, keyed by library and operation
    (``deepep_ll.dispatch``, ``nccl.all_reduce`` ...), the most bytes one GPU emits
    (``gpu_bytes``: over the collective's flows, forwarded bytes included, as in the validation;
    default: the largest row sum of the bytes matrix) and the share of peers on other nodes
    (``remote_fraction``, for the cross-node terms); ``op`` overrides the operation (a custom
    all-reduce's algorithm)."""
    if gpu_bytes is None:
        m = spec.bytes_matrix
        gpu_bytes = float(m.sum(axis=1).max()) if m.shape[0] > 1 else float(m.sum())
    return overheads.duration_s(spec.library, network_s, op=op or spec.op, gpu_bytes=gpu_bytes,
                                remote_fraction=remote_fraction)


def check_gpus(topology: Topology, gpus, what: str = "gpus") -> None:
    """ConfigError unless every GPU of ``gpus`` exists in ``topology`` (named with its range)."""
    bad = [g for g in gpus if not 0 <= g < topology.num_gpus]
    if bad:
        raise ConfigError(topology.source, what, f"GPU rank {bad[0]} does not exist: topology {topology.name!r} "
                                                 f"has GPUs 0..{topology.num_gpus - 1}")


def simulate_step(spec: StepSpec, kernels, topology: Topology, backend: str = "flow", *,
                  overheads: CommOverheads = DEFAULT_OVERHEADS, max_congestion_iterations: int = 3,
                  network: CollectiveNetwork | None = None) -> StepResult:
    """Co-simulate one step: build its trace from ``spec`` and ``kernels``, then
    :func:`simulate_trace` (``network``: a :class:`CollectiveNetwork` of the same topology and
    backend whose memo is reused across steps; default a fresh one)."""
    wall0 = time.perf_counter()
    if spec.num_gpus > topology.num_gpus:
        raise ConfigError(topology.source, "nodes", f"the deployment needs {spec.num_gpus} GPUs, "
                                                    f"topology {topology.name!r} has {topology.num_gpus}")
    check_gpus(topology, spec.gpu_ranks, "gpus")
    try:
        g = D.topology_gpus_per_node(topology)
    except ConfigError:  # no usable node structure: fine unless DeepEP traffic needs it (checked later)
        g = spec.gpus_per_node
    if spec.gpus_per_node is None:
        spec = dataclasses.replace(spec, gpus_per_node=g)
    elif spec.gpus_per_node != g:
        raise ConfigError(topology.source, "nodes", f"the step assumes {spec.gpus_per_node} GPUs per node, "
                                                    f"topology {topology.name!r} has {g}")
    trace = build_step_trace(spec, kernels)
    result = simulate_trace(trace, topology, backend, overheads=overheads,
                            max_congestion_iterations=max_congestion_iterations, network=network)
    result.spec = spec
    system = getattr(kernels, "system", None)
    per_group = layout_memory(spec, getattr(system, "mem_capacity_bytes", None))
    result.memory = max(per_group.values(), key=lambda m: m.total_bytes)
    result.groups = {name: dataclasses.replace(g, memory=per_group.get(name, result.memory))
                     for name, g in result.groups.items()}
    result.tokens_per_step = tokens_per_step(spec)
    result.wall_s = time.perf_counter() - wall0
    return result


def tokens_per_step(spec: StepSpec) -> int:
    """Output tokens of one step over all its GPUs: one per decode request (and per prefill
    chunk of a mixed step); a prefill step's requests each produce their first token."""
    if spec.afd is not None:
        return spec.afd.instances * spec.batch_per_rank
    par = spec.parallel
    per_rank = spec.batch_per_rank + len(spec.prefill_chunks)
    return per_rank * par.attention_dp


def layout_memory(spec: StepSpec, capacity_bytes: float | None) -> dict[str, StepMemory]:
    """Memory per GPU of every group of the step's layout (colocated: ``all``; AFD: ``attention``
    and ``ffn``)."""
    if spec.afd is not None:
        return afd_memory(spec, capacity_bytes)
    model, par, prec = spec.model, spec.parallel, spec.precision
    if spec.batch_per_rank:
        mem = step_memory(model, par, prec, spec.phase, spec.batch_per_rank * (1 + spec.mtp_tokens), spec.new_tokens,
                          spec.prefix_tokens, capacity_bytes, redundant_experts=spec.redundant_experts)
        if spec.mtp_tokens:  # the KV cache holds batch_per_rank requests, not their verify tokens
            mem = dataclasses.replace(mem, kv_cache_bytes=mem.kv_cache_bytes / (1 + spec.mtp_tokens))
    else:
        c = spec.prefill_chunks[0]
        mem = step_memory(model, par, prec, "context", 1, c.new_tokens, c.prefix_tokens, capacity_bytes,
                          redundant_experts=spec.redundant_experts)
        mem = dataclasses.replace(mem, kv_cache_bytes=0.0)
    chunk_kv = sum(kv_cache_bytes_per_request(model, par, prec, c.prefix_tokens + c.new_tokens)
                   for c in spec.prefill_chunks)
    return {"all": dataclasses.replace(mem, kv_cache_bytes=mem.kv_cache_bytes + chunk_kv)}


def simulate_trace(trace: StepTrace, topology: Topology, backend: str = "flow", *,
                   overheads: CommOverheads = DEFAULT_OVERHEADS, max_congestion_iterations: int = 3,
                   network: CollectiveNetwork | None = None) -> StepResult:
    """Schedule a step trace with network-simulated collectives (see the module docstring).

    Step rank ``r`` of the trace runs on topology GPU ``trace.gpu_of(r)``. Works on traces built
    by :func:`build_step_trace` or read back with :func:`cosim.trace.serialize.read_step_trace`.
    """
    wall0 = time.perf_counter()
    if not trace.ranks:
        raise ConfigError("<trace>", "ranks", "the trace has no ranks: nothing to schedule")
    check_gpus(topology, [trace.gpu_of(r) for r in range(len(trace.ranks))], "trace")
    if network is not None and (network.topology is not topology or network.backend != backend):
        raise ConfigError("<api>", "network", "the CollectiveNetwork belongs to another topology or backend")
    net = network or CollectiveNetwork(topology, backend)
    overheads = overheads.for_topology(topology)  # the constants on this topology's GPUs (their NVLink rate)
    sims0, wall_net0 = net.simulations, net.wall_s
    colls = [c if trace.gpus is None else dataclasses.replace(c, ranks=tuple(trace.gpus[r] for r in c.ranks))
             for c in trace.collectives]  # on topology GPUs
    algorithms = [net.choose_algorithm(c, overheads) for c in colls]
    net.prefetch([([c], [0.0]) for c in colls])
    alone = [net.run([c], [0.0]) for c in colls]
    remote = [net.remote_fraction(c) for c in colls]
    durations = np.array([collective_duration_s(overheads, c, a.network_s[0], a.gpu_bytes[0], rf, alg)
                          for c, a, rf, alg in zip(colls, alone, remote, algorithms)])
    sched = schedule(trace, lambda cid: float(durations[cid]))
    iterations = 0
    for iterations in range(1, max_congestion_iterations + 1):
        updated = durations.copy()
        batches = []
        for cluster in _concurrent_clusters(colls, sched):
            t0 = min(sched.collective_start_s[c] for c in cluster)
            batches.append((cluster, [colls[c] for c in cluster], [sched.collective_start_s[c] - t0 for c in cluster]))
        net.prefetch([(specs, offsets) for _, specs, offsets in batches])
        for cluster, specs, offsets in batches:
            run = net.run(specs, offsets)
            for i, c in enumerate(cluster):
                updated[c] = collective_duration_s(overheads, colls[c], run.network_s[i], alone[c].gpu_bytes[0],
                                                   remote[c], algorithms[c])
        if np.allclose(updated, durations, rtol=1e-3, atol=1e-9):
            break
        durations = updated
        sched = schedule(trace, lambda cid: float(durations[cid]))
    # Link bytes do not depend on timing: add every collective's own simulation.
    tx = np.zeros(topology.num_directed_links)
    peak = np.zeros(topology.num_directed_links)
    per_collective = []  # the memoized arrays themselves: no copy per collective
    for c in colls:
        run = net.run([c], [0.0])
        tx += run.tx_bytes
        peak = np.maximum(peak, run.peak_queue_bytes)
        per_collective.append(run.tx_bytes)
    ends = [float(np.nanmax(f)) if len(f) else 0.0 for f in sched.node_finish_s]
    critical = int(np.argmax(ends))
    compute, comm, exposed, overlap = _breakdown(trace, sched, critical)
    groups = {}
    for name, members in trace.rank_groups().items():
        r = max(members, key=lambda m: ends[m])
        g_compute, g_comm, g_exposed, _ = _breakdown(trace, sched, r)
        busy = sum(g_compute.values())
        groups[name] = GroupResult(tuple(members), r, busy, max(0.0, sched.step_time_s - busy), g_compute, g_comm,
                                   g_exposed)
    sources: dict[str, int] = defaultdict(int)
    for node in trace.ranks[critical].nodes:
        if isinstance(node, ComputeNode):
            sources[node.source] += 1
    return StepResult(None, trace, sched, durations, critical, compute, comm, exposed, overlap, dict(sources),
                      tx, peak, net.simulations - sims0, net.wall_s - wall_net0, iterations, time.perf_counter() - wall0,
                      topology, backend, groups=groups, collective_link_bytes=per_collective)


def _concurrent_clusters(colls: list[CollectiveSpec], sched: Schedule) -> list[list[int]]:
    """Groups of collectives whose time intervals overlap (connected components, sweep line)."""
    order = sorted(range(len(colls)), key=lambda c: sched.collective_start_s[c])
    clusters, current, end = [], [], -np.inf
    for c in order:
        s, f = sched.collective_start_s[c], sched.collective_finish_s[c]
        if current and s < end - 1e-12:
            current.append(c)
            end = max(end, f)
        else:
            if len(current) > 1:
                clusters.append(current)
            current, end = [c], f
    if len(current) > 1:
        clusters.append(current)
    return clusters


def _collective_label(name: str) -> str:
    return name.rsplit(".", 1)[-1] if not name.startswith("pp") else "pipeline_send"


def _covered(merged: list[list[float]], a: float, b: float, first: int) -> float:
    """Time of ``[a, b]`` covered by the sorted disjoint busy intervals ``merged`` (from index
    ``first``, whose intervals end after ``a``)."""
    total = 0.0
    for s, f in merged[first:]:
        if s >= b:
            break
        total += max(0.0, min(f, b) - max(s, a))
    return total


def _breakdown(trace: StepTrace, sched: Schedule, rank: int):
    """Compute per class, communication per collective type, and its exposed part, on ``rank``."""
    nodes = trace.ranks[rank].nodes
    start, finish = sched.node_start_s[rank], sched.node_finish_s[rank]
    compute: dict[str, float] = defaultdict(float)
    busy = []
    for n in nodes:
        if isinstance(n, ComputeNode):
            compute[n.op_class] += n.duration_s
            busy.append((start[n.id], finish[n.id]))
    busy.sort()
    merged: list[list[float]] = []
    for s, f in busy:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], f)
        else:
            merged.append([s, f])
    comm: dict[str, float] = defaultdict(float)
    exposed: dict[str, float] = defaultdict(float)
    # Exposed time: instants with communication in flight and the compute stream idle. Where
    # several communication streams are active at once (AFD: A2F and F2A), the instant is shared
    # equally among them, so the exposed parts add up to the rank's waiting time.
    events: list[tuple[float, int, str]] = []
    for n in nodes:
        if isinstance(n, CommNode):
            s, f = start[n.id], finish[n.id]
            label = _collective_label(n.name)
            comm[label] += f - s
            if f > s:
                events += [(s, 1, label), (f, -1, label)]
    events.sort(key=lambda e: (e[0], e[1]))
    active: dict[str, int] = defaultdict(int)
    busy_i, prev = 0, None
    for t, step, label in events:
        if prev is not None and t > prev and any(active.values()):
            idle = (t - prev) - _covered(merged, prev, t, busy_i)
            if idle > 0:
                n_active = sum(active.values())
                for name, count in active.items():
                    if count:
                        exposed[name] += idle * count / n_active
        while busy_i < len(merged) and merged[busy_i][1] <= t:
            busy_i += 1
        active[label] += step
        prev = t
    total = sum(comm.values())
    overlap = 1.0 - sum(exposed.values()) / total if total > 0 else 0.0
    return dict(compute), dict(comm), dict(exposed), overlap
