"""Runners: where the design points are evaluated (registered by name in :data:`RUNNERS`).

A runner calls ``task(spec, point, cache_dir)`` for every point (a library call, never the CLI;
:func:`cosim.explore.evaluate.evaluate_point` by default, the finalists' close look for
:func:`cosim.explore.finalists.examine_finalists`; a module-level function or a
``functools.partial`` of one, so that it pickles) and hands each result to ``on_result`` in the
calling process as soon as it is done, so the caller records it at once
(:class:`~cosim.explore.store.ResultStore`). Results do not depend on the runner or on the order
of completion.

- ``local``: a process pool of ``workers`` processes (``workers = 1``: in this process).
- ``ray``: tasks on the Ray cluster at ``address`` (Ray is imported here only; ``pip install
  ".[ray]"``). Workers on other machines need ``cache_dir`` on a shared file system; on one
  machine (a local head) any folder works.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from cosim.errors import ConfigError
from cosim.explore.evaluate import evaluate_point
from cosim.explore.space import DesignPoint
from cosim.explore.spec import ExperimentSpec
from cosim.registry import Registry

#: Runners by name: ``fn(spec, points, cache_dir, on_result, *, workers, address, task)``.
RUNNERS = Registry("runner")
OnResult = Callable[[dict[str, Any]], None]
Task = Callable[[ExperimentSpec, DesignPoint, "str | Path | None"], dict[str, Any]]


@RUNNERS.register("local")
def run_local(spec: ExperimentSpec, points: Sequence[DesignPoint], cache_dir: str | Path | None, on_result: OnResult,
              *, workers: int = 1, address: str | None = None, task: Task = evaluate_point) -> None:
    """Run ``task`` on ``points`` in a pool of ``workers`` processes (see the module docstring)."""
    if workers <= 1 or len(points) <= 1:
        for p in points:
            on_result(task(spec, p, cache_dir))
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads or open files
    with ProcessPoolExecutor(max_workers=min(workers, len(points)), mp_context=ctx) as pool:
        pending = {pool.submit(task, spec, p, cache_dir) for p in points}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    on_result(f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _ray_task(task, spec, point, cache_dir):
    return task(spec, point, cache_dir)


@RUNNERS.register("ray")
def run_ray(spec: ExperimentSpec, points: Sequence[DesignPoint], cache_dir: str | Path | None, on_result: OnResult,
            *, workers: int = 1, address: str | None = None, task: Task = evaluate_point) -> None:
    """Run ``task`` on ``points`` as Ray tasks on the cluster at ``address`` (module docstring)."""
    if not address:
        raise ConfigError("<api>", "runner", "the ray runner needs a cluster address (--ray ADDRESS or "
                                             "runner: {ray: ADDRESS})")
    try:
        import ray
    except ImportError:
        raise ConfigError("<api>", "runner", "Ray is not installed: pip install \".[ray]\"") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        spec_ref, task_ref = ray.put(spec), ray.put(task)
        pending = [remote.remote(task_ref, spec_ref, p, str(cache_dir) if cache_dir is not None else None)
                   for p in points]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                on_result(ray.get(ref))
    finally:
        if started:
            ray.shutdown()
