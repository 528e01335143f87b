"""Serving simulation: closed forms with synthetic step times, Little's law, KV capacity."""

import numpy as np
import pytest

from cosim.errors import ConfigError
from cosim.models import Parallelism, load_model
from cosim.serving.deployment import BatchingSpec, Deployment, PoolSpec
from cosim.serving.metrics import summarize
from cosim.serving.simulator import ServingOptions, simulate_serving
from cosim.serving.workload import ClosedLoop, Poisson, Requests, preset
from cosim.topology import load_topology


class LinearSteps:
    """Step time ``fixed + per_token x tokens`` (tokens = decodes + chunk tokens)."""

    def __init__(self, fixed_s=1e-3, per_token_s=1e-6):
        self.fixed_s, self.per_token_s = fixed_s, per_token_s
        self.calls = []

    def step_time_s(self, decode_tokens, context, chunks):
        self.calls.append((decode_tokens, context, tuple(chunks)))
        return self.fixed_s + self.per_token_s * (decode_tokens + sum(n for _, n in chunks))


@pytest.fixture(scope="module")
def dsv3():
    return load_model("deepseek-ai/DeepSeek-V3")


def mixed_deployment(model, tp=8, budget=512, max_batch=64, replicas=1, topo="h200-hgx-node"):
    pool = PoolSpec("agg", "mixed", Parallelism(tp=tp, ep=tp, dp_attention=True), replicas,
                    BatchingSpec("chunked_prefill", budget, max_batch))
    return Deployment(model, load_topology(topo), (pool,), "h200_sxm")


def requests(n, prompt=128, out=32, prefix=0, arrival=None, prefix_ids=None, concurrency=1):
    """Hand-made requests (arrival None: a closed loop of ``concurrency`` users)."""
    wl = preset("chat").with_arrival(ClosedLoop(concurrency) if arrival is None else Poisson(1.0))
    return Requests(np.arange(n), np.full(n, np.nan) if arrival is None else np.asarray(arrival, float),
                    np.full(n, -1) if prefix_ids is None else np.asarray(prefix_ids),
                    np.full(n, prefix), np.full(n, prompt), np.full(n, out), wl)


def test_one_request_ttft_and_tpot_are_its_steps(dsv3):
    dep = mixed_deployment(dsv3, budget=512)
    steps = LinearSteps()
    run = simulate_serving(dep, requests(1, prompt=1000, out=5, arrival=[0.0]), {"agg": steps},
                           kv_capacity_tokens={"agg": 100_000})
    s = summarize(run)
    # prefill in two chunks (512 + 488), the second step emits the first token; 4 decode steps
    assert s.ttft.mean_s == pytest.approx((1e-3 + 512e-6) + (1e-3 + 488e-6), rel=1e-12)
    assert s.tpot.mean_s == pytest.approx(1e-3 + 1e-6, rel=1e-12)
    assert [c[2] for c in steps.calls[:2]] == [((0, 512),), ((512, 488),)]  # the chunk sees its prefix
    assert run.output_tokens_done[0] == 5 and run.prefilled_tokens[0] == 1000


def test_closed_loop_obeys_littles_law(dsv3):
    dep = mixed_deployment(dsv3, budget=256, max_batch=32)
    run = simulate_serving(dep, requests(3000, prompt=200, out=40, concurrency=48), {"agg": LinearSteps()},
                           kv_capacity_tokens={"agg": 100_000})
    s = summarize(run)
    assert s.finished == 3000
    throughput = s.finished / s.duration_s
    assert throughput * s.e2e.mean_s == pytest.approx(48, rel=0.01)
    assert s.mean_concurrency == pytest.approx(48, rel=0.01)


def test_kv_capacity_preempts_and_everyone_finishes(dsv3):
    dep = mixed_deployment(dsv3, tp=8, budget=4096, max_batch=64)
    cap = 3000  # per attention rank: a few 600-token requests growing by 300
    run = simulate_serving(dep, requests(64, prompt=600, out=300, arrival=np.zeros(64)), {"agg": LinearSteps()},
                           kv_capacity_tokens={"agg": cap}, options=ServingOptions(prefix_cache_fraction=0.0))
    assert run.finished.all()
    assert run.preemptions.sum() > 0
    assert (run.output_tokens_done == 300).all()
    # a request's prefilled tokens: its prompt, plus prompt + generated tokens per preemption
    assert (run.prefilled_tokens >= 600).all()


def test_prefix_cache_hits_skip_the_prefix(dsv3):
    dep = mixed_deployment(dsv3, tp=8, budget=8192)
    n = 400
    ids = np.arange(n) % 4  # 4 prefixes shared by every request
    run = simulate_serving(dep, requests(n, prompt=100, out=4, prefix=4000, arrival=np.arange(n) * 0.01,
                                         prefix_ids=ids), {"agg": LinearSteps()}, kv_capacity_tokens={"agg": 200_000})
    s = summarize(run)
    assert s.prefix_hit_rate > 0.9  # 8 ranks x 4 prefixes miss once each
    assert (run.prefilled_tokens[run.prefix_hit_tokens > 0] == 100).all()


def test_bad_inputs_are_clear_errors(dsv3):
    dep = mixed_deployment(dsv3)
    with pytest.raises(ConfigError, match="missing step times"):
        simulate_serving(dep, requests(4, arrival=np.zeros(4)), {}, kv_capacity_tokens={"agg": 1000})
    with pytest.raises(ConfigError, match="needs 2 GPUs|only .* left"):
        mixed_deployment(dsv3, tp=8, replicas=2)


def _pd(model, decode_gpus=(8, 16)):
    pre = PoolSpec("pre", "prefill", Parallelism(tp=1), 1, BatchingSpec("prefill_only", 16384, 8), gpus=(0,))
    dec = PoolSpec("dec", "decode", Parallelism(tp=len(decode_gpus), ep=len(decode_gpus), dp_attention=True), 1,
                   BatchingSpec("decode_only", 8192, 8), gpus=tuple(decode_gpus))
    return Deployment(model, load_topology("h100-hgx-4node"), (pre, dec), "h100_sxm")


def _pd_run(model, n, decode_gpus=(8, 16)):
    from cosim.network.live import LiveNetwork

    dep = _pd(model, decode_gpus)
    kv = 70_000.0  # bytes per token on one attention GPU
    return simulate_serving(dep, requests(n, prompt=4096, out=8, arrival=np.zeros(n)),
                            {"pre": LinearSteps(), "dec": LinearSteps()},
                            kv_capacity_tokens={"pre": 100_000, "dec": 100_000}, kv_bytes_per_token={"pre": kv, "dec": kv},
                            network=LiveNetwork(dep.topology))


def test_kv_transfers_sharing_a_nic_take_twice_as_long_and_ttft_grows(dsv3):
    """P/D: one prefill GPU on node 0 hands two requests at once to decode GPUs 8 and 16 (local
    index 0 on nodes 1 and 2, same rail): both KV transfers leave through GPU 0's NIC (50 GB/s)
    and take twice one alone. (To GPUs 8 and 9 they would not: PXN sends the second over NVLink
    to GPU 1 and its own NIC.)"""
    alone = _pd_run(dsv3, 1)
    both = _pd_run(dsv3, 2)
    t1 = alone.kv_transfer_s[0]
    size = 70_000.0 * 4096
    assert t1 == pytest.approx(size / 50e9, rel=0.05)  # one flow: the NIC's rate (+ headers, latency)
    assert both.kv_transfer_s == pytest.approx([2 * t1, 2 * t1], rel=0.02)
    ttft_alone = summarize(alone).ttft.mean_s
    ttft_both = summarize(both).ttft.mean_s
    # both prefill in one step (4096 more tokens at 1 us each), then each waits t1 more for its KV
    assert ttft_both - ttft_alone == pytest.approx(4096e-6 + t1, rel=0.02)
    assert (both.first_token_s >= both.prefill_end_s + both.kv_transfer_s - 1e-12).all()
    # inside one node (NVLink, 450 GB/s) the same move is ~9x faster
    local = _pd_run(dsv3, 1, decode_gpus=(1, 2))
    assert local.kv_transfer_s[0] < t1 / 5


def test_decode_side_prefix_cache_moves_only_what_the_decode_rank_lacks(dsv3):
    """With a decode-side prefix cache, a shared prefix the decode rank already holds (and a
    request's own resident prefix) stays; only the other tokens' KV crosses the network."""
    from cosim.network.live import LiveNetwork
    from cosim.serving.metrics import summarize as summary_of

    dep = _pd(dsv3, decode_gpus=(8,))
    kv = 70_000.0

    def run(fraction, prefix_ids):
        reqs = requests(3, prompt=1024, out=8, prefix=3072, prefix_ids=prefix_ids)  # one user: one after another
        return simulate_serving(dep, reqs, {"pre": LinearSteps(), "dec": LinearSteps()},
                                kv_capacity_tokens={"pre": 100_000, "dec": 100_000},
                                kv_bytes_per_token={"pre": kv, "dec": kv}, network=LiveNetwork(dep.topology),
                                options=ServingOptions(decode_prefix_cache_fraction=fraction))

    off, on, own = run(0.0, [0, 0, 0]), run(0.5, [0, 0, 0]), run(0.5, None)
    full = off.kv_transfer_s[0]
    assert off.kv_transfer_s == pytest.approx([full] * 3) and off.decode_prefix_hit_tokens is None
    # the first move misses (4096 tokens); then decode rank holds prefix 0 and 1024 tokens move
    assert on.decode_prefix_hit_tokens.tolist() == [0, 3072, 3072]
    assert on.kv_transfer_s[0] == pytest.approx(full)
    assert on.kv_transfer_s[1:] == pytest.approx([full / 4] * 2, rel=0.05)
    assert summary_of(on).decode_prefix_hit_rate == pytest.approx(2 / 3)
    assert own.kv_transfer_s == pytest.approx([full / 4] * 3, rel=0.05)  # own prefixes are resident
    bytes_on = sum(c.size_bytes for c in on.kv_transfers)
    assert bytes_on == pytest.approx(kv * (4096 + 2 * 1024), rel=1e-6)
    with pytest.raises(ConfigError, match="decode_prefix_cache_fraction"):
        ServingOptions(decode_prefix_cache_fraction=1.0)


def test_layerwise_kv_transfer_hides_behind_the_prefill(dsv3):
    """Layer-wise: the KV move starts with the last prefill step and lands at the latest of the
    prefill end and the network's finish; after_prefill: it starts at the prefill end."""
    from cosim.network.live import LiveNetwork

    def run(mode):
        dep = _pd(dsv3)
        kv = 70_000.0
        return simulate_serving(dep, requests(2, prompt=4096, out=8, arrival=np.zeros(2)),
                                {"pre": LinearSteps(), "dec": LinearSteps()},
                                kv_capacity_tokens={"pre": 100_000, "dec": 100_000},
                                kv_bytes_per_token={"pre": kv, "dec": kv}, network=LiveNetwork(dep.topology),
                                options=ServingOptions(kv_transfer=mode))

    after, layer = run("after_prefill"), run("layerwise")
    prefill = 1e-3 + 8192e-6                      # both prompts in one step
    move = after.kv_transfer_s[0]                 # two moves sharing the NIC
    assert after.first_token_s == pytest.approx([prefill + move] * 2, rel=1e-6)
    assert layer.first_token_s == pytest.approx([max(prefill, move)] * 2, rel=1e-6)
    assert (layer.first_token_s < after.first_token_s).all()


def test_inter_token_gaps_show_decodes_stalled_behind_a_prefill(dsv3):
    """A decode sharing its steps with a long prefill chunk waits longer for those tokens: the
    ITL tail is the mixed step, the median the plain decode step."""
    dep = mixed_deployment(dsv3, tp=8, budget=4096)
    arrival = np.array([0.0] + [0.05] * 8)  # a long request first, then one per rank to prefill
    reqs = requests(9, prompt=4000, out=200, arrival=arrival)
    run = simulate_serving(dep, reqs, {"agg": LinearSteps()}, kv_capacity_tokens={"agg": 100_000},
                           options=ServingOptions(router="round_robin"))
    s = summarize(run)
    assert s.itl.count == 9 * 199
    assert s.itl.p50_s == pytest.approx(1e-3 + 1e-6, rel=0.01)       # a decode-only step
    assert run.max_itl_s[0] >= 1e-3 + 4000e-6                         # stalled behind a 4000-token chunk
    assert np.isclose(np.mean(run.itl_s), s.tpot.mean_s, rtol=0.05)


def test_an_idle_pool_spreads_requests_over_its_ranks(dsv3):
    """Sparse open-loop arrivals find every rank idle: ties rotate, so each of the 8 ranks serves
    8 of 64 requests (they used to pile onto rank 0), with either router; and P/D hand-overs
    rotate over the decode ranks the same way."""
    dep = mixed_deployment(dsv3, tp=8, budget=1024)
    for router in ("least_loaded", "round_robin"):
        run = simulate_serving(dep, requests(64, prompt=100, out=2, arrival=np.arange(64) * 1.0),
                               {"agg": LinearSteps()}, kv_capacity_tokens={"agg": 100_000},
                               options=ServingOptions(router=router))
        assert run.finished.all()
        assert np.bincount(run.entry_gpu, minlength=8).tolist() == [8] * 8
    from cosim.network.live import LiveNetwork

    pd = _pd(dsv3)
    run = simulate_serving(pd, requests(8, prompt=512, out=2, arrival=np.arange(8) * 1.0),
                           {"pre": LinearSteps(), "dec": LinearSteps()},
                           kv_capacity_tokens={"pre": 100_000, "dec": 100_000},
                           kv_bytes_per_token={"pre": 1000.0, "dec": 1000.0}, network=LiveNetwork(pd.topology))
    assert sorted(set(run.decode_gpu.tolist())) == [8, 16] and (np.bincount(run.decode_gpu)[[8, 16]] == 4).all()


def test_closed_loop_ramp_staggers_the_users(dsv3):
    dep = mixed_deployment(dsv3, budget=256, max_batch=32)
    base = simulate_serving(dep, requests(2000, prompt=200, out=40, concurrency=32), {"agg": LinearSteps()},
                            kv_capacity_tokens={"agg": 100_000})
    ramp = simulate_serving(dep, requests(2000, prompt=200, out=40, concurrency=32), {"agg": LinearSteps()},
                            kv_capacity_tokens={"agg": 100_000}, options=ServingOptions(ramp_s=0.05))
    assert np.nanmin(ramp.arrival_s[:32]) == 0.0 and np.nanmax(ramp.arrival_s[:32]) == pytest.approx(0.05 * 31 / 32)
    assert summarize(ramp).mean_concurrency == pytest.approx(32, rel=0.02)
    assert summarize(base).finished == summarize(ramp).finished == 2000


def test_full_admission_reserves_outputs_and_never_preempts(dsv3):
    """``admission='full'``: a request enters only when prompt + outputs fit, so the same
    overloaded rank that preempts under ``prompt`` admission never does, and runs fewer at once."""
    dep = mixed_deployment(dsv3, tp=8, budget=4096, max_batch=64)
    args = (dep, requests(64, prompt=600, out=300, arrival=np.zeros(64)), {"agg": LinearSteps()})
    kw = dict(kv_capacity_tokens={"agg": 3000})
    lazy = simulate_serving(*args, **kw, options=ServingOptions(prefix_cache_fraction=0.0))
    full = simulate_serving(*args, **kw, options=ServingOptions(prefix_cache_fraction=0.0, admission="full"))
    assert lazy.preemptions.sum() > 0 and full.preemptions.sum() == 0
    assert full.finished.all() and (full.prefilled_tokens == 600).all()
    # 3000 tokens hold 3 requests of 900 per rank: the first 24 start at once, the others queue
    first = np.sort(full.first_token_s)
    assert first[23] < first[24]


def test_client_overhead_shifts_first_token_and_finish(dsv3):
    dep = mixed_deployment(dsv3)
    base = simulate_serving(dep, requests(4, prompt=100, out=3, arrival=np.zeros(4)), {"agg": LinearSteps()},
                            kv_capacity_tokens={"agg": 100_000})
    late = simulate_serving(dep, requests(4, prompt=100, out=3, arrival=np.zeros(4)), {"agg": LinearSteps()},
                            kv_capacity_tokens={"agg": 100_000}, options=ServingOptions(client_overhead_s=0.05))
    assert late.first_token_s == pytest.approx(base.first_token_s + 0.05)
    assert summarize(late).tpot.mean_s == pytest.approx(summarize(base).tpot.mean_s)
