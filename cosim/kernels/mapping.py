"""Map cosim ops to table keys, and table rows back to ops (for the efficiency fits).

Conventions (checked against aiconfigurator's engine on h200_sxm):

* GEMM ``[m x k] @ [k x n]`` -> ``gemm_perf`` row ``(gemm_dtype, m, n, k)``.
* Context attention of ``batch`` requests of ``new_tokens`` with no prefix -> ``isl = new_tokens``.
* Generation attention with ``prefix_tokens`` cached tokens -> ``step = prefix_tokens`` (the
  engine's decode query at total length ``s`` reads the row ``step = s - 1``).
* MLA/DSA ``num_heads`` are heads per GPU; the tables hold DeepSeek's MLA geometry only.
* The DSA *module* tables index decode by ``step = prefix_tokens + 1`` (the total KV length).
* MoE: ``num_tokens`` entering the layer on the EP group, before routing; EP/TP and the router
  skew are keys. ``gated`` selects gated (SwiGLU) or non-gated kernel rows. (SGLang's generic
  ``moe_perf`` rows count tokens per EP rank instead; :class:`~cosim.kernels.KernelTables`
  converts, see ``MOE_TOKENS_PER_RANK_FRAMEWORKS``.)
"""

from __future__ import annotations

from dataclasses import dataclass

from cosim.kernels.specs import DEEPSEEK_MLA, DSA_TOPK
from cosim.ops import AttentionOp, GemmOp, MoeOp


@dataclass(frozen=True)
class Query:
    """A point to look up: table name, exact slice key, interpolation axes."""

    table: str
    slice_key: tuple
    axes: tuple


def gemm_query(op: GemmOp) -> Query:
    return Query("gemm", (op.dtype,), (op.n, op.k, op.m))


def moe_query(op: MoeOp) -> Query:
    return Query("moe", (op.dtype, op.hidden_size, op.inter_size, op.top_k, op.num_experts, op.tp_size, op.ep_size,
                         op.distribution, bool(op.gated)), (op.num_tokens,))


def gqa_table_mismatch(op: AttentionOp) -> str | None:
    """Why a GQA op cannot use the attention tables (``None`` when it can)."""
    if op.v_head_dim != op.head_dim:
        return f"v_head_dim {op.v_head_dim} != head_dim {op.head_dim} (tables have equal q/k/v head dims)"
    return None


def mla_table_mismatch(op: AttentionOp) -> str | None:
    """Why an MLA/DSA op cannot use the DeepSeek-geometry tables (``None`` when it can)."""
    got = {"head_dim": op.head_dim, "v_head_dim": op.v_head_dim, "kv_lora_rank": op.kv_lora_rank, "rope_dim": op.rope_dim}
    bad = {k: v for k, v in got.items() if v != DEEPSEEK_MLA[k]}
    if bad:
        return f"MLA geometry {bad} differs from the measured DeepSeek geometry {DEEPSEEK_MLA}"
    if op.kind == "dsa" and op.sparse_topk != DSA_TOPK:
        return f"sparse_topk {op.sparse_topk} != measured {DSA_TOPK}"
    return None


def attention_slice(op: AttentionOp) -> tuple:
    """Slice key of an attention op in its context/generation table."""
    if op.kind == "gqa":
        return (op.kv_dtype, op.num_heads, op.num_kv_heads, op.head_dim)
    return (op.kv_dtype, op.num_heads)


def attention_table(op: AttentionOp) -> str:
    kind = {"gqa": "attention", "mla": "mla", "dsa": "dsa"}[op.kind]
    return f"{op.phase}_{kind}"


# ------------------------------------------------------------------ rows -> ops (fits)


def op_from_row(table: str, slice_key: tuple, axes: tuple) -> object:
    """The cosim op a measured row of ``table`` describes."""
    if table == "gemm":
        (dtype,), (n, k, m) = slice_key, axes
        return GemmOp("row", m=m, n=n, k=k, dtype=dtype)
    if table in ("context_attention", "generation_attention"):
        kv, heads, kv_heads, head_dim = slice_key
        batch, x = axes
        ctx = table == "context_attention"
        return AttentionOp("row", "context" if ctx else "generation", "gqa", batch=batch, new_tokens=x if ctx else 1,
                           prefix_tokens=0 if ctx else x, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                           v_head_dim=head_dim, kv_dtype=kv)
    if table in ("context_mla", "generation_mla", "context_dsa", "generation_dsa"):
        kv, heads = slice_key
        batch, x = axes
        ctx = table.startswith("context")
        kind = "dsa" if table.endswith("dsa") else "mla"
        return AttentionOp("row", "context" if ctx else "generation", kind, batch=batch, new_tokens=x if ctx else 1,
                           prefix_tokens=0 if ctx else x, num_heads=heads, num_kv_heads=1,
                           head_dim=DEEPSEEK_MLA["head_dim"], v_head_dim=DEEPSEEK_MLA["v_head_dim"], kv_dtype=kv,
                           kv_lora_rank=DEEPSEEK_MLA["kv_lora_rank"], rope_dim=DEEPSEEK_MLA["rope_dim"],
                           sparse_topk=DSA_TOPK if kind == "dsa" else 0)
    if table in ("moe", "wideep_moe"):
        dtype, hidden, inter, topk, experts, tp, ep, dist, gated = slice_key
        (tokens,) = axes
        return MoeOp("row", num_tokens=tokens, hidden_size=hidden, inter_size=inter, num_experts=experts, top_k=topk,
                     ep_size=ep, tp_size=tp, dtype=dtype, distribution=dist, gated=bool(gated))
    raise KeyError(f"no op for table {table!r}")
