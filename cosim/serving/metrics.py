"""Serving metrics: pure functions of a :class:`~cosim.serving.simulator.ServingRun`.

Definitions (``docs/serving.md``):

- **TTFT**: arrival to the first output token at the client (P/D: after the KV transfer when the
  decode side streams the first token, the default; or at prefill end).
- **TPOT**: ``(finish - first token) / (output tokens - 1)`` per request (requests of one output
  token have none); the mean inter-token latency of the request.
- **E2E**: arrival to the last token.
- **ITL**: every gap between consecutive output tokens of a request, over all tokens of the run
  (its tail shows the stalls of decodes behind prefill chunks and preemptions).
- **Throughput**: output tokens per second over the measured window, per GPU (every GPU of every
  pool, prefill pools included) and per user (``1 / TPOT``); input throughput counts new input
  tokens and reused (prefix-cached) tokens apart.
- **SLO attainment**: share of finished requests with TTFT <= SLO and TPOT <= SLO; **goodput**:
  the output tokens per second of those requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles of a latency (seconds); NaN when there are no samples."""

    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    count: int

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution:
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        if not len(v):
            return cls(float("nan"), float("nan"), float("nan"), float("nan"), 0)
        p50, p90, p99 = np.percentile(v, PERCENTILES)
        return cls(float(v.mean()), float(p50), float(p90), float(p99), len(v))


def ttft_s(run) -> np.ndarray:
    return run.first_token_s - run.arrival_s


def tpot_s(run) -> np.ndarray:
    out = run.requests.output_tokens.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (run.finish_s - run.first_token_s) / (out - 1)
    t[out <= 1] = np.nan
    return t


def e2e_s(run) -> np.ndarray:
    return run.finish_s - run.arrival_s


@dataclass(frozen=True)
class ServingSummary:
    """The run's figures (see the module docstring); throughputs over the window from the first
    arrival to the last finish."""

    requests: int
    finished: int
    duration_s: float
    ttft: Distribution
    tpot: Distribution
    e2e: Distribution
    itl: Distribution
    kv_transfer: Distribution
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    output_tokens_per_s_per_user: float
    input_tokens_per_s: float
    reused_tokens_per_s: float
    prefix_hit_rate: float
    decode_prefix_hit_rate: float
    slo_attainment: float | None
    goodput_tokens_per_s: float | None
    mean_concurrency: float
    pool_utilization: dict[str, float]
    preemptions: int
    num_gpus: int


def summarize(run, slo=None) -> ServingSummary:
    """:class:`ServingSummary` of ``run``; ``slo`` (``ttft_s``, ``tpot_s``) adds attainment and
    goodput."""
    done = run.finished
    window = (np.nanmax(run.finish_s) - np.nanmin(run.arrival_s)) if done.any() else float("nan")
    window = window if window > 0 else float("nan")
    out = run.requests.output_tokens.astype(float)
    tokens = float(out[done].sum())
    tp = tpot_s(run)
    attain = goodput = None
    if slo is not None and done.any():
        ok = done & (ttft_s(run) <= slo.ttft_s) & ((tp <= slo.tpot_s) | np.isnan(tp))
        attain = float(ok.sum() / done.sum())
        goodput = float(out[ok].sum() / window)
    prefix = run.requests.prefix_tokens.astype(float)
    dhit = getattr(run, "decode_prefix_hit_tokens", None)
    reuse = prefix > 0
    util = {name: run.pool_busy_s[name] / (window * run.pool_replicas[name]) for name in run.pool_busy_s}
    e2e = e2e_s(run)
    return ServingSummary(
        requests=len(run.requests), finished=int(done.sum()), duration_s=float(window),
        ttft=Distribution.of(ttft_s(run)[done]), tpot=Distribution.of(tp[done]), e2e=Distribution.of(e2e[done]),
        itl=Distribution.of(run.itl_s if run.itl_s is not None else np.array([])),
        kv_transfer=Distribution.of(run.kv_transfer_s[done]),
        output_tokens_per_s=tokens / window, output_tokens_per_s_per_gpu=tokens / window / run.num_gpus,
        output_tokens_per_s_per_user=float(np.nanmean(1.0 / tp[done])) if np.any(~np.isnan(tp[done])) else float("nan"),
        input_tokens_per_s=float(run.requests.input_tokens[done].sum() / window),
        reused_tokens_per_s=float(run.prefix_hit_tokens[done].sum() / window),
        prefix_hit_rate=float(run.prefix_hit_tokens[reuse].sum() / prefix[reuse].sum()) if reuse.any() else float("nan"),
        decode_prefix_hit_rate=float(dhit[reuse].sum() / prefix[reuse].sum()) if reuse.any() and dhit is not None
        else float("nan"),
        slo_attainment=attain, goodput_tokens_per_s=goodput,
        mean_concurrency=float(np.nansum(e2e[done]) / window),
        pool_utilization=util, preemptions=int(run.preemptions.sum()), num_gpus=run.num_gpus)
