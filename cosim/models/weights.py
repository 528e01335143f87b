"""The weight tensors of a model: one table used for parameter counts and per-GPU memory.

Each :class:`Weight` has an element count, a group (for reports), a sharding rule and a dtype role:
the module group whose format :meth:`cosim.models.Precision.module_dtype` gives (``q_proj``,
``kv_proj``, ``o_proj``, ``indexer``, ``dense_ffn``, ``shared_expert``, ``routed_experts``), or
``bfloat16`` for tensors that always stay bf16.

Sharding rules (divisor of the element count on one GPU):

- ``replicated``: 1 (norms, router, MLA ``q_a``/``kv_a`` down-projections, DSA indexer)
- ``heads``: attention tp (query heads, MLA up-projections, ``o_proj``)
- ``kv_heads``: ``num_kv_heads / kv_heads_per_gpu`` (GQA K/V; replicated when tp > kv heads)
- ``dense``: dense tp (dense FFN, shared expert)
- ``vocab``: dense tp (embedding, LM head; vocab-parallel under TP, replicated under DP attention)
- ``expert``: ep x moe_tp = tp (routed experts)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from cosim.models.parallel import Parallelism, Precision
from cosim.models.spec import LayerSpec, ModelSpec
from cosim.ops import DTYPE_BYTES

WeightGroup = Literal["embedding", "lm_head", "norm", "attention", "dense_ffn", "router", "shared_expert",
                      "routed_expert"]
Shard = Literal["replicated", "heads", "kv_heads", "dense", "vocab", "expert"]
DtypeRole = Literal["q_proj", "kv_proj", "o_proj", "indexer", "dense_ffn", "shared_expert", "routed_experts",
                    "bfloat16"]


@dataclass(frozen=True)
class Weight:
    """One weight tensor (or a group of identical ones) of a layer or of the model."""

    name: str
    numel: int
    group: WeightGroup
    shard: Shard
    dtype_role: DtypeRole

    def dtype(self, precision: Precision) -> str:
        return "bfloat16" if self.dtype_role == "bfloat16" else precision.module_dtype(self.dtype_role)

    def numel_per_gpu(self, model: ModelSpec, parallel: Parallelism) -> float:
        """Elements of this tensor stored on one GPU of the stage that holds it."""
        if self.shard == "replicated":
            return float(self.numel)
        if self.shard == "heads":
            return self.numel / parallel.attention_tp
        if self.shard == "kv_heads":
            return self.numel * kv_heads_per_gpu(model, parallel) / model.attention.num_kv_heads
        if self.shard == "dense":
            return self.numel / parallel.dense_tp
        if self.shard == "vocab":
            return math.ceil(model.vocab_size / parallel.dense_tp) * (self.numel / model.vocab_size)
        return self.numel / parallel.tp  # expert: ep x moe_tp

    def bytes_per_gpu(self, model: ModelSpec, parallel: Parallelism, precision: Precision) -> float:
        return self.numel_per_gpu(model, parallel) * DTYPE_BYTES[self.dtype(precision)]


def kv_heads_per_gpu(model: ModelSpec, parallel: Parallelism) -> int:
    """GQA KV heads on one GPU: ``num_kv_heads / tp``, at least 1 (replicated when tp > kv heads)."""
    return max(1, model.attention.num_kv_heads // parallel.attention_tp)


def layer_weights(model: ModelSpec, layer: LayerSpec) -> list[Weight]:
    """Weight tensors of one decoder layer."""
    h, att = model.hidden_size, model.attention
    out = [Weight("input_norm", h, "norm", "replicated", "bfloat16"),
           Weight("post_attention_norm", h, "norm", "replicated", "bfloat16")]
    if att.is_mla:
        qk = att.qk_nope_head_dim + att.qk_rope_head_dim
        if att.q_lora_rank:
            out += [Weight("q_a_proj", h * att.q_lora_rank, "attention", "replicated", "q_proj"),
                    Weight("q_a_norm", att.q_lora_rank, "norm", "replicated", "bfloat16"),
                    Weight("q_b_proj", att.q_lora_rank * att.num_heads * qk, "attention", "heads", "q_proj")]
        else:
            out.append(Weight("q_proj", h * att.num_heads * qk, "attention", "heads", "q_proj"))
        out += [Weight("kv_a_proj", h * (att.kv_lora_rank + att.qk_rope_head_dim), "attention", "replicated",
                       "kv_proj"),
                Weight("kv_a_norm", att.kv_lora_rank, "norm", "replicated", "bfloat16"),
                Weight("kv_b_proj", att.kv_lora_rank * att.num_heads * (att.qk_nope_head_dim + att.v_head_dim),
                       "attention", "heads", "kv_proj"),
                Weight("o_proj", att.num_heads * att.v_head_dim * h, "attention", "heads", "o_proj")]
        if att.indexer and layer.indexer:
            ix = att.indexer
            q_in = att.q_lora_rank or h
            out += [Weight("indexer_q_proj", q_in * ix.num_heads * ix.head_dim, "attention", "replicated", "indexer"),
                    Weight("indexer_k_proj", h * ix.head_dim, "attention", "replicated", "indexer"),
                    Weight("indexer_k_norm", 2 * ix.head_dim, "norm", "replicated", "bfloat16"),
                    Weight("indexer_weights_proj", h * ix.num_heads, "attention", "replicated", "bfloat16")]
    else:
        q, kv = att.num_heads * att.head_dim, att.num_kv_heads * att.head_dim
        qkv_bias = 1 if att.qkv_bias else 0
        out += [Weight("q_proj", (h + qkv_bias) * q, "attention", "heads", "q_proj"),
                Weight("kv_proj", 2 * (h + qkv_bias) * kv, "attention", "kv_heads", "kv_proj"),
                Weight("o_proj", att.num_heads * att.v_head_dim * h + (h if att.o_bias else 0), "attention",
                       "heads", "o_proj")]
    if layer.ffn == "moe" and model.moe is not None:
        moe = model.moe
        e_bias = (2 * moe.expert_inter_size + h) if moe.expert_bias else 0
        out += [Weight("router", h * moe.num_experts + (moe.num_experts if moe.router_bias else 0), "router",
                       "replicated", "bfloat16"),
                Weight("routed_experts", moe.num_experts * (3 * h * moe.expert_inter_size + e_bias),
                       "routed_expert", "expert", "routed_experts")]
        if moe.shared_inter_size:
            out.append(Weight("shared_expert", 3 * h * moe.shared_inter_size, "shared_expert", "dense", "shared_expert"))
        if moe.shared_expert_gate:
            out.append(Weight("shared_expert_gate", h, "router", "replicated", "bfloat16"))
    else:
        out.append(Weight("dense_ffn", 3 * h * model.dense_inter_size, "dense_ffn", "dense", "dense_ffn"))
    return out


def model_weights(model: ModelSpec) -> list[Weight]:
    """Weights outside the decoder layers: embedding, final norm and LM head (if not tied)."""
    h = model.hidden_size
    out = [Weight("embedding", model.vocab_size * h, "embedding", "vocab", "bfloat16"),
           Weight("final_norm", h, "norm", "replicated", "bfloat16")]
    if not model.tie_word_embeddings:
        out.append(Weight("lm_head", model.vocab_size * h, "lm_head", "vocab", "bfloat16"))
    return out
