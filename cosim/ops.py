"""Compute operations of one layer on one GPU, as the kernel tables key them.

The model layer (:mod:`cosim.models`) derives these per-rank ops from a model, a parallelism and a
phase; the kernel layer (:mod:`cosim.kernels`) turns each into a duration with a source
(measured, interpolated, roofline). Shapes are per GPU (after TP/EP sharding), for one layer.
Every op knows its FLOPs and the bytes it must move, which the roofline fallback uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Numeric formats of weights, activations and KV cache, with bytes per element.
DTYPE_BYTES: dict[str, float] = {"bfloat16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5625, "int8": 1.0}

Phase = Literal["context", "generation"]


@dataclass(frozen=True)
class GemmOp:
    """``[m x k] @ [k x n]``: m tokens, k input features, n output features (per GPU)."""

    name: str
    m: int
    n: int
    k: int
    dtype: str = "bfloat16"

    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    def bytes_moved(self) -> float:
        w = DTYPE_BYTES[self.dtype]
        return self.n * self.k * w + self.m * self.k * max(w, 1.0) + self.m * self.n * 2.0


@dataclass(frozen=True)
class AttentionOp:
    """Attention kernel (FMHA only, no projections) of one layer on one GPU.

    ``kind``: ``gqa`` (MHA/GQA), ``mla`` (DeepSeek multi-head latent attention) or ``dsa``
    (DeepSeek sparse attention: each query attends to at most ``sparse_topk`` cached tokens).
    Context (prefill): ``batch`` requests of ``new_tokens`` each, attending to ``prefix_tokens``
    already cached plus themselves. Generation (decode): ``batch`` requests of one token attending
    to ``prefix_tokens`` cached tokens.
    """

    name: str
    phase: Phase
    kind: Literal["gqa", "mla", "dsa"]
    batch: int
    new_tokens: int
    prefix_tokens: int
    num_heads: int            # query heads on this GPU
    num_kv_heads: int         # KV heads on this GPU (1 for MLA's latent cache)
    head_dim: int             # q/k head dim (MLA: nope + rope = 192)
    v_head_dim: int
    kv_dtype: str = "bfloat16"
    kv_lora_rank: int = 0     # MLA latent size (512 for DeepSeek-V3)
    rope_dim: int = 0         # MLA decoupled rope dim (64)
    sparse_topk: int = 0      # DSA: tokens attended per query (2048)

    def attended_tokens(self) -> float:
        """Mean number of cached+new tokens each query attends to (causal within the chunk)."""
        span = self.prefix_tokens + (self.new_tokens + 1) / 2.0 if self.phase == "context" else self.prefix_tokens
        return min(span, self.sparse_topk) if self.sparse_topk else span

    def flops(self) -> float:
        queries = self.batch * (self.new_tokens if self.phase == "context" else 1)
        if self.kind in ("mla", "dsa") and self.phase == "generation":
            # Absorbed MLA: scores and values against the latent cache.
            per = 2.0 * self.num_heads * (self.kv_lora_rank + self.rope_dim + self.kv_lora_rank)
        else:
            per = 2.0 * self.num_heads * (self.head_dim + self.v_head_dim)
        return queries * self.attended_tokens() * per

    def kv_bytes_per_token(self) -> float:
        if self.kind in ("mla", "dsa"):
            return (self.kv_lora_rank + self.rope_dim) * DTYPE_BYTES[self.kv_dtype]
        return self.num_kv_heads * (self.head_dim + self.v_head_dim) * DTYPE_BYTES[self.kv_dtype]

    def bytes_moved(self) -> float:
        cached = self.batch * (self.prefix_tokens + (self.new_tokens if self.phase == "context" else 0))
        if self.sparse_topk and self.phase == "generation":
            cached = self.batch * min(self.prefix_tokens, self.sparse_topk)
        q_io = self.batch * self.new_tokens * self.num_heads * (self.head_dim + self.v_head_dim) * 2.0
        return cached * self.kv_bytes_per_token() + q_io


@dataclass(frozen=True)
class MoeOp:
    """Routed-expert compute of one MoE layer on one rank (grouped GEMMs, no communication).

    ``num_tokens`` tokens enter the layer on this EP group before routing (the kernel tables'
    convention); ``distribution`` is the router skew: ``balanced``, ``power_law_1.01`` or
    ``power_law_1.2``.
    """

    name: str
    num_tokens: int
    hidden_size: int
    inter_size: int
    num_experts: int
    top_k: int
    ep_size: int
    tp_size: int = 1
    dtype: str = "fp8_block"
    distribution: str = "balanced"
    gated: bool = True

    def flops(self) -> float:
        mats = 3 if self.gated else 2
        return 2.0 * self.num_tokens * self.top_k * self.hidden_size * self.inter_size * mats / (self.ep_size * self.tp_size)

    def bytes_moved(self) -> float:
        mats = 3 if self.gated else 2
        local_experts = self.num_experts / self.ep_size
        touched = min(local_experts, self.num_tokens * self.top_k / self.ep_size)
        weights = touched * mats * self.hidden_size * self.inter_size / self.tp_size * DTYPE_BYTES[self.dtype]
        acts = self.num_tokens * self.top_k / self.ep_size * self.hidden_size * 2.0 * 2
        return weights + acts


@dataclass(frozen=True)
class MemoryOp:
    """A bandwidth-bound op (norm, activation, embedding lookup, router softmax ...)."""

    name: str
    bytes: float
    flop_count: float = 0.0

    def flops(self) -> float:
        return self.flop_count

    def bytes_moved(self) -> float:
        return self.bytes


ComputeOp = GemmOp | AttentionOp | MoeOp | MemoryOp
