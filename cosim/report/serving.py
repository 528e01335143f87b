"""Serving results as tables and files (``cosim serve``): the summary table against the SLOs, the
per-pool table, per-request Parquet and a JSON summary. Reads results; never simulates."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table

from cosim.io_atomic import atomic_path, atomic_write_text
from cosim.report.tables import TableData, table_data


def _ms(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1e3:.1f} ms"


def summary_data(result, slo=None) -> TableData:
    """Latency percentiles (TTFT, TPOT, E2E, KV transfer) against the SLOs, and throughput."""
    s = result.summary
    rows = [("TTFT", s.ttft, slo.ttft_s if slo else None), ("TPOT", s.tpot, slo.tpot_s if slo else None),
            ("inter-token", s.itl, None), ("end-to-end", s.e2e, None)]
    if s.kv_transfer.count:
        rows.append(("KV transfer", s.kv_transfer, None))
    cells = [(name, _ms(d.mean_s), _ms(d.p50_s), _ms(d.p90_s), _ms(d.p99_s), _ms(target) if target else "")
             for name, d, target in rows]
    return table_data(f"{result.deployment.model.name}: {result.deployment.mode}, {result.deployment.num_gpus} GPUs, "
                      f"{s.finished}/{s.requests} requests in {s.duration_s:.2f} s simulated",
                      ("metric", "mean", "p50", "p90", "p99", "SLO"), cells, left=("metric",))


def summary_table(result, slo=None) -> Table:
    """:func:`summary_data` for the terminal."""
    return summary_data(result, slo).rich(overflow=None)


def throughput_lines(result) -> list[str]:
    s = result.summary
    lines = [f"output tokens/s: {s.output_tokens_per_s:,.0f} total, {s.output_tokens_per_s_per_gpu:,.1f} per GPU, "
             f"{s.output_tokens_per_s_per_user:,.1f} per user; new input tokens/s {s.input_tokens_per_s:,.0f}, "
             f"reused (cached) tokens/s {s.reused_tokens_per_s:,.0f}"]
    if s.slo_attainment is not None:
        lines.append(f"SLO attainment: {s.slo_attainment:.1%}   goodput: {s.goodput_tokens_per_s:,.0f} tokens/s")
    if not math.isnan(s.prefix_hit_rate):
        lines.append(f"prefix cache hit rate: {s.prefix_hit_rate:.1%}")
    if not math.isnan(s.decode_prefix_hit_rate):
        lines.append(f"decode-side prefix hit rate (prefix tokens not moved): {s.decode_prefix_hit_rate:.1%}")
    lines.append(f"mean concurrency {s.mean_concurrency:.1f}; preemptions {s.preemptions}")
    return lines


def pool_data(result) -> TableData:
    """Per pool: GPUs, memory per GPU, KV capacity, utilization, steps; the busiest pool first
    (the bottleneck)."""
    util = result.summary.pool_utilization if result.summary else {}
    rows = []
    for p in sorted(result.deployment.pools, key=lambda p: -util.get(p.name, 0.0)):
        m = result.memory[p.name]
        models = [v for k, v in result.step_models.items() if k == p.name or k.startswith(f"{p.name}[replica ")]
        how = ", ".join(f"{v.get('source', '-')} ({v.get('wall_s', 0):.1f} s)" for v in models)
        if len(models) > 1:
            how = f"{len(models)} placements: {how}"
        rows.append((p.name, p.role, str(p.num_gpus), f"{m.weight_bytes / 2**30:.1f} GiB", f"{m.kv_capacity_tokens:,}",
                     f"{util.get(p.name, float('nan')):.0%}",
                     str(result.run.steps.get(p.name, 0)) if result.run else "-", how or "-"))
    return table_data("Pools", ("pool", "role", "GPUs", "weights/GPU", "KV capacity (tokens/rank)", "utilization",
                                "steps", "step model"), rows, left=("pool", "role", "step model"))


def pool_table(result) -> Table:
    """:func:`pool_data` for the terminal."""
    return pool_data(result).rich(overflow=None)


def timeline(run, bins: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run over simulated time, in ``bins`` bins from the first arrival to the last finish:
    bin centres (s), output tokens per second (each finished request's tokens after the first
    spread evenly from its first token to its last, the first at its first token) and requests
    in the system (arrived, not finished) at each centre. Empty arrays without finished requests."""
    done = run.finished
    if not done.any():
        return np.zeros(0), np.zeros(0), np.zeros(0)
    arrival = np.asarray(run.arrival_s, dtype=float)
    first, finish = np.asarray(run.first_token_s, dtype=float)[done], np.asarray(run.finish_s, dtype=float)[done]
    tokens = np.asarray(run.output_tokens_done, dtype=float)[done]
    t0, t1 = float(np.nanmin(arrival)), float(np.nanmax(finish))
    edges = np.linspace(t0, max(t1, t0 + 1e-9), bins + 1)
    width = edges[1] - edges[0]
    rest = np.maximum(tokens - 1.0, 0.0)
    span = np.maximum(finish - first, 1e-30)
    overlap = np.clip(np.minimum(edges[None, 1:], finish[:, None]) - np.maximum(edges[None, :-1], first[:, None]),
                      0.0, None)
    per_bin = (overlap * (rest / span)[:, None]).sum(axis=0)
    per_bin += np.histogram(first, edges, weights=np.minimum(tokens, 1.0))[0]
    centres = (edges[:-1] + edges[1:]) / 2
    end = np.where(np.isnan(run.finish_s), np.inf, run.finish_s)
    in_flight = ((arrival[None, :] <= centres[:, None]) & (end[None, :] > centres[:, None])).sum(axis=1)
    return centres - t0, per_bin / width, in_flight.astype(float)


def requests_table(run) -> pa.Table:
    """One row per request: its columns and what happened to it."""
    r = run.requests
    cols = {c: np.asarray(getattr(r, c)) for c in ("request_id", "arrival_s", "prefix_id", "prefix_tokens",
                                                   "input_tokens", "output_tokens", "domain")}
    cols.update(arrival_s=run.arrival_s, first_token_s=run.first_token_s, finish_s=run.finish_s,
                prefill_end_s=run.prefill_end_s, kv_transfer_s=run.kv_transfer_s,
                prefix_hit_tokens=run.prefix_hit_tokens, prefilled_tokens=run.prefilled_tokens,
                output_tokens_done=run.output_tokens_done, preemptions=run.preemptions,
                max_itl_s=run.max_itl_s if run.max_itl_s is not None else np.full(len(r), np.nan),
                entry_gpu=run.entry_gpu, decode_gpu=run.decode_gpu,
                decode_prefix_hit_tokens=run.decode_prefix_hit_tokens if run.decode_prefix_hit_tokens is not None
                else np.zeros(len(r), dtype=np.int64),
                prefill_home=run.prefill_home if run.prefill_home is not None else np.zeros(len(r), dtype=bool),
                decode_home=run.decode_home if run.decode_home is not None else np.zeros(len(r), dtype=bool))
    return pa.table(cols)


def write_requests_parquet(run, path: str | Path) -> Path:
    """Per-request Parquet, written atomically (:func:`cosim.io_atomic.atomic_path`: never a torn file)."""
    path = Path(path)
    table = requests_table(run)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def grouping_lines(result) -> list[str]:
    """Per pool with domain grouping: the grouping purity its step-time model assumed, what the
    run measured, and the re-priced run (``ServeResult.grouping``); the router's purity for a run
    whose requests carry several domains."""
    lines = []
    for name, g in result.grouping.items():
        line = f"domain grouping, pool {name}: step model assumed purity {g['assumed']:.2f}, the run measured " \
               f"{g['measured']:.2f}"
        if g.get("rerun"):
            line += f"; re-run at {g['rerun_assumed']:.2f} (measured {g['rerun_measured']:.2f})"
        lines.append(line)
    run = result.run
    if not lines and run is not None and len(run.requests) and run.requests.domain.max() > 0:
        lines.append(f"requests on a rank of their domain: {run.grouping_purity():.0%} of the output tokens")
    return lines


def serving_summary(result) -> dict:
    """A JSON-ready summary of a :class:`cosim.serving.run.ServeResult`."""
    return {
        "model": result.deployment.model.name, "mode": result.deployment.mode, "gpus": result.deployment.num_gpus,
        "feasible": result.feasible, "reasons": result.reasons,
        "memory": {k: _plain(v) for k, v in result.memory.items()},
        "summary": _plain(result.summary) if result.summary else None,
        "step_models": result.step_models, "wall_s": result.wall_s,
        "links": _busiest_links(result),
        "grouping": result.grouping,
        "grouping_purity": (result.run.grouping_purity() if result.run is not None and len(result.run.requests)
                            else None),
    }


def _busiest_links(result, top: int = 20) -> list[dict]:
    """The ``top`` links of the run by mean utilization over the serving window: bytes of the
    steps' collectives (estimated per replica, :attr:`cosim.serving.run.ServeResult.step_link_tx_bytes`)
    and of the P/D KV transfers (the LiveNetwork's counters)."""
    run = result.run
    if run is None:
        return []
    topo = result.deployment.topology
    n = topo.num_directed_links
    kv = np.zeros(n) if run.link_tx_bytes is None else np.asarray(run.link_tx_bytes, dtype=float)
    steps = np.zeros(n) if result.step_link_tx_bytes is None else np.asarray(result.step_link_tx_bytes, dtype=float)
    tx = kv + steps
    window = max(result.summary.duration_s, 1e-30)
    util = tx * 8.0 / topo.directed_bandwidth_bps / window
    return [{"link": topo.describe_link(int(d)), "tier": topo.links[d // 2].tier,
             "bandwidth_gbps": float(topo.directed_bandwidth_bps[d] / 1e9), "step_bytes": float(steps[d]),
             "kv_bytes": float(kv[d]), "mean_utilization": float(util[d])}
            for d in np.argsort(-util, kind="stable")[:top] if tx[d] > 0]


def write_serving_json(result, path: str | Path) -> Path:
    """The serving summary as JSON, written atomically."""
    return atomic_write_text(path, json.dumps(_plain(serving_summary(result)), indent=2, default=str))


def links_data(result, top: int = 10) -> TableData | None:
    """The busiest links of the serving run (:func:`_busiest_links`: step collectives and KV
    transfers) and their mean utilization over the serving window; ``None`` without traffic."""
    links = _busiest_links(result, top)
    if not links:
        return None
    rows = [(d["link"], d["tier"], f"{d['bandwidth_gbps'] / 8:.0f}", f"{d['step_bytes'] / 2**30:.2f} GiB",
             f"{d['kv_bytes'] / 2**30:.2f} GiB", f"{d['mean_utilization']:.1%}") for d in links]
    return table_data("Busiest links over the run (step collectives + KV transfers)",
                      ("link", "tier", "GB/s", "steps", "KV", "mean util"), rows, left=("link", "tier"))


def links_table(result, top: int = 10) -> Table | None:
    """:func:`links_data` for the terminal."""
    data = links_data(result, top)
    return None if data is None else data.rich(overflow=None)
