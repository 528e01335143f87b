"""Reports: terminal tables (rich) and Parquet files of simulation results."""

from cosim.report.links import hottest_links_table, write_link_parquet

__all__ = ["hottest_links_table", "write_link_parquet"]
