"""Durations of compute ops from measured kernel tables, with a fitted-roofline fallback.

>>> tables = KernelTables.load("h200_sxm")                     # doctest: +SKIP
>>> tables.duration(GemmOp("qkv", m=4096, n=7168, k=2048, dtype="fp8_block"))   # doctest: +SKIP
Duration(seconds=0.000132..., source='measured', detail='h200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf exact')

Lookup order for an op: the user table of its kind (if a user directory was given), then
aiconfigurator's table at the requested version, then older versions (backward fill). The first
layer that has the op's exact slice key and brackets its axes answers: an exact grid point is
``measured``, a point between grid points is ``interpolated``. Otherwise the op falls back to the
fitted roofline (:mod:`cosim.kernels.roofline`), source ``roofline``: anchored on the nearest
measured point of the op's slice when the slice exists (``T_anchor * R(op) / R(anchor)``), plain
otherwise. On a what-if system a table duration is rescaled by the roofline and carries the source
``roofline-scaled``.

Mapping of ops to tables (see also :mod:`cosim.kernels.mapping`):

* ``GemmOp`` -> ``gemm_perf`` keyed by ``gemm_dtype``; axes ``n, k, m`` (linear).
* ``AttentionOp`` ``gqa`` -> ``context_attention`` / ``generation_attention`` (FMHA in BF16, no
  sliding window); ``mla`` -> ``context_mla`` / ``generation_mla`` (FMHA only); axes batch and
  isl/step (log-log).
* ``AttentionOp`` ``dsa`` -> the attention *core* derived from module tables, which include the
  q/kv/o projections: ``core = mla_fmha + dsa_module - mla_module`` at the same shape, i.e. the DSA
  module minus the projection cost measured as ``mla_module - mla_fmha`` (DeepSeek-V3 and V3.2
  share their projection shapes). The projections are thus not counted twice when the model also
  emits them as ``GemmOp``. The core keeps the lightning indexer and top-k selection.
* Context attention with a cached prefix ``p`` (tables are measured without one):
  ``T(p, n) = max(T(isl=p+n) - T(isl=p), T(isl=n))`` at the same batch: causal attention work
  over ``n`` new tokens after ``p`` cached ones is the work of a ``p+n`` prefill minus that of a
  ``p`` prefill. Source ``interpolated``.
* ``MoeOp`` -> ``moe_perf``; keys dtype, hidden, inter, top-k, experts, TP, EP, distribution and
  gated; axis ``num_tokens`` (linear). ``MoeOp.num_tokens`` are the tokens entering the EP group
  (TensorRT-LLM's convention). SGLang's ``moe_perf`` rows key ``num_tokens`` per EP rank (each
  rank computes ``num_tokens * topk`` selections), so for frameworks in
  :data:`~cosim.kernels.specs.MOE_TOKENS_PER_RANK_FRAMEWORKS` the row looked up is
  ``num_tokens / ep`` (``moe_ep_split=False`` restores the old direct lookup, which prices an
  EP128 decode MoE about 15x above TensorRT-LLM's rows on h100_sxm).
* **Wide-EP rule**: an ``MoeOp`` with ``ep_size >= WIDE_EP_MIN_EP`` (16) and ``tp_size == 1`` is
  looked up first in the framework's wide-EP table (SGLang: ``wideep_generation_moe_perf``, the
  DeepEP masked grouped GEMM, 1..128 tokens per rank), then in ``moe_perf``. When the wide-EP
  table has the op's slice but not its token count, the roofline is anchored on the wide-EP rows
  (source ``roofline``), so every rank of a layer is priced with one kernel. The duration's
  ``detail`` names the table that answered. ``prefer_wide_ep=False`` switches the rule off.
* ``MemoryOp`` -> aiconfigurator's empirical memory roofline (always ``roofline``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cosim.errors import ConfigError
from cosim.kernels.aic_tables import read_aic_table
from cosim.kernels.interpolate import GridTable
from cosim.kernels.mapping import (
    Query,
    attention_slice,
    attention_table,
    gemm_query,
    gqa_table_mismatch,
    mla_table_mismatch,
    moe_query,
    op_from_row,
)
from cosim.kernels.roofline import (
    EfficiencyFit,
    default_fit,
    fit_efficiency,
    memory_op_s,
    roofline_parts_s,
    what_if_factor,
)
from cosim.kernels.specs import MOE_TOKENS_PER_RANK_FRAMEWORKS, TABLES, WIDE_EP_MIN_EP, WIDE_EP_TABLES
from cosim.kernels.system import SystemSpec, aiconfigurator_systems_dir, load_system
from cosim.kernels.user_tables import load_user_tables
from cosim.kernels.versions import TableSource, resolve_version, table_sources
from cosim.ops import DTYPE_BYTES, AttentionOp, GemmOp, MemoryOp, MoeOp

Source = Literal["measured", "interpolated", "roofline", "roofline-scaled"]

#: Minimum number of rows of one numeric format for a per-format efficiency fit.
MIN_FIT_ROWS = 40
#: At most this many rows (seeded subsample) enter one efficiency fit.
MAX_FIT_ROWS = 20000
#: Module gemm types tried, in order, for the DSA core (projection cost cancels either way).
_MODULE_GEMM_TYPES = ("fp8_block", "bfloat16", "nvfp4")


@dataclass(frozen=True)
class Duration:
    """Time of one op on one GPU, with where the number comes from.

    ``source``: ``measured`` (a table row), ``interpolated`` (between rows, or derived from rows),
    ``roofline`` (fitted roofline, outside every table) or ``roofline-scaled`` (a table value
    rescaled to a what-if system). ``detail`` names the table/version or the fit used.
    """

    seconds: float
    source: Source
    detail: str


@dataclass(frozen=True)
class _Hit:
    seconds: float
    exact: bool
    detail: str


class KernelTables:
    """Measured kernel tables of one system, framework and version, plus the roofline fallback.

    Create with :meth:`load`. Parquet files are read lazily, per table, on first use.
    """

    def __init__(self, system: SystemSpec, data_system: SystemSpec, framework: str, version: str,
                 systems_dir: Path, user_tables: dict[str, GridTable] | None = None, user_dir: Path | None = None,
                 prefer_wide_ep: bool = True, moe_ep_split: bool = True):
        self.system = system
        self.prefer_wide_ep = bool(prefer_wide_ep)
        self.moe_ep_split = bool(moe_ep_split)
        self.data_system = data_system
        self.framework = framework
        self.version = version
        self.systems_dir = systems_dir
        self.user_dir = user_dir
        self._user = dict(user_tables or {})
        self._data_dir = systems_dir / "data" / data_system.name
        self._sources: dict[str, list[TableSource]] = {}
        self._loaded: dict[tuple[str, int], GridTable] = {}
        self._fits: dict[tuple[str, str | None, bool, bool], EfficiencyFit] = {}
        self._cache: dict[object, Duration] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, system: str | SystemSpec, framework: str = "trtllm", version: str | None = None,
             user_dir: str | Path | None = None, systems_dir: str | Path | None = None, *,
             prefer_wide_ep: bool = True, moe_ep_split: bool = True) -> KernelTables:
        """Tables of ``system`` (a name such as ``"h200_sxm"`` or a :class:`SystemSpec`, possibly a
        what-if one) for ``framework`` at ``version``.

        ``version``: ``None``/``"current"`` (aiconfigurator's current slot), ``"previous"``,
        ``"next"`` or an explicit version folder such as ``"1.3.0rc23"``. ``user_dir``: a directory
        of user tables (validated now; they take precedence). Nothing else is read until used.

        ``prefer_wide_ep``: apply the wide-EP rule (module docstring). ``moe_ep_split``: look up
        SGLang's per-rank ``moe_perf`` rows at ``num_tokens / ep``. Both default to on; turning
        them off reproduces the kernel layer before these rules (for before/after comparisons).
        """
        root = Path(systems_dir) if systems_dir is not None else aiconfigurator_systems_dir()
        if isinstance(system, SystemSpec):
            spec = system
            data_spec = system.base if system.base is not None else load_system(system.data_system, root)
        elif isinstance(system, str):
            spec = data_spec = load_system(system, root)
        else:
            raise ConfigError("<api>", "system", f"expected a system name or SystemSpec, got {type(system).__name__}")
        resolved = resolve_version(root, data_spec.name, framework, version)
        user = load_user_tables(user_dir) if user_dir is not None else {}
        return cls(spec, data_spec, framework, resolved, root, user, Path(user_dir) if user_dir is not None else None,
                   prefer_wide_ep=prefer_wide_ep, moe_ep_split=moe_ep_split)

    def variant(self, *, prefer_wide_ep: bool | None = None, moe_ep_split: bool | None = None) -> KernelTables:
        """The same tables with other lookup rules; parquet files already read are shared (the
        duration cache and the efficiency fits are not, as they depend on the rules)."""
        other = KernelTables(self.system, self.data_system, self.framework, self.version, self.systems_dir,
                             self._user, self.user_dir,
                             prefer_wide_ep=self.prefer_wide_ep if prefer_wide_ep is None else prefer_wide_ep,
                             moe_ep_split=self.moe_ep_split if moe_ep_split is None else moe_ep_split)
        other._sources = self._sources
        other._loaded = self._loaded
        return other

    # ------------------------------------------------------------------ table access

    def sources(self, table: str) -> list[TableSource]:
        """aiconfigurator files serving ``table``, in precedence order (requested version first)."""
        if table not in self._sources:
            spec = TABLES[table]
            self._sources[table] = (table_sources(self._data_dir, spec.family, self.framework, spec.file, self.version)
                                    if spec.family else [])
        return self._sources[table]

    def layers(self, table: str) -> Iterator[GridTable]:
        """User table (if any), then aiconfigurator tables in precedence order, read on demand."""
        if table in self._user:
            yield self._user[table]
        for i in range(len(self.sources(table))):
            yield self._layer(table, i)

    def _layer(self, table: str, i: int) -> GridTable:
        key = (table, i)
        if key not in self._loaded:
            self._loaded[key] = read_aic_table(TABLES[table], self.sources(table)[i])
        return self._loaded[key]

    def grid(self, table: str, index: int = 0) -> GridTable | None:
        """The ``index``-th aiconfigurator table serving ``table`` (``None`` when there is none)."""
        return self._layer(table, index) if index < len(self.sources(table)) else None

    def warm(self) -> int:
        """Read every aiconfigurator table this framework/version has; returns the rows held."""
        total = 0
        for name, spec in TABLES.items():
            if spec.family:
                for i in range(len(self.sources(name))):
                    total += self._layer(name, i).num_rows
        return total

    def provenance(self) -> dict[str, list[str]]:
        """``{table: [file labels in precedence order]}`` including user files."""
        out = {}
        for name, spec in TABLES.items():
            labels = [self._user[name].label] if name in self._user else []
            labels += [s.label for s in self.sources(name)] if spec.family else []
            if labels:
                out[name] = labels
        return out

    def _lookup(self, q: Query, layers: Iterator[GridTable] | None = None) -> _Hit | None:
        for layer in self.layers(q.table) if layers is None else layers:
            axes, note = self._row_axes(q.table, layer, q.slice_key, q.axes)
            hit = layer.lookup(q.slice_key, axes)
            if hit is not None:
                how = "exact" if hit.exact else f"interpolated over {','.join(hit.interpolated_axes)}"
                return _Hit(hit.seconds, hit.exact, f"{layer.label} {how}{note}")
        return None

    def _per_rank_tokens(self, table: str, layer: GridTable) -> bool:
        """True when ``layer`` (an aiconfigurator ``moe_perf`` of a per-rank framework) keys
        ``num_tokens`` per EP rank."""
        return (table == "moe" and self.moe_ep_split and self.framework in MOE_TOKENS_PER_RANK_FRAMEWORKS
                and layer is not self._user.get(table))

    def _row_axes(self, table: str, layer: GridTable, slice_key: tuple, axes: tuple) -> tuple[tuple, str]:
        """Axes of ``layer``'s rows for an op at ``axes`` (cosim convention), and a note for the detail."""
        if not self._per_rank_tokens(table, layer):
            return axes, ""
        ep = slice_key[TABLES["moe"].slice_cols.index("moe_ep_size")]
        if ep == 1:
            return axes, ""
        per_rank = axes[0] / ep
        per_rank = int(per_rank) if float(per_rank).is_integer() else per_rank
        return (per_rank,), f" (row num_tokens = {axes[0]:g}/ep{ep}: per-rank tokens)"

    def _op_axes(self, table: str, layer: GridTable, slice_key: tuple, axes: tuple) -> tuple:
        """Inverse of :meth:`_row_axes`: the op axes (cosim convention) a row of ``layer`` describes."""
        if not self._per_rank_tokens(table, layer):
            return axes
        ep = slice_key[TABLES["moe"].slice_cols.index("moe_ep_size")]
        return (axes[0] * ep,)

    def _moe_hit(self, op: MoeOp) -> tuple[_Hit | None, Query]:
        """User ``moe`` table, then the framework's wide-EP table (wide-EP rule), then ``moe_perf``.

        Returns the hit (or None) and the query to anchor the roofline on: the wide-EP table's when
        it has the op's slice (a token count outside its grid is extrapolated from its own rows, so
        the ranks of one layer are priced with one kernel), else the generic table's."""
        q = moe_query(op)
        user = self._user.get("moe")
        hit = self._lookup(q, iter([user])) if user is not None else None
        if hit is not None:
            return hit, q
        wide_table = WIDE_EP_TABLES.get(self.framework)
        if (self.prefer_wide_ep and wide_table and op.ep_size >= WIDE_EP_MIN_EP and op.tp_size == 1
                and self.sources(wide_table)):
            wq = Query(wide_table, q.slice_key, q.axes)
            wide = self._lookup(wq)
            if wide is not None:
                return _Hit(wide.seconds, wide.exact,
                            f"wide-EP rule (ep {op.ep_size} >= {WIDE_EP_MIN_EP}): {wide.detail}"), wq
            if any(layer.has_slice(q.slice_key) for layer in self.layers(wide_table)):
                return None, wq
        return self._lookup(q, (self._layer("moe", i) for i in range(len(self.sources("moe"))))), q

    # ------------------------------------------------------------------ durations

    def duration(self, op: object) -> Duration:
        """Duration of ``op`` (``GemmOp``, ``AttentionOp``, ``MoeOp`` or ``MemoryOp``) on this system.

        Results are cached per op shape (the op's ``name`` is not part of the key)."""
        names = _SHAPE_FIELDS.get(type(op))
        if names is None:
            return self._duration(op)
        key = (type(op), *(getattr(op, f) for f in names))
        try:
            return self._cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable field value
            return self._duration(op)
        d = self._duration(op)
        self._cache[key] = d
        return d

    def _duration(self, op: object) -> Duration:
        if isinstance(op, MemoryOp):
            if op.bytes_moved() < 0 or op.flops() < 0:
                raise ConfigError("<api>", "MemoryOp", "bytes and flop_count must be >= 0")
            return Duration(memory_op_s(op, self.system), "roofline",
                            f"memory op: bytes/(mem_bw*{self.system.mem_bw_empirical_scaling:g})"
                            f" + {self.system.mem_constant_latency_s * 1e6:g}us on {self.system.name}")
        if not isinstance(op, (GemmOp, AttentionOp, MoeOp)):
            raise ConfigError("<api>", "op", f"expected GemmOp, AttentionOp, MoeOp or MemoryOp, got {type(op).__name__}")
        _validate(op)
        if _is_empty(op):
            return Duration(0.0, "roofline", "empty op (no tokens)")
        hit, fit_table, reason, anchor = self._table_hit(op)
        if hit is None:
            return self._roofline(op, fit_table, reason, anchor)
        source: Source = "measured" if hit.exact else "interpolated"
        if not self.system.is_what_if:
            return Duration(hit.seconds, source, hit.detail)
        factor = what_if_factor(op, self.data_system, self.system.flops_scale, self.system.mem_bw_scale)
        return Duration(hit.seconds * factor, "roofline-scaled",
                        f"{source} on {self.data_system.name} ({hit.detail}) x {factor:.4g} "
                        f"(flops x{self.system.flops_scale:g}, mem_bw x{self.system.mem_bw_scale:g})")

    def _table_hit(self, op: GemmOp | AttentionOp | MoeOp) -> tuple[_Hit | None, str, str, Query | None]:
        """(table hit or None, table whose efficiency fit backs the roofline, why no table,
        query to anchor the roofline on when the op's slice is measured)."""
        if isinstance(op, GemmOp):
            q = gemm_query(op)
            hit = self._lookup(q)
            return hit, "gemm", "" if hit else f"gemm {op.dtype} m={op.m} n={op.n} k={op.k} outside the tables", q
        if isinstance(op, MoeOp):
            hit, anchor = self._moe_hit(op)
            why = "" if hit else (f"wide-EP rule (ep {op.ep_size}): token count outside {anchor.table}'s grid"
                                  if anchor.table != "moe" else
                                  "MoE shape/parallelism/distribution or token count outside the tables")
            return hit, "moe", why, anchor
        return self._attention_hit(op)

    def _attention_hit(self, op: AttentionOp) -> tuple[_Hit | None, str, str, Query | None]:
        fit_table = f"{op.phase}_{'attention' if op.kind == 'gqa' else 'mla'}"
        mismatch = gqa_table_mismatch(op) if op.kind == "gqa" else mla_table_mismatch(op)
        if mismatch:
            return None, fit_table, mismatch, None
        if op.phase == "generation" and op.new_tokens > 1:
            return None, fit_table, f"{op.new_tokens} query tokens per request in decode (tables measure 1)", None
        point = self._attention_point_fn(op)
        x = op.prefix_tokens if op.phase == "generation" else op.prefix_tokens + op.new_tokens
        if op.phase == "generation" or op.prefix_tokens == 0:
            hit = point(op.batch, x)
        else:
            hit = _with_prefix(point, op.batch, op.prefix_tokens, op.new_tokens)
        anchor = None if op.kind == "dsa" else Query(attention_table(op), attention_slice(op), (op.batch, x))
        if hit is None:
            why = (f"{op.kind} {op.phase} batch={op.batch} len={x} heads={op.num_heads} kv={op.kv_dtype} "
                   "outside the tables")
            return None, fit_table, why, anchor
        return hit, fit_table, "", anchor

    def _attention_point_fn(self, op: AttentionOp) -> Callable[[int, int], _Hit | None]:
        """``f(batch, isl_or_step) -> _Hit`` for this op's slice (no prefix handling)."""
        key = attention_slice(op)
        table = attention_table(op)
        if op.kind != "dsa":
            return lambda b, x: self._lookup(Query(table, key, (b, x)))

        def dsa_point(b: int, x: int) -> _Hit | None:
            hit = self._lookup(Query(table, key, (b, x)))  # a user-measured DSA core wins
            return hit if hit is not None else self._dsa_core(op, b, x)

        return dsa_point

    def _dsa_core(self, op: AttentionOp, b: int, x: int) -> _Hit | None:
        """DSA attention core = MLA FMHA + (DSA module - MLA module) at the same shape."""
        ctx = op.phase == "context"
        fmha_table = "context_mla" if ctx else "generation_mla"
        dsa_table = "dsa_context_module" if ctx else "dsa_generation_module"
        mla_table = "mla_context_module" if ctx else "mla_generation_module"
        module_x = x if ctx else x + 1  # module decode rows are keyed by total KV length
        fmha = self._lookup(Query(fmha_table, (op.kv_dtype, op.num_heads), (b, x)))
        if fmha is None:
            return None
        for gemm_type in _MODULE_GEMM_TYPES:
            key = (op.kv_dtype, gemm_type, op.num_heads)
            dsa = self._lookup(Query(dsa_table, key, (b, module_x)))
            if dsa is None:
                continue
            mla = self._lookup(Query(mla_table, key, (b, module_x)))
            if mla is None:
                continue
            core = fmha.seconds + dsa.seconds - mla.seconds
            if core <= 0:
                return None
            return _Hit(core, False, f"dsa core = {fmha.detail} + [{dsa.detail}] - [{mla.detail}] (gemm {gemm_type})")
        return None

    # ------------------------------------------------------------------ roofline

    def roofline(self, op: GemmOp | AttentionOp | MoeOp, reason: str = "") -> Duration:
        """The fitted-roofline duration of ``op`` on this system, ignoring the tables."""
        if isinstance(op, MemoryOp):
            return self._duration(op)
        _validate(op)
        table = {GemmOp: "gemm", MoeOp: "moe"}.get(type(op))
        if table is None:
            table = f"{op.phase}_{'attention' if op.kind == 'gqa' else 'mla'}"
        return self._roofline(op, table, reason)

    def _roofline(self, op: GemmOp | AttentionOp | MoeOp, fit_table: str, reason: str,
                  anchor: Query | None = None) -> Duration:
        """Fitted roofline; anchored on the nearest measured point of the op's slice when there is one:
        ``T = T_anchor * R(op) / R(anchor op)`` with ``R`` the fitted roofline on the data system
        (then the what-if factor), else ``R(op)`` on this system."""
        fit = self.efficiency(fit_table, _fit_dtype(op))
        why = f"; {reason}" if reason else ""
        if anchor is not None:
            for layer in self.layers(anchor.table):
                row_axes, _ = self._row_axes(anchor.table, layer, anchor.slice_key, anchor.axes)
                found = layer.anchor(anchor.slice_key, row_axes)
                if found is None:
                    continue
                axes, t_anchor = found
                axes = self._op_axes(anchor.table, layer, anchor.slice_key, axes)
                ref = fit.predict_s(*roofline_parts_s(op_from_row(anchor.table, anchor.slice_key, axes), self.data_system))
                own = fit.predict_s(*roofline_parts_s(op, self.data_system))
                seconds = t_anchor * own / ref
                if self.system.is_what_if:
                    seconds *= what_if_factor(op, self.data_system, self.system.flops_scale, self.system.mem_bw_scale)
                names = ",".join(f"{c}={v:g}" for c, v in zip(layer.axis_cols, axes))
                return Duration(seconds, "roofline",
                                f"roofline anchored at {layer.label} ({names}): x{own / ref:.4g}, {fit.describe()}{why}")
        t_c, t_m = roofline_parts_s(op, self.system)
        return Duration(fit.predict_s(t_c, t_m), "roofline",
                        f"roofline on {self.system.name}: compute {t_c * 1e6:.4g}us, memory {t_m * 1e6:.4g}us ideal, "
                        f"{fit.describe()}{why}")

    def efficiency(self, table: str, dtype: str | None = None, fixed_latency: bool = True,
                   separate: bool = True) -> EfficiencyFit:
        """Efficiency fit for ``table`` rows of numeric format ``dtype`` (all formats when ``None``
        or when that format has fewer than :data:`MIN_FIT_ROWS` rows). Fitted on the primary
        aiconfigurator table (the requested version) on the data system; cached. ``separate``:
        distinct compute and memory efficiencies (the default) or one efficiency;
        ``fixed_latency``: fit ``t_fixed`` or force it to 0."""
        key = (table, dtype, fixed_latency, separate)
        if key in self._fits:
            return self._fits[key]
        grid = self.grid(table, 0) if TABLES[table].family else None
        if grid is None:
            fit = default_fit(table, self.data_system)
        else:
            fit = self._fit(table, grid, dtype, fixed_latency, separate)
            if fit is None and dtype is not None:
                fit = self.efficiency(table, None, fixed_latency, separate)
            elif fit is None:
                fit = default_fit(table, self.data_system)
        self._fits[key] = fit
        return fit

    def _fit(self, table: str, grid: GridTable, dtype: str | None, fixed_latency: bool,
             separate: bool) -> EfficiencyFit | None:
        spec = TABLES[table]
        dcol = spec.slice_cols.index(spec.dtype_col) if spec.dtype_col else None
        rows = [r for r in grid.rows() if (dtype is None or r[0][dcol] == dtype)
                and (dcol is None or r[0][dcol] in DTYPE_BYTES)]
        if len(rows) < MIN_FIT_ROWS:
            return None
        if len(rows) > MAX_FIT_ROWS:
            pick = np.random.default_rng(1).choice(len(rows), MAX_FIT_ROWS, replace=False)
            rows = [rows[i] for i in sorted(pick)]
        parts = np.array([roofline_parts_s(op_from_row(table, sk, self._op_axes(table, grid, sk, ax)), self.data_system)
                          for sk, ax, _ in rows])
        measured = np.array([v for _, _, v in rows])
        return fit_efficiency(parts[:, 0], parts[:, 1], measured, table=table, dtype=dtype,
                              fixed_latency=fixed_latency, separate=separate)


# ---------------------------------------------------------------------- helpers


def _with_prefix(point: Callable[[int, int], _Hit | None], batch: int, prefix: int, new: int) -> _Hit | None:
    full = point(batch, prefix + new)
    if full is None:
        return None
    before = point(batch, prefix)
    plain = point(batch, new)
    if before is None or plain is None:
        return None
    seconds = max(full.seconds - before.seconds, plain.seconds)
    return _Hit(seconds, False, f"prefix {prefix} via T(isl={prefix + new}) - T(isl={prefix}) "
                                f"[{full.detail}; {before.detail}], floor T(isl={new})")


def _fit_dtype(op: object) -> str | None:
    if isinstance(op, (GemmOp, MoeOp)):
        return op.dtype
    return op.kv_dtype


_SHAPE_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls) if f.name != "name")
                 for cls in (GemmOp, AttentionOp, MoeOp, MemoryOp)}

_INT_FIELDS = {
    GemmOp: ("m", "n", "k"),
    MoeOp: ("num_tokens", "hidden_size", "inter_size", "num_experts", "top_k", "ep_size", "tp_size"),
    AttentionOp: ("batch", "new_tokens", "prefix_tokens", "num_heads", "num_kv_heads", "head_dim", "v_head_dim",
                  "kv_lora_rank", "rope_dim", "sparse_topk"),
}
_POSITIVE_FIELDS = {"ep_size", "tp_size", "top_k", "num_experts", "hidden_size", "inter_size", "num_heads",
                    "num_kv_heads", "head_dim", "v_head_dim", "n", "k"}


def _validate(op: GemmOp | AttentionOp | MoeOp) -> None:
    cls = type(op).__name__
    for name in _INT_FIELDS[type(op)]:
        v = getattr(op, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            if isinstance(v, float) and math.isfinite(v) and v == int(v):
                continue
            raise ConfigError("<api>", f"{cls}.{name}", f"expected an integer, got {v!r}")
        low = 1 if name in _POSITIVE_FIELDS else 0
        if v < low:
            raise ConfigError("<api>", f"{cls}.{name}", f"expected an integer >= {low}, got {v!r}")
    if isinstance(op, AttentionOp):
        if op.phase not in ("context", "generation"):
            raise ConfigError("<api>", f"{cls}.phase", f"expected 'context' or 'generation', got {op.phase!r}")
        if op.kind not in ("gqa", "mla", "dsa"):
            raise ConfigError("<api>", f"{cls}.kind", f"expected 'gqa', 'mla' or 'dsa', got {op.kind!r}")
    if isinstance(op, MoeOp) and op.top_k > op.num_experts:
        raise ConfigError("<api>", f"{cls}.top_k", f"top_k {op.top_k} exceeds num_experts {op.num_experts}")


def _is_empty(op: GemmOp | AttentionOp | MoeOp) -> bool:
    if isinstance(op, GemmOp):
        return op.m == 0
    if isinstance(op, MoeOp):
        return op.num_tokens == 0
    return op.batch == 0 or (op.phase == "context" and op.new_tokens == 0)
