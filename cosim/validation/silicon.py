"""Decode TPOT against measured deployments (aiconfigurator-core's ``silicon_sample.csv``).

The CSV holds measured serving runs (model, system, framework, parallelism, ISL/OSL, batch) with
their measured TPOT. This module selects the rows cosim can model, turns each into one decode
:class:`~cosim.trace.builder.StepSpec`, simulates it with the flow backend and compares the step
time with the measured TPOT. Nothing is fitted on these rows.

Rules (all deterministic; counts of every rule are kept in :class:`Selection`):

* **Rows**: DeepSeek-V3/R1 (one architecture; every ``deepseek-ai/DeepSeek-V3`` row is an R1
  measurement), their NVFP4 exports, and Qwen3-235B-A22B, on h100_sxm, h200_sxm, b200_sxm and
  gb200, frameworks trtllm, sglang and vllm.
* **Repeats**: rows with the same system, framework, mode, ISL, OSL, TTFT and TPOT are one
  measurement exported several times; the first usable copy in file order is kept.
* **Decode deployment**: agg rows use ``tp_size``, ``attention_dp_size``, ``moe_tp_size``,
  ``moe_ep_size``, ``pp_size`` and ``batch_size`` (requests per attention rank); disagg rows the
  ``decode_*`` columns of one decode worker (``decode_batch_size`` per attention rank).
* **Incomplete rows are dropped, not repaired**: disagg rows without ``decode_batch_size`` or
  ``decode_num_workers`` (the 2026-03-25 / 2026-04-06 exports, which also flatten DP attention
  into TP), and rows whose attention width differs from the expert width (``tp_size *
  attention_dp_size != moe_tp_size * moe_ep_size``: total GPUs written as TP), and rows of the
  2026 exports whose id (``..._tp8_ep8_947``: GPUs of the instance, EP) names another GPU count
  than the columns (``tp_size 64`` for an 8-GPU H200 run); the same check covers every repeat
  of that measurement (the id's count is the truth for the group; the first copy whose columns
  agree is kept, none -> the measurement is dropped), and rows with attention TP > 8 (one HGX
  node; the exports write total GPUs as TP, e.g. ``tp 64 / moe_tp 8 / ep 8`` for 8-GPU runs and
  ``tp 12..72`` on GB200 -- this also drops 8 h100 TP16 disagg rows that may be genuine). Rows mixing
  attention TP > 1 with attention DP > 1 (not expressible in :class:`~cosim.models.Parallelism`),
  rows whose split does not divide the model, and rows larger than the biggest topology preset of
  their system are dropped too.
* **TPOT model**: TPOT = the time of one decode step of the row's batch per attention rank at a
  context of ``isl + osl // 2`` cached tokens (the mean over the output), with DeepEP low-latency
  dispatch in fp8 and bf16 combine under DP attention. Agg rows are priced the same way (decode
  only, no prefill chunks in the step).
* **Precision**: the checkpoint's formats (:meth:`Precision.from_checkpoint`): DeepSeek-R1 and
  Qwen3-235B-A22B-FP8 store block-FP8 weights (``fp8_block``, bf16 KV cache); rows labelled
  ``fp4`` run an NVFP4 ModelOpt export (fp8 KV cache): ``nvidia/DeepSeek-V3.1-NVFP4`` rows use its
  bundled quant config (q/kv projections bf16), the DeepSeek-R1 ``fp4`` rows the exclusions of
  ``nvidia/DeepSeek-R1-0528-FP4`` as aiconfigurator-core documents them (the whole ``self_attn``
  block bf16; ``sdk/models/helpers.py``), :data:`R1_NVFP4_QUANT_CONFIG`.
* **Before** (:data:`BEFORE`): the kernel layer without the wide-EP rule, with SGLang's
  ``moe_perf`` rows looked up at the group token count, and one precision label (the row's
  ``gemm_quant_mode`` / ``moe_quant_mode``) for every GEMM. **After** (:data:`AFTER`): wide-EP
  tables preferred, SGLang rows at ``num_tokens / ep``, per-module checkpoint formats.
* **Topology**: the preset of the row's system with the fewest nodes that hold the instance
  (h100/h200 HGX 1-16 nodes, GB200 NVL72 1-4 racks). b200_sxm: the h200 HGX preset of the same
  node count (1-8 nodes) with ``gpu: b200_sxm`` and NVLink5 (900 GB/s per direction), which is the
  fabric of the ``b200-hgx-*`` presets (shipped for 1 and 16 nodes only).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosim.errors import ConfigError, CosimError
from cosim.kernels import KernelTables
from cosim.kernels.system import aiconfigurator_systems_dir
from cosim.models import ModelSpec, Parallelism, Precision, load_model, parse_config
from cosim.models.registry import bundled_configs_dir

SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm", "gb200")
FRAMEWORKS = ("trtllm", "sglang", "vllm")

#: model_path in the CSV -> bundled config cosim loads (same architecture).
MODEL_CONFIGS = {
    "deepseek-ai/DeepSeek-R1": "deepseek-ai/DeepSeek-R1",
    "deepseek-ai/DeepSeek-V3": "deepseek-ai/DeepSeek-R1",
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-ai/DeepSeek-R1",
    "nvidia/DeepSeek-V3.1-NVFP4": "nvidia/DeepSeek-V3.1-NVFP4",
    "Qwen/Qwen3-235B-A22B-FP8": "Qwen/Qwen3-235B-A22B-FP8",
    "Qwen/Qwen3-235B-A22B": "Qwen/Qwen3-235B-A22B-FP8",
}

#: ModelOpt quant config of DeepSeek-R1's NVFP4 export (nvidia/DeepSeek-R1-0528-FP4): the whole
#: attention block and the LM head stay bf16, everything else NVFP4, fp8 KV cache.
R1_NVFP4_QUANT_CONFIG = {"quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16,
                                          "exclude_modules": ["lm_head", "model.layers.*.self_attn*"]}}

#: Topology presets per system, smallest first: (preset, GPUs).
TOPOLOGY_PRESETS = {
    "h100_sxm": (("h100-hgx-node", 8), ("h100-hgx-2node", 16), ("h100-hgx-4node", 32), ("h100-hgx-8node", 64),
                 ("h100-hgx-16node-2to1", 128)),
    "h200_sxm": (("h200-hgx-node", 8), ("h200-hgx-2node", 16), ("h200-hgx-4node", 32), ("h200-hgx-8node", 64)),
    "gb200": (("gb200-nvl72", 72), ("gb200-nvl72-2rack", 144), ("gb200-nvl72-4rack", 288)),
    "b200_sxm": (("h200-hgx-node", 8), ("h200-hgx-2node", 16), ("h200-hgx-4node", 32), ("h200-hgx-8node", 64)),
}
B200_NVLINK_BANDWIDTH = "900GB/s"
#: Largest attention TP taken at face value (one HGX node); larger values are total GPU counts.
MAX_ATTENTION_TP = 8


@dataclass(frozen=True)
class KernelRules:
    """Which kernel-layer rules a run uses (see the module docstring).

    ``checkpoint_formats``: GEMMs in the checkpoint's stored format (``fp8_block`` for DeepSeek's
    block-FP8 weights) instead of the row's labels; ``per_module_dtypes``: also the modules the
    checkpoint keeps unquantized (its exclusion list)."""

    name: str
    prefer_wide_ep: bool
    moe_ep_split: bool
    checkpoint_formats: bool
    per_module_dtypes: bool


BEFORE = KernelRules("before", prefer_wide_ep=False, moe_ep_split=False, checkpoint_formats=False,
                     per_module_dtypes=False)
AFTER = KernelRules("after", prefer_wide_ep=True, moe_ep_split=True, checkpoint_formats=True, per_module_dtypes=True)
#: Cumulative steps from BEFORE to AFTER, one rule at a time (ablation).
ABLATION = (
    KernelRules("+sglang_ep_split", prefer_wide_ep=False, moe_ep_split=True, checkpoint_formats=False,
                per_module_dtypes=False),
    KernelRules("+wide_ep", prefer_wide_ep=True, moe_ep_split=True, checkpoint_formats=False, per_module_dtypes=False),
    KernelRules("+checkpoint_formats", prefer_wide_ep=True, moe_ep_split=True, checkpoint_formats=True,
                per_module_dtypes=False),
)


@dataclass(frozen=True)
class SiliconRow:
    """One measured deployment, reduced to its decode instance.

    ``tp`` is the attention TP degree, ``attention_dp`` the attention DP degree, ``batch_per_rank``
    the requests per attention rank; ``gpus`` the GPUs of one (decode) instance.
    """

    row_id: str
    model_path: str
    system: str
    framework: str
    mode: str
    precision: str
    gemm_quant: str
    moe_quant: str
    isl: int
    osl: int
    tp: int
    attention_dp: int
    moe_tp: int
    moe_ep: int
    pp: int
    batch_per_rank: int
    num_workers: int
    tpot_ms: float
    ttft_ms: float

    @property
    def gpus(self) -> int:
        return self.tp * self.attention_dp * self.pp

    @property
    def concurrency(self) -> int:
        return self.batch_per_rank * self.attention_dp * self.num_workers

    @property
    def context_tokens(self) -> int:
        """Cached tokens per request at the mean decode step: ``isl + osl // 2``."""
        return self.isl + self.osl // 2

    @property
    def parallel(self) -> Parallelism:
        dp = self.attention_dp > 1
        return Parallelism(tp=self.attention_dp if dp else self.tp, ep=self.moe_ep, dp_attention=dp, pp=self.pp)

    @property
    def label(self) -> str:
        attn = f"DP{self.attention_dp}" if self.attention_dp > 1 else f"TP{self.tp}"
        return f"{self.system} {self.framework} {self.mode} {attn}/EP{self.moe_ep} b{self.batch_per_rank} " \
               f"{self.isl}/{self.osl} {self.precision}"


@dataclass(frozen=True)
class Selection:
    """Rows kept, and how many rows each rule removed (``dropped``: reason -> count)."""

    rows: tuple[SiliconRow, ...]
    candidates: int  # rows of the selected models and systems
    duplicates: int
    dropped: dict[str, int] = field(hash=False)


def silicon_csv_path() -> Path:
    """``systems/silicon_sample.csv`` of the installed aiconfigurator-core."""
    path = aiconfigurator_systems_dir() / "silicon_sample.csv"
    if not path.is_file():
        raise ConfigError(str(path), "", "aiconfigurator-core ships no silicon_sample.csv")
    return path


def _num(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(value: object, default: int | None = None) -> int | None:
    v = _num(value)
    return default if v is None else int(round(v))


def select_rows(path: str | Path | None = None, models: Iterable[str] = tuple(MODEL_CONFIGS),
                systems: Iterable[str] = SYSTEMS, frameworks: Iterable[str] = FRAMEWORKS) -> Selection:
    """Apply the selection rules of the module docstring to the CSV at ``path`` (default: the
    installed aiconfigurator-core's)."""
    import pandas as pd

    src = Path(path) if path is not None else silicon_csv_path()
    df = pd.read_csv(src)
    models, systems, frameworks = set(models), set(systems), set(frameworks)
    df = df[df.model_path.isin(models) & df.system.isin(systems) & df.backend.isin(frameworks)]
    candidates = len(df)
    key = ["system", "backend", "mode", "isl", "osl"]
    df = df.assign(_ttft=df.silicon_ttft_ms.round(6), _tpot=df.silicon_tpot_ms.round(6))
    dedupe_key = key + ["_ttft", "_tpot"]
    # The 2026 export ids name the instance's GPU count (``_tpX_epY``). Copies of a measurement whose
    # columns give another GPU count are mis-encoded (total GPUs written as TP) and are not used;
    # the first remaining copy is kept.
    df = df.assign(_id_gpus=[_id_gpus(i) for i in df["id"]], _col_gpus=df.apply(_column_gpus, axis=1))
    true_gpus = df.dropna(subset=["_id_gpus"]).groupby(dedupe_key)["_id_gpus"].agg(lambda v: set(v))
    dropped: Counter[str] = Counter()
    keep = []
    for (k, group) in df.groupby(dedupe_key, sort=False):
        known = true_gpus.get(k)
        valid = group if not known else group[group["_col_gpus"].isin(known) & (len(known) == 1)]
        if len(valid) == 0:
            dropped[_ID_REASON] += 1
            continue
        keep.append(valid.index[0])
    deduped = df.loc[sorted(keep)]
    duplicates = candidates - len(deduped) - dropped[_ID_REASON]
    rows = []
    for rec in deduped.to_dict("records"):
        row, why = _decode_row(rec)
        if row is None:
            dropped[why] += 1
            continue
        why = _cannot_model(row)
        if why:
            dropped[why] += 1
            continue
        rows.append(row)
    return Selection(tuple(rows), candidates, duplicates, dict(dropped))


#: ``..._tp8_ep8_947`` / ``..._tp8_0_ep1_0_1083`` suffix of the 2026-03-25 / 2026-04-06 export ids.
_ID_SPLIT = re.compile(r"_tp(\d+)(?:_0)?_ep(\d+)(?:_0)?_\d+$")


_ID_REASON = "GPU count of the columns differs from the id's tpX_epY (total GPUs written as TP)"


def _id_gpus(row_id: object) -> float | None:
    """GPUs of the instance named by a 2026 export id (``..._tp8_ep8_947`` -> 8), else None."""
    m = _ID_SPLIT.search(str(row_id))
    return float(m[1]) if m else None


def _column_gpus(rec) -> float | None:
    p = "decode_" if rec["mode"] == "disagg" else ""
    tp, dp = _int(rec.get(f"{p}tp_size")), _int(rec.get(f"{p}attention_dp_size"), 1)
    return None if tp is None else float(tp * dp)


def read_parallel(rec: dict, prefix: str = "") -> tuple:
    """``(tp, attention_dp, moe_tp, moe_ep, pp)`` from a row's ``{prefix}*_size`` columns (``None``
    where a required one is missing: tp, moe_ep)."""
    return (_int(rec.get(f"{prefix}tp_size")), _int(rec.get(f"{prefix}attention_dp_size"), 1),
            _int(rec.get(f"{prefix}moe_tp_size"), 1), _int(rec.get(f"{prefix}moe_ep_size")),
            _int(rec.get(f"{prefix}pp_size"), 1))


def parallel_problem(tp: int, dp: int, moe_tp: int, moe_ep: int) -> str | None:
    """Why a recorded parallel layout cannot be modelled (``None`` when it can)."""
    if tp * dp != moe_tp * moe_ep:
        return "attention width != expert width (tp x attention_dp != moe_tp x moe_ep)"
    if tp > MAX_ATTENTION_TP:
        return f"attention TP > {MAX_ATTENTION_TP} (total GPUs written as TP)"
    if tp > 1 and dp > 1:
        return "attention TP and DP both > 1 (not expressible)"
    return None


def _decode_row(rec: dict) -> tuple[SiliconRow | None, str]:
    disagg = rec["mode"] == "disagg"
    p = "decode_" if disagg else ""
    batch = _int(rec.get(f"{p}batch_size"))
    workers = _int(rec.get("decode_num_workers")) if disagg else 1
    if batch is None or workers is None:
        return None, "disagg row without decode batch size / workers" if disagg else "agg row without batch size"
    tp, dp, moe_tp, moe_ep, pp = read_parallel(rec, p)
    tpot = _num(rec.get("silicon_tpot_ms"))
    if tp is None or moe_ep is None or tpot is None or tpot <= 0 or batch < 1:
        return None, "missing parallelism or TPOT"
    why = parallel_problem(tp, dp, moe_tp, moe_ep)
    if why:
        return None, why
    return SiliconRow(
        row_id=str(rec["id"]), model_path=str(rec["model_path"]), system=str(rec["system"]),
        framework=str(rec["backend"]), mode=str(rec["mode"]), precision=str(rec["precision"]),
        gemm_quant=str(rec["gemm_quant_mode"]), moe_quant=str(rec["moe_quant_mode"]),
        isl=int(rec["isl"]), osl=int(rec["osl"]), tp=tp, attention_dp=dp, moe_tp=moe_tp, moe_ep=moe_ep, pp=pp,
        batch_per_rank=batch, num_workers=workers, tpot_ms=tpot, ttft_ms=_num(rec.get("silicon_ttft_ms")) or math.nan,
    ), ""


def _cannot_model(row: SiliconRow) -> str:
    try:
        row.parallel.validate(checkpoint_model(row))
    except CosimError:
        return "split does not divide the model"
    if topology_name(row) is None:
        return "larger than the biggest topology preset"
    return ""


# ---------------------------------------------------------------------- model, precision, topology

_MODELS: dict[tuple[str, bool], ModelSpec] = {}


def checkpoint_model(row: SiliconRow) -> ModelSpec:
    """The model spec of the checkpoint the row ran (see the precision rule)."""
    name = MODEL_CONFIGS[row.model_path]
    fp4 = row.precision == "fp4" and name == "deepseek-ai/DeepSeek-R1"
    key = (name, fp4)
    if key not in _MODELS:
        if fp4:
            import json

            folder = bundled_configs_dir()
            if folder is None:
                raise ConfigError("<api>", "model", "aiconfigurator-core is not installed")
            path = folder / "deepseek-ai--DeepSeek-R1_config.json"
            config = json.loads(path.read_text())
            config.pop("quantization_config", None)
            _MODELS[key] = parse_config(config, source=str(path), name="deepseek-ai/DeepSeek-R1 (NVFP4)",
                                        quant_config=R1_NVFP4_QUANT_CONFIG)
        else:
            _MODELS[key] = load_model(name)
    return _MODELS[key]


_LABELS = {"fp8": "fp8", "fp8_block": "fp8_block", "nvfp4": "nvfp4", "bfloat16": "bfloat16", "fp4": "nvfp4"}


def row_precision(row: SiliconRow, rules: KernelRules) -> Precision:
    """Formats of the row: the checkpoint's per-module formats (after), the checkpoint's main
    formats only (``checkpoint_formats``), or the row's GEMM/MoE labels for every GEMM (before).
    KV cache from the checkpoint in all; fp8 dispatch."""
    ckpt = Precision.from_checkpoint(checkpoint_model(row))
    if rules.per_module_dtypes:
        return ckpt
    if rules.checkpoint_formats:
        return dataclasses.replace(ckpt, modules=())
    return Precision(weights=_LABELS.get(row.gemm_quant, ckpt.weights), moe=_LABELS.get(row.moe_quant, ckpt.moe),
                     kv_cache=ckpt.kv_cache)


def topology_name(row: SiliconRow) -> str | None:
    """Preset holding the row's instance (fewest nodes), ``None`` when none is big enough."""
    for name, gpus in TOPOLOGY_PRESETS.get(row.system, ()):
        if row.gpus <= gpus:
            return name
    return None


_TOPOLOGIES: dict[tuple[str, str], object] = {}


def row_topology(row: SiliconRow):
    """The :class:`~cosim.topology.Topology` of the row (b200_sxm: derived from the h200 preset)."""
    from cosim.topology import load_topology
    from cosim.topology.loader import read_topology_file, topology_from_dict

    name = topology_name(row)
    if name is None:
        raise ConfigError("<api>", "topology", f"no preset for {row.gpus} GPUs of {row.system}")
    key = (row.system, name)
    if key not in _TOPOLOGIES:
        if row.system == "b200_sxm":
            doc = copy.deepcopy(read_topology_file(name))
            doc["name"] = name.replace("h200", "b200")
            doc["gpu"] = "b200_sxm"
            doc["description"] = f"{doc.get('description', '')} (b200_sxm GPUs, NVLink5 {B200_NVLINK_BANDWIDTH})"
            doc["generator"]["nvlink_bandwidth"] = B200_NVLINK_BANDWIDTH
            _TOPOLOGIES[key] = topology_from_dict(doc, source=f"{name} (b200 variant)")
        else:
            _TOPOLOGIES[key] = load_topology(name)
    return _TOPOLOGIES[key]


def step_spec(row: SiliconRow, rules: KernelRules):
    """The decode :class:`~cosim.trace.builder.StepSpec` of the row."""
    from cosim.trace.builder import StepSpec

    return StepSpec(checkpoint_model(row), row.parallel, row_precision(row, rules), "generation",
                    batch_per_rank=row.batch_per_rank, prefix_tokens=row.context_tokens)


# ---------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class RowResult:
    """Predicted TPOT of one row under one set of rules (``None`` when the simulation failed)."""

    row: SiliconRow
    rules: str
    tpot_ms: float | None
    moe_ms: float | None  # routed-expert compute per MoE layer on rank 0
    moe_source: str
    error: str = ""

    @property
    def rel_err(self) -> float | None:
        return None if self.tpot_ms is None else abs(self.tpot_ms / self.row.tpot_ms - 1.0)


def simulate_rows(rows: Iterable[SiliconRow], rules_list: Iterable[KernelRules] = (BEFORE, AFTER),
                  progress: Callable[[int, int, SiliconRow], None] | None = None) -> list[RowResult]:
    """Simulate every row under every rule set (rows grouped by system and framework so that each
    group's tables are read once and freed afterwards)."""
    import gc

    from cosim.engine.step import simulate_step

    rows = list(rows)
    rules_list = list(rules_list)
    groups: dict[tuple[str, str], list[SiliconRow]] = {}
    for r in rows:
        groups.setdefault((r.system, r.framework), []).append(r)
    out: list[RowResult] = []
    done = 0
    for (system, framework), members in sorted(groups.items()):
        base = KernelTables.load(system, framework)
        tables = {rules.name: base.variant(prefer_wide_ep=rules.prefer_wide_ep, moe_ep_split=rules.moe_ep_split)
                  for rules in rules_list}
        for row in members:
            for rules in rules_list:
                out.append(_simulate_one(row, rules, tables[rules.name], simulate_step))
            done += 1
            if progress is not None:
                progress(done, len(rows), row)
        del base, tables
        gc.collect()
    return out


def _simulate_one(row: SiliconRow, rules: KernelRules, kernels: KernelTables, simulate_step) -> RowResult:
    try:
        spec = step_spec(row, rules)
        result = simulate_step(spec, kernels, row_topology(row), "flow")
    except CosimError as exc:
        return RowResult(row, rules.name, None, None, "", f"{type(exc).__name__}: {exc}")
    moe = [n for n in result.trace.ranks[0].nodes if getattr(n, "op_class", "") == "moe_experts"]
    moe_ms = float(np.mean([n.duration_s for n in moe])) * 1e3 if moe else None
    sources = Counter(n.source for n in moe)
    return RowResult(row, rules.name, result.step_time_s * 1e3, moe_ms, sources.most_common(1)[0][0] if moe else "")


# ---------------------------------------------------------------------- aiconfigurator's estimate


def aiconfigurator_handle(handles: dict, row: SiliconRow):
    """aiconfigurator-core's compiled ``EngineHandle`` for the row's deployment (parallelism,
    quant labels, the same KV format as cosim), cached in ``handles`` by deployment; ``None``
    where aiconfigurator cannot compile it (or is not installed)."""
    try:
        from aiconfigurator_core.sdk.engine import EngineHandle
    except ImportError:
        return None
    kv = Precision.from_checkpoint(checkpoint_model(row)).kv_cache
    model = "deepseek-ai/DeepSeek-R1" if row.model_path == "nvidia/DeepSeek-R1-NVFP4" else row.model_path
    key = (model, row.system, row.framework, row.tp, row.attention_dp, row.moe_tp, row.moe_ep, row.pp,
           row.gemm_quant, row.moe_quant, kv)
    if key not in handles:
        try:
            handles[key] = EngineHandle.compile(
                model, row.system, row.framework, tp_size=row.tp, pp_size=row.pp, moe_tp_size=row.moe_tp,
                moe_ep_size=row.moe_ep, attention_dp_size=row.attention_dp, gemm_quant_mode=row.gemm_quant,
                moe_quant_mode=row.moe_quant, kvcache_quant_mode=kv, fmha_quant_mode="bfloat16",
                comm_quant_mode="half")
        except Exception:  # aiconfigurator raises many types for unsupported points
            handles[key] = None
    return handles[key]


def aiconfigurator_per_row(rows: Iterable, estimate: Callable[[object, object], float | None],
                           time_budget_s: float = 240.0, row_of: Callable[[object], SiliconRow] = lambda r: r
                           ) -> dict[str, float | None]:
    """``estimate(handle, row)`` for every row with a compiled handle (:func:`aiconfigurator_handle`
    of ``row_of(row)``), by row id; ``None`` where there is none, where it raises, or past
    ``time_budget_s``."""
    import logging

    logging.disable(logging.WARNING)
    handles: dict[tuple, object] = {}
    out: dict[str, float | None] = {}
    t0 = time.perf_counter()
    try:
        for row in rows:
            if time.perf_counter() - t0 > time_budget_s:
                out[row.row_id] = None
                continue
            h = aiconfigurator_handle(handles, row_of(row))
            try:
                out[row.row_id] = estimate(h, row) if h is not None else None
            except Exception:  # unsupported points raise many types
                out[row.row_id] = None
    finally:
        logging.disable(logging.NOTSET)
    return out


def aiconfigurator_tpot_ms(rows: Iterable[SiliconRow], time_budget_s: float = 240.0) -> dict[str, float | None]:
    """aiconfigurator-core's own decode-step estimate per row id (``EngineHandle.compile(...)
    .decode_step_latency(batch, isl, osl)`` with the row's parallelism and quant labels, the same
    KV format as cosim), ``None`` where it produces none. Handles are compiled once per
    deployment; rows past ``time_budget_s`` are skipped (``None``)."""
    return aiconfigurator_per_row(
        rows, lambda h, row: float(h.decode_step_latency(row.batch_per_rank, row.isl, row.osl)), time_budget_s)


# ---------------------------------------------------------------------- summaries


def error_summary(errors: Iterable[float | None]) -> dict[str, float | int | None]:
    """``{"rows", "median", "p90"}`` of the relative errors that exist."""
    e = np.array([x for x in errors if x is not None and math.isfinite(x)])
    if len(e) == 0:
        return {"rows": 0, "median": None, "p90": None}
    return {"rows": int(len(e)), "median": float(np.median(e)), "p90": float(np.quantile(e, 0.9))}


def subsample(rows: list[SiliconRow], max_rows: int, seed: int = 0) -> list[SiliconRow]:
    """At most ``max_rows`` rows, drawn per (system, framework, mode) stratum in proportion to its
    size (at least one per stratum), with a seeded generator; order kept."""
    if len(rows) <= max_rows:
        return list(rows)
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        strata.setdefault((r.system, r.framework, r.mode), []).append(i)
    keep: list[int] = []
    for key in sorted(strata):
        idx = strata[key]
        n = max(1, int(round(max_rows * len(idx) / len(rows))))
        keep += sorted(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    return [rows[i] for i in sorted(keep)]
