"""Attention-FFN disaggregation (AFD) step layout: the ping-pong pipeline against its closed form
(MegaScale-Infer), traffic conservation, placement and per-group results."""

import dataclasses

import numpy as np
import pytest

from cosim.engine.overheads import CommOverheads, LibraryOverhead
from cosim.engine.step import simulate_step
from cosim.errors import ConfigError
from cosim.kernels.tables import Duration
from cosim.models import Parallelism, Precision, load_model
from cosim.ops import AttentionOp, MoeOp
from cosim.trace.builder import AfdSpec, StepSpec, build_step_trace

from conftest import backend_param, star

ZERO = LibraryOverhead(0.0)
NO_OVERHEADS = CommOverheads(nccl=ZERO, deepep_normal=ZERO, deepep_ll=ZERO, p2p=ZERO)


class FixedKernels:
    """Synthetic op times: ``t_a`` for an attention kernel, ``t_f`` for routed experts, 0 else."""

    def __init__(self, t_a: float, t_f: float):
        self.t_a, self.t_f = t_a, t_f

    def duration(self, op):
        if isinstance(op, AttentionOp):
            return Duration(self.t_a, "measured", "synthetic")
        if isinstance(op, MoeOp):
            return Duration(self.t_f, "measured", "synthetic")
        return Duration(0.0, "measured", "synthetic")


@pytest.fixture(scope="module")
def qwen():
    return load_model("Qwen/Qwen3-30B-A3B")  # every layer MoE, no shared expert: identical layers


def afd_step(model, n_a, n_f, m, batch=32, **afd):
    return StepSpec(model, Parallelism(tp=1), Precision(), "generation", batch, prefix_tokens=1024,
                    layout="afd", afd=AfdSpec(n_a, n_f, micro_batches=m, **afd))


def _run(model, m, t_a, t_f, backend, bandwidth="400Gbps", batch=32):
    topo = star(6, bandwidth=bandwidth, latency="1us")
    res = simulate_step(afd_step(model, 2, 4, m, batch), FixedKernels(t_a, t_f), topo, backend,
                        overheads=NO_OVERHEADS)
    colls = res.trace.collectives
    a2f = max(res.collective_duration_s[c.id] for c in colls if c.op == "a2f")
    f2a = max(res.collective_duration_s[c.id] for c in colls if c.op == "f2a")
    return res, a2f, f2a


def closed_form(t_a, t_f, a2f, f2a, m, layers):
    return (t_a + t_f + a2f + f2a) + max(t_a, t_f) * (m * layers - 1)


@backend_param()
@pytest.mark.parametrize("t_a,t_f", [(40e-6, 60e-6), (60e-6, 40e-6)])
def test_ping_pong_matches_the_megascale_closed_form(qwen, backend, t_a, t_f):
    layers = qwen.num_layers
    for m in (3, 4):
        res, a2f, f2a = _run(qwen, m, t_a, t_f, backend)
        t_c = max(a2f, f2a)
        assert m >= 2 * (1 + t_c / max(t_a, t_f))  # the regime the closed form is for
        assert res.step_time_s == pytest.approx(closed_form(t_a, t_f, a2f, f2a, m, layers), rel=0.02)
        # communication hidden on the bottleneck group
        busy = res.groups["ffn" if t_f >= t_a else "attention"]
        assert sum(busy.exposed_comm_by_collective_s.values()) < 0.02 * res.step_time_s


@backend_param()
def test_one_micro_batch_is_the_serial_sum(qwen, backend):
    t_a, t_f = 40e-6, 60e-6
    res, a2f, f2a = _run(qwen, 1, t_a, t_f, backend)
    assert res.step_time_s == pytest.approx(qwen.num_layers * (t_a + t_f + a2f + f2a), rel=0.02)


def test_communication_is_exposed_below_the_bound(qwen):
    """On a slow network (T_c ~ T_f) two micro-batches are below 2(1 + T_c/T_f): the pipeline
    is slower than the closed form and the attention group waits on the transfers."""
    t_a, t_f = 40e-6, 60e-6
    res, a2f, f2a = _run(qwen, 2, t_a, t_f, "flow", bandwidth="25Gbps", batch=64)
    t_c = max(a2f, f2a)
    assert 2 < 2 * (1 + t_c / t_f)
    assert res.step_time_s > 1.05 * closed_form(t_a, t_f, a2f, f2a, 2, qwen.num_layers)
    exposed = res.groups["attention"].exposed_comm_by_collective_s
    assert exposed["a2f"] + exposed["f2a"] > 0.1 * res.step_time_s
    for g in res.groups.values():  # concurrent A2F and F2A share the waiting time, never count it twice
        assert sum(g.exposed_comm_by_collective_s.values()) <= g.idle_s + 1e-9
    more, a2f4, f2a4 = _run(qwen, 4, t_a, t_f, "flow", bandwidth="25Gbps", batch=64)
    assert more.step_time_s < res.step_time_s  # more micro-batches hide more


def test_routed_a2f_conserves_tokens_and_f2a_mirrors_it(qwen):
    spec = afd_step(qwen, 3, 5, 2, batch=40)
    trace = build_step_trace(spec, FixedKernels(1e-6, 1e-6))
    a2f = [c for c in trace.collectives if c.op == "a2f"]
    f2a = [c for c in trace.collectives if c.op == "f2a"]
    assert len(a2f) == len(f2a) == qwen.num_layers * 2
    c = a2f[0]
    assert c.bytes_matrix.shape == (3, 5) and c.num_senders == 3 and c.ranks == tuple(range(8))
    moe = qwen.moe
    per_token = qwen.hidden_size + qwen.hidden_size // 128 * 4 + 8 * moe.top_k   # fp8 + scales + top-k
    tokens = c.bytes_matrix / per_token
    # every token reaches between 1 and min(top_k, EP) FFN ranks; 20 tokens per sender and micro-batch
    assert np.all(tokens.sum(axis=1) >= 20 - 1e-6) and np.all(tokens.sum(axis=1) <= 20 * min(moe.top_k, 5) + 1e-6)
    back = f2a[0].bytes_matrix / (2 * qwen.hidden_size)
    assert np.allclose(back, tokens.T, atol=1.0)


def test_broadcast_sends_every_token_to_every_ffn_rank(qwen):
    spec = afd_step(qwen, 2, 4, 2, batch=16, a2f="broadcast", ffn_tp=2)
    trace = build_step_trace(spec, FixedKernels(1e-6, 1e-6))
    c = next(c for c in trace.collectives if c.op == "a2f")
    per_token = qwen.hidden_size + qwen.hidden_size // 128 * 4
    assert np.all(c.bytes_matrix == 8 * per_token)
    assert any(c.op == "reduce_scatter" for c in trace.collectives)
    f = next(c for c in trace.collectives if c.op == "f2a")
    assert f.bytes_matrix.sum() == pytest.approx(2 * 8 * 2 * qwen.hidden_size, rel=1e-3)  # each token back once


def test_any_ratio_and_placement(qwen):
    topo = star(72)
    k = FixedKernels(10e-6, 10e-6)
    for n_a, n_f in ((1, 63), (36, 4)):
        res = simulate_step(afd_step(qwen, n_a, n_f, 2, batch=4), k, topo, "flow")
        assert set(res.groups) == {"attention", "ffn"} and len(res.groups["ffn"].ranks) == n_f
    gpus = tuple(range(40, 44)) + tuple(range(60, 64))
    res = simulate_step(dataclasses.replace(afd_step(qwen, 4, 4, 2, batch=8), gpus=gpus), k, topo, "flow")
    used = {topo.describe_link(int(d)) for d in np.nonzero(res.link_tx_bytes)[0]}
    expected = {f"gpu{g} -> switch" for g in gpus} | {f"switch -> gpu{g}" for g in gpus}
    assert used == expected  # traffic on exactly the placed GPUs' links
    with pytest.raises(ConfigError, match="GPU rank 80 does not exist"):
        simulate_step(dataclasses.replace(afd_step(qwen, 4, 4, 2, batch=8), gpus=gpus[:-1] + (80,)), k, topo)
    with pytest.raises(ConfigError, match="needs 8 GPUs, 7 given"):
        dataclasses.replace(afd_step(qwen, 4, 4, 2, batch=8), gpus=gpus[:-1])


def test_afd_spec_errors(qwen):
    with pytest.raises(ConfigError, match="ffn_tp = 1"):
        AfdSpec(2, 4, a2f="routed", ffn_tp=2)
    with pytest.raises(ConfigError, match="micro-batches need at least"):
        build_step_trace(afd_step(qwen, 2, 4, 8, batch=4), FixedKernels(1e-6, 1e-6))
    with pytest.raises(ConfigError, match="layout 'afd' needs"):
        StepSpec(qwen, Parallelism(tp=1), Precision(), "generation", 4, layout="afd")


def test_afd_trace_round_trips_with_placement_groups_and_streams(qwen, tmp_path):
    from cosim.trace.chakra import export_chakra, read_chakra
    from cosim.trace.serialize import read_step_trace, write_step_trace

    spec = dataclasses.replace(afd_step(qwen, 2, 4, 2, batch=8), gpus=(10, 11, 20, 21, 22, 23))
    trace = build_step_trace(spec, FixedKernels(1e-6, 2e-6))
    write_step_trace(trace, tmp_path / "step.pb")
    back = read_step_trace(tmp_path / "step.pb")
    assert back.gpus == (10, 11, 20, 21, 22, 23) and back.groups == {"attention": (0, 1), "ffn": (2, 3, 4, 5)}
    assert [n.stream for n in back.ranks[0].nodes if hasattr(n, "stream")] == \
        [n.stream for n in trace.ranks[0].nodes if hasattr(n, "stream")]
    assert {c.op for c in back.collectives} == {c.op for c in trace.collectives} >= {"a2f", "f2a"}
    from cosim.trace.chakra_check import check_chakra

    assert len(export_chakra(trace, tmp_path / "default")) == 6
    assert check_chakra(tmp_path / "default") == []  # the default export: ASTRA-sim's rules hold
    files = export_chakra(trace, tmp_path / "et", alltoallv="collective")  # one node per A2F / F2A
    assert len(files) == 6
    _, nodes = read_chakra(files[0])  # attention rank: A2F and F2A each ordered on their own stream
    comm = [n for n in nodes if n.name.endswith(("a2f", "f2a"))]
    assert len(comm) == 2 * 2 * qwen.num_layers
    by_id = {n.id: n for n in nodes}
    for n in comm:
        kind = n.name.rsplit(".", 1)[-1]
        assert all(by_id[c].name.rsplit(".", 1)[-1] == kind for c in n.ctrl_deps if c in by_id
                   and by_id[c].name.endswith(("a2f", "f2a")))
