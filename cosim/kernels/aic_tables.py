"""Read one aiconfigurator kernel table (parquet) into a :class:`GridTable`.

Only the key columns, the filter columns and ``latency`` are read (pyarrow column projection);
rows failing the spec's ``fixed`` filters are dropped; ``latency`` (milliseconds in every compute
table) becomes seconds. The MoE ``gated`` key is derived from ``kernel_source``; values named in the
spec's ``value_map`` are renamed to cosim's spelling (SGLang's wide-EP ``uniform`` -> ``balanced``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosim.errors import ConfigError
from cosim.kernels.interpolate import GridTable
from cosim.kernels.specs import NONGATED_KERNEL_SOURCE, TableSpec
from cosim.kernels.versions import TableSource

MS_TO_S = 1e-3


def read_aic_table(spec: TableSpec, source: TableSource) -> GridTable:
    """Rows of ``source`` selected and keyed as ``spec`` says; latencies in seconds."""
    path = source.path
    schema = pq.read_schema(path)
    names = set(schema.names)
    derived_gated = "gated" in spec.slice_cols and "gated" not in names
    key_cols = [c for c in spec.key_cols if not (c == "gated" and derived_gated)]
    for col in key_cols + ["latency"]:
        if col not in names:
            raise ConfigError(str(path), col, f"aiconfigurator table lacks column {col!r} needed for {spec.name!r}")
    fixed = [(c, v) for c, v in spec.fixed if c in names]
    extra = [c for c, _ in fixed if c not in key_cols] + (["kernel_source"] if derived_gated else [])
    use = list(dict.fromkeys(key_cols + extra + ["latency"]))
    strings = [c for c in use if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)]
    # ParquetFile.read is ~10x faster and leaner than pq.read_table; string columns come back
    # dictionary-encoded, and filtering is done in numpy (pyarrow.compute costs ~35 MiB to start).
    table = pq.ParquetFile(path, read_dictionary=strings).read(columns=use, use_threads=False)
    cols = {c: _column(table.column(c), c in strings) for c in use}
    cols = {c: v.copy() if isinstance(v, np.ndarray) else v for c, v in cols.items()}  # own the memory
    del table
    pa.default_memory_pool().release_unused()  # return the read buffers to the OS
    latency_ms = cols["latency"].astype(float)
    keep = np.isfinite(latency_ms) & (latency_ms > 0)  # drop unmeasured rows
    for col, value in fixed:
        keep &= cols[col] == value
    for col, mapping in spec.value_map:  # aiconfigurator spelling -> cosim spelling (e.g. uniform -> balanced)
        if isinstance(cols.get(col), Strings):
            rename = dict(mapping)
            cols[col] = Strings(cols[col].codes, [rename.get(v, v) for v in cols[col].values])
    if derived_gated:
        cols["gated"] = Strings(cols["kernel_source"].codes,
                                [ks != NONGATED_KERNEL_SOURCE for ks in cols["kernel_source"].values])
    reused = source.path.parent.name != source.version
    label = f"{source.label} (reused by {source.version})" if reused else source.label
    return GridTable.from_columns(
        [cols[c][keep] for c in spec.slice_cols], [cols[c][keep] for c in spec.axis_cols], latency_ms[keep] * MS_TO_S,
        slice_cols=spec.slice_cols, axis_cols=spec.axis_cols, axis_log=spec.axis_log, label=label,
    )


class Strings:
    """A dictionary-encoded column: integer ``codes`` into Python ``values`` (comparable, maskable)."""

    def __init__(self, codes: np.ndarray, values: list):
        self.codes = codes
        self.values = values

    def __eq__(self, other: object) -> np.ndarray:  # type: ignore[override]
        hits = [i for i, v in enumerate(self.values) if v == other]
        return np.isin(self.codes, hits)

    def __getitem__(self, mask: np.ndarray) -> Strings:
        return Strings(self.codes[mask], self.values)

    def __len__(self) -> int:
        return len(self.codes)

    def encoded(self) -> tuple[np.ndarray, list]:
        """Codes and values with duplicates merged (``values`` may repeat after a mapping)."""
        uniq: dict = {}
        remap = np.array([uniq.setdefault(v, len(uniq)) for v in self.values], dtype=np.int64)
        return (remap[self.codes] if len(remap) else self.codes), list(uniq)


_NUMPY_TYPES = {pa.int64(): np.int64, pa.int32(): np.int32, pa.float64(): np.float64, pa.float32(): np.float32}


def _numpy(col: pa.ChunkedArray) -> np.ndarray:
    """Numeric column as numpy without pyarrow's to_numpy (which imports pandas: ~35 MiB)."""
    parts = []
    for chunk in col.chunks:
        dtype = _NUMPY_TYPES.get(chunk.type)
        if dtype is not None and chunk.null_count == 0:
            offset = chunk.offset * np.dtype(dtype).itemsize
            parts.append(np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=offset))
        else:
            parts.append(np.array([np.nan if v is None else v for v in chunk.to_pylist()]))
    return np.concatenate(parts) if parts else np.zeros(0)


def _column(col: pa.ChunkedArray, dictionary: bool) -> np.ndarray | Strings:
    if not dictionary:
        return _numpy(col)
    index: dict = {}
    parts = []
    for chunk in col.chunks:
        local = chunk.dictionary.to_pylist()
        remap = np.array([index.setdefault(v, len(index)) for v in local], dtype=np.int64)
        idx = _numpy(pa.chunked_array([chunk.indices])).astype(np.int64)
        parts.append(remap[idx] if len(remap) else idx.astype(np.int64))
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return Strings(codes, list(index))
