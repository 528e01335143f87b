"""Per-link utilization reports: the hottest links as a rich table, all counters as Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from rich.table import Table

from cosim.network.results import NetworkResult
from cosim.units import format_bytes, format_time


def hottest_links_table(result: NetworkResult, top: int = 10) -> Table:
    """The ``top`` directed links by busy time, with bytes, utilization and queue peaks."""
    links = result.links
    end = result.completion_time_s
    mean = links.mean_utilization(end)
    peak = links.peak_utilization(end)
    order = np.argsort(-links.busy_s, kind="stable")[:top]
    table = Table(title=f"Hottest links ({result.backend} backend, completion {format_time(end)})")
    for col, justify in (("link", "left"), ("tier", "left"), ("GB/s", "right"), ("bytes", "right"),
                         ("busy", "right"), ("mean util", "right"), ("peak util", "right"),
                         ("peak queue", "right"), ("PFC pauses", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for d in order:
        if links.tx_bytes[d] == 0:
            break
        q = links.peak_queue_bytes[d]
        table.add_row(
            result.topology.describe_link(int(d)), result.topology.links[d // 2].tier,
            f"{links.bandwidth_bps[d] / 8e9:.0f}", format_bytes(links.tx_bytes[d]),
            format_time(links.busy_s[d]), f"{mean[d]:.1%}", f"{peak[d]:.1%}",
            "-" if np.isnan(q) else format_bytes(q),
            "-" if result.backend != "packet" else str(int(links.pause_count[d])),
        )
    return table


def write_link_parquet(result: NetworkResult, path: str | Path) -> Path:
    """Write every directed link's counters and utilization series to ``path`` (Parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(result.link_table(), path)
    return path
