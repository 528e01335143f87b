"""Schedule a step trace on per-rank compute and communication streams.

Each rank has in-order streams (like CUDA streams): compute nodes run on the compute stream,
its part in collectives on a communication stream (stream 0, or the node's ``stream``: AFD sends
and receives on two). A node starts when its
dependencies have finished and its stream is free. A collective starts when every participant's
communication stream has reached it and its dependencies are met (the latest of those times),
and lasts the duration given by ``collective_duration_s`` for all participants. Ranks with the
same node objects are scheduled once (their schedules are equal).
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
    # Ranks whose node lists are the same objects (a builder shares equal nodes across ranks: the
    # attention ranks of an AFD step, every rank of a TP step) have the same schedule: only the
    # first of each such class is scheduled, and a collective waits for one arrival per class.
    first_of: dict[tuple, int] = {}
    rep = [first_of.setdefault(tuple(map(id, rt.nodes)), r) for r, rt in enumerate(trace.ranks)]
    scheduled = set(first_of.values())
    start = [[nan] * len(rt.nodes) if r in scheduled else [] for r, rt in enumerate(trace.ranks)]
    finish = [[nan] * len(rt.nodes) if r in scheduled else [] for r, rt in enumerate(trace.ranks)]
    comp_streams: list[list[int]] = []
    comm_streams: list[list[list[int]]] = []  # rank -> its streams' comm nodes, in order
    stream_index: list[dict[int, int]] = []  # rank -> stream number -> index in comm_streams[rank]
    node_of: list[dict[int, int]] = []  # rank -> collective id -> its comm node
    for r, rt in enumerate(trace.ranks):
        nodes = rt.nodes if r in scheduled else ()
        comp_streams.append([n.id for n in nodes if isinstance(n, ComputeNode)])
        streams: dict[int, list[int]] = {}
        mine: dict[int, int] = {}
        for n in nodes:
            if isinstance(n, CommNode):
                streams.setdefault(n.stream, []).append(n.id)
                mine[n.collective_id] = n.id
        comm_streams.append(list(streams.values()))
        stream_index.append({k: i for i, k in enumerate(streams)})
        node_of.append(mine)
    comp_head = [0] * n_ranks
    comp_free = [0.0] * n_ranks
    comm_head = [[0] * len(st) for st in comm_streams]
    comm_free = [[0.0] * len(st) for st in comm_streams]
    announced = [[False] * len(st) for st in comm_streams]  # has the stream's head reached its collective
    n_coll = len(trace.collectives)
    c_start = np.full(n_coll, np.nan)
    c_finish = np.full(n_coll, np.nan)
    arrivals = [0] * n_coll  # classes that reached the collective
    latest = [0.0] * n_coll  # the latest of their ready times
    needed = [0] * n_coll
    members: list[list[int]] = [[] for _ in range(n_coll)]  # the collective's scheduled ranks
    for r in sorted(scheduled):
        for cid in node_of[r]:
            needed[cid] += 1
            members[cid].append(r)
    remaining = sum(len(trace.ranks[r].nodes) for r in scheduled)
    # Event-driven: a rank is (re)visited when it may progress, i.e. at the start and whenever a
    # collective it takes part in completes. Every start time is a max over ready times that do
    # not depend on the order of visits, so the schedule is the same in any order.
    work = sorted(first_of.values(), reverse=True)
    queued = [True] * n_ranks

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

    def complete(cid: int) -> None:
        nonlocal remaining
        s = latest[cid]
        f = s + collective_duration_s(cid)
        c_start[cid], c_finish[cid] = s, f
        for r in members[cid]:
            nid = node_of[r][cid]
            k = stream_index[r][trace.ranks[r].nodes[nid].stream]
            start[r][nid], finish[r][nid] = s, f
            comm_free[r][k] = f
            comm_head[r][k] += 1
            announced[r][k] = False
            remaining -= 1
            if not queued[r]:
                queued[r] = True
                work.append(r)

    while work:
        r = work.pop()
        queued[r] = False
        nodes = trace.ranks[r].nodes
        comp = comp_streams[r]
        # Compute stream: run every ready node in order.
        while comp_head[r] < len(comp):
            node = nodes[comp[comp_head[r]]]
            ready = deps_done(r, node)
            if ready is None:
                break
            s = ready if ready > comp_free[r] else comp_free[r]
            start[r][node.id] = s
            finish[r][node.id] = comp_free[r] = s + node.duration_s
            comp_head[r] += 1
            remaining -= 1
        # Communication streams: arrive at each stream's next collective; the last arrival starts it.
        for k, ids in enumerate(comm_streams[r]):
            if announced[r][k] or comm_head[r][k] >= len(ids):
                continue
            node = nodes[ids[comm_head[r][k]]]
            ready = deps_done(r, node)
            if ready is None:
                continue
            announced[r][k] = True
            cid = node.collective_id
            t = ready if ready > comm_free[r][k] else comm_free[r][k]
            if arrivals[cid] == 0 or t > latest[cid]:
                latest[cid] = t
            arrivals[cid] += 1
            if arrivals[cid] == needed[cid]:
                complete(cid)
    if remaining:
        stuck = [(r, trace.ranks[r].nodes[ids[comm_head[r][k]]].name)
                 for r in sorted(first_of.values()) for k, ids in enumerate(comm_streams[r])
                 if comm_head[r][k] < len(ids)]
        raise ScheduleError(f"trace cannot be scheduled; ranks waiting at collectives: {stuck[:4]}")
    return Schedule([np.array(start[rep[r]], dtype=np.float64) for r in range(n_ranks)],
                    [np.array(finish[rep[r]], dtype=np.float64) for r in range(n_ranks)], c_start, c_finish)
