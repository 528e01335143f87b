"""What makes ``cosim explore`` fast without changing its answers (no timing assertions): the step
cache shares simulated steps and kernel-work values between step-time models, equal topologies
share models whatever their source label, prefill pools get a smaller decode grid with the same
answers, and a lock of a dead process does not block a build."""

import dataclasses
import os

import numpy as np
import pytest

from cosim.engine.simulator import StepSimulator
from cosim.engine.step_model import (
    StepCache, StepGrid, StepTimeModel, _acquire, fingerprint, topology_digest,
)
from cosim.explore.evaluate import _grid_for
from cosim.explore.spec import experiment_from_dict
from cosim.kernels import KernelTables
from cosim.models import Parallelism, Precision, load_model
from cosim.serving.deployment import BatchingSpec, PoolSpec
from cosim.topology import load_topology
from cosim.trace.builder import AfdSpec, StepSpec

GRID_A = StepGrid(decode_batches=(1, 4, 16), contexts=(0, 1024, 4096), mixed_tokens=(2, 64, 512), work_per_octave=2)
GRID_B = dataclasses.replace(GRID_A, contexts=(0, 1024, 8192))  # another workload's longest context


@pytest.fixture(scope="module")
def setup():
    model = load_model("Qwen/Qwen3-30B-A3B")
    topo = load_topology("h200-hgx-node")
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    base = StepSpec(model, Parallelism(tp=4, ep=4, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                    "generation", 1, gpus=(0, 1, 2, 3))
    return base, kernels, topo


def _tables_equal(a: StepTimeModel, b: StepTimeModel) -> None:
    assert a.fingerprint == b.fingerprint
    assert a._tables.keys() == b._tables.keys()
    for k in a._tables:
        assert np.array_equal(np.asarray(a._tables[k], dtype=float), np.asarray(b._tables[k], dtype=float)), k


def test_cached_steps_and_work_give_the_same_model(setup, tmp_path):
    base, kernels, topo = setup
    plain = StepTimeModel.build(base, StepSimulator(kernels, topo), GRID_A)
    assert plain.fill.cached_steps == 0 and plain.fill.steps == GRID_A.simulations
    cache = StepCache(tmp_path)
    first = StepTimeModel.build(base, StepSimulator(kernels, topo), GRID_A, cache=cache)
    _tables_equal(plain, first)
    # another process (a fresh cache object on the same folder) simulates nothing
    again = StepTimeModel.build(base, StepSimulator(kernels, topo), GRID_A, cache=StepCache(tmp_path))
    assert again.fill.steps == 0 and again.fill.cached_steps == GRID_A.simulations
    _tables_equal(plain, again)
    assert list(tmp_path.glob("steps-*.json")) and list(tmp_path.glob("work-*.json"))
    assert not list(tmp_path.glob("*.lock"))
    for b, c in ((3, 700), (16, 4096), (9, 2000)):
        assert again.step_time(b, c) == plain.step_time(b, c)
    assert again.step_time(2, 100, [(300, 200)]) == plain.step_time(2, 100, [(300, 200)])


def test_models_with_other_grids_share_the_common_steps(setup):
    base, kernels, topo = setup
    cache = StepCache()
    StepTimeModel.build(base, StepSimulator(kernels, topo), GRID_A, cache=cache)
    b = StepTimeModel.build(base, StepSimulator(kernels, topo), GRID_B, cache=cache)
    # only the decode steps at the new context are simulated; the anchors are the same steps
    assert b.fill.steps == len(GRID_B.decode_batches)
    _tables_equal(b, StepTimeModel.build(base, StepSimulator(kernels, topo), GRID_B))
    # another deployment shares nothing
    other = dataclasses.replace(base, parallel=Parallelism(tp=4, ep=4))
    assert StepTimeModel.build(other, StepSimulator(kernels, topo), GRID_A, cache=cache).fill.cached_steps == 0


def test_equal_topologies_share_models_whatever_their_source(setup):
    base, kernels, topo = setup
    relabelled = dataclasses.replace(topo, source="point 1234: topology")
    assert topology_digest(relabelled) == topology_digest(topo)
    assert fingerprint(base, kernels, relabelled, "flow", StepSimulator(kernels, topo).overheads, GRID_A) == \
        fingerprint(base, kernels, topo, "flow", StepSimulator(kernels, topo).overheads, GRID_A)


def test_colocated_decode_grids_need_two_contexts(setup):
    """The decomposed method's residual does not depend on the context: the first and last
    contexts give the full grid's answers (to float rounding), which is why explore simulates
    only those for colocated pools."""
    base, kernels, topo = setup
    full = dataclasses.replace(GRID_A, contexts=(0, 512, 2048, 8192, 9000))
    two = dataclasses.replace(full, contexts=(0, 9000))
    cache = StepCache()
    a = StepTimeModel.build(base, StepSimulator(kernels, topo), full, cache=cache)
    b = StepTimeModel.build(base, StepSimulator(kernels, topo), two, cache=cache)
    assert a.method == b.method == "decomposed" and b.fill.steps == 0
    rng = np.random.default_rng(1)
    batch, ctx = rng.integers(1, 17, 300), rng.integers(0, 9001, 300)
    assert np.allclose(b.step_times(batch, ctx).seconds, a.step_times(batch, ctx).seconds, rtol=1e-12, atol=0)
    assert b.step_time(3, 512, [(100, 200)]) == a.step_time(3, 512, [(100, 200)])


def test_explore_grids(setup):
    spec = experiment_from_dict({
        "name": "g", "model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-node", "gpus": 8, "workloads": ["chat"],
        "space": {"modes": ["pd"], "replicas": [{"tp": 4, "ep": 4, "dp_attention": True}], "prefill_gpus": [4],
                  "max_batch": [16], "token_budget": [512]}}, "g.yaml")
    grid = _grid_for(spec)
    mixed = PoolSpec("agg", "mixed", Parallelism(tp=4, ep=4, dp_attention=True), 1, BatchingSpec("chunked_prefill", 512, 16))
    assert grid(mixed, 9000).contexts == (0, 9000) and grid(mixed, 9000).mixed_tokens
    afd = PoolSpec("dec", "decode", batching=BatchingSpec("decode_only", 512, 16),
                   afd=AfdSpec(attention_gpus=4, ffn_gpus=4, micro_batches=2))
    assert grid(afd, 9000).contexts == (0, 512, 2048, 8192, 9000)


def test_prefill_pools_get_a_small_decode_grid_with_the_same_answers(setup):
    base, kernels, topo = setup
    spec = experiment_from_dict({
        "name": "g", "model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-node", "gpus": 8, "workloads": ["chat"],
        "space": {"modes": ["pd"], "replicas": [{"tp": 4, "ep": 4, "dp_attention": True}], "prefill_gpus": [4],
                  "max_batch": [16], "token_budget": [512]}}, "g.yaml")
    grid = _grid_for(spec)
    pool = PoolSpec("prefill", "prefill", Parallelism(tp=4, ep=4), 1, BatchingSpec("prefill_only", 512, 16))
    small = grid(pool, 9000)
    assert small.contexts == (0, 9000)
    full = dataclasses.replace(small, contexts=(0, 512, 2048, 8192, 9000))
    assert small.work_contexts() == full.work_contexts()
    cache = StepCache()
    a = StepTimeModel.build(base, StepSimulator(kernels, topo), small, cache=cache)
    b = StepTimeModel.build(base, StepSimulator(kernels, topo), full, cache=cache)
    for chunks in ([(0, 300)], [(0, 511)], [(2048, 200)], [(7000, 40), (100, 60)], [(8999, 2)]):
        assert a.step_time(0, 0, chunks) == b.step_time(0, 0, chunks)


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "steps-x.lock"
    lock.write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    _acquire(lock, poll_s=0.01)
    assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
