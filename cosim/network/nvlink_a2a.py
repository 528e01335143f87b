"""TensorRT-LLM's NVLink MoE all-to-all (the wide-EP path inside a GB200 NVL72 rack) as flows:
the traffic model validated against the measured gb200 kernels
(:mod:`cosim.validation.nvlink_a2a`, ``docs/validation-comm.md`` section 9) and used by the step
engine for ``moe_library="nvlink_a2a"``.

Every token goes **once to every rank** holding one of its experts (the kernels exchange per-rank
token lists in a ``prepare`` phase), directly over NVLink: an all-to-all-v of
``tokens[i, j] x bytes per token`` (:mod:`cosim.trace.moe_traffic` gives ``tokens``). Dispatch
carries the activations in the dispatch dtype plus the top-k expert ids and weights; combine
returns bf16 partial sums (``combine_low_precision``: nvfp4).
"""

from __future__ import annotations

#: Per-token metadata sent with dispatch: one int32 expert id and one fp32 weight per top-k slot.
METADATA_BYTES_PER_TOPK = 8
PHASES = ("dispatch", "combine", "combine_low_precision")


def bytes_per_token(hidden: int, dtype: str) -> float:
    """Activation bytes of one token: bf16 ``2h``, fp8 ``h``, nvfp4 ``h/2 + h/16`` (e2m1 values
    plus one fp8 scale per 16)."""
    if dtype == "bfloat16":
        return 2.0 * hidden
    if dtype in ("fp8", "fp8_block"):
        return float(hidden)
    if dtype == "nvfp4":
        return hidden / 2 + hidden / 16
    raise ValueError(f"unknown NVLink all-to-all dtype {dtype!r}; expected bfloat16, fp8 or nvfp4")


def phase_bytes_per_token(phase: str, dtype: str, hidden: int, topk: int) -> float:
    """Bytes one token carries in ``phase``: dispatch in ``dtype`` plus metadata, combine in bf16,
    ``combine_low_precision`` in nvfp4."""
    if phase == "dispatch":
        return bytes_per_token(hidden, dtype) + METADATA_BYTES_PER_TOPK * topk
    if phase == "combine":
        return bytes_per_token(hidden, "bfloat16")
    if phase == "combine_low_precision":
        return bytes_per_token(hidden, "nvfp4")
    raise ValueError(f"unknown NVLink all-to-all phase {phase!r}; expected one of {PHASES}")
