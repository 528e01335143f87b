"""Memory per GPU: weights, KV cache, and an activation estimate.

Formulas (per GPU, for the layers of one pipeline stage):

- weights: sum over weight tensors of ``numel / shard * bytes(dtype)`` (see
  :mod:`cosim.models.weights`); non-expert weights are replicated under DP attention.
- KV cache per token: MLA ``(kv_lora_rank + qk_rope_head_dim) * kv_bytes`` per layer, the same on
  every attention-TP rank (the latent has no head axis); GQA ``2 * kv_heads_per_gpu * head_dim *
  kv_bytes`` per layer; DSA adds the indexer key cache ``index_head_dim + 4 * ceil(index_head_dim /
  128)`` bytes (FP8 + fp32 scales) per indexer layer.
- activations: the residual stream plus the largest single-op working set of a layer, plus the
  fp32 logits: an estimate of the transient peak, not an allocator trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from cosim.errors import ConfigError
from cosim.models.layers import Workload, indexer_cache_bytes_per_token, layer_ops, model_head_ops
from cosim.models.parallel import Parallelism, Precision
from cosim.models.spec import LayerSpec, ModelSpec
from cosim.models.weights import kv_heads_per_gpu, layer_weights, model_weights
from cosim.ops import DTYPE_BYTES, AttentionOp, GemmOp, MemoryOp, MoeOp, Phase


@dataclass(frozen=True)
class WeightBytes:
    """Weight bytes on one GPU of a pipeline stage, by group."""

    stage: int
    embedding_bytes: float
    lm_head_bytes: float
    norm_bytes: float
    attention_bytes: float
    dense_ffn_bytes: float
    router_bytes: float
    shared_expert_bytes: float
    routed_expert_bytes: float

    @property
    def total_bytes(self) -> float:
        return (self.embedding_bytes + self.lm_head_bytes + self.norm_bytes + self.attention_bytes
                + self.dense_ffn_bytes + self.router_bytes + self.shared_expert_bytes + self.routed_expert_bytes)


def weight_breakdown(model: ModelSpec, parallel: Parallelism, precision: Precision, stage: int = 0) -> WeightBytes:
    """Weight bytes on one GPU of pipeline ``stage``, by group.

    The embedding lives on stage 0, the final norm and LM head on the last stage (a tied
    embedding is duplicated there when pp > 1).
    """
    parallel.validate(model)
    stages = parallel.stage_layers(model)
    if not 0 <= stage < len(stages):
        raise ConfigError("<api>", "stage", f"expected 0 <= stage < pp={parallel.pp}, got {stage!r}")
    sums = {g: 0.0 for g in ("embedding", "lm_head", "norm", "attention", "dense_ffn", "router",
                             "shared_expert", "routed_expert")}
    for index in stages[stage]:
        for w in layer_weights(model, model.layers[index]):
            sums[w.group] += w.bytes_per_gpu(model, parallel, precision)
    last = len(stages) - 1
    for w in model_weights(model):
        on_stage = stage == 0 if w.group == "embedding" else stage == last
        if on_stage:
            sums[w.group] += w.bytes_per_gpu(model, parallel, precision)
        if w.group == "embedding" and model.tie_word_embeddings and stage == last and last > 0:
            sums["lm_head"] += w.bytes_per_gpu(model, parallel, precision)
    return WeightBytes(stage=stage, embedding_bytes=sums["embedding"], lm_head_bytes=sums["lm_head"],
                       norm_bytes=sums["norm"], attention_bytes=sums["attention"],
                       dense_ffn_bytes=sums["dense_ffn"], router_bytes=sums["router"],
                       shared_expert_bytes=sums["shared_expert"], routed_expert_bytes=sums["routed_expert"])


def weight_bytes_per_gpu(model: ModelSpec, parallel: Parallelism, precision: Precision) -> float:
    """Weight bytes on the most loaded GPU (maximum over pipeline stages)."""
    return max(weight_breakdown(model, parallel, precision, s).total_bytes for s in range(parallel.pp))


def kv_layer_bytes_per_token(model: ModelSpec, layer: LayerSpec, parallel: Parallelism, precision: Precision) -> float:
    """KV-cache bytes one cached token takes in one layer on one GPU."""
    att, kv = model.attention, DTYPE_BYTES[precision.kv_cache]
    if att.is_mla:
        size = (att.kv_lora_rank + att.qk_rope_head_dim) * kv
        if att.indexer is not None and layer.indexer:
            size += indexer_cache_bytes_per_token(att.indexer.head_dim)
        return size
    return kv_heads_per_gpu(model, parallel) * (att.head_dim + att.v_head_dim) * kv


def kv_cache_bytes_per_token(model: ModelSpec, parallel: Parallelism, precision: Precision,
                             stage: int | None = None) -> float:
    """KV-cache bytes per cached token on one GPU, over the layers of ``stage`` (None: the
    largest stage). Windowed layers are counted in full (see :func:`kv_cache_bytes_per_request`)."""
    parallel.validate(model)
    stages = parallel.stage_layers(model)
    chosen = stages if stage is None else [stages[stage]]
    return max(sum(kv_layer_bytes_per_token(model, model.layers[i], parallel, precision) for i in r)
               for r in chosen)


def kv_cache_bytes_per_request(model: ModelSpec, parallel: Parallelism, precision: Precision,
                               context_tokens: int, stage: int | None = None) -> float:
    """KV-cache bytes of one request of ``context_tokens`` tokens on one GPU, keeping at most
    ``window_tokens`` tokens in sliding-window and chunked layers."""
    parallel.validate(model)
    Workload("context", 1, 1, context_tokens)  # validates context_tokens >= 0
    stages = parallel.stage_layers(model)
    chosen = stages if stage is None else [stages[stage]]

    def kept(layer: LayerSpec) -> int:
        return context_tokens if layer.window_kind == "full" else min(context_tokens, layer.window_tokens)

    return max(sum(kv_layer_bytes_per_token(model, model.layers[i], parallel, precision) * kept(model.layers[i])
                   for i in r) for r in chosen)


def activation_bytes_per_gpu(model: ModelSpec, parallel: Parallelism, precision: Precision, num_tokens: int,
                             phase: Phase = "context", prefix_tokens: int = 0) -> float:
    """Estimated peak transient activation bytes on one GPU for one forward step.

    Context: one request of ``num_tokens`` new tokens after ``prefix_tokens`` cached ones;
    generation: ``num_tokens`` requests of one token each. The estimate is the residual stream
    (hidden state + residual, bf16), plus the largest working set (inputs + outputs) of any single
    op of any layer, plus fp32 logits for one token per request.
    """
    batch, new = (1, num_tokens) if phase == "context" else (num_tokens, 1)
    work = Workload(phase, batch, new, prefix_tokens)
    seen: set[tuple] = set()
    peak_op = 0.0
    for layer in model.layers:
        key = (layer.ffn, layer.window_kind, layer.window_tokens, layer.indexer)
        if key in seen:
            continue
        seen.add(key)
        for op in layer_ops(model, layer.index, parallel, precision, phase, batch, new, prefix_tokens):
            peak_op = max(peak_op, _working_set_bytes(op, model, precision))
    head = model_head_ops(model, parallel, precision, phase, batch, new)
    logits = sum(op.m * op.n * 4.0 for op in head.post_layers if isinstance(op, GemmOp))
    residual = 2.0 * work.tokens * model.hidden_size * 2.0
    return residual + peak_op + logits


def _working_set_bytes(op: object, model: ModelSpec, precision: Precision) -> float:
    if isinstance(op, GemmOp):
        return (op.m * op.k + op.m * op.n) * 2.0
    if isinstance(op, AttentionOp):
        queries = op.batch * (op.new_tokens if op.phase == "context" else 1)
        return queries * op.num_heads * (op.head_dim + op.v_head_dim) * 2.0
    if isinstance(op, MoeOp):
        rows = op.num_tokens * op.top_k / op.ep_size
        inter = op.inter_size / op.tp_size
        per_row = op.hidden_size * DTYPE_BYTES[precision.dispatch] + 3 * inter * 2.0 + op.hidden_size * 2.0
        return rows * per_row + op.num_tokens * op.hidden_size * 2.0
    if isinstance(op, MemoryOp) and op.name == "indexer_logits":
        return op.bytes
    return 0.0


@dataclass(frozen=True)
class StepMemory:
    """Memory on the most loaded GPU while it runs one step (bytes).

    ``kv_cache_bytes`` holds the step's requests at their full length (cached plus new tokens);
    ``capacity_bytes`` is the GPU's HBM (``None`` when unknown).
    """

    weight_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    capacity_bytes: float | None = None

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def fits(self) -> bool | None:
        """Whether the total fits in the GPU's memory (None when the capacity is unknown)."""
        return None if self.capacity_bytes is None else self.total_bytes <= self.capacity_bytes


def step_memory(model: ModelSpec, parallel: Parallelism, precision: Precision, phase: Phase, batch_per_rank: int,
                new_tokens: int = 1, prefix_tokens: int = 0, capacity_bytes: float | None = None,
                redundant_experts: int = 0) -> StepMemory:
    """Weights, KV cache and activations on one GPU for a step of ``batch_per_rank`` requests of
    ``new_tokens`` new tokens after ``prefix_tokens`` cached ones (the batch of one attention
    rank under DP attention, of the TP group otherwise; the KV cache of a request is sharded as
    :func:`kv_cache_bytes_per_request` says). ``redundant_experts`` replicas (EPLB) add their
    share of the routed-expert weights."""
    if batch_per_rank < 1:
        raise ConfigError("<api>", "batch_per_rank", f"expected >= 1, got {batch_per_rank!r}")
    kv = batch_per_rank * kv_cache_bytes_per_request(model, parallel, precision, prefix_tokens + new_tokens)
    if phase == "context":
        act = activation_bytes_per_gpu(model, parallel, precision, batch_per_rank * new_tokens, "context",
                                       prefix_tokens)
    else:
        act = activation_bytes_per_gpu(model, parallel, precision, batch_per_rank, "generation", prefix_tokens)
    weights = weight_bytes_per_gpu(model, parallel, precision)
    if redundant_experts and model.moe is not None:
        routed = max(weight_breakdown(model, parallel, precision, s).routed_expert_bytes for s in range(parallel.pp))
        weights += routed * redundant_experts / model.moe.num_experts
    return StepMemory(weights, kv, act, capacity_bytes)
