"""Per-link utilization reports: the hottest links as a table (terminal and HTML), all counters as
Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from rich.table import Table

from cosim.engine.summary import LinkSeries
from cosim.io_atomic import atomic_path
from cosim.network.results import NetworkResult
from cosim.report.tables import TableData, table_data
from cosim.units import format_bytes, format_time


def hottest_links_data(result: NetworkResult, top: int = 10) -> TableData:
    """The ``top`` directed links by busy time, with bytes, utilization and queue peaks."""
    links = result.links
    end = result.completion_time_s
    mean = links.mean_utilization(end)
    peak = links.peak_utilization(end)
    order = np.argsort(-links.busy_s, kind="stable")[:top]
    rows = []
    for d in order:
        if links.tx_bytes[d] == 0:
            break
        q = links.peak_queue_bytes[d]
        rows.append((
            result.topology.describe_link(int(d)), result.topology.links[d // 2].tier,
            f"{links.bandwidth_bps[d] / 8e9:.0f}", format_bytes(links.tx_bytes[d]),
            format_time(links.busy_s[d]), f"{mean[d]:.1%}", f"{peak[d]:.1%}",
            "-" if np.isnan(q) else format_bytes(q),
            "-" if result.backend != "packet" else str(int(links.pause_count[d])),
        ))
    return table_data(f"Hottest links ({result.backend} backend, completion {format_time(end)})",
                      ("link", "tier", "GB/s", "bytes", "busy", "mean util", "peak util", "peak queue", "PFC pauses"),
                      rows, left=("link", "tier"))


def hottest_links_table(result: NetworkResult, top: int = 10) -> Table:
    """:func:`hottest_links_data` for the terminal."""
    return hottest_links_data(result, top).rich(overflow=None, no_wrap=True)


def series_links_data(series: LinkSeries, top: int = 10, title: str = "Hottest links") -> TableData:
    """The ``top`` busiest links of a :class:`~cosim.engine.summary.LinkSeries` (highest mean
    utilization): bytes, mean utilization over the window and the peak of its time bins."""
    rows = []
    for i in series.top(top):
        bw = "-" if series.bandwidth_bps is None else f"{series.bandwidth_bps[i] / 8e9:.0f}"
        peak = float(series.utilization[i].max()) if series.utilization.shape[1] else 0.0
        rows.append((series.names[i], series.tiers[i], bw, format_bytes(series.bytes[i]),
                     f"{series.mean_utilization[i]:.1%}", f"{min(peak, 1.0):.1%}"))
    return table_data(title, ("link", "tier", "GB/s", "bytes", "mean util", "peak util (bin)"), rows,
                      left=("link", "tier"))


def write_link_parquet(result: NetworkResult, path: str | Path) -> Path:
    """Write every directed link's counters and utilization series to ``path`` (Parquet),
    atomically: a writer killed mid-file leaves the earlier file at ``path`` intact."""
    path = Path(path)
    table = result.link_table()
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
