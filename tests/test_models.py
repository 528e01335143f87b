"""Model configs -> specs, per-rank ops, communication sizes and memory.

The first half builds tiny configs in code (no aiconfigurator needed); the second half checks the
configs bundled with aiconfigurator-core against published numbers and is skipped without it.
"""

from __future__ import annotations

import copy
import functools
import json

import pytest

from cosim.errors import ConfigError
from cosim.models import (
    Parallelism,
    Precision,
    activation_bytes_per_gpu,
    head_comm,
    kv_cache_bytes_per_request,
    kv_cache_bytes_per_token,
    layer_comm,
    layer_ops,
    load_model,
    model_head_ops,
    param_counts,
    parse_config,
    step_memory,
    weight_breakdown,
    weight_bytes_per_gpu,
)
from cosim.ops import AttentionOp, MoeOp

# ---------------------------------------------------------------- tiny configs, built here

TINY_MLA = {  # DeepSeek-V3 shaped, small
    "model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 100,
    "num_attention_heads": 8, "num_key_value_heads": 8, "q_lora_rank": 32, "kv_lora_rank": 16,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8, "intermediate_size": 48,
    "moe_intermediate_size": 16, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "tie_word_embeddings": False,
}
TINY_GQA = {  # Llama shaped, dense
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 3, "vocab_size": 100,
    "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 96,
}
TINY_LLAMA4 = {  # multimodal wrapper with a nested text config, MoE every other layer
    "model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"],
    "text_config": {"model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 6, "vocab_size": 100,
                    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8,
                    "intermediate_size": 32, "intermediate_size_mlp": 96, "num_local_experts": 4,
                    "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "attention_chunk_size": 16},
}


def tiny(config: dict, **changes) -> dict:
    out = copy.deepcopy(config)
    out.update(changes)
    return out


def test_tiny_mla_spec_and_param_count():
    m = parse_config(TINY_MLA, name="tiny-mla")
    assert m.attention.kind == "mla" and m.moe is not None
    assert m.layer_kinds == ("dense", "moe", "moe", "moe")
    h, v = 64, 100
    attn = (h * 32 + 32 + 32 * 8 * 12          # q_a, q_a_norm, q_b (8 heads x (8 + 4))
            + h * (16 + 4) + 16 + 16 * 8 * (8 + 8)  # kv_a, kv_a_norm, kv_b
            + 8 * 8 * h)                        # o_proj
    dense, router, experts, shared = 3 * h * 48, h * 8, 8 * 3 * h * 16, 3 * h * 16
    total = 2 * v * h + h + 4 * (attn + 2 * h) + dense + 3 * (router + experts + shared)
    p = param_counts(m)
    assert p.total == total
    assert p.active_per_token == pytest.approx(total - 3 * experts * (1 - 2 / 8))


def test_tiny_gqa_param_count_closed_form():
    m = parse_config(TINY_GQA)
    h, hd = 64, 8
    per_layer = 2 * h + h * 8 * hd + 2 * h * 2 * hd + 8 * hd * h + 3 * h * 96
    assert m.moe is None and m.layer_kinds == ("dense",) * 3
    assert param_counts(m).total == 2 * 100 * h + h + 3 * per_layer


def test_nested_text_config_and_interleaved_moe():
    m = parse_config(TINY_LLAMA4)
    assert m.layer_kinds == ("dense", "moe") * 3
    assert m.moe.top_k == 1 and m.moe.shared_inter_size == 32 and m.dense_inter_size == 96
    # chunked attention on 3 of every 4 layers (rope layers), global on every 4th
    assert [lay.window_kind for lay in m.layers[:4]] == ["chunked", "chunked", "chunked", "full"]
    explicit = copy.deepcopy(TINY_LLAMA4)
    explicit["text_config"]["moe_layers"] = [0, 5]
    assert parse_config(explicit).layer_kinds == ("moe", "dense", "dense", "dense", "dense", "moe")


def test_load_from_directory_and_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_MLA))
    by_dir, by_file = load_model(tmp_path), load_model(tmp_path / "config.json")
    assert by_dir.name == tmp_path.name and by_dir.layers == by_file.layers
    assert by_dir.source.endswith("config.json")


def test_mla_kv_bytes_closed_form_tiny():
    m = parse_config(TINY_MLA)
    for kv, nbytes in (("bfloat16", 2), ("fp8", 1)):
        for par in (Parallelism(tp=1), Parallelism(tp=8), Parallelism(tp=8, ep=8, dp_attention=True)):
            # the latent cache has no head axis: the same on every TP rank
            assert kv_cache_bytes_per_token(m, par, Precision(kv_cache=kv)) == (16 + 4) * nbytes * 4


def test_step_memory_adds_weights_kv_of_the_batch_and_activations():
    m = parse_config(TINY_MLA)
    par, prec = Parallelism(tp=8, ep=8, dp_attention=True), Precision(kv_cache="fp8")
    mem = step_memory(m, par, prec, "generation", batch_per_rank=5, prefix_tokens=100, capacity_bytes=1e12)
    assert mem.kv_cache_bytes == 5 * 101 * (16 + 4) * 1 * 4  # 5 requests x 101 tokens x latent x 4 layers
    assert mem.weight_bytes == weight_bytes_per_gpu(m, par, prec)
    assert mem.activation_bytes == activation_bytes_per_gpu(m, par, prec, 5, "generation", 100)
    assert mem.total_bytes == mem.weight_bytes + mem.kv_cache_bytes + mem.activation_bytes
    assert mem.fits is True
    assert step_memory(m, par, prec, "context", 2, new_tokens=50, capacity_bytes=1.0).fits is False
    assert step_memory(m, par, prec, "context", 2, new_tokens=50).fits is None  # capacity unknown
    with pytest.raises(ConfigError, match="batch_per_rank"):
        step_memory(m, par, prec, "generation", 0)


def test_gqa_kv_bytes_replicated_beyond_kv_heads():
    m = parse_config(TINY_GQA)  # 2 kv heads x head_dim 8, 3 layers
    assert kv_cache_bytes_per_token(m, Parallelism(tp=1), Precision()) == 2 * 2 * 8 * 2 * 3
    assert kv_cache_bytes_per_token(m, Parallelism(tp=2), Precision()) == 2 * 1 * 8 * 2 * 3
    assert kv_cache_bytes_per_token(m, Parallelism(tp=8), Precision()) == 2 * 1 * 8 * 2 * 3  # replicated


def test_windowed_kv_per_request():
    m = parse_config(TINY_LLAMA4)  # chunk 16 on layers 0,1,2,4,5; full on 3
    per_layer = 2 * 2 * 8 * 2.0
    assert kv_cache_bytes_per_request(m, Parallelism(), Precision(), 1000) == per_layer * (5 * 16 + 1000)


def _by_name(ops):
    return {op.name: op for op in ops}


def test_gemm_shapes_tp8_vs_tp1_tiny():
    m = parse_config(TINY_MLA)
    one = _by_name(layer_ops(m, 0, Parallelism(tp=1), Precision(), "context", 1, 32))
    eight = _by_name(layer_ops(m, 0, Parallelism(tp=8), Precision(), "context", 1, 32))
    for name in ("q_b_proj", "kv_b_proj", "ffn_gate_up"):
        assert eight[name].n * 8 == one[name].n and eight[name].k == one[name].k
    for name in ("o_proj", "ffn_down"):
        assert eight[name].k * 8 == one[name].k and eight[name].n == one[name].n
    for name in ("q_a_proj", "kv_a_proj"):  # MLA down-projections are replicated
        assert eight[name] == one[name]
    assert eight["attention"].num_heads * 8 == one["attention"].num_heads


def test_dp_attention_semantics_tiny():
    m = parse_config(TINY_MLA)
    par = Parallelism(tp=4, ep=4, dp_attention=True)
    ops = _by_name(layer_ops(m, 1, par, Precision(moe="fp8"), "generation", batch=10, prefix_tokens=50))
    assert ops["attention"].num_heads == 8                       # tp=1 attention on own requests
    assert ops["moe_experts"].num_tokens == 40 and ops["moe_experts"].ep_size == 4
    assert ops["shared_gate_up"].n == 2 * 16                      # shared expert replicated
    comm = layer_comm(m, 1, par, Precision(dispatch="fp8"), "generation", 10)
    assert comm.moe_pattern == "all_to_all" and comm.attention_allreduce_bytes == 0
    assert comm.dispatch_bytes_per_token == 64 * 1 and comm.combine_bytes_per_token == 64 * 2
    assert comm.dispatch_bytes_max == 10 * 2 * 64
    tp_comm = layer_comm(m, 1, Parallelism(tp=4, ep=4), Precision(), "generation", 10)
    assert tp_comm.moe_pattern == "allreduce" and tp_comm.attention_allreduce_bytes == 10 * 64 * 2
    dense = layer_comm(m, 0, par, Precision(), "generation", 10)
    assert dense.ffn == "dense" and dense.ffn_allreduce_bytes == 0
    # non-expert weights are replicated under DP attention; experts are split the same way
    tp_w = weight_breakdown(m, Parallelism(tp=4, ep=4), Precision())
    dp_w = weight_breakdown(m, par, Precision())
    assert dp_w.routed_expert_bytes == tp_w.routed_expert_bytes
    assert dp_w.attention_bytes > tp_w.attention_bytes and dp_w.dense_ffn_bytes == 4 * tp_w.dense_ffn_bytes


def test_pipeline_stages_and_pp_send():
    m = parse_config(tiny(TINY_MLA, num_hidden_layers=5))
    par = Parallelism(pp=2)
    assert par.stage_layers(m) == [range(0, 3), range(3, 5)]
    sends = [layer_comm(m, i, par, Precision(), "generation", 4).pp_send_bytes for i in range(5)]
    assert sends == [0, 0, 4 * 64 * 2, 0, 0]
    assert weight_breakdown(m, par, Precision(), 0).lm_head_bytes == 0
    assert weight_breakdown(m, par, Precision(), 1).embedding_bytes == 0


def test_decode_flops_match_active_params_tiny():
    m = parse_config(TINY_MLA)
    p, batch = param_counts(m), 16
    flops = sum(op.flops() for i in range(m.num_layers)
                for op in layer_ops(m, i, Parallelism(), Precision(), "generation", batch, 1, 0))
    head = model_head_ops(m, Parallelism(), Precision(), "generation", batch)
    flops += sum(op.flops() for op in head.post_layers)
    # every non-embedding active weight does one multiply-add per token; norms add a few flops
    assert flops == pytest.approx(2 * (p.active_per_token - p.embedding) * batch, rel=0.02)


def test_missing_field_names_it():
    bad = dict(TINY_MLA)
    del bad["kv_lora_rank"]
    with pytest.raises(ConfigError) as err:
        parse_config(bad, source="x/config.json")
    assert err.value.field == "kv_lora_rank" and err.value.source == "x/config.json"
    nested = copy.deepcopy(TINY_LLAMA4)
    del nested["text_config"]["hidden_size"]
    with pytest.raises(ConfigError) as err:
        parse_config(nested)
    assert err.value.field == "text_config.hidden_size"


@pytest.mark.parametrize("field,value", [
    ("num_hidden_layers", "4"), ("num_hidden_layers", 0), ("hidden_size", 64.5), ("tie_word_embeddings", "no"),
    ("num_experts_per_tok", 9), ("first_k_dense_replace", 9),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        parse_config(tiny(TINY_MLA, **{field: value}))
    assert err.value.field == field


def test_unsupported_model_type():
    with pytest.raises(ConfigError) as err:
        parse_config(tiny(TINY_GQA, model_type="nemotron_h"))
    assert err.value.field == "model_type" and "Mamba" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(tiny(TINY_GQA, layer_types=["full_attention", "linear_attention", "full_attention"]))
    assert err.value.field == "layer_types"


@pytest.mark.parametrize("par,field", [
    (Parallelism(tp=3), "parallel.tp"),          # 8 heads not divisible by 3
    (Parallelism(tp=4, ep=4, pp=9), "parallel.pp"),
])
def test_parallelism_validation(par, field):
    with pytest.raises(ConfigError) as err:
        layer_ops(parse_config(TINY_MLA), 0, par, Precision(), "generation", 1)
    assert err.value.field == field


def test_parallelism_and_precision_fields():
    with pytest.raises(ConfigError) as err:
        Parallelism(tp=8, ep=3)
    assert err.value.field == "parallel.ep"
    with pytest.raises(ConfigError) as err:
        Parallelism(tp=0)
    assert err.value.field == "parallel.tp"
    with pytest.raises(ConfigError) as err:
        Precision(weights="int3")
    assert err.value.field == "precision.weights"
    with pytest.raises(ConfigError) as err:
        Precision(kv_cache="nvfp4")
    assert err.value.field == "precision.kv_cache"
    assert Precision(weights="fp8").moe == "fp8"
    experts_not_divisible = parse_config(tiny(TINY_MLA, n_routed_experts=6))
    with pytest.raises(ConfigError) as err:
        Parallelism(tp=4, ep=4).validate(experts_not_divisible)
    assert err.value.field == "parallel.ep"


def test_workload_validation():
    m = parse_config(TINY_GQA)
    with pytest.raises(ConfigError) as err:
        layer_ops(m, 0, Parallelism(), Precision(), "generation", 4, new_tokens=2)
    assert err.value.field == "new_tokens"
    with pytest.raises(ConfigError) as err:
        layer_ops(m, 0, Parallelism(), Precision(), "decode", 4)
    assert err.value.field == "phase"
    with pytest.raises(ConfigError) as err:
        layer_ops(m, 3, Parallelism(), Precision(), "generation", 4)
    assert err.value.field == "layer_index"


def test_unknown_model_name():
    with pytest.raises(ConfigError) as err:
        load_model("no-such-org/No-Such-Model-7B")
    assert err.value.field == "model"


def test_activation_estimate_grows_with_tokens():
    m = parse_config(TINY_MLA)
    small = activation_bytes_per_gpu(m, Parallelism(), Precision(), 16)
    large = activation_bytes_per_gpu(m, Parallelism(), Precision(), 1024)
    assert 0 < small < large


# ---------------------------------------------------------------- bundled configs (aiconfigurator-core)

@pytest.fixture(scope="module")
def bundled():
    pytest.importorskip("aiconfigurator_core")


@functools.lru_cache(maxsize=None)
def _model(name):
    return load_model(name)


# Published totals / active parameters (model cards); bound 3 % on each.
PUBLISHED = [
    ("deepseek-ai/DeepSeek-V3", 671e9, 37e9),
    ("deepseek-ai/DeepSeek-R1", 671e9, 37e9),
    ("Qwen/Qwen3-235B-A22B", 235e9, 22e9),
    ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", 400e9, 17e9),
    ("meta-llama/Meta-Llama-3.1-70B", 70e9, 70e9),
    ("moonshotai/Kimi-K2-Instruct", 1.0e12, 32e9),
]


@pytest.mark.parametrize("name,total,active", PUBLISHED)
def test_published_parameter_counts(bundled, name, total, active):
    p = param_counts(_model(name))
    assert p.total == pytest.approx(total, rel=0.03)
    assert p.active_per_token == pytest.approx(active, rel=0.03)


def test_layer_kinds_bundled(bundled):
    dsv3 = _model("deepseek-ai/DeepSeek-V3")
    assert dsv3.layer_kinds == ("dense",) * 3 + ("moe",) * 58
    assert dsv3.moe.num_shared_experts == 1 and dsv3.attention.kind == "mla"
    maverick = _model("meta-llama/Llama-4-Maverick-17B-128E-Instruct")
    assert maverick.layer_kinds == ("dense", "moe") * 24
    assert maverick.moe.top_k == 1 and maverick.moe.num_shared_experts == 1
    qwen = _model("Qwen/Qwen3-235B-A22B")
    assert qwen.layer_kinds == ("moe",) * 94 and qwen.moe.shared_inter_size == 0
    assert qwen.attention.kind == "gqa" and qwen.attention.num_kv_heads == 4
    assert _model("meta-llama/Meta-Llama-3.1-70B").moe is None


def test_dsa_indexer_from_config(bundled):
    m = _model("deepseek-ai/DeepSeek-V3.2")
    ix = m.attention.indexer
    assert m.attention.kind == "dsa" and (ix.num_heads, ix.head_dim, ix.topk) == (64, 128, 2048)
    ops = _by_name(layer_ops(m, 3, Parallelism(tp=8, ep=8, dp_attention=True), Precision(), "generation", 8,
                             prefix_tokens=10_000))
    assert ops["attention"].kind == "dsa" and ops["attention"].sparse_topk == 2048
    assert ops["indexer_q_proj"].n == 64 * 128 and ops["indexer_logits"].flops() == 2 * 8 * 10_000 * 64 * 128


def test_mla_kv_bytes_closed_form_bundled(bundled):
    par = Parallelism(tp=8, ep=8)
    dsv3, dsv32 = _model("deepseek-ai/DeepSeek-V3"), _model("deepseek-ai/DeepSeek-V3.2")
    assert kv_cache_bytes_per_token(dsv3, par, Precision(kv_cache="fp8")) == (512 + 64) * 1 * 61
    assert kv_cache_bytes_per_token(dsv3, par, Precision()) == (512 + 64) * 2 * 61
    # DSA adds the FP8 indexer key cache: 128 bytes + one fp32 scale per token and layer
    assert kv_cache_bytes_per_token(dsv32, par, Precision(kv_cache="fp8")) == (576 + 128 + 4) * 61
    llama = _model("meta-llama/Meta-Llama-3.1-70B")
    assert kv_cache_bytes_per_token(llama, Parallelism(tp=8), Precision()) == 2 * 1 * 128 * 2 * 80


def test_gemm_shapes_tp8_vs_tp1_bundled(bundled):
    m = _model("deepseek-ai/DeepSeek-V3")
    for layer, names_n, names_k in ((0, ("q_b_proj", "kv_b_proj", "ffn_gate_up"), ("o_proj", "ffn_down")),
                                    (3, ("q_b_proj", "kv_b_proj", "shared_gate_up"), ("o_proj", "shared_down"))):
        one = _by_name(layer_ops(m, layer, Parallelism(tp=1), Precision(), "context", 1, 512))
        eight = _by_name(layer_ops(m, layer, Parallelism(tp=8, ep=8), Precision(), "context", 1, 512))
        for name in names_n:
            assert (eight[name].m, eight[name].n * 8, eight[name].k) == (one[name].m, one[name].n, one[name].k)
        for name in names_k:
            assert (eight[name].m, eight[name].n, eight[name].k * 8) == (one[name].m, one[name].n, one[name].k)
    ops = _by_name(layer_ops(m, 3, Parallelism(tp=1), Precision(), "generation", 4, prefix_tokens=100))
    assert (ops["q_a_proj"].n, ops["q_a_proj"].k) == (1536, 7168)
    assert (ops["q_b_proj"].n, ops["q_b_proj"].k) == (128 * 192, 1536)
    assert (ops["kv_a_proj"].n, ops["kv_a_proj"].k) == (576, 7168)
    assert (ops["o_proj"].n, ops["o_proj"].k) == (7168, 128 * 128)
    assert isinstance(ops["moe_experts"], MoeOp) and ops["moe_experts"].inter_size == 2048


@pytest.mark.parametrize("name", ["deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-235B-A22B",
                                  "meta-llama/Llama-4-Maverick-17B-128E-Instruct", "meta-llama/Meta-Llama-3.1-70B"])
def test_decode_flops_two_times_active_params(bundled, name):
    m, batch = _model(name), 32
    par, prec = Parallelism(), Precision()
    flops = sum(op.flops() for i in range(m.num_layers)
                for op in layer_ops(m, i, par, prec, "generation", batch, 1, 1) if not isinstance(op, AttentionOp))
    head = model_head_ops(m, par, prec, "generation", batch)
    flops += sum(op.flops() for op in head.pre_layers + head.post_layers)
    p = param_counts(m)
    # the embedding lookup does no FLOPs (2.5-6 % of active params): bound 7 % vs 2 x active,
    # 0.5 % vs 2 x (active - embedding)
    assert flops == pytest.approx(2 * p.active_per_token * batch, rel=0.07)
    assert flops == pytest.approx(2 * (p.active_per_token - p.embedding) * batch, rel=0.005)


def test_name_resolution(bundled):
    a = _model("deepseek-ai/DeepSeek-V3")
    assert load_model("DeepSeek-V3").layers == a.layers
    assert load_model("deepseek-ai--DeepSeek-V3_config.json").name == "deepseek-ai/DeepSeek-V3"
    with pytest.raises(ConfigError) as err:
        load_model("deepseek-ai/DeepSeek-V9")
    assert err.value.field == "model" and "deepseek-ai/DeepSeek-V3" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_model("Qwen/Qwen3.5-27B")  # hybrid linear attention
    assert err.value.field == "text_config.model_type"


def test_checkpoint_precision_and_memory_bundled(bundled):
    m = _model("deepseek-ai/DeepSeek-V3")
    prec = Precision.from_checkpoint(m, kv_cache="fp8")
    assert (prec.weights, prec.moe) == ("fp8_block", "fp8_block")
    per_gpu = weight_bytes_per_gpu(m, Parallelism(tp=8, ep=8), prec)
    assert 671e9 / 8 < per_gpu < 671e9 / 8 * 1.06  # fp8 weights, bf16 embeddings, replicated down-projections
    nvfp4 = Precision.from_checkpoint(_model("nvidia/DeepSeek-V3.1-NVFP4"))
    assert nvfp4.moe == "nvfp4" and nvfp4.kv_cache == "fp8"
    comm = head_comm(m, Parallelism(tp=8), prec, "generation", 16)
    assert comm.logits_allgather_bytes == 16 * (129280 // 8) * 2


# ---------------------------------------------------------------- per-module checkpoint formats

def _nvfp4(excludes: list[str]) -> dict:
    return {"quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "exclude_modules": excludes}}


def test_checkpoint_exclusions_become_module_formats():
    # TINY_MLA: 4 layers, layer 0 dense, layers 1-3 MoE with a shared expert
    per_layer = [f"model.layers.{i}.self_attn.{m}" for i in range(4) for m in ("q_a_proj", "kv_b_proj")]
    m = parse_config(TINY_MLA, quant_config=_nvfp4(["lm_head", *per_layer]))
    assert (m.checkpoint_weights, m.checkpoint_moe_weights, m.checkpoint_kv_cache) == ("nvfp4", "nvfp4", "fp8")
    assert m.checkpoint_module_formats == (("q_proj", "bfloat16"), ("kv_proj", "bfloat16"))
    # a whole-block glob, a regex, and a plain module name (covering its children)
    glob = parse_config(TINY_MLA, quant_config=_nvfp4(["model.layers.*.self_attn*"]))
    assert dict(glob.checkpoint_module_formats) == {g: "bfloat16" for g in ("q_proj", "kv_proj", "o_proj")}
    regex = tiny(TINY_MLA, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128],
                                                "modules_to_not_convert": ["re:.*shared_experts.*"]})
    assert parse_config(regex).checkpoint_module_formats == (("shared_expert", "bfloat16"),)
    plain = parse_config(TINY_MLA, quant_config=_nvfp4(["model.layers.0.mlp"]))  # the only dense layer
    assert plain.checkpoint_module_formats == (("dense_ffn", "bfloat16"),)
    # majority rule: one of three MoE layers excluded does not change the group; the router never counts
    few = parse_config(TINY_MLA, quant_config=_nvfp4(["model.layers.1.mlp.shared_experts", "model.layers.1.mlp.gate"]))
    assert few.checkpoint_module_formats == ()
    prec = Precision.from_checkpoint(m)
    ops = {o.name: o for o in layer_ops(m, 1, Parallelism(tp=2, ep=2), prec, "generation", 4, prefix_tokens=10)}
    assert ops["q_a_proj"].dtype == ops["kv_a_proj"].dtype == ops["mla_v_up"].dtype == "bfloat16"
    assert ops["o_proj"].dtype == ops["shared_gate_up"].dtype == ops["moe_experts"].dtype == "nvfp4"
    flat = Precision.from_checkpoint(m, modules=())
    par = Parallelism(tp=2, ep=2)
    assert weight_breakdown(m, par, prec).attention_bytes > weight_breakdown(m, par, flat).attention_bytes
    assert weight_breakdown(m, par, prec).routed_expert_bytes == weight_breakdown(m, par, flat).routed_expert_bytes


def test_redundant_experts_make_ep_divisible():
    """DeepSeek-V3: 256 experts do not split over 144 ranks; with 32 redundant slots (288) they
    do (the defect: EP only needs experts + redundant divisible by the EP size)."""
    from cosim.models import Parallelism, load_model
    from cosim.trace.builder import StepSpec
    from cosim.models import Precision

    m = load_model("deepseek-ai/DeepSeek-V3")
    with pytest.raises(ConfigError, match="not divisible by ep=144.*32 more"):
        Parallelism(tp=144, ep=144, dp_attention=True).validate(m)
    Parallelism(tp=144, ep=144, dp_attention=True, redundant_experts=32).validate(m)
    spec = StepSpec(m, Parallelism(tp=144, ep=144, dp_attention=True), Precision(), "generation", 4,
                    redundant_experts=32)
    assert spec.parallel.redundant_experts == 32  # the step's redundant experts set the EP slots
    with pytest.raises(ConfigError, match="not divisible by ep=144"):
        StepSpec(m, Parallelism(tp=144, ep=144, dp_attention=True), Precision(), "generation", 4,
                 redundant_experts=16).parallel.validate(m)
