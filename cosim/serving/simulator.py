"""Discrete-event simulation of requests served by a deployment.

Requests arrive (open loop: their timestamps; closed loop: each of N users sends its next request
when the previous one finishes), are routed to a replica of a ``mixed`` or ``prefill`` pool and
inside it to an attention rank (the router, :data:`ROUTERS`: least KV in use by default), looked
up in the rank's prefix cache, and queued for prefill. Every replica steps in lock-step over its attention ranks (their MoE layers
synchronize them): when idle with work, each rank's batching policy picks its decodes and prefill
chunks, and the step lasts what the pool's step-time source says for the busiest rank's batch
(decode tokens, their mean context, its chunks). At the end of a step decodes emit tokens
(``1 + mtp_tokens x mtp_acceptance`` per step on average), finished prefills emit their first
token (mixed pools) or hand the request over to the decode pool (P/D), and finished requests free
their KV cache.

**P/D.** A request whose prefill finished needs a decode rank with free KV capacity for its whole
context (admission waits otherwise); then its KV cache (the model's KV bytes per token on one
attention GPU x the prefill's tokens) moves from the prefill rank's GPU to the decode rank's GPU
**through the network** (:class:`cosim.network.live.LiveNetwork`: transfers in flight share
links max-min), one flow per attention-TP shard. With a decode-side prefix cache
(``ServingOptions.decode_prefix_cache_fraction > 0``: Mooncake-style reuse) only the tokens the
decode rank lacks move: a shared prefix the decode rank holds (LRU, as on the prefill side) and a
request's own resident prefix stay. The decode side streams the first token when the
KV has arrived (``ttft="decode_first_token"``, as SGLang, Dynamo and TensorRT-LLM do), or the
clock stops at prefill end (``ttft="prefill_end"``).

**Routers** (:data:`ROUTERS`, ``ServingOptions.router``): ``least_loaded`` (the attention rank
with the least KV in use or queued, over all replicas), ``round_robin`` (replicas in turn, the
least loaded rank inside), ``domain`` (workload-aware grouping: a request goes to the least loaded
of the ranks whose home domain is its own, :func:`cosim.trace.placement.rank_domains` over the
ranks' nodes, unless that rank would then hold more than ``(1 + domain_slack)`` x the mean load of
the candidate ranks plus the request's own tokens, the bound on imbalance; then to the least
loaded rank of all). In P/D the decode rank is chosen by
the same router among the ranks with room (equal loads: fewer running requests first). The run records, per request, whether its prefill and its
decode ran on a rank of its domain (``ServingRun.prefill_home`` / ``decode_home``): the grouping
purity a step-time model with domain grouping assumes (``StepRouting.grouping_purity``).

**KV capacity and preemption.** Each attention rank holds ``kv_capacity_tokens`` (from the pool's
memory, :func:`cosim.serving.deployment.pool_memory`). A request is admitted to prefill when its
prompt fits; decodes grow it a token at a time; when a step would overflow, the most recently
admitted running request is preempted (its KV freed, back to the queue head, prefilled again).
The prefix cache of a rank holds reused prefixes in a share of the capacity (LRU).

**Macro-steps** (``ServingOptions.macro_steps``, default on). A long decode phase is ~10^5 steps
of the same batch. When a replica's next step carries decodes only (no prefill chunk on any
rank), its batch stays the same until a request completes, a rank would preempt, or an event
changes it; the replica then advances ``k`` steps in one event: their mean contexts grow by one
token a step (rounded as step by step rounds them), their step times come from one vectorized
query (``StepTimes.decode_step_times_s`` when the source has it, else one ``step_time_s`` per
step) and are summed in order, and ``k`` is cut at the first completion (MTP: token counts
summed as step by step sums them), the last step before a KV overflow, ``MACRO_MAX_STEPS`` and
``max_time_s``. Steps ``0..k-2`` are *virtual*: committed in one go when the last one, an
ordinary step event, ends (tokens, contexts, KV, inter-token gaps, step statistics). An arrival
routed to the replica or a KV landing on it cuts the macro-step at the step in progress; the
router sees the KV the virtual steps have grown by then. Ties are exact: events of one instant
are processed in the order they were scheduled, and step ends scheduled at one instant
(lock-stepped replicas) by replica, an order a virtual step's place is computed in. The
run is the same as step by step: per-request times, tokens, gaps and step counts identical,
pools' busy time within floating-point summation order (``tests/test_serving_macro.py``).

The simulator never writes files: :func:`simulate_serving` returns a columnar
:class:`ServingRun`. Deterministic for a given seed.
"""

from __future__ import annotations

import heapq
import math
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

import numpy as np

from cosim.errors import ConfigError
from cosim.registry import Registry
from cosim.serving.batching import RankWork, get_policy
from cosim.serving.deployment import Deployment, PoolSpec
from cosim.serving.prefix_cache import PrefixCache
from cosim.serving.workload import Requests

TtftConvention = Literal["decode_first_token", "prefill_end"]

#: Most steps one macro-step advances (bounds its arrays and the step times queried beyond a cut);
#: with a step-time source without a vectorized decode query (one ``step_time_s`` per step, e.g.
#: the memoized exact steps, which simulate every new context they are asked), at most
#: ``MACRO_MAX_SCALAR_STEPS``.
MACRO_MAX_STEPS = 512
MACRO_MAX_SCALAR_STEPS = 64




@dataclass(frozen=True)
class RouteChoice:
    """What a router sees for one request: every candidate attention rank's ``loads`` (KV tokens
    in use, growing or queued), its ``replicas`` index and ``homes`` (home domain); the request's
    ``domain`` and ``need`` (KV tokens), the rotating ``turn`` and ``slack``
    (``ServingOptions.domain_slack``). P/D decode hand-over also gives ``room`` (which ranks can
    hold the request: the others are never chosen, but still count in the domain router's mean
    load) and ``ties`` (running requests: the second key among equal loads)."""

    loads: Sequence[float]
    replicas: Sequence[int]
    homes: Sequence[int]
    domain: int
    need: int
    turn: int
    slack: float
    room: Sequence[bool] | None = None
    ties: Sequence[int] | None = None

    def candidates(self) -> list[int]:
        """The ranks that can take the request (all of them without ``room``)."""
        if self.room is None:
            return list(range(len(self.loads)))
        return [i for i, ok in enumerate(self.room) if ok]

    def least(self, idx: Sequence[int]) -> int:
        """The least loaded of ranks ``idx`` (then fewest ``ties``); equal ones rotate: the first
        from ``turn`` on, counted over all ranks."""
        key = (lambda i: (self.loads[i], self.ties[i])) if self.ties is not None else (lambda i: self.loads[i])
        lo = min(key(i) for i in idx)
        m = len(self.loads)
        return min((i for i in idx if key(i) == lo), key=lambda i: (i - self.turn) % m)


def slack_bound(loads: Sequence[float], need: int, slack: float) -> float:
    """The domain router's imbalance bound: a rank of the request's domain may take it if its load
    stays within ``(1 + slack)`` x the mean load plus the request's own tokens."""
    return (1.0 + slack) * (sum(loads) / len(loads)) + need


#: Serving routers by name: ``fn(choice: RouteChoice) -> index`` of the chosen rank, one of
#: ``choice.candidates()`` (never empty).
ROUTERS = Registry("serving router")


@ROUTERS.register("least_loaded")
def least_loaded(c: RouteChoice) -> int:
    return c.least(c.candidates())


@ROUTERS.register("round_robin")
def round_robin(c: RouteChoice) -> int:
    cand = c.candidates()
    replicas = sorted({c.replicas[i] for i in cand})
    want = replicas[c.turn % len(replicas)]
    return c.least([i for i in cand if c.replicas[i] == want])


@ROUTERS.register("domain")
def domain_grouping(c: RouteChoice) -> int:
    cand = c.candidates()
    bound = slack_bound(c.loads, c.need, c.slack)
    near = [i for i in cand if c.homes[i] == c.domain and c.loads[i] <= bound]
    return c.least(near or cand)


class StepTimes(Protocol):
    """Step times of one pool: ``step_time_s(decode_tokens, context, chunks)`` for the busiest
    attention rank of a replica (``chunks``: ``(prefix_tokens, new_tokens)`` each)."""

    def step_time_s(self, decode_tokens: int, context: int, chunks: Sequence[tuple[int, int]]) -> float: ...


class TransferNetwork(Protocol):
    """The network KV transfers go through (:class:`cosim.network.live.LiveNetwork`)."""

    def start(self, src: int, dst: int, size_bytes: float, now_s: float, *, tag: str = "") -> int: ...
    def next_event_s(self) -> float: ...
    def advance(self, to_s: float) -> list: ...


@dataclass(frozen=True)
class ServingOptions:
    """How the simulation runs.

    Attributes:
        concurrency: closed loop of this many users (``None``: the requests' own: their workload's
            closed loop, or open loop on their arrival times).
        think_time_s: closed loop: pause between a user's response and its next request (``None``:
            the requests' own).
        ttft: TTFT convention in P/D (see the module docstring).
        prefix_cache_fraction: share of each mixed / prefill rank's KV capacity the prefix cache
            may hold.
        decode_prefix_cache_fraction: P/D: the same on decode ranks (default 0: no decode-side
            prefix cache, the whole prompt's KV moves, as SGLang and TensorRT-LLM disaggregated
            serving do; > 0: a shared prefix the decode rank holds, or a request's own resident
            prefix, does not move).
        router: attention-rank choice for new requests (and P/D decode ranks), from
            :data:`ROUTERS`: ``least_loaded``, ``round_robin`` or ``domain`` (module docstring;
            ties between equally loaded ranks rotate).
        domain_slack: ``domain`` router: how far above the mean load of the ranks (a share) a rank
            of the request's domain may be, beyond the request's own tokens, and still take it.
        ramp_s: closed loop: user ``i`` of N sends its first request at ``i x ramp_s / N``, so the
            users do not stay in phase (0: all at time 0).
        admission: ``prompt`` (a request enters when its prompt's KV fits and grows a token a
            step; overflow preempts: vLLM, SGLang) or ``full`` (it enters only when its prompt and
            all its output tokens fit, reserved up front: no preemption, TensorRT-LLM's guaranteed
            no-evict scheduling).
        kv_transfer: P/D: ``after_prefill`` (the KV moves once the prefill has ended) or
            ``layerwise`` (each layer's KV is sent as soon as it is computed: the move starts with
            the request's last prefill step and cannot complete before that step ends, so it
            hides behind the prefill when the network keeps up; Mooncake / SGLang / Dynamo).
        client_overhead_s: fixed latency the client sees on top of the server's (HTTP,
            tokenization, request admission, streaming of the first token): added to every
            request's first-token and finish times; a closed-loop user sends its next request
            after seeing the finish.
        max_time_s: stop the simulation at this time (requests still running are unfinished).
        macro_steps: advance a replica whose decode batch cannot change over its next steps in
            one event (see *Macro-steps* in the module docstring; same results as step by step
            within floating point); ``False``: every step is an event.
    """

    concurrency: int | None = None
    think_time_s: float | None = None
    ttft: TtftConvention = "decode_first_token"
    prefix_cache_fraction: float = 0.5
    decode_prefix_cache_fraction: float = 0.0
    router: str = "least_loaded"
    domain_slack: float = 0.1
    kv_transfer: Literal["after_prefill", "layerwise"] = "after_prefill"
    ramp_s: float = 0.0
    admission: Literal["prompt", "full"] = "prompt"
    client_overhead_s: float = 0.0
    max_time_s: float = math.inf
    macro_steps: bool = True

    def __post_init__(self) -> None:
        if self.concurrency is not None and (isinstance(self.concurrency, bool) or self.concurrency < 1):
            raise ConfigError("<api>", "concurrency", f"expected an integer >= 1, got {self.concurrency!r}")
        if self.ttft not in ("decode_first_token", "prefill_end"):
            raise ConfigError("<api>", "ttft", f"expected 'decode_first_token' or 'prefill_end', got {self.ttft!r}")
        if self.router not in ROUTERS:
            raise ConfigError("<api>", "router", f"expected one of {', '.join(ROUTERS)}, got {self.router!r}")
        if isinstance(self.domain_slack, bool) or not isinstance(self.domain_slack, (int, float)) \
                or not 0.0 <= self.domain_slack <= 1.0:
            raise ConfigError("<api>", "domain_slack", f"expected a share 0..1 of the mean rank load, "
                                                       f"got {self.domain_slack!r}")
        if not (isinstance(self.client_overhead_s, (int, float)) and 0 <= self.client_overhead_s < math.inf):
            raise ConfigError("<api>", "client_overhead_s",
                              f"expected a finite number of seconds >= 0, got {self.client_overhead_s!r}")
        if self.admission not in ("prompt", "full"):
            raise ConfigError("<api>", "admission", f"expected 'prompt' or 'full', got {self.admission!r}")
        if not (isinstance(self.ramp_s, (int, float)) and 0 <= self.ramp_s < math.inf):
            raise ConfigError("<api>", "ramp_s", f"expected a finite number of seconds >= 0, got {self.ramp_s!r}")
        if self.kv_transfer not in ("after_prefill", "layerwise"):
            raise ConfigError("<api>", "kv_transfer", f"expected 'after_prefill' or 'layerwise', got {self.kv_transfer!r}")
        for name in ("prefix_cache_fraction", "decode_prefix_cache_fraction"):
            f = getattr(self, name)
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
                raise ConfigError("<api>", name, f"expected a number 0 <= f < 1, got {f!r}")


@dataclass
class ServingRun:
    """What a serving simulation produced: per request (arrays in request order; NaN where a
    request did not get that far) and per run.

    Attributes:
        arrival_s, first_token_s, finish_s: times of each request.
        prefill_end_s, kv_transfer_s: P/D: when its prefill finished; from the start of its KV
            move to the KV being usable on the decode side (layer-wise: at the earliest its
            prefill end).
        prefix_hit_tokens: reused-prefix tokens found in the prefix cache.
        decode_prefix_hit_tokens: P/D: prompt tokens the decode rank already held (not moved).
        prefilled_tokens: tokens actually prefilled (new input + missed prefix, recomputation).
        output_tokens: tokens each request produced.
        preemptions: times each request was preempted.
        itl_s: every inter-token gap of every request (after its first token), in emission
            order (gaps of one instant: by replica and attention rank); ``max_itl_s``: each
            request's longest gap (stalls behind prefill chunks, preemptions).
        replica_steps: per ``(pool, replica)``: its steps and the mean busiest-rank batch of a
            step (``steps``, ``decode_tokens``, ``context``, ``chunk_tokens``, ``chunks``), from
            which the step traffic of the run is estimated.
        entry_gpu / decode_gpu: the first GPU of the attention rank that prefilled (or served)
            each request, and of its decode rank in P/D (-1: none).
        pool_busy_s: per pool, replica-seconds spent stepping; ``pool_gpus``: GPUs per pool.
        duration_s: simulated time from the first arrival to the last event.
        steps: steps simulated per pool; ``wall_s``: the simulation's own cost.
        macro: macro-step counters: ``macros`` (events that advanced several steps),
            ``virtual_steps`` (steps advanced inside them, without an event of their own),
            ``truncated`` (macro-steps cut short by an arrival or a KV landing).
        prefill_home / decode_home: whether each request's prefill (mixed: its whole run) and
            its decode ran on an attention rank whose home domain is the request's domain.
        rank_domains: per pool, the home domain of every attention rank of every replica.
    """

    requests: Requests
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prefill_end_s: np.ndarray
    kv_transfer_s: np.ndarray
    prefix_hit_tokens: np.ndarray
    prefilled_tokens: np.ndarray
    output_tokens_done: np.ndarray
    preemptions: np.ndarray
    pool_busy_s: dict[str, float]
    pool_gpus: dict[str, int]
    pool_replicas: dict[str, int]
    steps: dict[str, int]
    duration_s: float
    wall_s: float = 0.0
    kv_transfers: list = field(default_factory=list)
    link_tx_bytes: np.ndarray | None = None
    itl_s: np.ndarray | None = None
    max_itl_s: np.ndarray | None = None
    replica_steps: dict = field(default_factory=dict)
    entry_gpu: np.ndarray | None = None
    decode_gpu: np.ndarray | None = None
    decode_prefix_hit_tokens: np.ndarray | None = None
    macro: dict = field(default_factory=dict)
    prefill_home: np.ndarray | None = None
    decode_home: np.ndarray | None = None
    rank_domains: dict = field(default_factory=dict)

    def grouping_purity(self, role: str = "decode") -> float:
        """Share of the tokens produced (``decode``; mixed pools: every request) or prefilled
        (``prefill``) on a rank of the request's own domain: what a grouped step-time model
        should assume (``StepRouting.grouping_purity``)."""
        home = self.decode_home if role == "decode" else self.prefill_home
        w = np.asarray(self.output_tokens_done if role == "decode" else self.prefilled_tokens, dtype=np.float64)
        total = float(w.sum()) if home is not None else 0.0
        return float(w[home].sum() / total) if total > 0 else float("nan")

    @property
    def num_gpus(self) -> int:
        return sum(self.pool_gpus.values())

    @property
    def finished(self) -> np.ndarray:
        return ~np.isnan(self.finish_s)


class _Rank:
    """One attention rank: its KV capacity, prefix cache, prefill queue and running decodes.

    Per-request numbers live in the simulation's arrays (context, KV allocated on this side);
    a rank keeps the order of its requests (ordered dicts: O(1) removal)."""

    __slots__ = ("gpu_list", "capacity", "kv_used", "prefill_queue", "running", "remaining", "prefixes",
                 "admitted", "alloc", "need", "need_total", "kv_virtual", "home")

    def __init__(self, gpus: tuple[int, ...], capacity: int, prefix_tokens: int, alloc: np.ndarray):
        self.gpu_list = gpus
        self.capacity = capacity                # KV tokens for running requests (the prefix cache has its own)
        self.kv_used = 0                        # sum of alloc over admitted
        self.prefill_queue: deque[int] = deque()
        self.running: dict[int, None] = {}      # decoding, in admission order
        self.need: dict[int, int] = {}          # queued, not admitted: KV tokens it needs
        self.need_total = 0
        self.remaining: dict[int, int] = {}     # admitted: prefill tokens left
        self.alloc = alloc                      # the simulation's per-request KV of this side
        self.prefixes = PrefixCache(prefix_tokens)
        self.admitted: dict[int, None] = {}     # admission order (for preemption)
        self.kv_virtual = 0                     # KV growth of macro-steps not yet committed (routing)
        self.home = 0                           # home domain (the domain router)

    def remaining_prefill(self, request: int) -> int:
        return self.remaining.get(request, 0)

    def load(self) -> int:
        return self.kv_used + self.kv_virtual + self.need_total


class _Macro:
    """A replica's run of ``k`` decode steps with the same batch, advanced in one event: steps
    ``0 .. k-2`` are *virtual* (committed in one go at the end: no completion, no preemption
    among them), step ``k-1`` is processed as an ordinary step. ``ends[j]``: end time of step
    ``j``; ``dts[j]``: its duration; ``contexts[j]``: its mean context (busiest rank)."""

    __slots__ = ("t0", "k", "ends", "dts", "contexts", "decodes", "idx", "seq", "batch", "traj", "key")

    def __init__(self, t0, k, ends, dts, contexts, decodes, idx, seq, batch, traj, key):
        self.t0, self.k, self.ends, self.dts, self.contexts = t0, k, ends, dts, contexts
        self.decodes, self.idx, self.seq, self.batch, self.traj, self.key = decodes, idx, seq, batch, traj, key

    def start(self, j: int) -> float:
        return float(self.ends[j - 1]) if j else self.t0

    def before(self, t: float, cur: tuple) -> int:
        """Virtual steps processed before an event of heap key ``(t, *cur)``: step ``j``'s
        event would have had the key ``(ends[j], start of j, replica key)``."""
        v = self.k - 1
        n = int(np.searchsorted(self.ends[:v], t, side="left"))
        while n < v and self.ends[n] == t and (self.start(n), self.key) < cur:
            n += 1
        return n


class _Replica:
    __slots__ = ("pool", "index", "ranks", "busy", "work", "steps", "macro", "gen", "key")

    def __init__(self, pool: PoolSpec, index: int, ranks: list[_Rank], steps: StepTimes):
        self.pool, self.index, self.ranks, self.steps = pool, index, ranks, steps
        self.busy = False
        self.work: list[RankWork] = []
        self.macro: _Macro | None = None
        self.gen = 0  # macro-step events of an older generation are stale (truncated)
        self.key = 0  # the replica's index over the run (order of the ITL gaps of one instant)


def _attention_gpus(pool: PoolSpec, gpus: tuple[int, ...]) -> list[tuple[int, ...]]:
    """GPUs of each attention rank of a replica (DP attention: one each; TP attention: the
    group; AFD: each instance's)."""
    if pool.afd is not None:
        t = pool.afd.attention_tp
        return [gpus[i * t:(i + 1) * t] for i in range(pool.afd.instances)]
    par = pool.parallel
    if par.dp_attention:
        return [(g,) for g in gpus[:par.tp]]
    return [tuple(gpus[:par.tp])]


def simulate_serving(dep: Deployment, requests: Requests, step_times: dict[str, StepTimes], *,
                     kv_capacity_tokens: dict[str, int], kv_bytes_per_token: dict[str, float] | None = None,
                     network: TransferNetwork | None = None, options: ServingOptions = ServingOptions(),
                     progress: Callable[[int, int], None] | None = None) -> ServingRun:
    """Simulate ``requests`` through ``dep`` (see the module docstring).

    ``step_times`` and ``kv_capacity_tokens`` (per attention rank) are keyed by pool name
    (``step_times`` may also hold ``(pool name, replica index)`` keys: that replica's own);
    disaggregated deployments also need ``kv_bytes_per_token`` (per attention GPU, of the prefill
    pool) and the ``network`` the KV transfers go through.
    """
    wall0 = time.perf_counter()
    n = len(requests)
    if n == 0:
        raise ConfigError("<api>", "requests", "no requests to serve")
    for p in dep.pools:
        if p.name not in step_times or p.name not in kv_capacity_tokens:
            raise ConfigError("<api>", "step_times", f"missing step times or KV capacity for pool {p.name!r}")
        if kv_capacity_tokens[p.name] < 1:
            raise ConfigError("<api>", "kv_capacity_tokens", f"pool {p.name!r} has no KV capacity")
    disagg = dep.pools[0].role != "mixed"
    if disagg and (network is None or kv_bytes_per_token is None):
        raise ConfigError("<api>", "network", "P/D disaggregation moves KV caches through a network: pass network= "
                                              "and kv_bytes_per_token=")
    entry = [p for p in dep.pools if p.role in ("mixed", "prefill")]
    decode_pools = [p for p in dep.pools if p.role == "decode"]
    placement = dep.placement()
    replicas: dict[str, list[_Replica]] = {}
    ctx = np.zeros(n, dtype=np.int64)         # tokens a request's attention sees (prefix included)
    alloc_entry = np.zeros(n, dtype=np.int64)  # KV it holds on its mixed / prefill rank
    alloc_decode = np.zeros(n, dtype=np.int64)  # KV reserved on its decode rank
    for p in dep.pools:
        cap = kv_capacity_tokens[p.name]
        cache = int(cap * (options.decode_prefix_cache_fraction if p.role == "decode" else options.prefix_cache_fraction))
        side = alloc_decode if p.role == "decode" else alloc_entry
        replicas[p.name] = [_Replica(p, i, [_Rank(g, cap - cache, cache, side) for g in _attention_gpus(p, gpus)],
                                     step_times.get((p.name, i), step_times[p.name]))
                            for i, gpus in enumerate(placement[p.name])]
    entry_replicas = [r for p in entry for r in replicas[p.name]]
    decode_replicas = [r for p in decode_pools for r in replicas[p.name]]
    all_entry_ranks = [(rep, k) for rep in entry_replicas for k in rep.ranks]
    all_decode_ranks = [(rep, k) for rep in decode_replicas for k in rep.ranks]
    entry_rank_objs = [k for _, k in all_entry_ranks]
    decode_rank_objs = [k for _, k in all_decode_ranks]
    for key, rep_ in enumerate(r for p in dep.pools for r in replicas[p.name]):
        rep_.key = key
    rank_homes = _assign_homes(dep, replicas, requests)
    req_domain = requests.domain
    prefill_home = np.zeros(n, dtype=bool)
    decode_home = np.zeros(n, dtype=bool)
    route = ROUTERS[options.router]
    entry_replica_index = [i for i, rep in enumerate(entry_replicas) for _ in rep.ranks]
    decode_replica_index = [i for i, rep in enumerate(decode_replicas) for _ in rep.ranks]

    arrival = np.full(n, np.nan)
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    prefill_end = np.full(n, np.nan)
    kv_time = np.full(n, np.nan)
    hit = np.zeros(n, dtype=np.int64)
    decode_hit = np.zeros(n, dtype=np.int64)
    prefilled = np.zeros(n, dtype=np.int64)
    produced = np.zeros(n)
    preempt = np.zeros(n, dtype=np.int64)
    last_token = np.full(n, np.nan)
    max_gap = np.zeros(n)
    entry_gpu = np.full(n, -1, dtype=np.int64)
    decode_gpu = np.full(n, -1, dtype=np.int64)
    gaps = array("d")  # every inter-token gap of every request
    gap_t, gap_key, gap_n = array("d"), array("q"), array("q")  # per replica step: time, replica, gaps
    where: dict[int, tuple[_Replica, _Rank]] = {}
    busy = {p.name: 0.0 for p in dep.pools}
    rep_stats: dict[tuple[str, int], list] = {}
    steps = {p.name: 0 for p in dep.pools}
    out_tokens = requests.output_tokens.astype(np.int64)
    prompt = (requests.prefix_tokens + requests.input_tokens).astype(np.int64)
    events: list = []
    seq = 0
    # Heap key of an event: (time, when it was pushed, order, seq) with order the replica's key
    # for step events and -1 for the others: events of one instant in push order (as seq alone
    # orders them), and step events pushed at one instant (replicas in lock-step) by replica, so
    # that a macro-step's steps take the places their own events would have taken.
    clock = -math.inf          # time of the event being processed (pushes record it)
    cur = (-math.inf, -math.inf)  # (pushed at, order) of the event being processed (network: first)

    def push(t: float, kind: str, payload) -> None:
        nonlocal seq
        heapq.heappush(events, (t, clock, payload.key if kind == "step" else -1, seq, kind, payload))
        seq += 1

    # arrivals
    next_request = 0
    concurrency = options.concurrency if options.concurrency is not None else getattr(requests, "concurrency", None)
    think_s = options.think_time_s if options.think_time_s is not None else getattr(requests, "think_time_s", 0.0)
    if concurrency is None:
        order = np.argsort(requests.arrival_s, kind="stable")
        if np.isnan(requests.arrival_s).any():
            raise ConfigError("<api>", "requests.arrival_s", "open-loop requests need arrival times (or give "
                                                             "options.concurrency for a closed loop)")
        for r in order:
            push(float(requests.arrival_s[r]), "arrive", int(r))
        next_request = n
    else:
        users = min(concurrency, n)
        for u in range(users):
            push(u * options.ramp_s / users, "arrive", next_request)
            next_request += 1
    rr = [0]
    handoff_turn = [0]
    full_reserve = options.admission == "full"
    mixed_entry = dep.pools[0].role == "mixed"

    def full_extra(r: int) -> int:
        """KV tokens reserved up front for the outputs still to come (``admission='full'``)."""
        return int(out_tokens[r]) - int(produced[r]) if full_reserve else 0

    early: set[int] = set()    # layer-wise moves started before their prefill ended
    landed: set[int] = set()   # ... whose transfer arrived before the prefill ended
    kv_start = np.full(n, np.nan)
    pending_handoff: deque[int] = deque()  # prefilled requests waiting for decode capacity
    transfers: dict[int, tuple[int, int, list[int]]] = {}  # transfer id -> (request, parts left, ids)
    transfer_log: list = []
    done_count = 0
    now = 0.0
    macro_on = options.macro_steps
    active: dict[_Replica, None] = {}  # replicas in a macro-step
    macro_stats = {"macros": 0, "virtual_steps": 0, "truncated": 0}
    kv_grows = mixed_entry and not full_reserve  # decodes grow their KV (entry ranks' loads move)

    homes_entry = [rk.home for rk in entry_rank_objs]
    homes_decode = [rk.home for rk in decode_rank_objs]

    def choose(r: int) -> tuple[_Replica, _Rank]:
        """Replica and attention rank for new request ``r`` (the router); ties (idle ranks)
        rotate, so an idle pool spreads its requests instead of piling them on its first rank."""
        turn = rr[0]
        rr[0] += 1
        loads = [rk.kv_used + rk.kv_virtual + rk.need_total for rk in entry_rank_objs]
        own = int(requests.prefix_tokens[r]) if requests.prefix_id[r] < 0 else 0  # resident: not in the load
        need = int(prompt[r]) - own + (full_extra(r) if mixed_entry else 0)
        j = route(RouteChoice(loads, entry_replica_index, homes_entry, int(req_domain[r]), need, turn,
                              options.domain_slack))
        return all_entry_ranks[j]

    def kick(rep: _Replica, t: float) -> None:
        """Start the replica's next step if it is idle and has work."""
        if rep.busy:
            return
        b = rep.pool.batching
        policy = get_policy(b.policy)
        works = []
        for rank in rep.ranks:
            _admit(rank)
            works.append(policy(rank, b.token_budget, b.max_batch))
        if all(w.empty for w in works):
            return
        crit = max(range(len(works)), key=lambda i: works[i].tokens)
        w = works[crit]
        if macro_on and w.decodes and not any(w_.chunks for w_ in works) and start_macro(rep, works, crit, t):
            return
        rank = rep.ranks[crit]
        mean_ctx = int(round(ctx[list(w.decodes)].mean())) if w.decodes else 0
        chunks = [(int(ctx[r]), k) for r, k in w.chunks]
        dt = rep.steps.step_time_s(len(w.decodes), mean_ctx, chunks)
        rep.busy, rep.work = True, works
        if rep.pool.role == "prefill" and options.kv_transfer == "layerwise":
            for rank_, w_ in zip(rep.ranks, works):
                for r, k in w_.chunks:
                    if k == rank_.remaining[r]:  # its last prefill step: stream the KV as layers finish
                        pending_handoff.append(r)
                        early.add(r)
            handoff(t)
        busy[rep.pool.name] += dt
        steps[rep.pool.name] += 1
        st = rep_stats.setdefault((rep.pool.name, rep.index), [0, 0.0, 0.0, 0.0, 0])
        st[0] += 1                       # steps
        st[1] += len(w.decodes)          # decode tokens of the busiest rank
        st[2] += mean_ctx * len(w.decodes)  # their context (for the mean)
        st[3] += sum(k for _, k in chunks)
        st[4] += len(chunks)
        push(t + dt, "step", rep)

    def start_macro(rep: _Replica, works: list[RankWork], crit: int, t: float) -> bool:
        """Start a macro-step of the replica's decode-only batch if it spans >= 2 steps: up to
        the first completion, the last step before a preemption, ``MACRO_MAX_STEPS`` and the
        simulation end (arrivals and KV landings cut it later, :func:`truncate`)."""
        nonlocal seq
        per_step = rep.pool.tokens_per_decode_step
        decodes = [(rank, np.fromiter(w.decodes, dtype=np.int64, count=len(w.decodes)))
                   for rank, w in zip(rep.ranks, works) if w.decodes]
        idx = decodes[0][1] if len(decodes) == 1 else np.concatenate([i for _, i in decodes])
        vec = getattr(rep.steps, "decode_step_times_s", None)
        k = MACRO_MAX_STEPS if vec is not None else MACRO_MAX_SCALAR_STEPS
        if kv_grows:  # virtual steps may not overflow a rank that would preempt
            for rank, i in decodes:
                if len(rank.admitted) > 1:
                    k = min(k, (rank.capacity - rank.kv_used) // len(i) + 1)
            if k < 2:
                return False
        p, out = produced[idx], out_tokens[idx]
        traj = None
        if per_step == 1.0:  # integer token counts: the first completion is at step out - produced
            k = min(k, int((out - p).min()))
        else:  # MTP: the counts as step by step adds them (sequential sums)
            m = min(k, int(math.ceil(float(((out - p) / per_step).min()))) + 2)
            traj = np.empty((m + 1, len(idx)))
            traj[0] = p
            traj[1:] = per_step
            np.cumsum(traj, axis=0, out=traj)
            crossed = (traj[1:] >= out).any(axis=1)
            k = min(k, int(np.argmax(crossed)) + 1 if crossed.any() else m)
        if k < 2:
            return False
        crit_idx = np.fromiter(works[crit].decodes, dtype=np.int64, count=len(works[crit].decodes))
        b = len(crit_idx)
        # the busiest rank's mean context at each step, rounded as step by step rounds it
        contexts = np.rint((int(ctx[crit_idx].sum()) + np.arange(k, dtype=np.int64) * b) / b).astype(np.int64)
        if vec is not None:
            dts = np.asarray(vec(b, contexts), dtype=float)
        else:
            dts = np.array([rep.steps.step_time_s(b, int(c), []) for c in contexts.tolist()], dtype=float)
        ends = np.cumsum(np.concatenate(([t], dts)))[1:]  # t + dt0 + dt1 ..., summed in order
        if options.max_time_s < math.inf:  # steps after the end are never processed
            k = min(k, int(np.searchsorted(ends, options.max_time_s, side="right")) + 1)
            if k < 2:
                return False
        rep.busy, rep.work = True, works
        rep.gen += 1
        mac = _Macro(t, k, ends, dts, contexts, decodes, idx, seq, b, traj, rep.key)
        rep.macro = mac
        active[rep] = None
        heapq.heappush(events, (float(ends[k - 1]), mac.start(k - 1), rep.key, seq, "macro", (rep, rep.gen)))
        seq += 1
        macro_stats["macros"] += 1
        return True

    def truncate(rep: _Replica, t: float, cur: tuple) -> None:
        """An event at ``t`` changes the replica's next batch: its macro-step ends with the step
        in progress (the same event seq, as the chain of step events it stands for)."""
        mac = rep.macro
        nb = mac.before(t, cur)
        if nb + 1 >= mac.k:
            return
        mac.k = nb + 1
        rep.gen += 1
        heapq.heappush(events, (float(mac.ends[nb]), mac.start(nb), rep.key, mac.seq, "macro", (rep, rep.gen)))
        macro_stats["truncated"] += 1

    def commit(rep: _Replica) -> None:
        """Apply a macro-step's virtual steps to the state (as step by step would have) and
        account all its steps."""
        mac = rep.macro
        rep.macro = None
        del active[rep]
        k, v, idx = mac.k, mac.k - 1, mac.idx
        for rank, _ in mac.decodes:
            rank.kv_virtual = 0
        if v:
            ends = mac.ends[:v]
            g = np.empty((v, len(idx)))
            g[0] = ends[0] - last_token[idx]
            if v > 1:
                g[1:] = (ends[1:] - ends[:-1])[:, None]
            gaps.frombytes(g.tobytes())  # step-major, ranks in order: the blocks step by step makes
            gap_t.frombytes(ends.tobytes())
            gap_key.frombytes(np.full(v, rep.key, dtype=np.int64).tobytes())
            gap_n.frombytes(np.full(v, len(idx), dtype=np.int64).tobytes())
            max_gap[idx] = np.maximum(max_gap[idx], g.max(axis=0))
            last_token[idx] = ends[-1]
            ctx[idx] += v
            produced[idx] = mac.traj[v] if mac.traj is not None else produced[idx] + v
            if kv_grows:
                for rank, i in mac.decodes:
                    rank.alloc[i] += v
                    rank.kv_used += len(i) * v
            macro_stats["virtual_steps"] += v
        busy[rep.pool.name] += float(mac.dts[:k].sum())
        steps[rep.pool.name] += k
        st = rep_stats.setdefault((rep.pool.name, rep.index), [0, 0.0, 0.0, 0.0, 0])
        st[0] += k
        st[1] += mac.batch * k
        st[2] += mac.batch * int(mac.contexts[:k].sum())

    def macro_done(rep: _Replica, t: float) -> None:
        commit(rep)
        step_done(rep, t)

    def _admit(rank: _Rank) -> None:
        """Allocate KV for queued requests whose prompt fits, in queue order (the rest wait: no
        request overtakes the head)."""
        for r in rank.prefill_queue:
            if r not in rank.need:
                continue
            need = rank.need[r]
            if rank.kv_used + need > rank.capacity:
                if not rank.admitted and need > rank.capacity:
                    raise ConfigError("<api>", "kv_capacity_tokens",
                                      f"request {r} needs {need} KV tokens, an attention rank holds {rank.capacity}")
                break
            del rank.need[r]
            rank.need_total -= need
            rank.alloc[r] = need
            rank.kv_used += need
            reserved = full_extra(r) if full_reserve and rank.alloc is alloc_entry and mixed_entry else 0
            rank.remaining[r] = need - reserved
            ctx[r] = int(prompt[r]) + int(produced[r]) - (need - reserved)  # reused prefix already cached
            rank.admitted[r] = None

    def arrive(r: int, t: float) -> None:
        arrival[r] = t
        if active and kv_grows:  # the loads the router sees: with the virtual steps done by now
            for rep_ in active:
                mac = rep_.macro
                nb = mac.before(t, cur)
                for rank_, i in mac.decodes:
                    rank_.kv_virtual = len(i) * nb
        rep, rank = choose(r)
        prefill_home[r] = rank.home == req_domain[r]
        decode_home[r] = prefill_home[r]
        if active and kv_grows:
            for rep_ in active:
                for rank_, _ in rep_.macro.decodes:
                    rank_.kv_virtual = 0
        if rep.macro is not None:
            truncate(rep, t, cur)
        pid, ptok = int(requests.prefix_id[r]), int(requests.prefix_tokens[r])
        if pid < 0:  # the request's own prefix, taken as resident (see cosim.serving.workload.Requests)
            h = ptok
        else:
            h = rank.prefixes.lookup(pid, ptok, t) if rank.prefixes.capacity_tokens > 0 else 0
        hit[r] = h
        entry_gpu[r] = rank.gpu_list[0]
        rank.need[r] = int(prompt[r]) - h + (full_extra(r) if rep.pool.role == "mixed" else 0)
        rank.need_total += rank.need[r]
        rank.prefill_queue.append(r)
        where[r] = (rep, rank)
        push(t, "kick", rep)  # after the other arrivals of this instant: they batch together

    def finish_request(r: int, t: float) -> None:
        nonlocal next_request, done_count
        finish[r] = t
        done_count += 1
        rep, rank = where.pop(r)
        _release(rank, r)
        if progress is not None:
            progress(done_count, n)
        if concurrency is not None and next_request < n:
            push(t + options.client_overhead_s + think_s, "arrive", next_request)
            next_request += 1

    def _release(rank: _Rank, r: int) -> None:
        if rank.admitted.pop(r, 0) is None:  # held KV here
            rank.kv_used -= int(rank.alloc[r])
            rank.alloc[r] = 0
        rank.remaining.pop(r, None)
        rank.need_total -= rank.need.pop(r, 0)
        rank.running.pop(r, None)

    def step_done(rep: _Replica, t: float) -> None:
        # the replica stays busy until its step is applied: a layer-wise KV landing at this
        # prefill end kicks its source replica, which must not start (and lose) its next step here
        per_step = rep.pool.tokens_per_decode_step
        gaps0 = len(gaps)
        for rank, w in zip(rep.ranks, rep.work):
            for r, k in w.chunks:
                rank.remaining[r] -= k
                ctx[r] += k
                prefilled[r] += k
                if rank.remaining[r] == 0:
                    del rank.remaining[r]
                    rank.prefill_queue.remove(r)
                    if rep.pool.role == "mixed":
                        if np.isnan(first[r]):  # a recomputed (preempted) request keeps its first token
                            first[r] = t
                        last_token[r] = t
                        produced[r] = max(produced[r], 1.0)
                        if produced[r] >= out_tokens[r]:
                            finish_request(r, t)
                        else:
                            rank.running[r] = None
                    else:  # prefill pool: hand over to decode
                        prefill_end[r] = t
                        if options.ttft == "prefill_end":
                            first[r] = t
                        if r in early:
                            early.discard(r)
                            if r in landed:  # its layer-wise move already arrived: done at prefill end
                                land(r, t)
                        else:
                            pending_handoff.append(r)
            if w.decodes:  # every decode of the step emits its tokens (vectorized)
                idx = np.fromiter(w.decodes, dtype=np.int64, count=len(w.decodes))
                done_now = np.minimum(out_tokens[idx], produced[idx] + per_step)
                produced[idx] = done_now
                gap = t - last_token[idx]
                gaps.frombytes(gap.tobytes())
                np.maximum.at(max_gap, idx, gap)
                last_token[idx] = t
                fin = done_now >= out_tokens[idx]
                grow = idx[~fin]
                ctx[grow] += 1
                if rep.pool.role == "mixed" and not full_reserve:  # else reserved at admission / hand-over
                    rank.alloc[grow] += 1
                    rank.kv_used += len(grow)
                for r in idx[fin].tolist():
                    finish_request(r, t)
            while rank.kv_used > rank.capacity and len(rank.admitted) > 1:
                victim = next(reversed(rank.admitted))  # the most recently admitted: recomputed later
                preempt[victim] += 1
                _release(rank, victim)
                if victim in rank.prefill_queue:
                    rank.prefill_queue.remove(victim)
                rank.prefill_queue.appendleft(victim)
                rank.need[victim] = int(prompt[victim]) + int(produced[victim]) + (
                    full_extra(victim) if rep.pool.role == "mixed" else 0)
                rank.need_total += rank.need[victim]
                hit[victim] = 0
        if len(gaps) > gaps0:
            gap_t.append(t)
            gap_key.append(rep.key)
            gap_n.append(len(gaps) - gaps0)
        rep.busy = False
        rep.work = []
        if pending_handoff:
            handoff(t)
        kick(rep, t)

    def handoff(t: float) -> None:
        """Move prefilled requests to decode ranks with room, starting their KV transfers."""
        while pending_handoff:
            r = pending_handoff[0]
            need = int(prompt[r]) + int(out_tokens[r])
            room = [rk.kv_used + need <= rk.capacity for rk in decode_rank_objs]
            if not any(room):
                return
            j = route(RouteChoice([rk.kv_used + rk.kv_virtual + rk.need_total for rk in decode_rank_objs],
                                  decode_replica_index, homes_decode, int(req_domain[r]), need, handoff_turn[0],
                                  options.domain_slack, room=room,
                                  ties=[len(rk.running) for rk in decode_rank_objs]))
            handoff_turn[0] += 1
            best = all_decode_ranks[j]
            decode_gpu[r] = best[1].gpu_list[0]
            pending_handoff.popleft()
            rep, rank = best
            decode_home[r] = rank.home == req_domain[r]
            rank.kv_used += need  # reserved for the whole request
            rank.alloc[r] = need
            rank.admitted[r] = None
            src_rep, src_rank = where[r]
            if rank.prefixes.capacity_tokens > 0:  # decode-side prefix cache: what the rank already holds
                pid, ptok = int(requests.prefix_id[r]), int(requests.prefix_tokens[r])
                decode_hit[r] = ptok if pid < 0 else rank.prefixes.lookup(pid, ptok, t)
            size = float(kv_bytes_per_token[src_rep.pool.name]) * (int(prompt[r]) - int(decode_hit[r]))
            ids = []
            for s_gpu, d_gpu in zip(src_rank.gpu_list, rank.gpu_list):
                ids.append(network.start(s_gpu, d_gpu, int(round(size)), t, tag=f"kv{r}"))
            for i in ids:
                transfers[i] = (r, len(ids), ids)
            where[r] = (src_rep, src_rank, rep, rank)  # type: ignore[assignment]

    def transfer_done(c, t: float) -> None:
        r, parts, ids = transfers.pop(c.id)
        transfer_log.append(c)
        if any(i in transfers for i in ids):
            return
        kv_start[r] = c.start_s
        if r in early:  # layer-wise: the prefill has not ended yet
            landed.add(r)
            return
        land(r, t)

    def land(r: int, t: float) -> None:
        """The request's KV is on its decode rank at ``t`` (and its prefill has ended)."""
        landed.discard(r)
        src_rep, src_rank, rep, rank = where[r]  # type: ignore[misc]
        _release(src_rank, r)
        kv_time[r] = t - kv_start[r]
        if options.ttft == "decode_first_token":
            first[r] = t
        last_token[r] = first[r]  # the client's previous token (P/D prefill_end: the prefill's)
        produced[r] = 1.0
        where[r] = (rep, rank)
        if produced[r] >= out_tokens[r]:
            finish_request(r, t)
        else:
            b = rep.pool.batching
            if rep.macro is not None and not (b.policy == "decode_only" and len(rank.running) >= b.max_batch):
                truncate(rep, t, cur)  # the batch grows after the step in progress
            rank.running[r] = None
            kick(rep, t)
        kick(src_rep, t)
        handoff(t)

    t_first = None
    while events or (network is not None and network.next_event_s() < math.inf):
        while events and events[0][4] == "macro" and events[0][5][1] != events[0][5][0].gen:
            heapq.heappop(events)  # a truncated macro-step's old end
        if not events and (network is None or network.next_event_s() == math.inf):
            break
        t_event = events[0][0] if events else math.inf
        t_net = network.next_event_s() if network is not None else math.inf
        t = min(t_event, t_net)
        if t > options.max_time_s:
            break
        now = t
        if t_first is None:
            t_first = t
        clock = t
        if t_net <= t_event:
            cur = (-math.inf, -math.inf)  # network events come before heap events of the same time
            for c in network.advance(t_net):
                transfer_done(c, c.finish_s)
            continue
        _, pushed_at, order, _, kind, payload = heapq.heappop(events)
        cur = (pushed_at, order)
        if kind == "arrive":
            arrive(payload, t)
        elif kind == "kick":
            kick(payload, t)
        elif kind == "macro":
            macro_done(payload[0], t)
        else:
            step_done(payload, t)
    for rep_ in list(active):  # stopped at max_time_s: the virtual steps before it happened
        if rep_.macro.k > 1:
            now = max(now, float(rep_.macro.ends[rep_.macro.k - 2]))
        commit(rep_)
    duration = now - (t_first or 0.0)
    itl = _emission_order(np.frombuffer(gaps, dtype=np.float64), np.frombuffer(gap_t, dtype=np.float64),
                          np.frombuffer(gap_key, dtype=np.int64), np.frombuffer(gap_n, dtype=np.int64))
    if options.client_overhead_s:  # what the client sees
        first += options.client_overhead_s
        finish += options.client_overhead_s
    return ServingRun(requests, arrival, first, finish, prefill_end, kv_time, hit, prefilled, produced, preempt,
                      busy, {p.name: p.num_gpus for p in dep.pools}, {p.name: p.replicas for p in dep.pools}, steps,
                      duration, time.perf_counter() - wall0, transfer_log,
                      getattr(network, "link_tx_bytes", None) if network is not None else None,
                      itl, max_gap,
                      {k: {"steps": v[0], "decode_tokens": v[1] / v[0], "context": v[2] / max(v[1], 1),
                           "chunk_tokens": v[3] / v[0], "chunks": v[4] / v[0]} for k, v in rep_stats.items()},
                      entry_gpu, decode_gpu,
                      decode_hit if disagg and options.decode_prefix_cache_fraction > 0 else None, macro_stats,
                      prefill_home, decode_home, rank_homes)


def _assign_homes(dep: Deployment, replicas: dict[str, list[_Replica]], requests: Requests) -> dict[str, list]:
    """Set every attention rank's home domain (:func:`cosim.trace.placement.rank_domains` over
    the nodes of its replica's ranks, as a grouped step numbers them) and return them per pool.
    The domain count is the pool's ``domain_mixture`` routing model's when it has one (the
    requests' domains must be among them), else the requests'."""
    from cosim.network.deepep import group_nodes, topology_gpus_per_node
    from cosim.trace.expert_routing import DomainMixture
    from cosim.trace.placement import rank_domains

    req_domains = int(requests.domain.max()) + 1 if len(requests) else 1
    try:
        gpn = topology_gpus_per_node(dep.topology)
    except ConfigError:  # scale-up domains of unequal sizes: each GPU its own node
        gpn = 1
    out: dict[str, list] = {}
    for p in dep.pools:
        model = p.routing.model if p.routing is not None else None
        domains = model.domains if isinstance(model, DomainMixture) else req_domains
        if isinstance(model, DomainMixture) and req_domains > domains:
            raise ConfigError("<api>", f"pools.{p.name}.routing", f"the requests come from {req_domains} domains; "
                                                                  f"the pool's domain_mixture routing has {domains}")
        if p.routing is not None and p.routing.grouping and domains > 1 and req_domains == 1:
            raise ConfigError("<api>", f"pools.{p.name}.routing.grouping",
                              f"domain grouping groups requests by their domain, and every request is in domain 0: "
                              f"give the workload its {domains} domains (workload 'domains: {domains}', "
                              f"cosim serve --domains {domains})")
        out[p.name] = []
        for rep in replicas[p.name]:
            homes = rank_domains(group_nodes([rk.gpu_list[0] for rk in rep.ranks], gpn), domains)
            for rk, h in zip(rep.ranks, homes):
                rk.home = int(h)
            out[p.name].append(tuple(int(h) for h in homes))
    return out


def _emission_order(gaps: np.ndarray, block_t: np.ndarray, block_key: np.ndarray, block_n: np.ndarray) -> np.ndarray:
    """The gaps, recorded in blocks (one per replica step with decodes: its end, the replica's
    key, the count; inside a block by attention rank), in emission order: by time, then by
    replica (macro-steps record their blocks late)."""
    if len(block_t) > 1:
        dt = np.diff(block_t)
        if not np.all((dt > 0) | ((dt == 0) & (np.diff(block_key) > 0))):
            order = np.lexsort((block_key, block_t))
            n_sorted = block_n[order]
            starts = (np.cumsum(block_n) - block_n)[order]
            pos = np.repeat(starts - (np.cumsum(n_sorted) - n_sorted), n_sorted) + np.arange(len(gaps))
            return gaps[pos]
    return gaps.copy()
