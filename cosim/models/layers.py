"""Per-rank compute ops of one decoder layer, and of the embedding / LM head.

Shapes are for one GPU after sharding (see :mod:`cosim.models.parallel` for the semantics of
``tp``, ``ep``, ``dp_attention``). The workload is given per attention rank: ``batch`` requests,
each with ``new_tokens`` new tokens (1 in generation) after ``prefix_tokens`` cached ones. Under
TP attention every rank of the stage sees these same tokens; under DP attention each of the
``tp`` ranks has its own ``batch`` (all assumed equal), and the MoE layer receives
``tp * batch * new_tokens`` tokens across the stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from cosim.errors import ConfigError
from cosim.models.parallel import Parallelism, Precision
from cosim.models.spec import LayerSpec, ModelSpec
from cosim.models.weights import kv_heads_per_gpu
from cosim.ops import DTYPE_BYTES, AttentionOp, ComputeOp, GemmOp, MemoryOp, MoeOp, Phase

_ACT_BYTES = 2.0  # activations are bfloat16
MOE_DISTRIBUTIONS = ("balanced", "power_law_1.01", "power_law_1.2")


@dataclass(frozen=True)
class Workload:
    """Tokens one attention rank processes in one forward step of one layer (validated)."""

    phase: Phase
    batch: int
    new_tokens: int
    prefix_tokens: int

    def __post_init__(self) -> None:
        if self.phase not in ("context", "generation"):
            raise ConfigError("<api>", "phase", f"expected 'context' or 'generation', got {self.phase!r}")
        for name, minimum in (("batch", 1), ("new_tokens", 1), ("prefix_tokens", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError("<api>", name, f"expected an integer >= {minimum}, got {value!r}")
        if self.phase == "generation" and self.new_tokens != 1:
            raise ConfigError("<api>", "new_tokens", f"generation processes 1 new token per request, "
                                                     f"got {self.new_tokens}")

    @property
    def tokens(self) -> int:
        """Tokens entering the layer on this attention rank."""
        return self.batch * self.new_tokens


def layer_ops(model: ModelSpec, layer_index: int, parallel: Parallelism, precision: Precision,
              phase: Phase, batch: int, new_tokens: int = 1, prefix_tokens: int = 0,
              distribution: str = "balanced") -> list[ComputeOp]:
    """Compute ops of decoder layer ``layer_index`` on one GPU, in execution order.

    Order: ``input_norm``; attention projections (GQA: ``qkv_proj``; MLA: ``q_a_proj``,
    ``q_b_proj``, ``kv_a_proj``, ``mla_latent_norm``, then ``kv_b_proj`` in context or
    ``mla_q_absorb`` in generation); DSA indexer (``indexer_q_proj``, ``indexer_k_proj``,
    ``indexer_weights_proj``, ``indexer_logits``); the ``attention`` kernel; ``mla_v_up``
    (absorbed MLA); ``o_proj``; ``post_attention_norm``; then the FFN: MoE layers ``router``,
    ``moe_experts`` and the shared expert (``shared_gate_up``, ``shared_act``, ``shared_down``);
    dense layers ``ffn_gate_up``, ``ffn_act``, ``ffn_down``.

    ``distribution`` is the router skew passed to :class:`~cosim.ops.MoeOp`. Every GEMM takes the
    format of its module group (:meth:`Precision.module_dtype`: ``q_proj``, ``kv_proj`` -- which
    includes the absorbed ``mla_q_absorb`` / ``mla_v_up`` -- ``o_proj``, ``indexer``,
    ``dense_ffn``, ``shared_expert``, ``routed_experts``); a fused GQA ``qkv_proj`` takes the
    ``q_proj`` format. Router, ``indexer_weights_proj`` and LM head stay bfloat16.
    Communication is not included: see :func:`cosim.models.layer_comm`.
    """
    parallel.validate(model)
    layer = model.layer(layer_index)
    work = Workload(phase, batch, new_tokens, prefix_tokens)
    if distribution not in MOE_DISTRIBUTIONS:
        raise ConfigError("<api>", "distribution", f"expected one of {list(MOE_DISTRIBUTIONS)}, got {distribution!r}")
    t, h = work.tokens, model.hidden_size
    ops: list[ComputeOp] = [_norm("input_norm", t, h)]
    if model.attention.is_mla:
        ops += _mla_ops(model, layer, parallel, precision, work)
    else:
        ops += _gqa_ops(model, layer, parallel, precision, work)
    ops.append(_norm("post_attention_norm", t, h))
    if layer.ffn == "moe":
        ops += _moe_ops(model, parallel, precision, work, distribution)
    else:
        ops += _mlp_ops("ffn", t, h, model.dense_inter_size // parallel.dense_tp, precision.module_dtype("dense_ffn"))
    return ops


@dataclass(frozen=True)
class HeadOps:
    """Ops outside the decoder layers: ``pre_layers`` on the first stage, ``post_layers`` on the last."""

    pre_layers: tuple[ComputeOp, ...]
    post_layers: tuple[ComputeOp, ...]


def model_head_ops(model: ModelSpec, parallel: Parallelism, precision: Precision, phase: Phase,
                   batch: int, new_tokens: int = 1) -> HeadOps:
    """Embedding lookup (before layer 0), final norm and LM head (after the last layer).

    The LM head computes logits for one token per request (the last one in context), as
    serving engines do; its vocabulary is split ``dense_tp`` ways (bfloat16 weights).
    """
    parallel.validate(model)
    work = Workload(phase, batch, new_tokens, 0)
    t, h = work.tokens, model.hidden_size
    vocab_local = -(-model.vocab_size // parallel.dense_tp)
    embedding = MemoryOp("embedding", bytes=2.0 * t * h * _ACT_BYTES)
    return HeadOps(
        pre_layers=(embedding,),
        post_layers=(_norm("final_norm", work.batch, h), GemmOp("lm_head", m=work.batch, n=vocab_local, k=h)))


def _norm(name: str, tokens: int, hidden: int) -> MemoryOp:
    """Fused residual-add + RMSNorm: read x and residual, write both; ~4 flops per element."""
    return MemoryOp(name, bytes=4.0 * tokens * hidden * _ACT_BYTES + hidden * _ACT_BYTES,
                    flop_count=4.0 * tokens * hidden)


def _effective_prefix(layer: LayerSpec, prefix_tokens: int) -> int:
    """Cached tokens a windowed layer attends to (sliding: the last W; chunked: same chunk)."""
    if layer.window_kind == "sliding":
        return min(prefix_tokens, layer.window_tokens)
    if layer.window_kind == "chunked":
        return prefix_tokens % layer.window_tokens
    return prefix_tokens


def _gqa_ops(model: ModelSpec, layer: LayerSpec, parallel: Parallelism, precision: Precision,
             work: Workload) -> list[ComputeOp]:
    att, t, h = model.attention, work.tokens, model.hidden_size
    heads = att.num_heads // parallel.attention_tp
    kv_heads = kv_heads_per_gpu(model, parallel)
    return [
        GemmOp("qkv_proj", m=t, n=(heads + 2 * kv_heads) * att.head_dim, k=h, dtype=precision.module_dtype("q_proj")),
        AttentionOp("attention", phase=work.phase, kind="gqa", batch=work.batch, new_tokens=work.new_tokens,
                    prefix_tokens=_effective_prefix(layer, work.prefix_tokens), num_heads=heads,
                    num_kv_heads=kv_heads, head_dim=att.head_dim, v_head_dim=att.v_head_dim,
                    kv_dtype=precision.kv_cache),
        GemmOp("o_proj", m=t, n=h, k=heads * att.v_head_dim, dtype=precision.module_dtype("o_proj")),
    ]


def _mla_ops(model: ModelSpec, layer: LayerSpec, parallel: Parallelism, precision: Precision,
             work: Workload) -> list[ComputeOp]:
    """MLA: non-absorbed in context (kv_b up-projects every cached latent), absorbed in
    generation and for DSA (attention runs on the latent cache; kv_b is split into the
    per-head ``mla_q_absorb`` and ``mla_v_up`` batched GEMMs)."""
    att, t, h = model.attention, work.tokens, model.hidden_size
    wq, wkv, wo = (precision.module_dtype(g) for g in ("q_proj", "kv_proj", "o_proj"))
    heads = att.num_heads // parallel.attention_tp
    qk = att.qk_nope_head_dim + att.qk_rope_head_dim
    ops: list[ComputeOp] = []
    if att.q_lora_rank:
        ops += [GemmOp("q_a_proj", m=t, n=att.q_lora_rank, k=h, dtype=wq),
                GemmOp("q_b_proj", m=t, n=heads * qk, k=att.q_lora_rank, dtype=wq)]
    else:
        ops.append(GemmOp("q_proj", m=t, n=heads * qk, k=h, dtype=wq))
    ops += [GemmOp("kv_a_proj", m=t, n=att.kv_lora_rank + att.qk_rope_head_dim, k=h, dtype=wkv),
            MemoryOp("mla_latent_norm", bytes=2.0 * t * (att.q_lora_rank + att.kv_lora_rank) * _ACT_BYTES,
                     flop_count=4.0 * t * (att.q_lora_rank + att.kv_lora_rank))]
    absorbed = work.phase == "generation" or att.kind == "dsa"
    prefix = _effective_prefix(layer, work.prefix_tokens)
    if absorbed:
        ops.append(GemmOp("mla_q_absorb", m=t, n=heads * att.kv_lora_rank, k=att.qk_nope_head_dim, dtype=wkv))
    else:
        kv_tokens = work.batch * (prefix + work.new_tokens)
        ops.append(GemmOp("kv_b_proj", m=kv_tokens, n=heads * (att.qk_nope_head_dim + att.v_head_dim),
                          k=att.kv_lora_rank, dtype=wkv))
    if att.indexer is not None and layer.indexer:
        ops += _indexer_ops(model, precision, work, prefix)
    ops.append(AttentionOp(
        "attention", phase=work.phase, kind=att.kind, batch=work.batch, new_tokens=work.new_tokens,
        prefix_tokens=prefix, num_heads=heads, num_kv_heads=1, head_dim=qk, v_head_dim=att.v_head_dim,
        kv_dtype=precision.kv_cache, kv_lora_rank=att.kv_lora_rank, rope_dim=att.qk_rope_head_dim,
        sparse_topk=att.indexer.topk if att.indexer else 0))
    if absorbed:
        ops.append(GemmOp("mla_v_up", m=t, n=heads * att.v_head_dim, k=att.kv_lora_rank, dtype=wkv))
    ops.append(GemmOp("o_proj", m=t, n=h, k=heads * att.v_head_dim, dtype=wo))
    return ops


def indexer_cache_bytes_per_token(head_dim: int) -> float:
    """DSA indexer key cache per token per layer: FP8 keys plus one fp32 scale per 128 values."""
    return head_dim + -(-head_dim // 128) * 4.0


def _indexer_ops(model: ModelSpec, precision: Precision, work: Workload, prefix: int) -> list[ComputeOp]:
    """DSA lightning indexer (replicated on every attention rank, all its heads on each GPU).

    ``indexer_logits`` scores every cached + new token with ``num_heads`` FP8 heads (ReLU,
    weighted sum) and selects the top-k: a MemoryOp carrying its FLOPs and bytes (key cache read,
    fp32 logits written and re-read by the top-k).
    """
    att, t, h = model.attention, work.tokens, model.hidden_size
    ix = att.indexer
    assert ix is not None
    span = prefix + (work.new_tokens + 1) / 2.0 if work.phase == "context" else float(prefix)
    cached = work.batch * (prefix + (work.new_tokens if work.phase == "context" else 0))
    logits_flops = 2.0 * t * span * ix.num_heads * ix.head_dim
    logits_bytes = (cached * indexer_cache_bytes_per_token(ix.head_dim)
                    + t * ix.num_heads * ix.head_dim * DTYPE_BYTES["fp8"] + 2.0 * t * span * 4.0)
    return [
        GemmOp("indexer_q_proj", m=t, n=ix.num_heads * ix.head_dim, k=att.q_lora_rank or h,
               dtype=precision.module_dtype("indexer")),
        GemmOp("indexer_k_proj", m=t, n=ix.head_dim, k=h, dtype=precision.module_dtype("indexer")),
        GemmOp("indexer_weights_proj", m=t, n=ix.num_heads, k=h),
        MemoryOp("indexer_logits", bytes=logits_bytes, flop_count=logits_flops),
    ]


def _moe_ops(model: ModelSpec, parallel: Parallelism, precision: Precision, work: Workload,
             distribution: str) -> list[ComputeOp]:
    moe, t, h = model.moe, work.tokens, model.hidden_size
    assert moe is not None
    ops: list[ComputeOp] = [
        GemmOp("router", m=t, n=moe.num_experts, k=h),
        MoeOp("moe_experts", num_tokens=t * parallel.attention_dp, hidden_size=h,
              inter_size=moe.expert_inter_size, num_experts=moe.num_experts, top_k=moe.top_k,
              ep_size=parallel.ep, tp_size=parallel.moe_tp, dtype=precision.module_dtype("routed_experts"),
              distribution=distribution),
    ]
    if moe.shared_inter_size:
        ops += _mlp_ops("shared", t, h, moe.shared_inter_size // parallel.dense_tp,
                        precision.module_dtype("shared_expert"))
    return ops


def _mlp_ops(prefix: str, tokens: int, hidden: int, inter_local: int, dtype: str) -> list[ComputeOp]:
    """Gated MLP: fused gate+up GEMM, SiLU-and-multiply, down GEMM."""
    return [
        GemmOp(f"{prefix}_gate_up", m=tokens, n=2 * inter_local, k=hidden, dtype=dtype),
        MemoryOp(f"{prefix}_act", bytes=3.0 * tokens * inter_local * _ACT_BYTES, flop_count=4.0 * tokens * inter_local),
        GemmOp(f"{prefix}_down", m=tokens, n=hidden, k=inter_local, dtype=dtype),
    ]
