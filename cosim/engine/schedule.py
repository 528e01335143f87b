"""Schedule a step trace on per-rank compute and communication streams.

Each rank has in-order streams (like CUDA streams): compute nodes run on the compute stream,
its part in collectives on a communication stream (stream 0, or the node's ``stream``: AFD sends
and receives on two). A node starts when its
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
    """List-schedule ``trace``; ``collective_duration_s(collective_id)`` gives collective durations.

    Every rank has one compute stream and one in-order communication stream per
    :attr:`CommNode.stream` number it uses (stream 0 unless the trace says otherwise)."""
    n_ranks = len(trace.ranks)
    nan = float("nan")
    start = [[nan] * len(rt.nodes) for rt in trace.ranks]  # Python lists while scheduling (fast scalars)
    finish = [[nan] * len(rt.nodes) for rt in trace.ranks]
    comp_streams: list[list[int]] = []
    comm_streams: list[dict[int, list[int]]] = []
    node_of: list[dict[int, int]] = []  # rank -> collective id -> its comm node
    for rt in trace.ranks:
        comp_streams.append([n.id for n in rt.nodes if isinstance(n, ComputeNode)])
        streams: dict[int, list[int]] = {}
        mine: dict[int, int] = {}
        for n in rt.nodes:
            if isinstance(n, CommNode):
                streams.setdefault(n.stream, []).append(n.id)
                mine[n.collective_id] = n.id
        comm_streams.append(streams)
        node_of.append(mine)
    comp_head = [0] * n_ranks
    comp_free = [0.0] * n_ranks
    comm_head = [{k: 0 for k in st} for st in comm_streams]
    comm_free = [{k: 0.0 for k in st} for st in comm_streams]
    n_coll = len(trace.collectives)
    c_start = np.full(n_coll, np.nan)
    c_finish = np.full(n_coll, np.nan)
    arrived: dict[int, dict[int, float]] = {}  # collective -> rank -> ready time
    remaining = sum(len(rt.nodes) for rt in trace.ranks)

    def deps_done(r: int, node) -> float | None:
        t = 0.0
        fin = finish[r]
        for d in node.deps:
            f = fin[d]
            if f != f:  # NaN: not finished
                return None
            if f > t:
                t = f
        return t

    while remaining:
        progress = False
        for r, rt in enumerate(trace.ranks):
            comp = comp_streams[r]
            # Compute stream: run every ready node in order.
            while comp_head[r] < len(comp):
                node = rt.nodes[comp[comp_head[r]]]
                ready = deps_done(r, node)
                if ready is None:
                    break
                s = max(ready, comp_free[r])
                start[r][node.id] = s
                finish[r][node.id] = comp_free[r] = s + node.duration_s
                comp_head[r] += 1
                remaining -= 1
                progress = True
            # Communication streams: announce arrival at each stream's next collective.
            for k, ids in comm_streams[r].items():
                if comm_head[r][k] < len(ids):
                    node = rt.nodes[ids[comm_head[r][k]]]
                    waiting = arrived.setdefault(node.collective_id, {})
                    if r not in waiting:
                        ready = deps_done(r, node)
                        if ready is not None:
                            waiting[r] = max(ready, comm_free[r][k])
                            progress = True
        for cid, waiting in list(arrived.items()):
            spec = trace.collectives[cid]
            if len(waiting) < len(spec.ranks):
                continue
            s = max(waiting.values())
            f = s + collective_duration_s(cid)
            c_start[cid], c_finish[cid] = s, f
            for r in spec.ranks:
                nid = node_of[r][cid]
                k = trace.ranks[r].nodes[nid].stream
                start[r][nid], finish[r][nid] = s, f
                comm_free[r][k] = f
                comm_head[r][k] += 1
                remaining -= 1
            del arrived[cid]
            progress = True
        if not progress:
            stuck = [(r, trace.ranks[r].nodes[ids[comm_head[r][k]]].name)
                     for r in range(n_ranks) for k, ids in comm_streams[r].items() if comm_head[r][k] < len(ids)]
            raise ScheduleError(f"trace cannot be scheduled; ranks waiting at collectives: {stuck[:4]}")
    return Schedule([np.array(x, dtype=np.float64) for x in start], [np.array(x, dtype=np.float64) for x in finish],
                    c_start, c_finish)
