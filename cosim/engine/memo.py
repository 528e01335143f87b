"""Exact step times, memoized: every distinct step a serving run asks for is simulated once.

The alternative to :class:`~cosim.engine.step_model.StepTimeModel` (a simulated grid plus
interpolation) when exactness matters more than speed: :class:`MemoStepTimes` answers a query
``(decode requests, context, chunks)`` by simulating that step with the pool's
:class:`~cosim.engine.simulator.StepSimulator`, after rounding the decode context and the chunks'
prefixes to multiples of ``context_step`` tokens (batch sizes and chunk lengths as given), and
keeps the answer. Its cost grows with the number of distinct steps (0.1-1 s each), so it suits
short runs and validation; ``cosim serve --steps exact`` uses it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from cosim.trace.builder import PrefillChunk, StepSpec

#: Context rounding of the memo (tokens).
CONTEXT_STEP = 256


def round_context(c: int, step: int) -> int:
    """``c`` rounded to a multiple of ``step`` (0 stays 0, a positive context stays >= 1)."""
    return 0 if c <= 0 else max(1, int(round(c / step)) * step)


class MemoStepTimes:
    """Exact step times of one pool (the serving simulator's ``StepTimes``), see the module
    docstring. ``base`` is the pool's step spec (:meth:`Deployment.step_spec`); an AFD decode
    query below one request per micro-batch is answered at that minimum (as the step-time
    model's)."""

    def __init__(self, sim, base: StepSpec, context_step: int = CONTEXT_STEP):
        self.sim, self.base, self.context_step = sim, base, int(context_step)
        self.min_batch = base.afd.micro_batches if base.layout == "afd" else 1
        self.memo: dict[tuple, float] = {}
        self.queries = 0
        self.simulate_wall_s = 0.0
        self.raw: dict[tuple, tuple] = {}  # memo key -> the last unrounded query that hit it

    def spec(self, decode_tokens: int, context: int, chunks: Sequence[tuple[int, int]]) -> StepSpec:
        return dataclasses.replace(self.base, batch_per_rank=int(decode_tokens), prefix_tokens=int(context),
                                   prefill_chunks=tuple(PrefillChunk(int(p), int(n)) for p, n in chunks))

    def key(self, decode_tokens: int, context: int, chunks: Sequence[tuple[int, int]]) -> tuple:
        s = self.context_step
        if not chunks:
            decode_tokens = max(int(decode_tokens), self.min_batch)
        ctx = round_context(context, s) if decode_tokens else 0
        return int(decode_tokens), ctx, tuple((round_context(p, s), int(n)) for p, n in chunks)

    def step_time_s(self, decode_tokens: int, context: int, chunks: Sequence[tuple[int, int]]) -> float:
        self.queries += 1
        k = self.key(decode_tokens, context, chunks)
        self.raw[k] = (int(decode_tokens), int(context), tuple((int(p), int(n)) for p, n in chunks))
        t = self.memo.get(k)
        if t is None:
            t0 = time.perf_counter()
            t = self.memo[k] = float(self.sim.simulate(self.spec(*k)).step_time_s)
            self.simulate_wall_s += time.perf_counter() - t0
        return t

    @property
    def simulations(self) -> int:
        return len(self.memo)
