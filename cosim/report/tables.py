"""A table as text cells, drawn by both front ends: the terminal (rich) and the HTML reports.

The report functions build a :class:`TableData` once (``*_data`` functions); the terminal draws
it with :meth:`TableData.rich`, a report page with :meth:`cosim.report.html.Page.table`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class TableData:
    """``rows`` of text cells under ``columns``; columns named in ``left`` are left-justified,
    the others (numbers) right-justified."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: frozenset[str] = frozenset()

    def rich(self, *, overflow: str | None = "fold", no_wrap: bool = False,
             min_width: dict[str, int] | None = None) -> Table:
        """The table for the terminal; cells and title are printed literally (no rich markup: a
        link or pool name from a YAML file may contain brackets)."""
        t = Table(title=Text(self.title))
        for col in self.columns:
            kw = {"overflow": overflow} if overflow else {}
            t.add_column(col, justify="left" if col in self.left else "right", no_wrap=no_wrap,
                         min_width=(min_width or {}).get(col), **kw)
        for row in self.rows:
            t.add_row(*(Text(cell) for cell in row))
        return t


def table_data(title: str, columns, rows, left=()) -> TableData:
    """:class:`TableData` from any iterables of cells (converted to text)."""
    return TableData(title, tuple(columns), tuple(tuple(str(c) for c in r) for r in rows), frozenset(left))
