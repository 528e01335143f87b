"""Merge engine: schedule step traces on compute/communication streams with network-simulated
collectives (:func:`cosim.engine.step.simulate_step`)."""
