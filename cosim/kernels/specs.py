"""The kernel tables cosim reads: file, key columns, interpolation axes, filters.

Each :class:`TableSpec` names one aiconfigurator table (``<family>/<framework>/<version>/<file>``)
and how it is keyed. The same key columns (plus ``latency_s``) are the schema of a user table of
that name (see ``docs/kernel-tables.md``). ``fixed`` filters select the aiconfigurator rows cosim
uses (for example FMHA in BF16, no sliding window, beam width 1) and are not part of the user
schema. Tables with no aiconfigurator file (``context_dsa``, ``generation_dsa``) exist only as user
tables; from aiconfigurator data the DSA attention core is derived from the module tables (see
:mod:`cosim.kernels.tables`).
"""

from __future__ import annotations

from dataclasses import dataclass

INT, STR, BOOL = "int", "str", "bool"


@dataclass(frozen=True)
class TableSpec:
    """How one kernel table is keyed and interpolated."""

    name: str  # cosim name; also the user-table file stem
    family: str | None  # aiconfigurator op-family folder (None: user-only table)
    file: str | None  # aiconfigurator parquet file name
    slice_cols: tuple[str, ...]  # must match exactly
    axis_cols: tuple[str, ...]  # interpolated, outermost first
    axis_log: tuple[bool, ...]  # per axis: log-log blend (power law) instead of linear (affine)
    col_types: tuple[tuple[str, str], ...]  # column -> INT | STR | BOOL
    fixed: tuple[tuple[str, object], ...] = ()  # aiconfigurator rows kept: column == value
    dtype_col: str | None = None  # slice column naming the numeric format (efficiency fits)
    optional: tuple[tuple[str, object], ...] = ()  # user-table columns with a default
    value_map: tuple[tuple[str, tuple[tuple[object, object], ...]], ...] = ()  # column -> ((aic value, cosim value), ...)

    @property
    def key_cols(self) -> tuple[str, ...]:
        """Slice columns then axis columns."""
        return self.slice_cols + self.axis_cols

    def col_type(self, col: str) -> str:
        return dict(self.col_types)[col]


_ATTN_TYPES = (("kv_cache_dtype", STR), ("num_heads", INT), ("num_key_value_heads", INT), ("head_dim", INT),
               ("batch_size", INT), ("isl", INT), ("step", INT))
_MLA_TYPES = (("kv_cache_dtype", STR), ("gemm_type", STR), ("num_heads", INT), ("batch_size", INT), ("isl", INT),
              ("step", INT))

GEMM = TableSpec(
    name="gemm", family="gemm", file="gemm_perf.parquet",
    slice_cols=("gemm_dtype",), axis_cols=("n", "k", "m"), axis_log=(False, False, False),
    col_types=(("gemm_dtype", STR), ("m", INT), ("n", INT), ("k", INT)), dtype_col="gemm_dtype",
)
CONTEXT_ATTENTION = TableSpec(
    name="context_attention", family="attention", file="context_attention_perf.parquet",
    slice_cols=("kv_cache_dtype", "num_heads", "num_key_value_heads", "head_dim"), axis_cols=("batch_size", "isl"),
    axis_log=(False, True), col_types=_ATTN_TYPES,
    fixed=(("attn_dtype", "bfloat16"), ("window_size", 0), ("beam_width", 1), ("step", 0)), dtype_col="kv_cache_dtype",
)
GENERATION_ATTENTION = TableSpec(
    name="generation_attention", family="attention", file="generation_attention_perf.parquet",
    slice_cols=("kv_cache_dtype", "num_heads", "num_key_value_heads", "head_dim"), axis_cols=("batch_size", "step"),
    axis_log=(False, False), col_types=_ATTN_TYPES,
    fixed=(("attn_dtype", "bfloat16"), ("window_size", 0), ("beam_width", 1), ("isl", 1)), dtype_col="kv_cache_dtype",
)
CONTEXT_MLA = TableSpec(
    name="context_mla", family="mla", file="context_mla_perf.parquet",
    slice_cols=("kv_cache_dtype", "num_heads"), axis_cols=("batch_size", "isl"), axis_log=(False, True),
    col_types=_MLA_TYPES, fixed=(("mla_dtype", "bfloat16"), ("step", 0)), dtype_col="kv_cache_dtype",
)
GENERATION_MLA = TableSpec(
    name="generation_mla", family="mla", file="generation_mla_perf.parquet",
    slice_cols=("kv_cache_dtype", "num_heads"), axis_cols=("batch_size", "step"), axis_log=(False, False),
    col_types=_MLA_TYPES, fixed=(("mla_dtype", "bfloat16"), ("isl", 1)), dtype_col="kv_cache_dtype",
)
# Whole attention modules (projections + attention). Only used to derive the DSA attention core.
MLA_CONTEXT_MODULE = TableSpec(
    name="mla_context_module", family="mla", file="mla_context_module_perf.parquet",
    slice_cols=("kv_cache_dtype", "gemm_type", "num_heads"), axis_cols=("batch_size", "isl"), axis_log=(False, True),
    col_types=_MLA_TYPES,
    fixed=(("mla_dtype", "bfloat16"), ("step", 0), ("model", "deepseek-ai/DeepSeek-V3"), ("tp_size", 1)),
)
MLA_GENERATION_MODULE = TableSpec(
    name="mla_generation_module", family="mla", file="mla_generation_module_perf.parquet",
    slice_cols=("kv_cache_dtype", "gemm_type", "num_heads"), axis_cols=("batch_size", "step"), axis_log=(False, False),
    col_types=_MLA_TYPES,
    fixed=(("mla_dtype", "bfloat16"), ("isl", 1), ("model", "deepseek-ai/DeepSeek-V3"), ("tp_size", 1)),
)
DSA_CONTEXT_MODULE = TableSpec(
    name="dsa_context_module", family="sparse_attention", file="dsa_context_module_perf.parquet",
    slice_cols=("kv_cache_dtype", "gemm_type", "num_heads"), axis_cols=("batch_size", "isl"), axis_log=(False, True),
    col_types=_MLA_TYPES,
    fixed=(("mla_dtype", "bfloat16"), ("step", 0), ("model", "deepseek-ai/DeepSeek-V3.2"), ("tp_size", 1),
           ("op_name", "dsa_context_module")),
)
DSA_GENERATION_MODULE = TableSpec(
    name="dsa_generation_module", family="sparse_attention", file="dsa_generation_module_perf.parquet",
    slice_cols=("kv_cache_dtype", "gemm_type", "num_heads"), axis_cols=("batch_size", "step"), axis_log=(False, False),
    col_types=_MLA_TYPES,
    fixed=(("mla_dtype", "bfloat16"), ("isl", 1), ("model", "deepseek-ai/DeepSeek-V3.2"), ("tp_size", 1),
           ("op_name", "dsa_generation_module")),
)
# User-only: the DSA attention core (indexer + top-k sparse MLA, no projections).
CONTEXT_DSA = TableSpec(
    name="context_dsa", family=None, file=None,
    slice_cols=("kv_cache_dtype", "num_heads"), axis_cols=("batch_size", "isl"), axis_log=(False, True),
    col_types=_MLA_TYPES, dtype_col="kv_cache_dtype",
)
GENERATION_DSA = TableSpec(
    name="generation_dsa", family=None, file=None,
    slice_cols=("kv_cache_dtype", "num_heads"), axis_cols=("batch_size", "step"), axis_log=(False, False),
    col_types=_MLA_TYPES, dtype_col="kv_cache_dtype",
)
MOE = TableSpec(
    name="moe", family="moe", file="moe_perf.parquet",
    slice_cols=("moe_dtype", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size",
                "distribution", "gated"),
    axis_cols=("num_tokens",), axis_log=(False,),
    col_types=(("moe_dtype", STR), ("hidden_size", INT), ("inter_size", INT), ("topk", INT), ("num_experts", INT),
               ("moe_tp_size", INT), ("moe_ep_size", INT), ("distribution", STR), ("gated", BOOL), ("num_tokens", INT)),
    dtype_col="moe_dtype", optional=(("gated", True),),
)

# SGLang's wide-EP (DeepEP) expert compute in decode: the masked grouped GEMM that runs on the
# tokens DeepEP's low-latency dispatch delivers. ``num_tokens`` are the tokens entering the EP group
# (as in the generic table of TensorRT-LLM); rows are measured from 1 to 128 tokens per rank
# (``ep <= num_tokens <= 128 * ep``). The router skew ``uniform`` is cosim's ``balanced``.
WIDEEP_MOE = TableSpec(
    name="wideep_moe", family="moe", file="wideep_generation_moe_perf.parquet",
    slice_cols=MOE.slice_cols, axis_cols=("num_tokens",), axis_log=(False,), col_types=MOE.col_types,
    dtype_col="moe_dtype", value_map=(("distribution", (("uniform", "balanced"),)),),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (
    GEMM, CONTEXT_ATTENTION, GENERATION_ATTENTION, CONTEXT_MLA, GENERATION_MLA, MLA_CONTEXT_MODULE,
    MLA_GENERATION_MODULE, DSA_CONTEXT_MODULE, DSA_GENERATION_MODULE, CONTEXT_DSA, GENERATION_DSA, MOE, WIDEEP_MOE)}

#: Frameworks whose aiconfigurator ``moe_perf`` rows key ``num_tokens`` as tokens **per EP rank**
#: (each of the ``moe_ep_size`` ranks brings that many tokens; a rank computes
#: ``num_tokens * topk`` selections), not tokens entering the whole EP group. Evidence in
#: ``docs/kernel-tables.md`` ("SGLang MoE rows and the EP split").
MOE_TOKENS_PER_RANK_FRAMEWORKS = ("sglang",)

#: Wide-EP rule: an ``MoeOp`` with ``ep_size >= WIDE_EP_MIN_EP`` and ``tp_size == 1`` is priced from
#: the framework's wide-EP table (:data:`WIDE_EP_TABLES`) when that table has the op's slice and
#: brackets its token count; otherwise from the generic ``moe`` table.
WIDE_EP_MIN_EP = 16
WIDE_EP_TABLES = {"sglang": "wideep_moe"}

#: Tables a user directory may provide (module tables are aiconfigurator-internal).
USER_TABLES = ("gemm", "context_attention", "generation_attention", "context_mla", "generation_mla",
               "context_dsa", "generation_dsa", "moe")

#: aiconfigurator's MoE kernel_source for non-gated (ReLU^2) experts; every other source is gated.
NONGATED_KERNEL_SOURCE = "moe_torch_flow_nongated"

#: The MLA geometry the aiconfigurator MLA/DSA tables were measured with (DeepSeek-V3/V3.2).
DEEPSEEK_MLA = {"head_dim": 192, "v_head_dim": 128, "kv_lora_rank": 512, "rope_dim": 64}
DSA_TOPK = 2048
