"""User-supplied kernel tables: one CSV or Parquet file per table in a directory.

File ``<dir>/<table>.csv`` or ``<dir>/<table>.parquet`` where ``<table>`` is one of
:data:`cosim.kernels.specs.USER_TABLES`. Columns: the table's key columns (see
``docs/kernel-tables.md`` or :func:`schema`) and ``latency_s`` (seconds, > 0). Extra columns are
ignored. Rows in a user table take precedence over aiconfigurator's rows; lookups interpolate within
the user grid exactly as within aiconfigurator's. Any problem raises :class:`ConfigError` naming the
file and the column.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cosim.errors import ConfigError
from cosim.kernels.interpolate import GridTable
from cosim.kernels.specs import BOOL, INT, STR, TABLES, USER_TABLES, TableSpec

LATENCY_COL = "latency_s"
_SUFFIXES = (".csv", ".parquet")


def schema(table: str) -> dict[str, str]:
    """Required columns of user table ``table`` and their types (``int``, ``str``, ``bool``, ``float``)."""
    spec = TABLES[table]
    cols = {c: spec.col_type(c) for c in spec.key_cols}
    cols[LATENCY_COL] = "float"
    return cols


def load_user_tables(user_dir: str | Path) -> dict[str, GridTable]:
    """Read and validate every table file in ``user_dir``; returns ``{table name: GridTable}``."""
    root = Path(user_dir)
    if not root.is_dir():
        raise ConfigError(str(root), "", "user table directory does not exist or is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.suffix.lower() not in _SUFFIXES or not path.is_file():
            continue
        name = path.stem
        if name not in USER_TABLES:
            raise ConfigError(str(path), "", f"unknown kernel table {name!r}; expected a file named <table>.csv or "
                                             f"<table>.parquet with <table> one of {list(USER_TABLES)}")
        if name in found:
            raise ConfigError(str(path), "", f"table {name!r} is given twice ({found[name].name} and {path.name})")
        found[name] = path
    return {name: read_user_table(path, TABLES[name]) for name, path in found.items()}


def read_user_table(path: Path, spec: TableSpec) -> GridTable:
    """Validate one user table file against ``spec`` and build its :class:`GridTable`."""
    src = str(path)
    try:
        if path.suffix.lower() == ".csv":
            table = pacsv.read_csv(path)
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(src, "", f"cannot read table: {exc}") from exc
    if table.num_rows == 0:
        raise ConfigError(src, "", "table has no rows")
    present = set(table.column_names)
    optional = dict(spec.optional)
    expected = list(spec.key_cols) + [LATENCY_COL]
    for col in expected:
        if col not in present and col not in optional:
            raise ConfigError(src, col, f"missing required column {col!r}; table {spec.name!r} needs columns {expected}")
    n = table.num_rows
    columns: dict[str, list] = {}
    for col in spec.key_cols:
        if col in present:
            columns[col] = _typed(table.column(col).to_pylist(), spec.col_type(col), src, col,
                                  positive=col in spec.axis_cols)
        else:
            columns[col] = [optional[col]] * n
    latency = _latencies(table.column(LATENCY_COL).to_pylist(), src)
    slices = list(zip(*(columns[c] for c in spec.slice_cols)))
    axes = list(zip(*(columns[c] for c in spec.axis_cols)))
    return GridTable.from_rows(
        slices, axes, latency, slice_cols=spec.slice_cols, axis_cols=spec.axis_cols, axis_log=spec.axis_log,
        label=f"user:{path.name}",
    )


def _typed(values: list, kind: str, src: str, col: str, positive: bool) -> list:
    out = []
    for i, v in enumerate(values):
        where = f"data row {i + 1}"
        if v is None:
            raise ConfigError(src, col, f"empty value in {where}")
        if kind == INT:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
                raise ConfigError(src, col, f"expected an integer, got {v!r} in {where}")
            v = int(v)
            if (positive and v < 1) or v < 0:
                raise ConfigError(src, col, f"expected an integer >= {1 if positive else 0}, got {v} in {where}")
        elif kind == STR:
            if not isinstance(v, str) or not v:
                raise ConfigError(src, col, f"expected a non-empty string, got {v!r} in {where}")
        elif kind == BOOL:
            if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
                v = v.strip().lower() in ("true", "1")
            elif isinstance(v, (bool, int)) and v in (0, 1):
                v = bool(v)
            else:
                raise ConfigError(src, col, f"expected true/false, got {v!r} in {where}")
        out.append(v)
    return out


def _latencies(values: list, src: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(src, LATENCY_COL, f"expected a positive duration in seconds, got {v!r} in data row {i + 1}")
        out.append(float(v))
    return out
