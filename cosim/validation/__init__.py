"""Validation of cosim against measurements: communication (:mod:`cosim.validation.comm`) and step
times (:mod:`cosim.validation.steps`). Submodules are imported on demand (they pull in pandas and
aiconfigurator-core's tables)."""
