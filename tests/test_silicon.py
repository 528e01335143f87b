"""Silicon TPOT validation: row selection, and the kernel-layer rules it exercises (wide-EP table,
SGLang per-rank MoE rows, per-module checkpoint formats) checked against the tables' own rows."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("aiconfigurator_core")
pa = pytest.importorskip("pyarrow.parquet")

from cosim.errors import ConfigError  # noqa: E402
from cosim.kernels import KernelTables  # noqa: E402
from cosim.models import Parallelism, Precision, layer_ops, load_model, weight_breakdown  # noqa: E402
from cosim.ops import MoeOp  # noqa: E402
from cosim.validation import silicon as S  # noqa: E402

DSV3 = dict(hidden_size=7168, inter_size=2048, num_experts=256, top_k=8, dtype="fp8_block")


def _raw_moe(tables: KernelTables, table: str, ep: int, tokens: int, distribution: str) -> float:
    """Latency (s) of one aiconfigurator row of ``table`` (primary file), DeepSeek shape, moe_tp 1."""
    path = tables.sources(table)[0].path
    t = pa.read_table(path).to_pandas()
    t = t[(t.hidden_size == 7168) & (t.inter_size == 2048) & (t.num_experts == 256) & (t.topk == 8)
          & (t.moe_tp_size == 1) & (t.moe_ep_size == ep) & (t.num_tokens == tokens)
          & (t.moe_dtype == "fp8_block") & (t.distribution == distribution)]
    assert len(t), (table, ep, tokens)
    return float(t.latency.min()) * 1e-3


# ---------------------------------------------------------------------- row selection


_COLS = ["id", "silicon_data_source", "backend", "backend_version", "model_path", "system", "precision", "mode",
         "isl", "osl", "gemm_quant_mode", "moe_quant_mode", "batch_size", "tp_size", "pp_size", "attention_dp_size",
         "moe_tp_size", "moe_ep_size", "decode_batch_size", "decode_num_workers", "decode_tp_size", "decode_pp_size",
         "decode_attention_dp_size", "decode_moe_tp_size", "decode_moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms"]


def _row(**kw) -> dict:
    base = dict(backend="trtllm", backend_version="x", model_path="deepseek-ai/DeepSeek-R1", system="h200_sxm",
                precision="fp8", mode="agg", isl=1024, osl=1024, gemm_quant_mode="fp8_block",
                moe_quant_mode="fp8_block", batch_size=8, tp_size=8, pp_size=1, attention_dp_size=1, moe_tp_size=1,
                moe_ep_size=8, silicon_ttft_ms=100.0, silicon_tpot_ms=20.0, silicon_data_source="")
    base.update(kw)
    return base


def test_selection_rules_on_synthetic_csv(tmp_path):
    rows = [
        _row(id="a"),
        _row(id="a_repeat", model_path="deepseek-ai/DeepSeek-V3"),  # same measurement, other export
        _row(id="b", isl=8192, silicon_tpot_ms=30.0, tp_size=1, attention_dp_size=8),  # DP8/EP8: kept
        _row(id="c", mode="disagg", isl=2048, batch_size=None, decode_batch_size=None, decode_num_workers=None,
             decode_tp_size=8, decode_attention_dp_size=1, decode_moe_tp_size=1, decode_moe_ep_size=8),
        _row(id="d", isl=4096, tp_size=64, moe_tp_size=8, moe_ep_size=8),  # total GPUs written as TP
        _row(id="e", isl=512, tp_size=16, moe_tp_size=4, moe_ep_size=2),  # width mismatch
        _row(id="2026_04_06_x_agg_c8_tp8_ep8_1", isl=128, tp_size=1, attention_dp_size=16, moe_tp_size=2,
             moe_ep_size=8),  # id says 8 GPUs, columns 16
        _row(id="f", isl=128, tp_size=1, attention_dp_size=16, moe_tp_size=2, moe_ep_size=8),  # its repeat
        _row(id="g", mode="disagg", isl=300, batch_size=None, decode_batch_size=16, decode_num_workers=2,
             decode_tp_size=1, decode_attention_dp_size=8, decode_moe_tp_size=1, decode_moe_ep_size=8),
        _row(id="other_model", model_path="meta-llama/Llama-3.1-70B"),
    ]
    path = tmp_path / "s.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_COLS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in _COLS})
    sel = S.select_rows(path)
    assert sel.candidates == 9  # the Llama row is not a candidate
    assert sel.duplicates == 2  # a_repeat, and the repeat of the mis-encoded 2026 measurement
    assert [r.row_id for r in sel.rows] == ["a", "b", "g"]
    assert sel.dropped == {"disagg row without decode batch size / workers": 1,
                           "attention TP > 8 (total GPUs written as TP)": 1,
                           "attention width != expert width (tp x attention_dp != moe_tp x moe_ep)": 1,
                           S._ID_REASON: 1}
    g = sel.rows[2]
    assert (g.batch_per_rank, g.concurrency, g.gpus, g.context_tokens) == (16, 16 * 8 * 2, 8, 300 + 512)
    assert g.parallel == Parallelism(tp=8, ep=8, dp_attention=True)


def test_selection_on_aiconfigurator_csv():
    import pandas as pd

    sel = S.select_rows()
    df = pd.read_csv(S.silicon_csv_path())
    df = df[df.model_path.isin(S.MODEL_CONFIGS) & df.system.isin(S.SYSTEMS) & df.backend.isin(S.FRAMEWORKS)]
    assert sel.candidates == len(df)
    keys = df.assign(t=df.silicon_ttft_ms.round(6), p=df.silicon_tpot_ms.round(6))
    distinct = len(keys.drop_duplicates(subset=["system", "backend", "mode", "isl", "osl", "t", "p"]))
    assert sel.candidates - sel.duplicates == distinct == len(sel.rows) + sum(sel.dropped.values())
    kept = {(r.system, r.framework, r.mode, r.isl, r.osl, round(r.ttft_ms, 6), round(r.tpot_ms, 6)) for r in sel.rows}
    assert len(kept) == len(sel.rows)  # no repeats left
    assert all(r.tp * r.attention_dp == r.moe_tp * r.moe_ep and r.tp <= S.MAX_ATTENTION_TP for r in sel.rows)
    assert {r.system for r in sel.rows} == set(S.SYSTEMS)
    sub = S.subsample(list(sel.rows), 50, seed=3)
    assert sub == S.subsample(list(sel.rows), 50, seed=3) and 40 <= len(sub) <= 60


# ---------------------------------------------------------------------- kernel rules


def test_wide_ep_table_preferred_for_large_ep_sglang():
    after = KernelTables.load("gb200", "sglang")
    before = after.variant(prefer_wide_ep=False)
    op = MoeOp("m", num_tokens=32 * 64, ep_size=32, **DSV3)
    d = after.duration(op)
    assert "wideep_generation_moe" in d.detail and d.source == "measured"
    assert d.seconds == pytest.approx(_raw_moe(after, "wideep_moe", 32, 32 * 64, "uniform"))
    generic = before.duration(op)  # SGLang's generic rows, at the per-rank token count
    assert "moe_perf" in generic.detail and generic.seconds > d.seconds
    legacy = after.variant(prefer_wide_ep=False, moe_ep_split=False).duration(op)
    assert legacy.seconds > 5 * d.seconds  # the old lookup: generic rows at the group token count
    # above the table's 128 tokens per rank (a hot rank): extrapolated from the wide-EP rows, not a
    # jump to the generic table
    edge = after.duration(MoeOp("m", num_tokens=32 * 128, ep_size=32, **DSV3))
    hot = after.duration(MoeOp("m", num_tokens=32 * 140, ep_size=32, **DSV3))
    assert hot.source == "roofline" and "wideep_generation_moe" in hot.detail
    assert edge.seconds <= hot.seconds < 1.2 * edge.seconds
    small = MoeOp("m", num_tokens=4 * 64, ep_size=4, **DSV3)  # below the wide-EP threshold
    assert after.duration(small) == before.duration(small)
    assert "wideep" not in after.duration(small).detail
    trt = KernelTables.load("gb200", "trtllm")
    assert "wideep" not in trt.duration(op).detail  # the rule is SGLang's table only


def test_sglang_moe_rows_keyed_per_rank():
    h100 = KernelTables.load("h100_sxm", "sglang", prefer_wide_ep=False)
    legacy = h100.variant(moe_ep_split=False)
    tokens, ep = 128 * 64, 128
    op = MoeOp("m", num_tokens=tokens, ep_size=ep, **DSV3)
    assert legacy.duration(op).seconds == pytest.approx(_raw_moe(h100, "moe", ep, tokens, "balanced"))
    assert h100.duration(op).seconds == pytest.approx(_raw_moe(h100, "moe", ep, tokens // ep, "balanced"))
    trt = KernelTables.load("h100_sxm", "trtllm").duration(op).seconds
    assert legacy.duration(op).seconds > 10 * trt > h100.duration(op).seconds  # the 15x defect, and its fix
    one = MoeOp("m", num_tokens=512, ep_size=1, **DSV3)
    assert h100.duration(one) == legacy.duration(one)  # EP1: both conventions agree


def test_per_module_formats_price_unquantized_projections():
    model = load_model("nvidia/DeepSeek-V3.1-NVFP4")
    ckpt = Precision.from_checkpoint(model)
    assert ckpt.module_dtype("q_proj") == ckpt.module_dtype("kv_proj") == "bfloat16"
    assert ckpt.module_dtype("o_proj") == ckpt.module_dtype("shared_expert") == ckpt.weights == "nvfp4"
    one_label = Precision.from_checkpoint(model, modules=())
    gb200 = KernelTables.load("gb200", "trtllm")
    par = Parallelism(tp=8, ep=8, dp_attention=True)
    ops = {o.name: o for o in layer_ops(model, 5, par, ckpt, "generation", 64, prefix_tokens=2048)}
    flat = {o.name: o for o in layer_ops(model, 5, par, one_label, "generation", 64, prefix_tokens=2048)}
    for name in ("q_a_proj", "q_b_proj", "kv_a_proj", "mla_q_absorb", "mla_v_up"):
        assert ops[name].dtype == "bfloat16" and flat[name].dtype == "nvfp4"
    assert ops["o_proj"] == flat["o_proj"] and ops["moe_experts"] == flat["moe_experts"]
    # the durations move to the table's own bf16 rows (at decode sizes on gb200 the nvfp4 rows,
    # which include the activation quantization, are the slower ones)
    t = pa.read_table(gb200.sources("gemm")[0].path).to_pandas()
    for name in ("q_a_proj",):  # a measured grid point (m=64, n=1536, k=7168)
        q = ops[name]
        rows = t[(t.m == q.m) & (t.n == q.n) & (t.k == q.k)].groupby("gemm_dtype").latency.min() * 1e-3
        assert gb200.duration(ops[name]).seconds == pytest.approx(rows["bfloat16"])
        assert gb200.duration(flat[name]).seconds == pytest.approx(rows["nvfp4"])
        assert rows["bfloat16"] != pytest.approx(rows["nvfp4"], rel=0.05)
    attn_bytes = weight_breakdown(model, par, ckpt).attention_bytes
    assert attn_bytes > weight_breakdown(model, par, one_label).attention_bytes


def test_precision_defaults_and_modules_validation():
    assert Precision().dispatch == "fp8"
    p = Precision(weights="fp8_block", modules={"kv_proj": "bfloat16"})
    assert p.modules == (("kv_proj", "bfloat16"),) and p.module_dtype("kv_proj") == "bfloat16"
    assert p.module_dtype("routed_experts") == "fp8_block" and hash(p) == hash(Precision(
        weights="fp8_block", modules=(("kv_proj", "bfloat16"),)))
    with pytest.raises(ConfigError) as err:
        Precision(modules={"qkv": "bfloat16"})
    assert err.value.field == "precision.modules"
    with pytest.raises(ConfigError):
        Precision(modules={"q_proj": "int3"})
