"""Kernel tables: durations of per-GPU compute ops from measured tables, with their source.

Public API:

- :class:`SystemSpec`, :func:`load_system` -- GPU/node specs from aiconfigurator's system YAMLs;
  :meth:`SystemSpec.scaled` builds what-if GPUs.
- :class:`KernelTables` (``KernelTables.load(system, framework, version, user_dir=...)``) and
  :class:`Duration` -- ``tables.duration(op)`` for ``GemmOp``, ``AttentionOp``, ``MoeOp``,
  ``MemoryOp`` (``cosim.ops``): measured, interpolated, roofline or roofline-scaled.
- :class:`EfficiencyFit` -- the fitted roofline of a table (``tables.efficiency(table, dtype)``).
- :func:`nccl_records`, :func:`deepep_normal_records`, :func:`deepep_ll_records` -- measured
  communication tables for validating the network backends.
- :func:`user_table_schema` -- columns of a user-supplied table.

Facts about the data and the rules are in ``docs/kernel-tables.md``.
"""

from cosim.kernels.comm_tables import (
    DeepEPLowLatencyRecord,
    DeepEPNormalRecord,
    NcclRecord,
    deepep_default_versions,
    deepep_ll_records,
    deepep_normal_records,
    nccl_records,
    to_dataframe,
)
from cosim.kernels.roofline import EfficiencyFit
from cosim.kernels.specs import TABLES, USER_TABLES
from cosim.kernels.system import SUPPORTED_SYSTEMS, SystemSpec, available_systems, load_system
from cosim.kernels.tables import Duration, KernelTables
from cosim.kernels.user_tables import schema as user_table_schema

__all__ = [
    "DeepEPLowLatencyRecord",
    "DeepEPNormalRecord",
    "Duration",
    "EfficiencyFit",
    "KernelTables",
    "NcclRecord",
    "SUPPORTED_SYSTEMS",
    "SystemSpec",
    "TABLES",
    "USER_TABLES",
    "available_systems",
    "deepep_default_versions",
    "deepep_ll_records",
    "deepep_normal_records",
    "load_system",
    "nccl_records",
    "to_dataframe",
    "user_table_schema",
]
