"""Execution traces: per-rank DAGs of one step (:mod:`cosim.trace.model`), built from a model
and deployment (:mod:`cosim.trace.builder`), stored as protobuf (:mod:`cosim.trace.serialize`)
and exported to Chakra ET (:mod:`cosim.trace.chakra`)."""
