"""Merge engine: schedule step traces on compute/communication streams with network-simulated
collectives (:func:`cosim.engine.step.simulate_step`)."""

from cosim.engine.simulator import StepSimulator  # noqa: E402
from cosim.engine.step import GroupResult, StepResult, simulate_step, simulate_trace  # noqa: E402
from cosim.engine.step_model import StepGrid, StepTime, StepTimeModel  # noqa: E402

__all__ = ["GroupResult", "StepGrid", "StepResult", "StepSimulator", "StepTime", "StepTimeModel", "simulate_step",
           "simulate_trace"]
