"""Step times: cosim next to aiconfigurator's own per-step estimates.

aiconfigurator-core (``EngineHandle.compile(...).decode_step_latency`` and
``predict_prefill_latency``) sums measured per-op latencies with its own communication model
(measured NCCL/DeepEP within a node, bandwidth extrapolation across nodes). cosim takes compute
from the same measured tables but schedules a per-rank DAG and simulates every collective on the
topology. The comparison is between two models, not against silicon; it shows where they agree
(compute-bound single-node steps) and where the network model matters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cosim.engine.step import simulate_step
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.topology import load_topology
from cosim.trace.builder import StepSpec


@dataclass(frozen=True)
class StepCase:
    """One deployment to compare: model, parallelism and workload (per attention rank)."""

    model: str
    topology: str
    tp: int
    ep: int
    dp_attention: bool
    phase: str            # "generation" or "context"
    batch_per_rank: int
    new_tokens: int
    context_tokens: int

    @property
    def label(self) -> str:
        attn = f"DP{self.tp}" if self.dp_attention else f"TP{self.tp}"
        return f"{self.model.split('/')[-1]} {attn}/EP{self.ep} {self.topology}"


def default_cases() -> list[StepCase]:
    """DeepSeek-V3 and Qwen3-235B on h200_sxm: decode at several batch sizes, and prefill."""
    cases = []
    for model in ("deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-235B-A22B"):
        for dp in (True, False):
            for b in (16, 64, 128):
                cases.append(StepCase(model, "h200-hgx-node", 8, 8, dp, "generation", b, 1, 4096))
            cases.append(StepCase(model, "h200-hgx-node", 8, 8, dp, "context", 1, 4096, 0))
    for b in (16, 64, 128):
        cases.append(StepCase("deepseek-ai/DeepSeek-V3", "h200-hgx-2node", 16, 16, True, "generation", b, 1, 4096))
    return cases


def aiconfigurator_step_ms(case: StepCase, system: str = "h200_sxm", version: str = "1.3.0rc20") -> float:
    """aiconfigurator's estimate of the same step (ms)."""
    from aiconfigurator_core.sdk.engine import EngineHandle

    handle = EngineHandle.compile(
        case.model, system, "trtllm", backend_version=version,
        tp_size=1 if case.dp_attention else case.tp, moe_tp_size=1, moe_ep_size=case.ep,
        attention_dp_size=case.tp if case.dp_attention else 1,
        gemm_quant_mode="fp8_block", moe_quant_mode="fp8_block", kvcache_quant_mode="bfloat16",
        fmha_quant_mode="bfloat16", comm_quant_mode="half")
    if case.phase == "generation":
        return float(handle.decode_step_latency(case.batch_per_rank, case.context_tokens, 2))
    return float(handle.predict_prefill_latency(case.batch_per_rank, case.new_tokens))


def cosim_step(case: StepCase, backend: str = "flow", system: str = "h200_sxm"):
    """cosim's step result for ``case`` (fp8-block weights, bf16 KV, fp8 dispatch, bf16 combine)."""
    model = load_model(case.model)
    precision = Precision(weights="fp8_block", moe="fp8_block", kv_cache="bfloat16", dispatch="fp8",
                          combine="bfloat16", allreduce="bfloat16")
    spec = StepSpec(model, Parallelism(tp=case.tp, ep=case.ep, dp_attention=case.dp_attention), precision,
                    case.phase, case.batch_per_rank, case.new_tokens, case.context_tokens)
    return simulate_step(spec, KernelTables.load(system), load_topology(case.topology), backend)


def compare(cases: list[StepCase] | None = None, backend: str = "flow") -> list[dict]:
    """Rows with cosim's and aiconfigurator's step times and cosim's breakdown."""
    rows = []
    for case in cases or default_cases():
        t0 = time.perf_counter()
        result = cosim_step(case, backend)
        wall = time.perf_counter() - t0
        aic = aiconfigurator_step_ms(case)
        ours = result.step_time_s * 1e3
        rows.append({
            "case": case.label, "phase": case.phase, "batch_per_rank": case.batch_per_rank,
            "new_tokens": case.new_tokens, "context_tokens": case.context_tokens,
            "cosim_ms": ours, "aiconfigurator_ms": aic, "diff_pct": 100.0 * (ours - aic) / aic,
            "compute_ms": 1e3 * sum(result.compute_by_class_s.values()),
            "comm_ms": 1e3 * sum(result.comm_by_collective_s.values()),
            "exposed_comm_ms": 1e3 * sum(result.exposed_comm_by_collective_s.values()),
            "sources": dict(result.duration_sources), "wall_s": wall,
        })
    return rows
