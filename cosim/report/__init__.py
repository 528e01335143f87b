"""Reports: terminal tables (rich) and Parquet files of simulation results."""

from cosim.report.links import hottest_links_table, write_link_parquet
from cosim.report.step import step_summary, write_step_json

__all__ = ["hottest_links_table", "step_summary", "write_link_parquet", "write_step_json"]
