"""Macro-steps (a replica's unchanging decode batch advanced several steps in one event) give the
same run as step by step: aggregated chunked prefill, P/D, AFD decode, MTP, closed and open loop,
preemption, full admission, the simulation end, exact ties of lock-stepped replicas, and the
step-time model's vectorized decode query."""

import dataclasses

import numpy as np
import pytest

from cosim.models import Parallelism, load_model
from cosim.serving.deployment import BatchingSpec, Deployment, PoolSpec
from cosim.serving.metrics import summarize
from cosim.serving.simulator import ServingOptions, simulate_serving
from cosim.serving.workload import ClosedLoop, Poisson, Requests, preset
from cosim.topology import load_topology
from cosim.trace.builder import AfdSpec

#: Per-request arrays that must be identical (NaN where both are NaN).
FIELDS = ("arrival_s", "first_token_s", "finish_s", "prefill_end_s", "kv_transfer_s", "prefix_hit_tokens",
          "prefilled_tokens", "output_tokens_done", "preemptions", "itl_s", "max_itl_s", "entry_gpu", "decode_gpu")


class CtxSteps:
    """Step time growing with the tokens and the decode context (so every step differs):
    ``fixed + per_token x tokens + per_ctx x decodes x context + chunk attention``."""

    def __init__(self, fixed_s=1e-3, per_token_s=1e-6, per_ctx_s=3e-10):
        self.fixed_s, self.per_token_s, self.per_ctx_s = fixed_s, per_token_s, per_ctx_s
        self.queries = 0

    def step_time_s(self, decode_tokens, context, chunks):
        self.queries += 1
        return (self.fixed_s + self.per_token_s * (decode_tokens + sum(n for _, n in chunks))
                + self.per_ctx_s * (decode_tokens * context + sum(n * (p + n / 2) for p, n in chunks)))


class VectorCtxSteps(CtxSteps):
    """The same with the vectorized decode query the macro-steps use when a source has it."""

    def decode_step_times_s(self, decode_tokens, contexts):
        self.queries += len(contexts)
        return np.array([CtxSteps.step_time_s(self, decode_tokens, int(c), []) for c in contexts])


class ConstSteps:
    """Every step takes 0.5 s: lock-stepped replicas tie exactly, and so do integer arrivals."""

    def step_time_s(self, decode_tokens, context, chunks):
        return 0.5


@pytest.fixture(scope="module")
def dsv3():
    return load_model("deepseek-ai/DeepSeek-V3")


def requests(n, prompt=300, out=200, prefix=0, arrival=None, concurrency=4, seed=0, spread=True):
    """Requests of varied lengths (arrival None: a closed loop of ``concurrency`` users)."""
    rng = np.random.default_rng(seed)
    wl = preset("chat").with_arrival(ClosedLoop(concurrency) if arrival is None else Poisson(1.0))
    outs = rng.integers(max(1, out // 4), out + 1, n) if spread else np.full(n, out)
    prompts = rng.integers(prompt // 2, prompt + 1, n) if spread else np.full(n, prompt)
    return Requests(np.arange(n), np.full(n, np.nan) if arrival is None else np.asarray(arrival, float),
                    np.full(n, -1), np.full(n, prefix), prompts, outs, wl)


def mixed(model, replicas=2, tp=8, budget=512, max_batch=16, topo="h200-hgx-2node", mtp=0):
    pool = PoolSpec("agg", "mixed", Parallelism(tp=tp, ep=tp, dp_attention=True), replicas,
                    BatchingSpec("chunked_prefill", budget, max_batch), mtp_tokens=mtp,
                    mtp_acceptance=0.7 if mtp else 0.0)
    return Deployment(model, load_topology(topo), (pool,), "h200_sxm")


def pd(model, afd=False, mtp=0, dec_batch=8):
    pre = PoolSpec("pre", "prefill", Parallelism(tp=2, ep=2, dp_attention=True), 2,
                   BatchingSpec("prefill_only", 2048, 4), gpus=(0, 1, 2, 3))
    if afd:
        dec = PoolSpec("dec", "decode", replicas=1, batching=BatchingSpec("decode_only", 8192, 16),
                       afd=AfdSpec(4, 4, micro_batches=2), gpus=tuple(range(8, 16)), mtp_tokens=mtp,
                       mtp_acceptance=0.7 if mtp else 0.0)
    else:
        dec = PoolSpec("dec", "decode", Parallelism(tp=4, ep=4, dp_attention=True), 2,
                       BatchingSpec("decode_only", 8192, dec_batch), gpus=tuple(range(8, 16)),
                       mtp_tokens=mtp, mtp_acceptance=0.7 if mtp else 0.0)
    return Deployment(model, load_topology("h100-hgx-4node"), (pre, dec), "h100_sxm")


def run_both(dep, reqs, steps_factory, options=ServingOptions(), kv=100_000):
    """The run step by step and with macro-steps."""
    from cosim.network.live import LiveNetwork

    runs = []
    for macro in (False, True):
        kw = {}
        if dep.pools[0].role != "mixed":
            kw = dict(kv_bytes_per_token={p.name: 70_000.0 for p in dep.pools}, network=LiveNetwork(dep.topology))
        runs.append(simulate_serving(dep, reqs, {p.name: steps_factory() for p in dep.pools},
                                     kv_capacity_tokens={p.name: kv for p in dep.pools},
                                     options=dataclasses.replace(options, macro_steps=macro), **kw))
    return runs


def assert_same(a, b, virtual_share=0.5):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if x is None:
            assert y is None, f
            continue
        np.testing.assert_array_equal(x, y, err_msg=f)  # NaN == NaN here
    assert a.steps == b.steps
    assert a.replica_steps == b.replica_steps
    assert a.duration_s == b.duration_s
    for k in a.pool_busy_s:  # summed in another order: the same within floating point
        assert b.pool_busy_s[k] == pytest.approx(a.pool_busy_s[k], rel=1e-12)
    sa, sb = summarize(a), summarize(b)
    assert sa.finished == sb.finished
    assert sb.tpot.mean_s == pytest.approx(sa.tpot.mean_s, rel=1e-12, nan_ok=True)
    assert sb.itl.p99_s == pytest.approx(sa.itl.p99_s, rel=0, abs=0, nan_ok=True)
    assert a.macro["macros"] == 0
    assert b.macro["virtual_steps"] > virtual_share * sum(b.steps.values())  # the macro-steps did the work


@pytest.mark.parametrize("steps", [CtxSteps, VectorCtxSteps])
def test_aggregated_closed_loop(dsv3, steps):
    a, b = run_both(mixed(dsv3), requests(120, concurrency=24), steps, ServingOptions(ramp_s=0.05))
    assert a.finished.all()
    assert_same(a, b)


def test_aggregated_open_loop_with_prefix_cache(dsv3):
    n = 150
    arrival = np.cumsum(np.random.default_rng(1).exponential(0.02, n))
    reqs = requests(n, prefix=2048, arrival=arrival)
    reqs = dataclasses.replace(reqs, prefix_id=np.arange(n) % 3)
    a, b = run_both(mixed(dsv3), reqs, VectorCtxSteps)
    assert a.prefix_hit_tokens.sum() > 0
    assert_same(a, b)


def test_aggregated_preemption_and_full_admission(dsv3):
    reqs = requests(64, prompt=600, out=300, arrival=np.zeros(64), spread=False)
    opts = ServingOptions(prefix_cache_fraction=0.0)
    a, b = run_both(mixed(dsv3, replicas=1, budget=4096, max_batch=64), reqs, VectorCtxSteps, opts, kv=3000)
    assert a.preemptions.sum() > 0 and a.finished.all()
    assert_same(a, b)
    a, b = run_both(mixed(dsv3, replicas=1, budget=4096, max_batch=64), reqs, VectorCtxSteps,
                    dataclasses.replace(opts, admission="full"), kv=3000)
    assert a.preemptions.sum() == 0
    assert_same(a, b)


def test_aggregated_mtp(dsv3):
    a, b = run_both(mixed(dsv3, mtp=1), requests(80, concurrency=16), VectorCtxSteps, ServingOptions(ramp_s=0.05))
    assert a.finished.all()
    assert_same(a, b)


@pytest.mark.parametrize("afd,mtp,loop", [(False, 0, "closed"), (False, 1, "closed"), (True, 0, "closed"),
                                          (True, 1, "open"), (False, 0, "open")])
def test_pd(dsv3, afd, mtp, loop):
    n = 80
    arrival = None if loop == "closed" else np.cumsum(np.random.default_rng(2).exponential(0.01, n))
    opts = ServingOptions(ramp_s=0.02, kv_transfer="layerwise" if mtp else "after_prefill")
    a, b = run_both(pd(dsv3, afd, mtp), requests(n, prompt=2000, out=150, arrival=arrival, concurrency=20),
                    VectorCtxSteps, opts)
    assert a.finished.all() and (a.decode_gpu >= 0).all()
    assert_same(a, b)


def test_layerwise_landing_at_prefill_end_keeps_the_next_prefill_step(dsv3):
    """Layer-wise KV moves that land before their prefill ends complete at the prefill's end,
    which kicks the prefill replica from inside its own step end: its next step (here the last
    chunk of another request) is not lost (it was: that request's chunk was scheduled twice)."""
    a, b = run_both(pd(dsv3, afd=True), requests(80, prompt=2000, out=150, concurrency=20), VectorCtxSteps,
                    ServingOptions(ramp_s=0.02, kv_transfer="layerwise"))
    assert a.finished.all()
    assert (a.prefilled_tokens == a.requests.input_tokens).all()  # every prompt prefilled once
    assert_same(a, b)


def test_pd_landing_on_a_full_batch_keeps_the_macro_step(dsv3):
    """Decode ranks running more requests than their batch limit: a request landing there waits
    and the macro-step goes on (same run)."""
    a, b = run_both(pd(dsv3, dec_batch=2), requests(120, prompt=2000, out=150, concurrency=40), VectorCtxSteps,
                    ServingOptions(ramp_s=0.02))
    assert a.finished.all()
    assert_same(a, b)


def test_simulation_end_cuts_macro_steps(dsv3):
    opts = ServingOptions(ramp_s=0.05, max_time_s=1.234)
    a, b = run_both(mixed(dsv3), requests(120, concurrency=24, out=2000), VectorCtxSteps, opts)
    assert not a.finished.all()
    assert_same(a, b)


def test_exact_ties_of_lock_stepped_replicas(dsv3):
    """Constant step times: replicas step in lock-step (equal end times), closed-loop arrivals
    land on step ends, open-loop arrivals at integer times on step ends too."""
    a, b = run_both(mixed(dsv3, replicas=4, topo="h200-hgx-8node"), requests(200, concurrency=32, out=60), ConstSteps)
    assert_same(a, b, virtual_share=0.2)
    reqs = requests(100, out=40, arrival=np.repeat(np.arange(25.0), 4))
    a, b = run_both(mixed(dsv3, replicas=4, topo="h200-hgx-8node"), reqs, ConstSteps)
    assert_same(a, b, virtual_share=0.2)
    a, b = run_both(pd(dsv3), requests(60, prompt=2000, out=40, concurrency=12), ConstSteps)
    assert_same(a, b, virtual_share=0.2)


def test_model_decode_query_is_the_scalar_one():
    """ModelStepTimes' vectorized decode query answers bit for bit what its scalar one does
    (colocated and AFD models), so macro-stepped runs on step-time models are exact too."""
    from cosim.engine.simulator import StepSimulator
    from cosim.engine.step_model import StepGrid, StepTimeModel
    from cosim.kernels import KernelTables
    from cosim.models import Precision
    from cosim.serving.run import ModelStepTimes
    from cosim.trace.builder import StepSpec

    model = load_model("Qwen/Qwen3-30B-A3B")
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    base = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                    "generation", 8, prefix_tokens=1024)
    grid = StepGrid(decode_batches=(1, 4, 16), contexts=(0, 1024, 8192), mixed_tokens=(), work_per_octave=2)
    st = ModelStepTimes(StepTimeModel.build(base, StepSimulator(kernels, load_topology("h200-hgx-node")), grid))
    rng = np.random.default_rng(3)
    for b in (1, 3, 4, 11, 16):
        ctx = np.concatenate([[0, 1024, 8192], rng.integers(0, 8193, 200)])
        vec = st.decode_step_times_s(b, ctx)
        assert vec.tolist() == [st.step_time_s(b, int(c), []) for c in ctx]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_runs_agree(dsv3, seed):
    """Random deployments, loads and options (routers, admission, think time, client overhead,
    simulation end, layer-wise moves, prefix caches, small KV, constant step times: exact ties
    of steps with arrivals and with other replicas' steps): the same runs."""
    rng = np.random.default_rng(seed)
    for _ in range(15):
        kind = rng.choice(["mixed", "pd", "pdafd"])
        mtp = int(rng.integers(0, 2))
        n = int(rng.integers(20, 100))
        loop = rng.choice(["closed", "open", "burst"])
        arrival = (None if loop == "closed" else np.cumsum(rng.exponential(rng.choice([0.001, 0.01, 0.05]), n))
                   if loop == "open" else np.repeat(np.arange(n // 4 + 1.0), 4)[:n] * 0.5)
        reqs = requests(n, prompt=int(rng.choice([200, 1500])), out=int(rng.choice([5, 40, 300])), arrival=arrival,
                        concurrency=int(rng.integers(1, 40)), seed=int(rng.integers(1 << 30)),
                        prefix=int(rng.choice([0, 1024])))
        if rng.random() < 0.5:
            reqs = dataclasses.replace(reqs, prefix_id=np.asarray(rng.integers(-1, 3, n)))
        opts = ServingOptions(ramp_s=float(rng.choice([0, 0.02])), think_time_s=float(rng.choice([0, 0.01, 0.5])),
                              router=str(rng.choice(["least_loaded", "round_robin"])),
                              admission=str(rng.choice(["prompt", "full"])),
                              client_overhead_s=float(rng.choice([0, 0.003])),
                              max_time_s=float(rng.choice([np.inf, 0.7])),
                              kv_transfer=str(rng.choice(["after_prefill", "layerwise"])),
                              prefix_cache_fraction=float(rng.choice([0, 0.5])))
        steps = [VectorCtxSteps, CtxSteps, ConstSteps][int(rng.integers(0, 3))]
        kv = int(rng.choice([100_000, 6000]))
        if kind == "mixed":
            dep = mixed(dsv3, replicas=int(rng.integers(1, 3)), budget=int(rng.choice([256, 2048])),
                        max_batch=int(rng.choice([4, 16, 64])), mtp=mtp)
        else:
            dep = pd(dsv3, afd=kind == "pdafd", mtp=mtp, dec_batch=int(rng.choice([2, 8])))
        try:
            a, b = run_both(dep, reqs, steps, opts, kv=kv)
        except Exception as exc:  # a prompt larger than a rank's KV: refused in both modes
            assert "KV tokens" in str(exc), exc
            continue
        assert_same(a, b, virtual_share=-1)
