"""The result store of an experiment run: one Parquet file per finished point, then one table.

``OUT/points/<key>.parquet`` is written for each point as soon as it is evaluated, to a temporary
name renamed into place: a run killed at any moment (SIGKILL included) leaves only whole files,
so a restart loses no finished point, and since a point's file is named by its key it can never
be recorded twice. :meth:`ResultStore.done` is the set of finished keys (what a resumed run
skips); :meth:`ResultStore.table` reads them all into one table (one row per point, sorted by
key), which :meth:`ResultStore.consolidate` writes as ``OUT/results.parquet`` (same atomic
rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from cosim.errors import CosimError


class StoreError(CosimError):
    """The result folder cannot be used (not writable, a file in the way, an unreadable part)."""


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ResultStore:
    """Rows of finished points under ``root`` (module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.points_dir = self.root / "points"
        try:
            self.points_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the result folder ({exc.strerror or exc})") from None
        for stale in self.points_dir.glob(".*.tmp"):  # left by a killed writer: never a finished point
            stale.unlink(missing_ok=True)

    def done(self) -> set[str]:
        """Keys of the points already recorded."""
        return {p.stem for p in self.points_dir.glob("*.parquet")}

    def add(self, row: dict[str, Any]) -> None:
        """Record one finished point's row (atomically, named by its key)."""
        key = row["key"]
        _write_atomic(pa.Table.from_pylist([row]), self.points_dir / f"{key}.parquet")

    def rows(self) -> list[dict[str, Any]]:
        """Every recorded row, sorted by key."""
        out = []
        for path in sorted(self.points_dir.glob("*.parquet")):
            try:
                out.extend(pq.read_table(path).to_pylist())
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"{path}: unreadable result part ({exc})") from None
        return sorted(out, key=lambda r: r["key"])

    def table(self) -> pa.Table:
        """The recorded rows as one table (columns: the union of the rows')."""
        return rows_table(self.rows())

    def consolidate(self) -> Path:
        """Write ``results.parquet`` (every recorded row) atomically; return its path."""
        path = self.root / "results.parquet"
        _write_atomic(self.table(), path)
        return path


def rows_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows with possibly different columns as one table (missing values null)."""
    rows = list(rows)
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
