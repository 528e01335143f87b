"""Schedule a step trace on per-rank compute and communication streams.

Each rank has two in-order streams (like two CUDA streams): compute nodes run on the compute
stream, its part in collectives on the communication stream. A node starts when its
dependencies have finished and its stream is free. A collective starts when every participant's
communication stream has reached it and its dependencies are met (the latest of those times),
and lasts the duration given by ``collective_duration_s`` for all participants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cosim.errors import CosimError
from cosim.trace.model import CommNode, ComputeNode, StepTrace


@dataclass
class Schedule:
    """Start and finish of every node (per rank) and of every collective."""

    node_start_s: list[np.ndarray]
    node_finish_s: list[np.ndarray]
    collective_start_s: np.ndarray
    collective_finish_s: np.ndarray

    @property
    def step_time_s(self) -> float:
        return max((float(f.max()) for f in self.node_finish_s if len(f)), default=0.0)


class ScheduleError(CosimError, RuntimeError):
    """The trace cannot be scheduled (a collective whose participants wait on each other)."""


def schedule(trace: StepTrace, collective_duration_s: Callable[[int], float]) -> Schedule:
    """List-schedule ``trace``; ``collective_duration_s(collective_id)`` gives collective durations."""
    n_ranks = len(trace.ranks)
    start = [np.full(len(rt.nodes), np.nan) for rt in trace.ranks]
    finish = [np.full(len(rt.nodes), np.nan) for rt in trace.ranks]
    streams = []
    for rt in trace.ranks:
        comp = [n.id for n in rt.nodes if isinstance(n, ComputeNode)]
        comm = [n.id for n in rt.nodes if isinstance(n, CommNode)]
        streams.append((comp, comm))
    head = [[0, 0] for _ in range(n_ranks)]
    free = [[0.0, 0.0] for _ in range(n_ranks)]
    n_coll = len(trace.collectives)
    c_start = np.full(n_coll, np.nan)
    c_finish = np.full(n_coll, np.nan)
    arrived: dict[int, dict[int, float]] = {}  # collective -> rank -> ready time
    remaining = sum(len(rt.nodes) for rt in trace.ranks)

    def deps_done(r: int, node) -> float | None:
        t = 0.0
        for d in node.deps:
            f = finish[r][d]
            if np.isnan(f):
                return None
            t = max(t, f)
        return t

    while remaining:
        progress = False
        for r, rt in enumerate(trace.ranks):
            comp, comm = streams[r]
            # Compute stream: run every ready node in order.
            while head[r][0] < len(comp):
                node = rt.nodes[comp[head[r][0]]]
                ready = deps_done(r, node)
                if ready is None:
                    break
                s = max(ready, free[r][0])
                start[r][node.id] = s
                finish[r][node.id] = free[r][0] = s + node.duration_s
                head[r][0] += 1
                remaining -= 1
                progress = True
            # Communication stream: announce arrival at the next collective.
            if head[r][1] < len(comm):
                node = rt.nodes[comm[head[r][1]]]
                waiting = arrived.setdefault(node.collective_id, {})
                if r not in waiting:
                    ready = deps_done(r, node)
                    if ready is not None:
                        waiting[r] = max(ready, free[r][1])
                        progress = True
        for cid, waiting in list(arrived.items()):
            spec = trace.collectives[cid]
            if len(waiting) < len(spec.ranks):
                continue
            s = max(waiting.values())
            f = s + collective_duration_s(cid)
            c_start[cid], c_finish[cid] = s, f
            for r in spec.ranks:
                nid = streams[r][1][head[r][1]]
                start[r][nid], finish[r][nid] = s, f
                free[r][1] = f
                head[r][1] += 1
                remaining -= 1
            del arrived[cid]
            progress = True
        if not progress:
            stuck = [(r, trace.ranks[r].nodes[streams[r][1][head[r][1]]].name)
                     for r in range(n_ranks) if head[r][1] < len(streams[r][1])]
            raise ScheduleError(f"trace cannot be scheduled; ranks waiting at collectives: {stuck[:4]}")
    return Schedule(start, finish, c_start, c_finish)
