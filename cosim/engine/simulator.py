"""A persistent step simulator: one network memo for a whole series of steps.

:func:`cosim.engine.step.simulate_step` builds a fresh :class:`CollectiveNetwork` unless it is
given one, so every call simulates its collectives again. A serving run, a sweep or a
:class:`cosim.engine.step_model.StepTimeModel` grid asks for many steps of the same deployment
whose collectives repeat (a decode step at another context length has exactly the same dispatch
and combine traffic; prefill steps of 2 x 512 and 1 x 1024 tokens route the same tokens).
:class:`StepSimulator` owns one :class:`CollectiveNetwork` of its topology and backend and passes
it to every step, so a traffic shape is simulated once per simulator, and counts what that saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cosim.engine.overheads import DEFAULT_OVERHEADS, CommOverheads
from cosim.engine.step import CollectiveNetwork, StepResult, simulate_step
from cosim.topology import Topology
from cosim.trace.builder import StepSpec


@dataclass(frozen=True)
class SimulatorStats:
    """What a :class:`StepSimulator` has done so far.

    Attributes:
        steps: steps simulated.
        network_simulations: network-backend runs (memo misses), over all steps.
        memo_hits / memo_lookups: collective (or concurrent cluster) lookups answered from the
            memo, out of all lookups.
        network_wall_s: wall time inside the network backend (concurrent runs counted once).
        wall_s: wall time inside :meth:`StepSimulator.simulate` (trace, network, schedule).
    """

    steps: int
    network_simulations: int
    memo_hits: int
    memo_lookups: int
    network_wall_s: float
    wall_s: float

    @property
    def hit_rate(self) -> float:
        return self.memo_hits / self.memo_lookups if self.memo_lookups else 0.0


class StepSimulator:
    """Simulates steps on one topology and backend with one network memo across all of them.

    ``simulate(spec)`` returns exactly what ``simulate_step(spec, kernels, topology, backend,
    overheads=overheads)`` returns with a fresh network (the memo is keyed by the full traffic
    shape, placement and start offsets, so a hit is the same simulation), only faster when
    collectives repeat. ``workers``: threads for a step's independent network simulations
    (:class:`CollectiveNetwork`; default the process's CPUs).
    """

    def __init__(self, kernels, topology: Topology, backend: str = "flow", *,
                 overheads: CommOverheads = DEFAULT_OVERHEADS, max_congestion_iterations: int = 3,
                 workers: int | None = None):
        self.kernels = kernels
        self.topology = topology
        self.backend = backend
        self.overheads = overheads
        self.max_congestion_iterations = max_congestion_iterations
        self.network = CollectiveNetwork(topology, backend, workers)
        self._steps = 0
        self._wall_s = 0.0

    def simulate(self, spec: StepSpec) -> StepResult:
        """Co-simulate one step of ``spec`` (see :func:`cosim.engine.step.simulate_step`)."""
        t0 = time.perf_counter()
        try:
            result = simulate_step(spec, self.kernels, self.topology, self.backend, overheads=self.overheads,
                                   max_congestion_iterations=self.max_congestion_iterations, network=self.network)
        finally:
            self._wall_s += time.perf_counter() - t0
        self._steps += 1
        return result

    @property
    def stats(self) -> SimulatorStats:
        n = self.network
        return SimulatorStats(self._steps, n.simulations, n.hits, n.lookups, n.wall_s, self._wall_s)
