"""Pool placement (``placement: packed | nvlink | rdma``): where a pool's replicas take their GPUs,
and what it does to an AFD step (A2F/F2A over NVLink or over the RDMA fabric)."""

import dataclasses

import pytest

from cosim.engine.step import simulate_step
from cosim.errors import ConfigError
from cosim.kernels import KernelTables
from cosim.serving.deployment import deployment_from_dict


def _doc(topology, decode, prefill_gpus=32):
    return {"model": "Qwen/Qwen3-30B-A3B", "topology": topology,
            "pools": [{"name": "prefill", "role": "prefill", "replicas": prefill_gpus // 8,
                       "parallel": {"tp": 8, "ep": 8}},
                      {"name": "decode", "role": "decode", **decode}]}


def _domains(dep, gpus):
    topo = dep.topology
    return {topo.nodes[topo.gpu_nodes[g]].domain for g in gpus}


def _afd(placement, replicas=3, a=16, f=16):
    return {"replicas": replicas, "afd": {"attention_gpus": a, "ffn_gpus": f, "micro_batches": 2},
            "placement": placement}


def test_nvlink_keeps_each_replica_in_one_rack_and_rdma_splits_a_and_f():
    nv = deployment_from_dict(_doc("gb200-nvl72-2rack", _afd("nvlink")))
    rd = deployment_from_dict(_doc("gb200-nvl72-2rack", _afd("rdma", replicas=2)))
    packed = deployment_from_dict(_doc("gb200-nvl72-2rack", _afd("packed")))
    for dep in (nv, rd, packed):
        used = [g for reps in dep.placement().values() for r in reps for g in r]
        assert len(used) == len(set(used)) == 32 + dep.pools[1].num_gpus
    for replica in nv.placement()["decode"]:
        assert len(_domains(nv, replica)) == 1
    for replica in rd.placement()["decode"]:
        att, ffn = _domains(rd, replica[:16]), _domains(rd, replica[16:])
        assert len(att) == len(ffn) == 1 and att != ffn
    # packed: the second replica straddles the racks (GPUs 64-95), which nvlink avoids
    assert any(len(_domains(packed, r)) == 2 for r in packed.placement()["decode"])


def test_placements_that_cannot_be_met_are_errors_naming_the_field():
    # 32 prefill GPUs fill rack 0 to 40 free: a third 16A+16F replica has no second rack with room
    with pytest.raises(ConfigError, match=r"pools\.decode\.placement.*another scale-up domain"):
        deployment_from_dict(_doc("gb200-nvl72-2rack", _afd("rdma", replicas=3)))
    with pytest.raises(ConfigError, match=r"pools\.decode\.placement.*one scale-up domain"):
        deployment_from_dict(_doc("b200-hgx-16node", _afd("nvlink", replicas=1)))  # 32 GPUs > 8 per node
    with pytest.raises(ConfigError, match=r"placement.*no afd layout"):
        deployment_from_dict(_doc("b200-hgx-16node", {"replicas": 1, "parallel": {"tp": 8}, "placement": "rdma"}))
    with pytest.raises(ConfigError, match=r"placement.*expected one of"):
        deployment_from_dict(_doc("b200-hgx-16node", _afd("rack", replicas=1)))


def test_a_to_f_over_rdma_takes_longer_than_over_nvlink():
    kernels = KernelTables.load("gb200")
    times = {}
    for placement in ("nvlink", "rdma"):
        dep = deployment_from_dict(_doc("gb200-nvl72-2rack", _afd(placement, replicas=1, a=4, f=4)))
        pool = dep.pools[1]
        spec = dataclasses.replace(dep.step_spec(pool), batch_per_rank=64, prefix_tokens=4096)
        res = simulate_step(spec, kernels, dep.topology, "flow")
        times[placement] = res.step_time_s
    # Qwen3-30B A2F/F2A per layer: 64 x 2 micro-batches of 2,048-wide activations; 900 GB/s
    # NVLink against an 800 Gb/s NIC per GPU: the RDMA placement cannot be faster
    assert times["rdma"] > times["nvlink"]


def test_a_pool_routing_reaches_its_steps_and_bad_routing_names_the_field():
    from cosim.trace.expert_routing import DomainMixture

    dec = {"replicas": 1, "parallel": {"tp": 16, "ep": 16, "dp_attention": True},
           "routing": {"model": "domain_mixture:domains=4,overlap=0.3", "placement": "domain", "grouping": True}}
    dep = deployment_from_dict(_doc("b200-hgx-16node", dec))
    routing = dep.step_spec(dep.pools[1]).routing
    assert isinstance(routing.model, DomainMixture) and routing.model.domains == 4
    assert routing.placement == "domain" and routing.grouping
    bad = dict(dec, routing={"model": "domain_mixture", "placement": "nearest"})
    with pytest.raises(ConfigError, match=r"pools\[1\]\.routing\.placement|pools.*routing.*placement"):
        deployment_from_dict(_doc("b200-hgx-16node", bad))
    with pytest.raises(ConfigError, match=r"routing.*needs a routing model"):
        deployment_from_dict(_doc("b200-hgx-16node", dict(dec, routing={"placement": "domain"})))


def test_a_request_longer_than_a_ranks_kv_cache_makes_the_point_infeasible():
    from cosim.explore.evaluate import _kv_misfits
    from cosim.serving.deployment import pool_memory
    from cosim.serving.workload import generate_requests, preset

    doc = {"model": "Qwen/Qwen3-235B-A22B", "topology": "gb200-nvl72-2rack",
           "pools": [{"name": "prefill", "role": "prefill", "replicas": 4, "parallel": {"tp": 8, "ep": 8}},
                     {"name": "decode", "role": "decode", "replicas": 12,
                      "parallel": {"tp": 8, "ep": 8, "dp_attention": True}}]}
    dep = deployment_from_dict(doc)
    hbm = KernelTables.load("gb200").system.mem_capacity_bytes
    memory = [pool_memory(dep, p, hbm) for p in dep.pools]
    agentic = preset("agentic-coding")
    reqs = generate_requests(agentic, num_requests=8, seed=0)
    need = int((reqs.prefix_tokens + reqs.input_tokens + reqs.output_tokens).max())
    reasons = _kv_misfits(dep, memory, reqs)
    fits = {p.name: m.kv_capacity_tokens for p, m in zip(dep.pools, memory)}
    # the decode ranks hold every head of their requests (DP attention) next to 1/8 of the
    # experts: fewer tokens of a 94-layer, 4-KV-head model than the 532 k an agentic request reaches
    assert (need > fits["decode"]) == any("'decode'" in r for r in reasons)
    assert any("'decode'" in r for r in reasons)
    assert not any("'prefill'" in r for r in reasons)  # TP8 attention splits the KV heads
    assert _kv_misfits(dep, memory, generate_requests(preset("chat"), num_requests=8, seed=0)) == []
