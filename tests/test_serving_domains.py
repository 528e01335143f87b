"""Request domains (workloads) and the domain-aware serving router (issue 11, item 4): requests
of one domain go to the ranks of their domain's nodes within a stated imbalance bound; the run
measures the grouping purity a grouped step-time model assumes, and ``serve`` re-prices a
grouped pool at the purity its router really achieved."""

import numpy as np
import pytest

from cosim.errors import ConfigError
from cosim.models import Parallelism, load_model
from cosim.serving.deployment import BatchingSpec, Deployment, PoolSpec
from cosim.serving.simulator import ROUTERS, ServingOptions, simulate_serving
from cosim.serving.workload import (
    ClosedLoop, Poisson, generate_requests, load_trace, preset, workload_from_dict, write_trace,
)
from cosim.topology import load_topology
from cosim.trace.placement import rank_domains


class LinearSteps:
    """Step time ``1 ms + per_token x`` the busiest rank's tokens."""

    def __init__(self, per_token_s=1e-6):
        self.per_token_s = per_token_s

    def step_time_s(self, decode_tokens, context, chunks):
        return 1e-3 + self.per_token_s * (decode_tokens + sum(n for _, n in chunks))


@pytest.fixture(scope="module")
def qwen():
    return load_model("Qwen/Qwen3-30B-A3B")


def two_node(model, role="mixed", pd=False):
    par = Parallelism(tp=16, ep=16, dp_attention=True)
    if not pd:
        pool = PoolSpec("agg", "mixed", par, 1, BatchingSpec("chunked_prefill", 2048, 32))
        return Deployment(model, load_topology("h200-hgx-2node"), (pool,), "h200_sxm")
    pre = PoolSpec("pre", "prefill", Parallelism(tp=8, ep=8), 1, BatchingSpec("chunked_prefill", 4096, 4))
    dec = PoolSpec("dec", "decode", par, 1, BatchingSpec("decode_only", 64, 32))
    return Deployment(model, load_topology("h200-hgx-4node"), (pre, dec), "h200_sxm")


def chat_requests(n, users, weights=(1, 1, 1, 1), seed=0):
    wl = preset("chat").with_arrival(ClosedLoop(users)).with_domains(weights)
    return generate_requests(wl, num_requests=n, seed=seed)


def test_workload_domains_are_drawn_by_share_written_and_read(tmp_path):
    wl = preset("chat").with_arrival(Poisson(10.0)).with_domains([0.7, 0.2, 0.1])
    r = generate_requests(wl, num_requests=20_000, seed=3)
    assert np.bincount(r.domain, minlength=3) / len(r) == pytest.approx([0.7, 0.2, 0.1], abs=0.01)
    same = generate_requests(wl, num_requests=20_000, seed=3)
    assert (same.domain == r.domain).all()
    # the other columns are the same draws as without domains (their own random streams)
    plain = generate_requests(preset("chat").with_arrival(Poisson(10.0)), num_requests=20_000, seed=3)
    assert (plain.arrival_s == r.arrival_s).all() and (plain.domain == 0).all()
    write_trace(r.head(50), tmp_path / "t.jsonl")
    assert (load_trace(tmp_path / "t.jsonl").domain == r.domain[:50]).all()
    spec = workload_from_dict({"name": "w", "preset": "chat", "domains": 4, "arrival": {"kind": "poisson", "rate": 5}})
    assert spec.domain_weights == (1.0,) * 4 and workload_from_dict(spec.to_dict()) == spec
    for bad in ("four", [-1, 2], [0, 0], []):
        with pytest.raises(ConfigError, match="domains"):
            workload_from_dict({"name": "w", "preset": "chat", "domains": bad})
    (tmp_path / "bad.jsonl").write_text('{"input_tokens": 5, "output_tokens": 2, "domain": -1}\n')
    with pytest.raises(ConfigError, match="domain"):
        load_trace(tmp_path / "bad.jsonl")


def test_domain_router_keeps_requests_on_their_domains_ranks(qwen):
    """EP16 over two nodes, 4 domains: ranks 0-7 (node 0) host domains 0 and 2, ranks 8-15 host
    1 and 3 (alternating). The domain router puts nearly every request on a rank of its domain;
    least-loaded routing does so for about a quarter of them (chance)."""
    dep = two_node(qwen)
    reqs = chat_requests(1200, users=128)
    runs = {name: simulate_serving(dep, reqs, {"agg": LinearSteps()}, kv_capacity_tokens={"agg": 400_000},
                                   options=ServingOptions(router=name)) for name in ROUTERS}
    assert runs["domain"].rank_domains["agg"][0] == tuple(rank_domains(np.repeat([0, 1], 8), 4))
    assert runs["domain"].grouping_purity() > 0.95
    assert runs["least_loaded"].grouping_purity() == pytest.approx(0.25, abs=0.08)
    assert runs["round_robin"].grouping_purity() == pytest.approx(0.25, abs=0.08)
    for run in runs.values():
        assert run.finished.all()
    # with steps of a fixed cost grouping costs no throughput when the domains are balanced (with
    # token-bound steps it does: prefills cluster on a domain's ranks; benchmarks/placement_serving.py)
    tput = {k: r.finished.sum() / r.duration_s for k, r in runs.items()}
    assert tput["domain"] == pytest.approx(tput["least_loaded"], rel=0.05)


def test_domain_slack_bounds_the_imbalance_of_a_skewed_domain_mix(qwen):
    """One domain with 85 % of the requests: its 4 home ranks would take them all. A loose bound
    (slack 1: twice the mean load) lets them pile up; a tight one (slack 0: the mean load plus
    the request) spills the excess to the least loaded ranks, so the ranks' work stays close,
    the purity drops and the lock-stepped replica (its step lasts its busiest rank's) runs
    faster."""
    dep = two_node(qwen)
    reqs = chat_requests(1200, users=128, weights=(0.85, 0.05, 0.05, 0.05))

    def run(slack):
        return simulate_serving(dep, reqs, {"agg": LinearSteps(1e-4)}, kv_capacity_tokens={"agg": 400_000},
                                options=ServingOptions(router="domain", domain_slack=slack))

    def spread(r):
        per_rank = np.bincount(r.entry_gpu, weights=r.output_tokens_done, minlength=16)
        return per_rank.max() / per_rank.mean()

    loose, tight = run(1.0), run(0.0)
    assert spread(loose) > 1.6 and spread(tight) < 1.3
    assert tight.grouping_purity() < loose.grouping_purity() - 0.1
    assert tight.finished.sum() / tight.duration_s > 1.3 * loose.finished.sum() / loose.duration_s
    with pytest.raises(ConfigError, match="domain_slack"):
        ServingOptions(router="domain", domain_slack=2)
    with pytest.raises(ConfigError, match="router"):
        ServingOptions(router="magic")


def test_domain_router_in_pd_picks_decode_ranks_of_the_domain(qwen):
    dep = two_node(qwen, pd=True)
    from cosim.network.live import LiveNetwork

    reqs = chat_requests(400, users=64)
    out = {}
    for name in ("least_loaded", "domain"):
        out[name] = simulate_serving(dep, reqs, {"pre": LinearSteps(), "dec": LinearSteps()},
                                     kv_capacity_tokens={"pre": 400_000, "dec": 400_000},
                                     kv_bytes_per_token={"pre": 1000.0, "dec": 1000.0},
                                     network=LiveNetwork(dep.topology), options=ServingOptions(router=name))
        assert out[name].finished.all()
    assert out["domain"].grouping_purity("decode") > 0.95
    assert out["least_loaded"].grouping_purity("decode") < 0.5


def test_pool_routing_yaml_carries_eplb_replicas_and_purity_to_the_step():
    from cosim.serving.deployment import deployment_from_dict

    pool = {"name": "agg", "role": "mixed", "parallel": {"tp": 16, "ep": 16, "dp_attention": True,
                                                         "redundant_experts": 16},
            "routing": {"model": "domain_mixture:domains=4", "placement": "eplb"}}
    dep = deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-2node", "pools": [pool]})
    spec = dep.step_spec(dep.pools[0])
    assert spec.redundant_experts == 16 and spec.parallel.redundant_experts == 16
    pool["routing"] = {"model": "domain_mixture:domains=4", "placement": "domain", "grouping": True,
                       "grouping_purity": 0.6}
    pool["parallel"]["redundant_experts"] = 0
    dep = deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-2node", "pools": [pool]})
    assert dep.step_spec(dep.pools[0]).routing.grouping_purity == 0.6
    pool["routing"]["grouping_purity"] = 2
    with pytest.raises(ConfigError, match="grouping_purity"):
        deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-2node", "pools": [pool]})


def test_serve_reprices_grouping_at_the_purity_the_router_achieved(qwen):
    """A grouped pool served with the least-loaded router: the first run assumes purity 1, the
    requests land on their domain's ranks by chance only (~1/4), so ``serve`` runs again with the
    step-time model at the measured purity; with the domain router the assumption holds."""
    from cosim.serving.deployment import deployment_from_dict
    from cosim.serving.run import serve

    pool = {"name": "agg", "role": "mixed", "parallel": {"tp": 16, "ep": 16, "dp_attention": True},
            "batching": {"policy": "chunked_prefill", "token_budget": 1024, "max_batch": 8},
            "routing": {"model": "domain_mixture:domains=4,overlap=0.3", "placement": "domain", "grouping": True}}
    dep = deployment_from_dict({"model": "Qwen/Qwen3-30B-A3B", "topology": "h200-hgx-2node", "pools": [pool]})
    wl = preset("chat").with_domains(4)
    reqs = generate_requests(wl.with_arrival(ClosedLoop(32)), num_requests=48, seed=1)
    ll = serve(dep, reqs, steps="exact", link_load=False, options=ServingOptions(router="least_loaded"))
    g = ll.grouping["agg"]
    assert g["assumed"] == 1.0 and g["measured"] < 0.5 and g["rerun"]
    assert g["rerun_measured"] == pytest.approx(g["rerun_assumed"], abs=0.15)
    dom = serve(dep, reqs, steps="exact", link_load=False, options=ServingOptions(router="domain"))
    assert dom.grouping["agg"]["measured"] > 0.98 and not dom.grouping["agg"]["rerun"]


def test_grouping_without_request_domains_is_a_clear_error(qwen):
    from cosim.serving.deployment import with_pool
    from cosim.trace.expert_routing import StepRouting, routing_model

    dep = with_pool(two_node(qwen), "agg", routing=StepRouting(model=routing_model("domain_mixture", domains=4),
                                                               placement="domain", grouping=True))
    reqs = generate_requests(preset("chat").with_arrival(ClosedLoop(8)), num_requests=8)
    with pytest.raises(ConfigError, match="domains: 4"):
        simulate_serving(dep, reqs, {"agg": LinearSteps()}, kv_capacity_tokens={"agg": 400_000})


def test_routers_choose_among_ranks_with_room_and_break_load_ties_by_running_requests():
    """The hand-over's choice: ``room`` excludes ranks (but the domain router's mean still counts
    them), ``ties`` orders equal loads, and the rotation starts at ``turn`` over all ranks."""
    from cosim.serving.simulator import RouteChoice

    loads = [10.0, 10.0, 10.0, 50.0]
    base = dict(replicas=[0, 0, 1, 1], homes=[0, 1, 0, 1], domain=1, need=5, slack=0.1)
    c = RouteChoice(loads, turn=0, room=[False, True, True, True], ties=[0, 3, 1, 0], **base)
    assert ROUTERS["least_loaded"](c) == 2          # rank 0 has no room; 2 runs fewer than 1
    c = RouteChoice(loads, turn=2, **base)
    assert ROUTERS["least_loaded"](c) == 2          # equal loads rotate from turn 2
    assert ROUTERS["least_loaded"](RouteChoice(loads, turn=3, **base)) == 0
    # round robin: replica turn % 2 among the replicas with room, then its least loaded rank
    c = RouteChoice(loads, turn=1, room=[True, True, False, True], **base)
    assert ROUTERS["round_robin"](c) == 3
    c = RouteChoice(loads, turn=1, room=[True, True, False, False], **base)
    assert ROUTERS["round_robin"](c) == 1           # replica 1 has no room: only replica 0 is left
    # domain 1's ranks are 1 and 3; the bound (1.1 x mean 20 + 5 = 27) keeps rank 3 out
    assert ROUTERS["domain"](RouteChoice(loads, turn=0, **base)) == 1
    assert ROUTERS["domain"](RouteChoice(loads, turn=0, room=[True, False, True, True], **base)) == 0


def test_round_robin_hands_pd_requests_to_the_decode_replicas_in_turn(qwen):
    """P/D hand-over goes through the router: ``round_robin`` alternates the two decode replicas
    whatever their load; ``least_loaded`` follows the load (outputs of 16 to 2,048 tokens), so
    it sends consecutive requests to the same replica."""
    from dataclasses import replace

    from cosim.network.live import LiveNetwork
    from cosim.serving.workload import Uniform

    pre = PoolSpec("pre", "prefill", Parallelism(tp=8, ep=8), 1, BatchingSpec("chunked_prefill", 4096, 4))
    dec = PoolSpec("dec", "decode", Parallelism(tp=8, ep=8), 2, BatchingSpec("decode_only", 64, 32))
    dep = Deployment(qwen, load_topology("h200-hgx-4node"), (pre, dec), "h200_sxm")
    wl = replace(preset("chat"), output_tokens=Uniform(16, 2048)).with_arrival(ClosedLoop(32))
    reqs = generate_requests(wl, num_requests=200, seed=0)
    repeats = {}
    for router in ("round_robin", "least_loaded"):
        run = simulate_serving(dep, reqs, {"pre": LinearSteps(), "dec": LinearSteps(1e-4)},
                               kv_capacity_tokens={"pre": 4_000_000, "dec": 4_000_000},
                               kv_bytes_per_token={"pre": 1000.0, "dec": 1000.0},
                               network=LiveNetwork(dep.topology), options=ServingOptions(router=router))
        assert run.finished.all()
        seq = run.decode_gpu[np.lexsort((np.arange(len(reqs)), run.prefill_end_s))]  # hand-over order
        assert set(seq) == {8, 16}                                                   # the replicas' first GPUs
        repeats[router] = int((seq[1:] == seq[:-1]).sum())
    assert repeats["round_robin"] == 0
    assert repeats["least_loaded"] > 10
