"""TTFT and TPOT of served deployments against measured ones (``silicon_sample.csv``).

The rows are the usable rows of :func:`cosim.validation.silicon.select_rows` (same models,
systems, repeat removal and drop rules). Each row is a closed-loop benchmark at a fixed
concurrency (``silicon-sample.md``): its measured TTFT includes queueing. For every row this
module builds the cosim :class:`~cosim.serving.deployment.Deployment` of the row, a closed loop of
the row's concurrency sending fixed-length requests of its ISL / OSL, serves them with the
discrete-event simulator of :mod:`cosim.serving.simulator` and compares TTFT and TPOT with the
measured values. Nothing is fitted (no constant).

Rules (all deterministic):

* **Deployment.** agg: one ``mixed`` pool with the row's parallelism (one worker: the CSV records
  no worker count for agg rows), batching ``chunked_prefill`` with ``max_batch`` = the row's
  ``batch_size`` (requests per attention rank) and the framework's default token budget
  (:data:`TOKEN_BUDGET`). disagg: a ``prefill`` pool (``prefill_*`` columns,
  ``prefill_num_workers`` replicas, ``prefill_only``, one request per attention rank and step as
  ``prefill_batch_size = 1`` records) and a ``decode`` pool (``decode_*`` columns,
  ``decode_num_workers`` replicas, ``decode_only``, ``max_batch`` = ``decode_batch_size``),
  prefill GPUs first, then decode GPUs, on the smallest preset of the row's system holding all of
  them (:data:`cosim.validation.silicon.TOPOLOGY_PRESETS`; b200_sxm: the h200 HGX preset with
  B200 GPUs and NVLink5, as there). The prefill side gets the same checks as the decode side
  (attention width = expert width, attention TP <= 8, not TP and DP both > 1, split divides the
  model). Precision and kernel rules: :data:`cosim.validation.silicon.AFTER`.
* **Workload.** ``concurrency`` = :attr:`SiliconRow.concurrency` (agg: ``batch_size x
  attention_dp_size``; disagg: ``decode_batch_size x decode_num_workers x
  decode_attention_dp_size``), a :class:`~cosim.serving.workload.ClosedLoop` of that many users
  without think time, every request ``isl`` new tokens (no reused prefix: the CSV records none)
  and ``osl`` output tokens, ``max(4 x concurrency, 64)`` requests, at most :data:`MAX_REQUESTS`.
* **Statistics.** The file does not say whether its TTFT / TPOT are means or medians. The
  primary comparison is the **mean over the steady-state requests** (all requests after the first
  ``concurrency`` ones: the first wave arrives together at t = 0, a warm-up the benchmarks'
  sample may or may not contain); the medians and the means over all requests are kept as
  variants. TTFT: arrival to the first token at the client; in P/D the decode side streams the
  first token after the KV transfer (``ttft="decode_first_token"``), as the SGLang / Dynamo /
  TensorRT-LLM disaggregated benchmarks measure it. TPOT: ``(finish - first token) / (osl - 1)``.
* **Step times** (:class:`cosim.engine.memo.MemoStepTimes`): every distinct step the simulator asks for is
  simulated once with one :class:`~cosim.engine.simulator.StepSimulator` per pool (exact, not
  interpolated), after rounding the decode context and the chunks' prefixes to multiples of
  :data:`CONTEXT_STEP` tokens (chunk lengths and batch sizes as given). Rows sharing a deployment
  (a concurrency sweep of one configuration) share the memo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosim.engine.memo import CONTEXT_STEP, MemoStepTimes
from cosim.errors import ConfigError, CosimError
from cosim.validation.silicon import (
    AFTER, TOPOLOGY_PRESETS, SiliconRow, _cannot_model, _int, aiconfigurator_per_row, parallel_problem, read_parallel,
    checkpoint_model, error_summary, row_precision, row_topology, select_rows, silicon_csv_path,
)

#: Token budget per attention rank of agg (chunked-prefill) steps, per framework: TensorRT-LLM's
#: default ``max_num_tokens`` 8192, SGLang's ``chunked_prefill_size`` 8192 (divided among the DP
#: attention ranks under ``enable_dp_attention``), vLLM's ``max_num_batched_tokens`` 8192.
TOKEN_BUDGET = {"trtllm": 8192, "sglang": 8192, "vllm": 8192}
#: Frameworks whose token budget is shared by the DP attention ranks of a worker.
BUDGET_SPLIT_OVER_DP = frozenset({"sglang"})
#: Smallest per-rank budget (a chunk must hold at least a few hundred tokens).
MIN_TOKEN_BUDGET = 256
#: Fixed client-side TTFT overhead (HTTP, tokenization, admission, first-token streaming) added to
#: every request (``--client-overhead-ms``). Default 0: the one constant tried, 65 ms, fitted by
#: :func:`fit_client_overhead_ms` on the fit half of the default subset (post hoc there: median
#: |TTFT error| 52 % -> 35 %), made the held-out half worse once simulated (53 % -> 66 %: rows with
#: short measured TTFTs overshoot while low-concurrency rows improve), so it is not used
#: (docs/validation-serving.md).
CLIENT_OVERHEAD_MS = 0.0
#: Requests per row: ``max(REQUESTS_PER_USER x concurrency, MIN_REQUESTS)``, at most MAX_REQUESTS.
REQUESTS_PER_USER = 4
MIN_REQUESTS = 64
MAX_REQUESTS = 4096


# ---------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class ServingRow:
    """One measured deployment as a serving run.

    ``decode`` is the row as :mod:`cosim.validation.silicon` reads it (agg: the mixed instance;
    disagg: one decode worker, ``num_workers`` workers); ``prefill`` the prefill worker of a
    disagg row in the same form (``num_workers`` prefill workers, ``batch_per_rank`` 1).
    ``export``: the measurement's export (:func:`export_of`)."""

    decode: SiliconRow
    prefill: SiliconRow | None
    export: str

    @property
    def row_id(self) -> str:
        return self.decode.row_id

    @property
    def mode(self) -> str:
        return self.decode.mode

    @property
    def system(self) -> str:
        return self.decode.system

    @property
    def concurrency(self) -> int:
        return self.decode.concurrency

    @property
    def num_gpus(self) -> int:
        n = self.decode.gpus * self.decode.num_workers
        return n + (self.prefill.gpus * self.prefill.num_workers if self.prefill is not None else 0)

    @property
    def num_requests(self) -> int:
        return int(min(max(REQUESTS_PER_USER * self.concurrency, MIN_REQUESTS), MAX_REQUESTS))

    @property
    def half(self) -> str:
        """``fit`` or ``held_out``: the half of the row by a hash of its id (constants would be
        fitted on ``fit`` and reported on ``held_out``; none is fitted)."""
        return split_half(self.row_id)

    @property
    def label(self) -> str:
        d = self.decode
        if self.prefill is None:
            return d.label + f" c{self.concurrency}"
        p = self.prefill
        pa = f"DP{p.attention_dp}" if p.attention_dp > 1 else f"TP{p.tp}"
        da = f"DP{d.attention_dp}" if d.attention_dp > 1 else f"TP{d.tp}"
        return (f"{d.system} {d.framework} disagg {p.num_workers}x{pa}/EP{p.moe_ep} + {d.num_workers}x{da}/EP{d.moe_ep}"
                f" b{d.batch_per_rank} {d.isl}/{d.osl} {d.precision} c{self.concurrency}")


def split_half(row_id: str) -> str:
    """Deterministic half of a row id (blake2b of the id, even -> ``fit``)."""
    return "fit" if hashlib.blake2b(row_id.encode(), digest_size=8).digest()[0] % 2 == 0 else "held_out"


_GAP = re.compile(r"data/([^/]+)/([^/]+)/([^/]+)/")


def export_of(source: object) -> str:
    """The export a row comes from, from its ``silicon_data_source``: ``db-dump/2026-04-27``,
    ``2026-03-25`` (``source_file=2026-03-25.csv``) or ``gap-analysis <system>/<backend>/<version>``
    (per-framework CSVs of aiconfigurator's gap analysis)."""
    first = str(source).split(";")[0].strip()
    if first.startswith("source_file="):
        name = first[len("source_file="):]
        m = _GAP.search(name)
        if m:
            return f"gap-analysis {m[1]}/{m[2]}/{m[3]}"
        return Path(name).stem
    return first


@dataclass(frozen=True)
class ServingSelection:
    """The usable rows (silicon.py's rules), the ones this module can serve and, for every other
    usable row, why not (``skipped``: row id -> reason)."""

    rows: tuple[ServingRow, ...]
    usable: int
    skipped: dict[str, str] = field(hash=False)
    silicon_dropped: dict[str, int] = field(hash=False)

    @property
    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(self.skipped.values()).most_common())


def _prefill_row(decode: SiliconRow, rec: dict) -> tuple[SiliconRow | None, str]:
    """The prefill worker of a disagg row as a :class:`SiliconRow`, or the reason it is unusable
    (the checks :func:`cosim.validation.silicon.select_rows` applies to the decode side)."""
    tp, dp, moe_tp, moe_ep, pp = read_parallel(rec, "prefill_")
    workers, batch = _int(rec.get("prefill_num_workers")), _int(rec.get("prefill_batch_size"), 1)
    if tp is None or moe_ep is None or workers is None:
        return None, "prefill: missing parallelism or worker count"
    why = parallel_problem(tp, dp, moe_tp, moe_ep)
    if why:
        return None, f"prefill: {why}"
    row = dataclasses.replace(decode, tp=tp, attention_dp=dp, moe_tp=moe_tp, moe_ep=moe_ep, pp=pp,
                              batch_per_rank=batch, num_workers=workers)
    why = _cannot_model(row)
    return (None, f"prefill: {why}") if why else (row, "")


def serving_topology_name(row: ServingRow) -> str | None:
    """Smallest preset of the row's system holding all its GPUs (None: none is big enough)."""
    for name, gpus in TOPOLOGY_PRESETS.get(row.system, ()):
        if row.num_gpus <= gpus:
            return name
    return None


def serving_topology(row: ServingRow):
    """The topology of the whole deployment: silicon.py's preset rule (and b200 variant) applied
    to the deployment's GPU count."""
    whole = dataclasses.replace(row.decode, tp=row.num_gpus, attention_dp=1, pp=1)
    return row_topology(whole)


def select_serving_rows(path: str | Path | None = None) -> ServingSelection:
    """Usable rows of :func:`cosim.validation.silicon.select_rows` turned into serving rows; the
    ones that cannot be served get their reason."""
    import pandas as pd

    sel = select_rows(path)
    df = pd.read_csv(Path(path) if path is not None else silicon_csv_path())
    recs = {str(r["id"]): r for r in df.to_dict("records")}
    rows, skipped = [], {}
    for d in sel.rows:
        rec = recs[d.row_id]
        prefill = None
        if d.mode == "disagg":
            prefill, why = _prefill_row(d, rec)
            if prefill is None:
                skipped[d.row_id] = why
                continue
        row = ServingRow(d, prefill, export_of(rec.get("silicon_data_source")))
        if serving_topology_name(row) is None:
            biggest = TOPOLOGY_PRESETS[row.system][-1]
            skipped[d.row_id] = f"no topology preset large enough ({row.num_gpus} GPUs > {biggest[1]} of {biggest[0]})"
            continue
        rows.append(row)
    return ServingSelection(tuple(rows), len(sel.rows), skipped, dict(sel.dropped))


#: Largest deployment (GPUs) of the default subset: step simulations cost grows with the GPUs of
#: a pool (a DP32 decode step is ~1 s of wall time, an 8-GPU one ~0.1 s).
DEFAULT_MAX_GPUS = 32


def default_subset(rows: Sequence[ServingRow], max_rows: int, seed: int = 0,
                   max_gpus: int | None = DEFAULT_MAX_GPUS) -> list[ServingRow]:
    """The default subset: rows of at most ``max_gpus`` GPUs (``None``: all), then at most
    ``max_rows`` of them drawn per (system, framework, mode) stratum in proportion to its size
    (at least one each) with a seeded generator
    (:func:`cosim.validation.silicon.subsample`); file order kept."""
    from cosim.validation.silicon import subsample

    pool = [r for r in rows if max_gpus is None or r.num_gpus <= max_gpus]
    by_id = {r.row_id: r for r in pool}
    return [by_id[d.row_id] for d in subsample([r.decode for r in pool], max_rows, seed)]


def steady_window(num_requests: int, concurrency: int) -> tuple[int, int]:
    """Requests ``[lo, hi)`` the statistics use: after the first wave (the first ``concurrency``
    requests, sent together at t = 0) and before the last one (the last ``concurrency``
    requests run while the loop drains and batches shrink), when at least one request remains;
    else after the first wave only; else all."""
    if num_requests - 2 * concurrency >= 1:
        return concurrency, num_requests - concurrency
    if num_requests - concurrency >= 1:
        return concurrency, num_requests
    return 0, num_requests


# ---------------------------------------------------------------------------------------- deployment


def token_budget(framework: str, attention_ranks: int) -> int:
    """Token budget per attention rank of an agg step (:data:`TOKEN_BUDGET`)."""
    total = TOKEN_BUDGET.get(framework, 8192)
    if framework in BUDGET_SPLIT_OVER_DP:
        return max(MIN_TOKEN_BUDGET, total // max(1, attention_ranks))
    return total


#: KV-cache format of every row (the CSV does not record the engines' ``kv_cache_dtype``): fp8,
#: chosen on the ``fit`` half between the checkpoint's format (bf16 for DeepSeek-R1 FP8) and
#: fp8 (fit half, median TTFT 52 % -> 42 %, TPOT 19 % -> 18 %; docs/validation-serving.md).
#: ``None``: the checkpoint's.
KV_CACHE = "fp8"


def row_deployment(row: ServingRow, kv_cache: str | None = KV_CACHE):
    """The cosim :class:`~cosim.serving.deployment.Deployment` of a row (module docstring);
    ``kv_cache`` overrides the checkpoint's KV-cache format (e.g. ``fp8``: the CSV does not
    record the engines' ``kv_cache_dtype``)."""
    from cosim.serving.deployment import BatchingSpec, Deployment, PoolSpec

    d = row.decode
    model = checkpoint_model(d)
    topo = serving_topology(row)
    if row.prefill is None:
        budget = token_budget(d.framework, d.attention_dp)
        pools = (PoolSpec("agg", "mixed", d.parallel, 1,
                          BatchingSpec("chunked_prefill", budget, max(1, d.batch_per_rank))),)
    else:
        p = row.prefill
        pools = (PoolSpec("prefill", "prefill", p.parallel, p.num_workers,
                          BatchingSpec("prefill_only", max(d.isl, TOKEN_BUDGET.get(d.framework, 8192)),
                                       max(1, p.batch_per_rank))),
                 PoolSpec("decode", "decode", d.parallel, d.num_workers,
                          BatchingSpec("decode_only", TOKEN_BUDGET.get(d.framework, 8192), max(1, d.batch_per_rank))))
    precision = row_precision(d, AFTER)
    if kv_cache is not None:
        precision = dataclasses.replace(precision, kv_cache=kv_cache)
    return Deployment(model, topo, pools, d.system, d.framework, precision, source=f"row {row.row_id}")


def row_requests(row: ServingRow, num_requests: int | None = None):
    """Closed loop of the row's concurrency, fixed ISL / OSL, no reused prefix."""
    from cosim.serving.workload import SLO, ClosedLoop, Fixed, WorkloadSpec, generate_requests

    d = row.decode
    wl = WorkloadSpec(name=f"silicon {row.row_id}", arrival=ClosedLoop(row.concurrency), slo=SLO(1.0, 0.05),
                      prefix_tokens=Fixed(0), input_tokens=Fixed(d.isl), output_tokens=Fixed(d.osl))
    return generate_requests(wl, num_requests=num_requests or row.num_requests)


# ---------------------------------------------------------------------------------------- step times


# ---------------------------------------------------------------------------------------- serving


@dataclass
class RowServing:
    """The served row: predicted TTFT / TPOT (ms) under each statistic, cost, or the reason it
    was not predicted (``skipped``)."""

    row: ServingRow
    ttft_ms: float | None = None          # primary: mean over steady-state requests
    tpot_ms: float | None = None
    variants: dict[str, float] = field(default_factory=dict)
    kv_transfer_ms: float | None = None
    preemptions: int = 0
    finished: int = 0
    step_simulations: int = 0
    step_queries: int = 0
    simulate_wall_s: float = 0.0
    wall_s: float = 0.0
    kv_capacity_tokens: dict[str, int] = field(default_factory=dict)
    skipped: str = ""

    @property
    def ttft_err(self) -> float | None:
        return None if self.ttft_ms is None else abs(self.ttft_ms / self.row.decode.ttft_ms - 1.0)

    @property
    def tpot_err(self) -> float | None:
        return None if self.tpot_ms is None else abs(self.tpot_ms / self.row.decode.tpot_ms - 1.0)


class StepTimeCache:
    """:class:`MemoStepTimes` per deployment pool, shared by rows with the same pool (same spec,
    kernels and topology), with one kernel-table set per (system, framework) loaded at a time."""

    def __init__(self, context_step: int = CONTEXT_STEP):
        self.context_step = context_step
        self._kernels_key = None
        self._kernels = None
        self._sims: dict[tuple, object] = {}
        self._memos: dict[tuple, MemoStepTimes] = {}

    def kernels(self, system: str, framework: str):
        from cosim.kernels import KernelTables

        key = (system, framework)
        if key != self._kernels_key:
            import gc

            self._kernels = self._sims = self._memos = None
            gc.collect()
            self._kernels = KernelTables.load(system, framework).variant(prefer_wide_ep=AFTER.prefer_wide_ep,
                                                                          moe_ep_split=AFTER.moe_ep_split)
            self._kernels_key, self._sims, self._memos = key, {}, {}
        return self._kernels

    def step_times(self, dep, pool) -> MemoStepTimes:
        from cosim.engine.simulator import StepSimulator
        from cosim.engine.step_model import query_neutral_spec

        kernels = self.kernels(dep.system, dep.framework)
        base = dep.step_spec(pool)
        key = (dep.topology.name, repr(query_neutral_spec(base)))
        if key not in self._memos:
            sim_key = dep.topology.name
            if sim_key not in self._sims:
                self._sims[sim_key] = StepSimulator(kernels, dep.topology, "flow")
            self._memos[key] = MemoStepTimes(self._sims[sim_key], base, self.context_step)
        return self._memos[key]


def fit_client_overhead_ms(results: Iterable[dict], step_ms: float = 5.0, max_ms: float = 400.0) -> float:
    """The client overhead (ms, a multiple of ``step_ms``) minimizing the median |TTFT error| of
    the **fit-half** rows of a run made without it (``results``: rows as in the JSON, with
    ``half``, ``ttft_ms``, ``measured_ttft_ms``; held-out rows are ignored)."""
    fit = [r for r in results if r.get("half") == "fit" and r.get("ttft_ms") is not None
           and r.get("measured_ttft_ms")]
    if not fit:
        raise ConfigError("<api>", "results", "no fit-half rows with a predicted and a measured TTFT")
    pred = np.array([r["ttft_ms"] for r in fit])
    meas = np.array([r["measured_ttft_ms"] for r in fit])
    grid = np.arange(0.0, max_ms + step_ms / 2, step_ms)
    errors = [float(np.median(np.abs((pred + c) / meas - 1.0))) for c in grid]
    return float(grid[int(np.argmin(errors))])


def serve_row(row: ServingRow, cache: StepTimeCache | None = None, num_requests: int | None = None,
              client_overhead_ms: float = CLIENT_OVERHEAD_MS, kv_cache: str | None = KV_CACHE) -> RowServing:
    """Serve one row (module docstring); a row that cannot be served comes back with its reason."""
    from cosim.network.live import LiveNetwork
    from cosim.serving.deployment import pool_memory
    from cosim.serving.metrics import tpot_s, ttft_s
    from cosim.serving.simulator import ServingOptions, simulate_serving

    wall0 = time.perf_counter()
    cache = cache or StepTimeCache()
    out = RowServing(row)
    try:
        dep = row_deployment(row, kv_cache)
        kernels = cache.kernels(dep.system, dep.framework)
        memory = {p.name: pool_memory(dep, p, kernels.system.mem_capacity_bytes) for p in dep.pools}
        out.kv_capacity_tokens = {k: m.kv_capacity_tokens for k, m in memory.items()}
        bad = [m.reason for m in memory.values() if m.reason]
        if bad:
            out.skipped = "infeasible memory: " + "; ".join(bad)
            return out
        need = row.decode.isl + row.decode.osl
        small = [k for k, m in memory.items() if m.kv_capacity_tokens < need]
        if small:
            out.skipped = (f"infeasible memory: pool {small[0]!r} holds {memory[small[0]].kv_capacity_tokens} KV tokens "
                           f"per attention rank, a request needs {need}")
            return out
        steps = {p.name: cache.step_times(dep, p) for p in dep.pools}
        before = {k: (s.simulations, s.queries, s.simulate_wall_s) for k, s in steps.items()}
        requests = row_requests(row, num_requests)
        network = LiveNetwork(dep.topology) if row.prefill is not None else None
        run = simulate_serving(dep, requests, steps, kv_capacity_tokens=out.kv_capacity_tokens,
                               kv_bytes_per_token={k: m.kv_bytes_per_token for k, m in memory.items()},
                               network=network, options=ServingOptions(ttft="decode_first_token",
                                                                       client_overhead_s=client_overhead_ms / 1e3))
    except CosimError as exc:
        out.skipped = f"{type(exc).__name__}: {exc}"
        out.wall_s = time.perf_counter() - wall0
        return out
    done = run.finished
    out.finished = int(done.sum())
    if not done.any():
        out.skipped = "no request finished"
        return out
    ttft, tpot = ttft_s(run) * 1e3, tpot_s(run) * 1e3
    lo, hi = steady_window(len(requests), row.concurrency)
    idx = np.arange(len(requests))
    steady = done & (idx >= lo) & (idx < hi)
    if not steady.any():
        steady = done
    def stat(x, mask, f):
        v = x[mask]
        v = v[~np.isnan(v)]
        return float(f(v)) if len(v) else math.nan
    out.ttft_ms, out.tpot_ms = stat(ttft, steady, np.mean), stat(tpot, steady, np.mean)
    out.variants = {"ttft_steady_median_ms": stat(ttft, steady, np.median),
                    "tpot_steady_median_ms": stat(tpot, steady, np.median),
                    "ttft_all_mean_ms": stat(ttft, done, np.mean), "tpot_all_mean_ms": stat(tpot, done, np.mean),
                    "ttft_all_median_ms": stat(ttft, done, np.median),
                    "tpot_all_median_ms": stat(tpot, done, np.median)}
    if row.prefill is not None:
        out.kv_transfer_ms = stat(run.kv_transfer_s * 1e3, steady, np.mean)
    out.preemptions = int(run.preemptions.sum())
    for k, s in steps.items():
        n0, q0, w0 = before[k]
        out.step_simulations += s.simulations - n0
        out.step_queries += s.queries - q0
        out.simulate_wall_s += s.simulate_wall_s - w0
    out.wall_s = time.perf_counter() - wall0
    return out


def serve_rows(rows: Iterable[ServingRow], progress: Callable[[int, int, ServingRow], None] | None = None,
               context_step: int = CONTEXT_STEP, client_overhead_ms: float = CLIENT_OVERHEAD_MS,
               kv_cache: str | None = KV_CACHE) -> list[RowServing]:
    """Serve every row, grouped by (system, framework) so each kernel-table set is read once;
    results in the rows' order."""
    rows = list(rows)
    order = sorted(range(len(rows)), key=lambda i: (rows[i].system, rows[i].decode.framework, i))
    cache = StepTimeCache(context_step)
    out: dict[int, RowServing] = {}
    for n, i in enumerate(order):
        out[i] = serve_row(rows[i], cache, client_overhead_ms=client_overhead_ms, kv_cache=kv_cache)
        if progress is not None:
            progress(n + 1, len(rows), rows[i])
    return [out[i] for i in range(len(rows))]


def check_memo(rows: Iterable[ServingRow], per_pool: int = 6) -> dict:
    """Error of :class:`MemoStepTimes` against direct simulation: serve each row, then for up to
    ``per_pool`` memo keys per pool (evenly spread) simulate the last unrounded query that hit
    the key and compare with the memo's answer. Returns the relative errors' median and max."""
    errors: list[float] = []
    examples = []
    for row in rows:
        cache = StepTimeCache()
        res = serve_row(row, cache)
        if res.skipped:
            continue
        for memo in cache._memos.values():
            keys = [k for k in memo.memo if memo.raw.get(k) is not None and memo.raw[k] != k]
            for k in keys[:: max(1, len(keys) // per_pool)][:per_pool]:
                raw = memo.raw[k]
                direct = float(memo.sim.simulate(memo.spec(*raw)).step_time_s)
                err = abs(memo.memo[k] / direct - 1.0)
                errors.append(err)
                examples.append({"row": row.row_id, "query": raw, "key": k, "memo_ms": memo.memo[k] * 1e3,
                                 "direct_ms": direct * 1e3, "err": err})
    e = np.array(errors) if errors else np.array([math.nan])
    return {"queries": len(errors), "median": float(np.median(e)), "max": float(np.max(e)), "examples": examples}


# ---------------------------------------------------------------------------------------- aiconfigurator


def aiconfigurator_estimates(rows: Iterable[ServingRow], time_budget_s: float = 240.0) -> dict[str, dict]:
    """aiconfigurator-core's own estimate per row id: ``{"tpot_ms", "ttft_ms"}`` (``None`` where it
    gives none). TPOT: :func:`cosim.validation.silicon.aiconfigurator_tpot_ms` (its decode step of
    the row's decode batch). TTFT: its static prefill latency of one request of ``isl`` tokens
    (``EngineHandle.predict_prefill_latency(1, isl)``) on the prefill worker (disagg) or the agg
    worker, times its agg queueing factor where it has one (agg rows: the backend's
    ``_ttft_queuing_factor``; disagg: none). No queueing simulation, no KV transfer."""
    from cosim.validation.silicon import aiconfigurator_tpot_ms

    rows = list(rows)
    t0 = time.perf_counter()
    tpot = aiconfigurator_tpot_ms([r.decode for r in rows], time_budget_s=time_budget_s / 2)
    ttft = _aiconfigurator_ttft_ms(rows, time_budget_s - (time.perf_counter() - t0))
    return {r.row_id: {"tpot_ms": tpot.get(r.row_id), "ttft_ms": ttft.get(r.row_id)} for r in rows}


def _aiconfigurator_ttft_ms(rows: list[ServingRow], time_budget_s: float) -> dict[str, float | None]:
    def estimate(h, row: ServingRow) -> float | None:
        r = row.prefill if row.prefill is not None else row.decode
        t = float(h.predict_prefill_latency(1, r.isl))
        factor, overhead = _aic_queueing_factor(row)
        return (t + overhead) * factor if math.isfinite(t) and t > 0 else None

    return aiconfigurator_per_row(rows, estimate, time_budget_s,
                                  row_of=lambda row: row.prefill if row.prefill is not None else row.decode)


def _aic_queueing_factor(row: ServingRow) -> tuple[float, float]:
    """aiconfigurator's agg TTFT correction for the row: its framework backend's
    ``_ttft_queuing_factor(batch, steps_to_finish_ctx)`` and ``_prefill_dispatch_overhead_ms``
    (``run_agg``'s formula, with ``steps_to_finish_ctx = ceil(isl x batch / token budget)``);
    ``(1, 0)`` for disagg rows (its disagg TTFT is the prefill worker's latency)."""
    if row.prefill is not None:
        return 1.0, 0.0
    from types import SimpleNamespace

    try:
        from aiconfigurator_core.sdk.backends.factory import get_backend

        backend = get_backend(row.decode.framework)
    except Exception:  # not installed, or an unknown backend
        return 1.0, 0.0
    d = row.decode
    steps = float(np.ceil(d.isl * d.batch_per_rank / token_budget(d.framework, d.attention_dp)))
    factor = float(backend._ttft_queuing_factor(d.batch_per_rank, steps))
    layers = checkpoint_model(d).num_layers
    overhead = float(backend._prefill_dispatch_overhead_ms(SimpleNamespace(_num_layers=layers)))
    return factor, overhead


# ---------------------------------------------------------------------------------------- summaries


def summarize_errors(results: Sequence[RowServing], aic: dict[str, dict], key: Callable[[RowServing], str]) \
        -> dict[str, dict]:
    """Per group (``key(result)``; ``all`` too): rows, cosim's median / p90 |error| of TTFT and
    TPOT on its predicted rows, and cosim and aiconfigurator on the rows both predict."""
    groups: dict[str, list[RowServing]] = {"all": list(results)}
    for r in results:
        if key(r) != "all":
            groups.setdefault(key(r), []).append(r)
    out = {}
    for name, rs in groups.items():
        pred = [r for r in rs if r.ttft_ms is not None]
        entry = {"rows": len(rs), "predicted": len(pred),
                 "ttft": error_summary(r.ttft_err for r in pred), "tpot": error_summary(r.tpot_err for r in pred)}
        for what in ("ttft", "tpot"):
            both = [r for r in pred if aic.get(r.row.row_id, {}).get(f"{what}_ms") is not None]
            entry[f"{what}_aic"] = error_summary(abs(aic[r.row.row_id][f"{what}_ms"] / getattr(r.row.decode, f"{what}_ms")
                                                     - 1.0) for r in both)
            entry[f"{what}_cosim_on_aic_rows"] = error_summary(getattr(r, f"{what}_err") for r in both)
        out[name] = entry
    return out


__all__ = ["CONTEXT_STEP", "KV_CACHE", "MAX_REQUESTS", "TOKEN_BUDGET", "MemoStepTimes", "RowServing", "ServingRow",
           "ServingSelection", "StepTimeCache", "aiconfigurator_estimates", "check_memo", "default_subset", "export_of",
           "row_deployment", "row_requests", "select_serving_rows", "serve_row", "serve_rows", "split_half",
           "summarize_errors", "token_budget"]
