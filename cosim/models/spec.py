"""Typed, frozen description of a decoder-only LLM, as read from a Hugging Face ``config.json``.

Only what the simulator needs is kept: layer count and widths, the attention variant (GQA, MLA or
MLA + DSA indexer), the MoE block, and per-layer kinds (dense or MoE FFN, attention window).
Vision towers, MTP (next-token-prediction) modules and tokenizer details are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from cosim.errors import ConfigError

AttentionKind = Literal["gqa", "mla", "dsa"]
FfnKind = Literal["dense", "moe"]
WindowKind = Literal["full", "sliding", "chunked"]

#: Groups of weight modules whose numeric format a checkpoint may set apart (the granularity of
#: ``quantization_config`` exclusions cosim understands). ``q_proj``: MLA ``q_a_proj``/``q_b_proj``
#: or ``q_proj``, and the query part of a fused GQA ``qkv_proj``; ``kv_proj``: MLA
#: ``kv_a_proj_with_mqa``/``kv_b_proj`` (including the absorbed ``mla_q_absorb``/``mla_v_up``) or
#: GQA ``k_proj``/``v_proj``; ``o_proj``; ``indexer``: DSA indexer projections; ``dense_ffn``: MLPs
#: of dense layers; ``shared_expert``; ``routed_experts``.
MODULE_GROUPS = ("q_proj", "kv_proj", "o_proj", "indexer", "dense_ffn", "shared_expert", "routed_experts")


@dataclass(frozen=True)
class IndexerSpec:
    """DeepSeek sparse attention (DSA) lightning indexer.

    Every query scores all cached tokens with ``num_heads`` small heads of ``head_dim`` against a
    one-head FP8 key cache, then attends to the best ``topk`` tokens only.
    """

    num_heads: int
    head_dim: int
    topk: int


@dataclass(frozen=True)
class AttentionSpec:
    """Self-attention of one layer (identical in every layer of a model).

    ``kind``: ``gqa`` (MHA/GQA/MQA), ``mla`` (multi-head latent attention) or ``dsa`` (MLA with a
    DSA indexer). ``head_dim`` is the q/k head dim (MLA: ``qk_nope_head_dim + qk_rope_head_dim``),
    ``v_head_dim`` the value head dim. MLA fields are 0 for GQA; ``q_lora_rank`` 0 means MLA
    without query compression (DeepSeek-V2-Lite style ``q_proj``).
    """

    kind: AttentionKind
    num_heads: int
    num_kv_heads: int
    head_dim: int
    v_head_dim: int
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    indexer: IndexerSpec | None = None

    @property
    def is_mla(self) -> bool:
        """True for ``mla`` and ``dsa`` (both cache the compressed latent)."""
        return self.kind in ("mla", "dsa")


@dataclass(frozen=True)
class MoESpec:
    """Routed experts (and optional always-on shared expert) of an MoE layer.

    ``shared_inter_size`` is the intermediate size of the shared-expert MLP as implemented (all
    ``num_shared_experts`` fused into one MLP, e.g. 1 x 2048 for DeepSeek-V3), 0 when absent.
    Experts are gated (SwiGLU: gate, up, down matrices). ``expert_bias``: experts carry biases
    (gpt-oss). ``shared_expert_gate``: a sigmoid gate ``hidden -> 1`` on the shared expert (Qwen2-MoE).
    """

    num_experts: int
    top_k: int
    expert_inter_size: int
    num_shared_experts: int = 0
    shared_inter_size: int = 0
    expert_bias: bool = False
    router_bias: bool = False
    shared_expert_gate: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer: its FFN kind and attention window.

    ``window_kind``: ``full`` (causal over all tokens), ``sliding`` (the last ``window_tokens``
    tokens, gpt-oss / Mistral) or ``chunked`` (tokens of the same ``window_tokens``-long chunk,
    Llama 4 local layers). ``indexer``: the layer computes its own DSA top-k (False for GLM-5.2
    layers that reuse the previous layer's top-k); always False for non-DSA models.
    """

    index: int
    ffn: FfnKind
    window_kind: WindowKind = "full"
    window_tokens: int = 0
    indexer: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A model as the simulator sees it. Build with :func:`cosim.models.load_model`.

    ``dense_inter_size`` is the FFN intermediate size of dense layers (0 if the model has none).
    ``checkpoint_weights`` / ``checkpoint_kv_cache`` record the checkpoint's own formats
    (``bfloat16``, ``fp8``, ``fp8_block``, ``nvfp4``, ``mxfp4``, ``int4``; kv ``fp8`` or None),
    used by :meth:`cosim.models.Precision.from_checkpoint`. ``checkpoint_weights`` is the format of
    the quantized non-expert modules; ``checkpoint_module_formats`` lists the module groups
    (:data:`MODULE_GROUPS`) stored in another format, as ``(group, format)`` pairs (e.g. the MLA
    q/kv projections an NVFP4 DeepSeek checkpoint keeps in ``bfloat16``).
    """

    name: str
    source: str
    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    attention: AttentionSpec
    moe: MoESpec | None
    dense_inter_size: int
    layers: tuple[LayerSpec, ...]
    tie_word_embeddings: bool = False
    num_mtp_layers: int = 0
    max_position_embeddings: int = 0
    checkpoint_weights: str = "bfloat16"
    checkpoint_moe_weights: str = "bfloat16"
    checkpoint_kv_cache: str | None = None
    checkpoint_module_formats: tuple[tuple[str, str], ...] = ()

    @property
    def layer_kinds(self) -> tuple[FfnKind, ...]:
        """FFN kind of every layer, in order (``"dense"`` or ``"moe"``)."""
        return tuple(layer.ffn for layer in self.layers)

    # Read in every op list the trace builder makes: computed once per (frozen) spec.
    @cached_property
    def num_moe_layers(self) -> int:
        return sum(1 for layer in self.layers if layer.ffn == "moe")

    @cached_property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @cached_property
    def is_moe(self) -> bool:
        return self.moe is not None and self.num_moe_layers > 0

    def layer(self, index: int) -> LayerSpec:
        """The spec of layer ``index`` (0-based); ConfigError if out of range."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.num_layers:
            raise ConfigError("<api>", "layer_index",
                              f"expected an integer in [0, {self.num_layers}) for {self.name}, got {index!r}")
        return self.layers[index]
