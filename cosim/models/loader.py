"""Parse a Hugging Face ``config.json`` (already read into a dict) into a :class:`ModelSpec`.

Supported ``model_type`` families (the text model of multimodal wrappers is used, found under
``text_config``):

- GQA, dense FFN: ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``qwen3_vl_text``, ``mimo``
- GQA, MoE: ``mixtral``, ``qwen2_moe``, ``qwen3_moe``, ``qwen3_vl_moe_text``, ``llama4_text``,
  ``minimax_m2``, ``gpt_oss``
- MLA (+ DSA indexer when ``index_topk`` is present), MoE: ``deepseek_v2``, ``deepseek_v3``,
  ``kimi_k2``, ``deepseek_v32``, ``glm_moe_dsa``

Hybrid architectures (linear attention, Mamba, DeepSeek-V4 compressed attention, NAS blocks)
are rejected with a ConfigError naming ``model_type``.

Checkpoint formats: the ``quantization_config`` of ``config.json`` (or a ModelOpt
``hf_quant_config.json``) gives the format of the quantized modules, and its exclusion lists
(``ignore``, ``modules_to_not_convert``, ``exclude_modules``; globs, ``re:`` regexes or module
names, a name also covering its children) the modules stored unquantized (``bfloat16``). Each
exclusion is tested against the Hugging Face module names of every cosim module group
(:data:`~cosim.models.spec.MODULE_GROUPS`) in every layer that has the group; a group is recorded in
:attr:`ModelSpec.checkpoint_module_formats` when the exclusions cover it in at least half of those
layers (per-layer exceptions such as an excluded first dense layer are not modelled). Norms,
routers, embeddings and the LM head are always bfloat16 in cosim, so their exclusions change nothing.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from cosim import limits as L
from cosim.errors import ConfigError
from cosim.limits import quote
from cosim.models._fields import Fields
from cosim.models.spec import MODULE_GROUPS, AttentionSpec, IndexerSpec, LayerSpec, ModelSpec, MoESpec

GQA_DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen3_vl_text", "mimo")
GQA_MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "qwen3_vl_moe_text", "llama4_text", "minimax_m2", "gpt_oss")
MLA_TYPES = ("deepseek_v2", "deepseek_v3", "kimi_k2", "deepseek_v32", "glm_moe_dsa")
SUPPORTED_MODEL_TYPES = GQA_DENSE_TYPES + GQA_MOE_TYPES + MLA_TYPES

_UNSUPPORTED_REASONS = {
    "qwen3_5_text": "hybrid Gated-DeltaNet linear attention",
    "qwen3_5_moe_text": "hybrid Gated-DeltaNet linear attention",
    "nemotron_h": "hybrid Mamba-2 / attention layers",
    "deepseek_v4": "DeepSeek-V4 compressed sparse attention and hyper-connections",
    "deepseek_ref": "DeepSeek-V4 compressed sparse attention and hyper-connections",
    "kimi_linear": "Kimi linear attention",
    "nemotron-nas": "heterogeneous NAS blocks",
}
# Expert-FFN intermediate size key per family (others use moe_intermediate_size).
_EXPERT_INTER_FROM_INTERMEDIATE = ("mixtral", "llama4_text", "minimax_m2", "gpt_oss")


def parse_config(config: dict[str, Any], source: str = "<dict>", name: str | None = None,
                 quant_config: dict[str, Any] | None = None) -> ModelSpec:
    """Build a :class:`ModelSpec` from a parsed ``config.json``.

    Args:
        config: the JSON object of ``config.json``.
        source: where it came from (file path), used in error messages.
        name: display name (e.g. the HF id); defaults to ``_name_or_path`` or ``model_type``.
        quant_config: the optional ModelOpt ``hf_quant_config.json`` next to the config.

    Raises:
        ConfigError: a required field is missing or invalid, or the architecture is unsupported.
    """
    if not isinstance(config, dict):
        raise ConfigError(source, "", f"expected a JSON object, got {type(config).__name__}")
    outer = Fields(config, source)
    text = config.get("text_config")
    if text is not None and not isinstance(text, dict):
        raise outer.error("text_config", f"expected an object, got {quote(text)}")
    f = Fields(text, source, "text_config") if text else outer
    model_type = _model_type(f, outer)

    num_layers = f.int("num_hidden_layers")
    hidden = f.int("hidden_size")
    vocab = f.int("vocab_size")
    attention = _attention(f, model_type, hidden)
    moe = _moe(f, model_type)
    ffn_kinds = _ffn_kinds(f, model_type, num_layers, moe)
    dense_inter = 0
    if "dense" in ffn_kinds:
        dense_inter = f.int("intermediate_size_mlp" if model_type == "llama4_text" else "intermediate_size")
    windows = _windows(f, model_type, num_layers)
    indexer_layers = _indexer_layers(f, num_layers) if attention.indexer else [False] * num_layers
    layers = tuple(
        LayerSpec(index=i, ffn=ffn_kinds[i], window_kind=windows[i][0], window_tokens=windows[i][1],
                  indexer=indexer_layers[i])
        for i in range(num_layers))
    weights, moe_weights, kv, excluded = _checkpoint_formats(config, text, quant_config, layers, attention, moe,
                                                             source=source)
    tie = f.bool("tie_word_embeddings", outer.bool("tie_word_embeddings", False))
    display = config.get("_name_or_path")
    if display is not None and (not isinstance(display, str) or len(display) > L.MAX_NAME_CHARS.value):
        raise outer.error("_name_or_path", f"expected a string of at most {L.MAX_NAME_CHARS.value} characters, "
                                           f"got {quote(display)}")
    return ModelSpec(
        name=name or display or model_type,
        source=source,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=num_layers,
        vocab_size=vocab,
        attention=attention,
        moe=moe,
        dense_inter_size=dense_inter,
        layers=layers,
        tie_word_embeddings=tie,
        num_mtp_layers=f.first_int(("num_nextn_predict_layers", "num_mtp_modules"), default=0, minimum=0),
        max_position_embeddings=f.int("max_position_embeddings", default=0, minimum=0),
        checkpoint_weights=weights,
        checkpoint_moe_weights=moe_weights,
        checkpoint_kv_cache=kv,
        checkpoint_module_formats=tuple((g, "bfloat16") for g in MODULE_GROUPS if g in excluded
                                        and (g != "routed_experts" or moe_weights != "bfloat16")
                                        and (g == "routed_experts" or weights != "bfloat16")),
    )


def _model_type(f: Fields, outer: Fields) -> str:
    model_type = f.raw("model_type") or (outer.raw("model_type") if f is not outer else None)
    if not isinstance(model_type, str):
        raise f.error("model_type", "missing required string field (the Hugging Face architecture family, "
                                    f"one of {list(SUPPORTED_MODEL_TYPES)})")
    if model_type == "llama4":  # a text config without its own model_type
        model_type = "llama4_text"
    if model_type not in SUPPORTED_MODEL_TYPES:
        reason = _UNSUPPORTED_REASONS.get(model_type)
        raise f.error("model_type", f"model_type {quote(model_type)} is not supported"
                      + (f" ({reason})" if reason else "")
                      + f"; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return model_type


def _attention(f: Fields, model_type: str, hidden: int) -> AttentionSpec:
    heads = f.int("num_attention_heads")
    if model_type in MLA_TYPES:
        nope = f.int("qk_nope_head_dim")
        rope = f.int("qk_rope_head_dim")
        indexer = None
        if f.has("index_topk") or model_type in ("deepseek_v32", "glm_moe_dsa"):
            indexer = IndexerSpec(num_heads=f.int("index_n_heads"), head_dim=f.int("index_head_dim"),
                                  topk=f.int("index_topk"))
        return AttentionSpec(
            kind="dsa" if indexer else "mla", num_heads=heads, num_kv_heads=heads,
            head_dim=nope + rope, v_head_dim=f.int("v_head_dim"),
            q_lora_rank=f.int("q_lora_rank", default=0, minimum=0), kv_lora_rank=f.int("kv_lora_rank"),
            qk_nope_head_dim=nope, qk_rope_head_dim=rope,
            qkv_bias=f.bool("attention_bias", False), o_bias=False, indexer=indexer)
    kv_heads = f.int("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise f.error("num_key_value_heads",
                      f"num_attention_heads={heads} must be a multiple of num_key_value_heads={kv_heads}")
    if not f.has("head_dim") and hidden % heads:
        raise f.error("head_dim", f"missing, and hidden_size={hidden} is not divisible by "
                                  f"num_attention_heads={heads} to infer it")
    head_dim = f.int("head_dim", default=hidden // heads)
    bias = f.bool("attention_bias", False)
    return AttentionSpec(kind="gqa", num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                         v_head_dim=head_dim, qkv_bias=bias or model_type in ("qwen2", "qwen2_moe", "mimo"),
                         o_bias=bias)


def _moe(f: Fields, model_type: str) -> MoESpec | None:
    if model_type in GQA_DENSE_TYPES:
        return None
    expert_keys = ("n_routed_experts", "num_experts", "num_local_experts")
    if model_type in MLA_TYPES and not any(f.has(k) for k in expert_keys):
        return None  # a dense MLA model
    experts = f.first_int(expert_keys)
    top_k = f.first_int(("num_experts_per_tok", "experts_per_token"))
    if top_k > experts:
        raise f.error("num_experts_per_tok", f"top-k {top_k} exceeds the number of experts {experts}")
    inter_key = "intermediate_size" if model_type in _EXPERT_INTER_FROM_INTERMEDIATE else "moe_intermediate_size"
    expert_inter = f.int(inter_key)
    shared_count, shared_inter, shared_gate = 0, 0, False
    if model_type in MLA_TYPES:
        shared_count = f.int("n_shared_experts", default=0, minimum=0)
        shared_inter = shared_count * expert_inter
    elif model_type == "llama4_text":
        shared_count, shared_inter = 1, expert_inter
    elif model_type == "qwen2_moe":
        shared_inter = f.int("shared_expert_intermediate_size", default=0, minimum=0)
        shared_count, shared_gate = int(shared_inter > 0), shared_inter > 0
    elif model_type == "minimax_m2":
        shared_inter = f.int("shared_intermediate_size", default=0, minimum=0)
        shared_count = int(shared_inter > 0)
    router_bias = (model_type == "gpt_oss" or f.raw("topk_method") == "noaux_tc"
                   or f.bool("use_routing_bias", False))
    return MoESpec(num_experts=experts, top_k=top_k, expert_inter_size=expert_inter,
                   num_shared_experts=shared_count, shared_inter_size=shared_inter,
                   expert_bias=model_type == "gpt_oss", router_bias=router_bias,
                   shared_expert_gate=shared_gate)


def _ffn_kinds(f: Fields, model_type: str, num_layers: int, moe: MoESpec | None) -> list[str]:
    if moe is None:
        return ["dense"] * num_layers
    types = f.str_list("mlp_layer_types", allowed=("dense", "sparse"), length=num_layers)
    if types is not None:
        return ["moe" if t == "sparse" else "dense" for t in types]
    if model_type in MLA_TYPES:
        first_dense = f.int("first_k_dense_replace", default=0, minimum=0)
        if first_dense > num_layers:
            raise f.error("first_k_dense_replace", f"{first_dense} exceeds num_hidden_layers={num_layers}")
        freq = f.int("moe_layer_freq", default=1)
        return ["moe" if i >= first_dense and i % freq == 0 else "dense" for i in range(num_layers)]
    if model_type in ("qwen2_moe", "qwen3_moe", "qwen3_vl_moe_text"):
        mlp_only = set(f.int_list("mlp_only_layers") or [])
        _check_indices(f, "mlp_only_layers", mlp_only, num_layers)
        step = f.int("decoder_sparse_step", default=1)
        return ["moe" if i not in mlp_only and (i + 1) % step == 0 else "dense" for i in range(num_layers)]
    if model_type == "llama4_text":
        moe_layers = f.int_list("moe_layers")
        if moe_layers is None:
            step = f.int("interleave_moe_layer_step", default=1)
            moe_layers = list(range(step - 1, num_layers, step))
        _check_indices(f, "moe_layers", set(moe_layers), num_layers)
        return ["moe" if i in set(moe_layers) else "dense" for i in range(num_layers)]
    return ["moe"] * num_layers  # mixtral, minimax_m2, gpt_oss


def _check_indices(f: Fields, key: str, indices: set[int], num_layers: int) -> None:
    bad = sorted(i for i in indices if not 0 <= i < num_layers)
    if bad:
        raise f.error(key, f"layer indices {quote(bad)} out of range [0, {num_layers})")


def _windows(f: Fields, model_type: str, num_layers: int) -> list[tuple[str, int]]:
    full = [("full", 0)] * num_layers
    types = f.str_list("layer_types", allowed=("full_attention", "sliding_attention", "chunked_attention",
                                               "deepseek_sparse_attention"), length=num_layers)
    if types is not None:
        out = []
        for t in types:
            if t == "sliding_attention":
                out.append(("sliding", f.int("sliding_window")))
            elif t == "chunked_attention":
                out.append(("chunked", f.int("attention_chunk_size")))
            else:
                out.append(("full", 0))
        return out
    if model_type == "llama4_text":
        chunk = f.int("attention_chunk_size", default=0, minimum=0)
        if not chunk:
            return full
        rope = f.int_list("no_rope_layers", length=num_layers)
        if rope is None:
            interval = f.int("no_rope_layer_interval", default=4)
            rope = [int((i + 1) % interval != 0) for i in range(num_layers)]
        return [("chunked", chunk) if r else ("full", 0) for r in rope]
    if model_type in ("mistral", "mixtral") and f.has("sliding_window"):
        return [("sliding", f.int("sliding_window"))] * num_layers
    if model_type.startswith("qwen") and f.bool("use_sliding_window", False) and f.has("sliding_window"):
        first = f.int("max_window_layers", default=0, minimum=0)
        window = f.int("sliding_window")
        return [("sliding", window) if i >= first else ("full", 0) for i in range(num_layers)]
    return full


def _indexer_layers(f: Fields, num_layers: int) -> list[bool]:
    """Which DSA layers compute their own top-k (GLM-5.2 shares it across groups of layers)."""
    types = f.str_list("indexer_types", allowed=("full", "shared"), length=num_layers)
    if types is not None:
        return [t == "full" for t in types]
    pattern = f.raw("index_topk_pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise f.error("index_topk_pattern", f"expected a string of F/S per layer, got {quote(pattern)}")
        return [not (i < len(pattern) and pattern[i] == "S") for i in range(num_layers)]
    freq = f.int("index_topk_freq", default=1)
    if freq <= 1:
        return [True] * num_layers
    offset = f.int("index_skip_topk_offset", default=None, minimum=0)
    if offset is None:
        return [max(i - 1, 0) % freq == 0 for i in range(num_layers)]
    return [max(i - offset + 1, 0) % freq == 0 for i in range(num_layers)]


def _checkpoint_formats(config: dict, text: dict | None, quant_config: dict | None,
                        layers: tuple[LayerSpec, ...] = (), attention: AttentionSpec | None = None,
                        moe: MoESpec | None = None, source: str = "<dict>") -> tuple[str, str, str | None, frozenset[str]]:
    """(quantized non-expert weights, routed-expert weights, kv cache) formats of the checkpoint,
    and the module groups it keeps unquantized."""
    qc = (text or {}).get("quantization_config") or config.get("quantization_config") or {}
    if quant_config is not None and not isinstance(quant_config, dict):
        raise ConfigError(source, "hf_quant_config", f"expected a JSON object, got {quote(quant_config)}")
    if quant_config and isinstance(quant_config.get("quantization"), dict):
        qc = {"quant_method": "modelopt", **quant_config["quantization"]}
    if not isinstance(qc, dict) or not qc:
        return "bfloat16", "bfloat16", None, frozenset()
    groups = qc.get("config_groups")
    if groups is not None and not isinstance(groups, dict):
        raise ConfigError(source, "quantization_config.config_groups", f"expected an object, got {quote(groups)}")
    weights, moe_weights, kv = _main_formats(qc)
    patterns = []
    for key in ("ignore", "modules_to_not_convert", "exclude_modules"):
        value = qc.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or any(not isinstance(p, str) for p in value):
            raise ConfigError(source, f"quantization_config.{key}", f"expected a list of module names, got "
                                                                    f"{quote(value)}")
        patterns += value
    excluded = _excluded_groups(patterns, layers, attention, moe) if patterns and attention is not None else frozenset()
    return weights, moe_weights, kv, excluded


def _main_formats(qc: dict) -> tuple[str, str, str | None]:
    """(quantized non-expert weights, routed-expert weights, kv cache) of a quantization config."""
    method = str(qc.get("quant_method") or "").lower()
    algo = str(qc.get("quant_algo") or "").upper()
    kv_algo = str(qc.get("kv_cache_quant_algo") or "").upper()
    kv_scheme = qc.get("kv_cache_scheme")
    kv = "fp8" if kv_algo == "FP8" or (isinstance(kv_scheme, dict) and kv_scheme.get("num_bits") == 8) else None
    if method == "fp8":
        fmt = "fp8_block" if qc.get("weight_block_size") else "fp8"
        return fmt, fmt, kv
    if method == "mxfp4":  # gpt-oss: experts in MXFP4, the rest in bf16
        return "bfloat16", "mxfp4", kv
    if method == "compressed-tensors":
        weights_of = [g["weights"] for g in (qc.get("config_groups") or {}).values()
                      if isinstance(g, dict) and isinstance(g.get("weights"), dict)]
        bits = {w.get("num_bits") for w in weights_of if isinstance(w.get("num_bits"), (int, float, str))}
        types = {w.get("type") for w in weights_of if isinstance(w.get("type"), str)}
        if 4 in bits:
            return "bfloat16", "nvfp4" if "float" in types else "int4", kv
        if 8 in bits:
            return "fp8", "fp8", kv
        return "bfloat16", "bfloat16", kv
    if algo == "FP8":
        return "fp8", "fp8", kv
    if algo == "NVFP4":  # exclusions (e.g. the MLA q/kv projections) come from _excluded_groups
        return "nvfp4", "nvfp4", kv
    if algo == "MIXED_PRECISION":  # ModelOpt per-layer formats: only the routed experts are quantized
        return "bfloat16", "nvfp4", kv
    return "bfloat16", "bfloat16", kv


_LAYER_PREFIXES = ("model.layers.{i}", "language_model.model.layers.{i}", "model.language_model.layers.{i}")


def _group_module_names(group: str, attention: AttentionSpec, moe: MoESpec | None) -> tuple[str, ...]:
    """Hugging Face module names (relative to a decoder layer) of one cosim module group."""
    mla = attention.is_mla
    if group == "q_proj":
        return ("self_attn.q_a_proj", "self_attn.q_b_proj") if mla and attention.q_lora_rank else ("self_attn.q_proj",)
    if group == "kv_proj":
        if mla:
            return ("self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj")
        return ("self_attn.k_proj", "self_attn.v_proj")
    if group == "o_proj":
        return ("self_attn.o_proj",)
    if group == "indexer":
        return ("self_attn.indexer.wq_b", "self_attn.indexer.wk")
    if group == "dense_ffn":
        return ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    if group == "shared_expert":
        return ("mlp.shared_experts.gate_proj", "mlp.shared_experts.down_proj", "mlp.shared_expert.gate_proj",
                "mlp.shared_expert.down_proj")
    return ("mlp.experts.0.gate_proj", "mlp.experts.0.down_proj", "mlp.experts.0.w1", "block_sparse_moe.experts.0.w1",
            "mlp.experts.gate_up_proj")


def _exclusion_regex(patterns: list[str]) -> re.Pattern[str]:
    """One regex matching every module name an exclusion list covers (a name covers its children)."""
    parts = []
    for p in patterns:
        if p.startswith("re:"):
            parts.append(f"(?:{p[3:]}).*")
        elif any(c in p for c in "*?["):
            for glob in (p, p + ".*"):
                parts.append(fnmatch.translate(glob).removeprefix("(?s:").removesuffix(")\\Z"))
        else:
            parts.append(re.escape(p) + r"(?:\..*)?")
    try:
        return re.compile("|".join(f"(?:{x})" for x in parts), re.S)
    except re.error:  # a malformed user regex: fall back to literal prefixes
        return re.compile("|".join(re.escape(p) + r"(?:\..*)?" for p in patterns), re.S)


def _excluded_groups(patterns: list[str], layers: tuple[LayerSpec, ...], attention: AttentionSpec,
                     moe: MoESpec | None) -> frozenset[str]:
    """Module groups the exclusion ``patterns`` cover in at least half of the layers holding them."""
    regex = _exclusion_regex(patterns)
    out = set()
    for group in MODULE_GROUPS:
        names = _group_module_names(group, attention, moe)
        holding = [layer.index for layer in layers if _layer_has(layer, group, attention, moe)]
        if not holding:
            continue
        covered = sum(1 for i in holding
                      if any(regex.fullmatch(f"{prefix.format(i=i)}.{n}") for prefix in _LAYER_PREFIXES for n in names))
        if 2 * covered >= len(holding):
            out.add(group)
    return frozenset(out)


def _layer_has(layer: LayerSpec, group: str, attention: AttentionSpec, moe: MoESpec | None) -> bool:
    if group == "indexer":
        return attention.indexer is not None and layer.indexer
    if group == "dense_ffn":
        return layer.ffn == "dense"
    if group == "shared_expert":
        return layer.ffn == "moe" and moe is not None and moe.shared_inter_size > 0
    if group == "routed_experts":
        return layer.ffn == "moe"
    return True
