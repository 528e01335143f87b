"""Execution traces: per-rank DAGs of one step (:mod:`cosim.trace.model`), built from a model
and deployment (:mod:`cosim.trace.builder`), stored as protobuf (:mod:`cosim.trace.serialize`)
and exported to Chakra ET (:mod:`cosim.trace.chakra`), which :mod:`cosim.trace.chakra_check`
checks against what ASTRA-sim needs to run it."""

# Step layouts register themselves on import (colocated in builder, afd in afd).
from cosim.trace import afd as _afd  # noqa: E402,F401
