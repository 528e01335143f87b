"""One call from an experiment to its answer: :func:`explore`.

Enumerate the points (:mod:`cosim.explore.space`), skip those the result folder already holds
(:class:`~cosim.explore.store.ResultStore`: an interrupted run resumes without redoing or
duplicating a point), evaluate the rest with the chosen runner (:data:`~cosim.explore.runners.
RUNNERS`), record each row as it arrives, and return the rows of this experiment's points with
the Pareto fronts and the best deployment per mode.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cosim.explore.analysis import best_per_mode, pareto_fronts
from cosim.explore.finalists import examine_finalists
from cosim.explore.runners import RUNNERS
from cosim.explore.space import Enumeration, enumerate_points
from cosim.explore.spec import ExperimentSpec
from cosim.explore.store import ResultStore
from cosim.io_atomic import atomic_write_text


@dataclass
class ExploreResult:
    """What :func:`explore` returns.

    Attributes:
        rows: one per point of the experiment, sorted by key (also in ``OUT/results.parquet``).
        enumeration: the points and the combinations left out (with counts per reason).
        reused / evaluated: points found in the folder and points evaluated by this call.
        fronts / best: :func:`~cosim.explore.analysis.pareto_fronts` and
            :func:`~cosim.explore.analysis.best_per_mode` of ``rows``.
        finalists: :func:`~cosim.explore.finalists.examine_finalists` records (packet re-check,
            step breakdown, link series of each finalist's representative steps).
        wall_s: the call's wall time.
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    enumeration: Enumeration
    reused: int
    evaluated: int
    fronts: dict = field(default_factory=dict)
    best: list = field(default_factory=list)
    finalists: list = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def points_per_s(self) -> float:
        return self.evaluated / self.wall_s if self.wall_s > 0 else float("nan")


def explore(spec: ExperimentSpec, out_dir: str | Path, *, runner: str | None = None, address: str | None = None,
            workers: int | None = None, cache_dir: str | Path | None = None, finalists: bool = True,
            packet: bool = True, progress: Callable[[int, int], None] | None = None,
            finalist_progress: Callable[[int, int], None] | None = None) -> ExploreResult:
    """Run ``spec`` into ``out_dir`` (module docstring); ``runner`` / ``address`` / ``workers``
    override the spec's; ``cache_dir``: where step-time models are shared (default
    ``OUT/step-models``); ``finalists``: examine the finalists (``packet``: re-check their steps
    on the packet backend); ``progress(done, total)`` after each point, ``finalist_progress``
    after each finalist."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    store = ResultStore(out)
    enum = enumerate_points(spec)
    keys = {p.key for p in enum.points}
    done = store.done() & keys
    todo = [p for p in enum.points if p.key not in done]
    atomic_write_text(out / "experiment.json", json.dumps({
        "name": spec.name, "source": spec.source, "points": len(enum.points), "skipped": enum.skipped,
        "identity": spec.identity()}, indent=1, sort_keys=True))
    total, count = len(enum.points), len(done)
    if progress:
        progress(count, total)

    def record(row: dict[str, Any]) -> None:
        nonlocal count
        store.add(row)
        count += 1
        if progress:
            progress(count, total)

    name = runner or spec.runner
    cache = Path(cache_dir) if cache_dir is not None else out / "step-models"
    RUNNERS[name](spec, todo, cache, record, workers=workers or spec.workers, address=address or spec.ray_address)
    store.consolidate()
    rows = [r for r in store.rows() if r["key"] in keys]
    result = ExploreResult(out, rows, enum, len(done), len(todo), pareto_fronts(rows), best_per_mode(rows))
    if finalists:
        result.finalists = examine_finalists(spec, enum.points, rows, out, cache, packet, finalist_progress,
                                             runner=name, workers=workers or spec.workers,
                                             address=address or spec.ray_address)
    result.wall_s = time.perf_counter() - t0
    return result
