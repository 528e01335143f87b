"""Lookup and interpolation in a table of measured latencies.

A :class:`GridTable` holds rows ``(slice key, axis values) -> latency``. The *slice* columns must
match exactly (numeric format, head counts, hidden size ...); the *axis* columns are interpolated
(GEMM ``n, k, m``; attention ``batch, isl``; MoE ``num_tokens``). Interpolation is done one axis at a
time, outermost first: for each of the two measured values that bracket the query on an axis, the
remaining axes are interpolated recursively among the rows measured under that value, and the two
results are blended. This copes with grids that are not full rectangles (large ``batch x isl``
points missing because they ran out of memory). Along each axis the blend is either linear
(latency affine in the axis: GEMM ``m``, batch size, decode KV length, MoE tokens) or log-log
(latency a power of the axis: prefill ``isl``, where attention work grows as ``isl^2``); log-log
is exact on power laws, linear is exact on affine laws.

A lookup returns ``None`` when the query lies outside the measured range on any axis: tables do not
extrapolate; the caller falls back to the roofline.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Key = tuple
#: A measured latency above this multiple of both its neighbours along the innermost axis is dropped.
SPIKE_RATIO = 5.0
# Inner node: (sorted keys, {key: child node}); leaf (innermost axis): (sorted keys, values in the
# same order) with both stored as compact arrays (~16 bytes per row instead of a dict entry).
_Node = tuple


@dataclass(frozen=True)
class GridHit:
    """Result of a :meth:`GridTable.lookup` that stayed inside the measured grid."""

    seconds: float
    exact: bool  # every axis value was measured: the row itself
    interpolated_axes: tuple[str, ...]  # axes along which the value was blended


class GridTable:
    """Measured latencies in seconds, keyed by exact slice columns and interpolated axes.

    Duplicate keys keep the smallest latency (the fastest kernel measured for that shape; e.g. the
    GB200 MoE table holds both ``cutlass`` and ``min_latency`` rows for nvfp4) and are counted in
    :attr:`duplicates`. A measured row more than :data:`SPIKE_RATIO` times **both** its neighbours
    along the innermost axis is a measurement glitch (e.g. h200_sxm's TensorRT-LLM MLA decode table
    holds 0.742 ms at batch 2, KV length 31, bf16, between 0.014 and 0.013 ms): it is dropped, and
    listed in :attr:`spikes` as ``(slice key, axes, seconds)``.
    """

    def __init__(
        self,
        slice_cols: Sequence[str],
        axis_cols: Sequence[str],
        axis_log: Sequence[bool],
        label: str = "",
    ):
        if len(axis_cols) != len(axis_log) or not axis_cols:
            raise ValueError("need one or more axes, each with a log-log flag")
        self.slice_cols = tuple(slice_cols)
        self.axis_cols = tuple(axis_cols)
        self.axis_log = tuple(bool(x) for x in axis_log)  # True: log-log blend along this axis
        self.label = label
        self.duplicates = 0
        self.spikes: list[tuple[Key, tuple, float]] = []
        self.num_rows = 0
        self._slices: dict[Key, _Node] = {}

    # ---------------------------------------------------------------- building

    @classmethod
    def from_rows(
        cls,
        slice_keys: Iterable[Key],
        axis_values: Iterable[Sequence[float]],
        seconds: Iterable[float],
        *,
        slice_cols: Sequence[str],
        axis_cols: Sequence[str],
        axis_log: Sequence[bool],
        label: str = "",
    ) -> GridTable:
        """Build a table from parallel iterables of slice keys, axis tuples and latencies (s)."""
        slice_keys, axis_values, seconds = list(slice_keys), list(axis_values), list(seconds)
        ns, na = len(slice_cols), len(axis_cols)
        s_cols = [[k[i] for k in slice_keys] for i in range(ns)]
        a_cols = [[a[i] for a in axis_values] for i in range(na)]
        return cls.from_columns(s_cols, a_cols, seconds, slice_cols=slice_cols, axis_cols=axis_cols,
                                axis_log=axis_log, label=label)

    @classmethod
    def from_columns(
        cls,
        slice_columns: Sequence[Any],
        axis_columns: Sequence[Any],
        seconds: Any,
        *,
        slice_cols: Sequence[str],
        axis_cols: Sequence[str],
        axis_log: Sequence[bool],
        label: str = "",
    ) -> GridTable:
        """Build a table from columns (lists, numpy or pyarrow arrays), one per slice and axis column.

        Vectorised (sort + group) so that large tables create few temporary Python objects.
        """
        table = cls(slice_cols, axis_cols, axis_log, label)
        values = np.asarray(seconds, dtype=float)
        n = len(values)
        if n == 0:
            return table
        codes, uniques = zip(*(_encode(c) for c in slice_columns)) if slice_columns else ((), ())
        if codes:
            slice_id = np.ravel_multi_index(tuple(codes), tuple(max(len(u), 1) for u in uniques))
        else:
            slice_id = np.zeros(n, dtype=np.int64)
        axes = [_numeric(c) for c in axis_columns]
        order = np.lexsort(tuple(reversed([slice_id, *axes])))
        slice_id = slice_id[order]
        axes = [a[order] for a in axes]
        values = values[order]
        # duplicates: identical slice and axes -> keep the fastest measurement
        same = np.ones(n - 1, dtype=bool)
        for col in (slice_id, *axes):
            same &= col[1:] == col[:-1]
        if same.any():
            starts = np.flatnonzero(np.concatenate([[True], ~same]))
            values = np.minimum.reduceat(values, starts)
            slice_id = slice_id[starts]
            axes = [a[starts] for a in axes]
            table.duplicates = int(same.sum())
        if len(values) >= 3:  # isolated spikes along the innermost axis
            group = np.ones(len(values) - 1, dtype=bool)
            for col in (slice_id, *axes[:-1]):
                group &= col[1:] == col[:-1]
            inner = np.flatnonzero(group[:-1] & group[1:]) + 1
            spike = inner[values[inner] > SPIKE_RATIO * np.maximum(values[inner - 1], values[inner + 1])]
            if len(spike):
                for i in spike.tolist():
                    idx = np.unravel_index(int(slice_id[i]), tuple(max(len(u), 1) for u in uniques)) if codes else ()
                    table.spikes.append((tuple(u[int(j)] for u, j in zip(uniques, idx)),
                                         tuple(a[i].item() for a in axes), float(values[i])))
                keep = np.ones(len(values), dtype=bool)
                keep[spike] = False
                values, slice_id, axes = values[keep], slice_id[keep], [a[keep] for a in axes]
        table.num_rows = len(values)
        bounds = np.flatnonzero(np.diff(slice_id)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(values)]])
        for a, b in zip(starts.tolist(), ends.tolist()):
            idx = np.unravel_index(int(slice_id[a]), tuple(max(len(u), 1) for u in uniques)) if codes else ()
            key = tuple(u[int(i)] for u, i in zip(uniques, idx))
            table._slices[key] = _build(axes, values, a, b, 0)
        return table

    # ---------------------------------------------------------------- queries

    def has_slice(self, slice_key: Key) -> bool:
        """True when at least one row was measured with this exact slice key."""
        return slice_key in self._slices

    def slice_keys(self) -> list[Key]:
        """All slice keys present."""
        return list(self._slices)

    def axis_values(self, slice_key: Key) -> list[tuple]:
        """Sorted measured axis tuples of one slice."""
        node = self._slices.get(slice_key)
        return [axes for axes, _ in _walk(node, ())] if node is not None else []

    def rows(self) -> Iterator[tuple[Key, tuple, float]]:
        """Every stored row as ``(slice_key, axis_tuple, seconds)``."""
        for sk, node in self._slices.items():
            for axes, value in _walk(node, ()):
                yield sk, axes, value

    def lookup(self, slice_key: Key, axes: Sequence[float]) -> GridHit | None:
        """Latency at ``axes`` within slice ``slice_key``; ``None`` if the slice is absent or the
        point is outside the measured range of any axis."""
        node = self._slices.get(slice_key)
        if node is None:
            return None
        blended: set[int] = set()
        value = self._interp(node, tuple(axes), 0, blended)
        if value is None:
            return None
        names = tuple(self.axis_cols[i] for i in sorted(blended))
        return GridHit(seconds=value, exact=not blended, interpolated_axes=names)

    def anchor(self, slice_key: Key, axes: Sequence[float]) -> tuple[tuple, float] | None:
        """A point of the slice close to ``axes`` and its latency, to extrapolate from.

        Like :meth:`lookup`, but an axis value outside the values measured under the current
        branch is clamped to the nearest measured one, so a value is always found. Where two
        branches are blended, the anchor's axis values are blended with the same weights. Returns
        ``(anchor axes, seconds)``, or ``None`` when the slice is absent.
        """
        node = self._slices.get(slice_key)
        if node is None:
            return None
        return self._clamped(node, tuple(axes), 0)

    def _clamped(self, node: _Node, axes: tuple, i: int) -> tuple[tuple, float]:
        keys, children = node
        x = min(max(axes[i], keys[0]), keys[-1])
        last = i == len(axes) - 1
        j = bisect_left(keys, x)
        if keys[j] == x:
            if last:
                return (x,), children[j]
            inner, value = self._clamped(children[keys[j]], axes, i + 1)
            return (x,) + inner, value
        lo, hi = keys[j - 1], keys[j]
        if last:
            (a_lo, v_lo), (a_hi, v_hi) = ((lo,), children[j - 1]), ((hi,), children[j])
        else:
            a_lo, v_lo = self._clamped(children[lo], axes, i + 1)
            a_lo = (lo,) + a_lo
            a_hi, v_hi = self._clamped(children[hi], axes, i + 1)
            a_hi = (hi,) + a_hi
        if self.axis_log[i] and v_lo > 0 and v_hi > 0:
            t = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
            value = math.exp(math.log(v_lo) + t * (math.log(v_hi) - math.log(v_lo)))
        else:
            t = (x - lo) / (hi - lo)
            value = v_lo + t * (v_hi - v_lo)
        point = (x,) + tuple(p + t * (q - p) for p, q in zip(a_lo[1:], a_hi[1:]))
        return point, value

    def _interp(self, node: _Node, axes: tuple, i: int, blended: set[int]) -> float | None:
        keys, children = node
        x = axes[i]
        last = i == len(axes) - 1
        j = bisect_left(keys, x)
        if j < len(keys) and keys[j] == x:
            return children[j] if last else self._interp(children[keys[j]], axes, i + 1, blended)
        if j == 0 or j == len(keys):
            return None
        lo, hi = keys[j - 1], keys[j]
        if last:
            v_lo, v_hi = children[j - 1], children[j]
        else:
            v_lo = self._interp(children[lo], axes, i + 1, blended)
            if v_lo is None:
                return None
            v_hi = self._interp(children[hi], axes, i + 1, blended)
            if v_hi is None:
                return None
        blended.add(i)
        if self.axis_log[i] and v_lo > 0 and v_hi > 0:
            t = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return math.exp(math.log(v_lo) + t * (math.log(v_hi) - math.log(v_lo)))
        t = (x - lo) / (hi - lo)
        return v_lo + t * (v_hi - v_lo)


def _encode(column: Any) -> tuple[np.ndarray, list]:
    """(integer codes, Python values) of a slice column."""
    if hasattr(column, "encoded"):  # already dictionary-encoded (cosim.kernels.aic_tables.Strings)
        return column.encoded()
    arr = np.asarray(column, dtype=object if not isinstance(column, np.ndarray) else None)
    uniques, inverse = np.unique(arr, return_inverse=True)
    return inverse.astype(np.int64).ravel(), [u.item() if hasattr(u, "item") else u for u in uniques.tolist()]


def _numeric(column: Any) -> np.ndarray:
    if hasattr(column, "to_numpy"):  # pyarrow
        column = column.to_numpy()
    arr = np.asarray(column)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    out = arr.astype(float)
    if np.all(out == np.round(out)) and np.all(np.abs(out) < 2**62):
        return out.astype(np.int64)
    return out


def _build(axes: list[np.ndarray], values: np.ndarray, a: int, b: int, i: int) -> _Node:
    """Nested node for sorted rows [a, b) that share the slice and axes before ``i``."""
    col = axes[i][a:b]
    if i == len(axes) - 1:
        keys = array("q", col.tobytes()) if col.dtype == np.int64 else array("d", col.astype(float).tobytes())
        return (keys, array("d", values[a:b].tobytes()))
    cuts = (np.flatnonzero(np.diff(col)) + 1).tolist()
    starts = [0, *cuts]
    ends = [*cuts, len(col)]
    keys = [col[s].item() for s in starts]
    return (keys, {k: _build(axes, values, a + s, a + e, i + 1) for k, s, e in zip(keys, starts, ends)})


def _walk(node: _Node, prefix: tuple) -> Iterator[tuple[tuple, float]]:
    keys, children = node
    if isinstance(children, array):
        for k, v in zip(keys, children):
            yield prefix + (k,), v
        return
    for k in keys:
        yield from _walk(children[k], prefix + (k,))
