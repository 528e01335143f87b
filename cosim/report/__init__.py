"""Reports: terminal tables (rich) and Parquet files of simulation results."""

from cosim.report.links import hottest_links_table, write_link_parquet
from cosim.report.serving import (
    pool_table, serving_summary, summary_table, throughput_lines, write_requests_parquet, write_serving_json,
)
from cosim.report.step import step_summary, write_step_json

__all__ = ["hottest_links_table", "pool_table", "serving_summary", "step_summary", "summary_table",
           "throughput_lines", "write_link_parquet", "write_requests_parquet", "write_serving_json",
           "write_step_json"]
