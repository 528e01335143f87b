"""Expert routing models (reproducible, imbalance as documented), statistics against closed
forms, routing traces and load counts written and read back."""

import json

import numpy as np
import pytest

from cosim.errors import ConfigError
from cosim.trace.expert_routing import (
    DEFAULT_SKEW, ROUTING_MODELS, LoadCounts, RoutingTraceError, imbalance, layer_loads, model_trace,
    read_load_counts, read_routing_trace, routing_model, write_load_counts, write_routing_trace,
)

E, K = 256, 8


def tokens(n, request=0):
    return np.full(n, request, dtype=np.int64)


def test_every_model_is_reproducible_and_picks_distinct_experts():
    for kind in ROUTING_MODELS:
        m = routing_model(kind)
        a = m.sample(E, K, 3, requests=tokens(512), seed=7)
        assert a.shape == (512, K) and (np.diff(a, axis=1) > 0).all()  # sorted, distinct
        assert np.array_equal(a, m.sample(E, K, 3, requests=tokens(512), seed=7))
        assert not np.array_equal(a, m.sample(E, K, 3, requests=tokens(512), seed=8))
    with pytest.raises(ConfigError, match="unknown routing model 'zipf'"):
        routing_model("zipf")
    with pytest.raises(ConfigError, match="routing.overlap"):
        routing_model("domain_mixture", overlap=1.5)


def test_imbalance_statistics_closed_forms():
    s = imbalance([5, 5, 5, 5])
    assert (s.max_over_mean, s.cv, s.gini) == pytest.approx((1.0, 0.0, 0.0))
    n = 8
    one_hot = imbalance([0] * (n - 1) + [3])
    assert one_hot.max_over_mean == pytest.approx(n) and one_hot.gini == pytest.approx(1 - 1 / n)
    assert imbalance([1, 3]).gini == pytest.approx(0.25) and imbalance([1, 3]).cv == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        imbalance([1, -1])


def test_power_law_gini_follows_its_popularity_and_the_default_is_realistic():
    ginis = []
    for skew in (0.2, DEFAULT_SKEW, 0.8):
        m = routing_model("power_law", skew=skew)
        sampled = imbalance(layer_loads(m.sample(E, K, 0, requests=tokens(16384)), E)).gini
        exact = imbalance(m.popularity(0, 0, E)).gini
        assert abs(sampled - exact) < 0.03, (skew, sampled, exact)
        ginis.append(sampled)
    assert ginis == sorted(ginis)
    assert 0.24 < ginis[1] < 0.32  # the default sits just above the published MLA figure
    uniform = imbalance(layer_loads(routing_model("uniform").sample(E, K, 0, requests=tokens(16384)), E)).gini
    assert uniform < 0.05  # sampling noise only
    # the hot experts differ between layers
    p0, p1 = (routing_model("power_law").popularity(layer, 0, E) for layer in (0, 1))
    assert len(set(np.argsort(-p0)[:16]) & set(np.argsort(-p1)[:16])) < 8


def test_domain_overlap_controls_the_shared_hot_set():
    shared = []
    for overlap in (0.0, 0.5, 1.0):
        m = routing_model("domain_mixture", domains=4, overlap=overlap, skew=1.0)
        hot = [set(np.argsort(-m.popularity(0, d, E))[:32]) for d in range(4)]
        shared.append(np.mean([len(hot[0] & hot[d]) for d in range(1, 4)]))
    assert shared[0] < shared[1] < shared[2] == 32
    with pytest.raises(ConfigError, match="domain"):
        routing_model("domain_mixture", domains=2).sample(E, K, 0, requests=tokens(4), domains=[0, 1, 2, 0])


def test_request_affinity_correlates_prefill_and_decode_routing():
    def similarity(affinity):
        m = routing_model("request_affinity", affinity=affinity)
        sims = []
        for r in range(16):
            pre = layer_loads(m.sample(E, K, 0, requests=tokens(256, r), stream=0), E).astype(float)
            dec = layer_loads(m.sample(E, K, 0, requests=tokens(256, r), stream=1), E).astype(float)
            sims.append(pre @ dec / np.linalg.norm(pre) / np.linalg.norm(dec))
        return float(np.mean(sims))

    s0, s1, s2 = similarity(0.0), similarity(1.0), similarity(2.0)
    assert s0 < s1 < s2


def test_node_limited_routing_keeps_each_token_on_at_most_m_nodes():
    node = np.arange(E) * 8 // E  # 8 nodes of 32 experts
    m = routing_model("uniform", max_nodes=4)
    ch = m.sample(E, K, 0, requests=tokens(2000), expert_node=node)
    assert max(len(set(node[row])) for row in ch) <= 4
    free = routing_model("uniform").sample(E, K, 0, requests=tokens(2000))
    assert max(len(set(node[row])) for row in free) > 4
    with pytest.raises(ConfigError, match="max_nodes"):
        m.sample(E, K, 0, requests=tokens(4))


def test_routing_trace_round_trip_and_its_load_counts(tmp_path):
    m = routing_model("request_affinity", affinity=1.5)
    trace = model_trace(m, E, K, layers=[3, 4, 5], requests=[10, 11, 12], prefill_tokens=[40, 8, 16],
                        decode_tokens=[5, 5, 5], domains=[0, 1, 0], seed=3)
    assert len(trace) == 3 * (64 + 15)
    back = read_routing_trace(write_routing_trace(trace, tmp_path / "r.parquet"))
    for col in ("request", "domain", "layer", "token", "experts"):
        assert np.array_equal(getattr(back, col), getattr(trace, col))
    assert list(back.phase) == list(trace.phase) and back.num_experts == E
    assert np.array_equal(back.choices(4, "decode"), trace.choices(4, "decode"))
    loads = trace.loads()
    assert loads.layers == (3, 4, 5) and (loads.counts.sum(axis=1) == 79 * K).all()
    for name in ("l.parquet", "l.csv"):
        again = read_load_counts(write_load_counts(loads, tmp_path / name))
        assert again.layers == loads.layers and np.array_equal(again.counts, loads.counts)
    (tmp_path / "sglang.json").write_text(json.dumps({"logical_count": loads.counts.tolist()}))
    js = read_load_counts(tmp_path / "sglang.json")
    assert js.layers == (0, 1, 2) and np.array_equal(js.counts, loads.counts)
    assert js.popularity(1).sum() == pytest.approx(1.0)


def test_bad_trace_and_count_files_are_clear_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"request": [0], "layer": [0]}), tmp_path / "a.parquet")
    with pytest.raises(RoutingTraceError, match="missing column"):
        read_routing_trace(tmp_path / "a.parquet")
    pq.write_table(pa.table({"request": [0], "domain": [0], "phase": ["decode"], "layer": [0], "token": [0],
                             "experts": [[1, 1]]}), tmp_path / "b.parquet")
    with pytest.raises(RoutingTraceError, match="same expert twice"):
        read_routing_trace(tmp_path / "b.parquet")
    pq.write_table(pa.table({"request": [0], "domain": [0], "phase": ["verify"], "layer": [0], "token": [0],
                             "experts": [[1, 2]]}), tmp_path / "c.parquet")
    with pytest.raises(RoutingTraceError, match="phase"):
        read_routing_trace(tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(RoutingTraceError, match="not a readable"):
        read_routing_trace(tmp_path / "d.parquet")
    (tmp_path / "e.json").write_text('{"counts": []}')
    with pytest.raises(RoutingTraceError, match="logical_count"):
        read_load_counts(tmp_path / "e.json")
    with pytest.raises(RoutingTraceError, match=".parquet or .csv"):
        write_load_counts(LoadCounts((0,), np.ones((1, 4), dtype=np.int64)), tmp_path / "x.txt")


def test_a_routing_trace_written_read_and_replayed_gives_the_models_step_time(tmp_path):
    """A step routed by a model (each MoE layer its own draw) and the same step replaying the
    trace of that routing, written to Parquet and read back, take the same time."""
    import dataclasses

    from cosim.engine.step import simulate_step
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec
    from cosim.trace.expert_routing import StepRouting, step_routing_trace

    model = load_model("Qwen/Qwen3-30B-A3B")
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    topo = load_topology("h200-hgx-node")
    routing = StepRouting(model=routing_model("power_law", skew=0.8), seed=5)
    spec = StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision.from_checkpoint(model, dispatch="fp8"),
                    "generation", 32, prefix_tokens=2048, routing=routing)
    by_model = simulate_step(spec, kernels, topo)
    moe_layers = [layer.index for layer in model.layers if layer.ffn == "moe"]
    trace = step_routing_trace(routing, moe_layers, sources=8, tokens=32, num_experts=model.moe.num_experts,
                               top_k=model.moe.top_k)
    path = write_routing_trace(trace, tmp_path / "step.parquet")
    replay = simulate_step(dataclasses.replace(spec, routing=StepRouting.from_trace(path)), kernels, topo)
    assert replay.step_time_s == by_model.step_time_s
    assert np.array_equal(replay.link_tx_bytes, by_model.link_tx_bytes)
    # the layers differ (their own draws), and the skewed routing makes stragglers uniform routing has not
    uniform = simulate_step(dataclasses.replace(spec, routing=None), kernels, topo)
    assert by_model.network_simulations > uniform.network_simulations
    assert by_model.expert_imbalance()[0] > uniform.expert_imbalance()[0]
    with pytest.raises(ConfigError, match="not both"):
        StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), Precision(), "generation", 4, routing=routing,
                 routing_skew=1.0)


def test_cosim_step_routing_options(tmp_path, capsys):
    """``cosim step --routing MODEL`` and ``--routing-trace FILE`` of that model's trace agree."""
    from cosim.cli.main import main
    from cosim.models import load_model
    from cosim.trace.expert_routing import StepRouting, parse_routing, step_routing_trace

    model = load_model("Qwen/Qwen3-30B-A3B")
    layers = [layer.index for layer in model.layers if layer.ffn == "moe"]
    trace = step_routing_trace(StepRouting(model=parse_routing("power_law:skew=0.6")), layers, 8, 16,
                               model.moe.num_experts, model.moe.top_k)
    write_routing_trace(trace, tmp_path / "t.parquet")
    base = ["step", "-m", "Qwen/Qwen3-30B-A3B", "-t", "h200-hgx-node", "--tp", "8", "--dp-attention", "--batch", "16",
            "--context", "1024"]
    assert main(base + ["--routing", "power_law:skew=0.6", "--json", str(tmp_path / "a.json")]) == 0
    assert main(base + ["--routing-trace", str(tmp_path / "t.parquet"), "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text())["step_time_s"] for f in ("a.json", "b.json"))
    assert a == b
    assert main(base + ["--routing", "power_law:skew"]) == 2
    assert "param=value" in capsys.readouterr().out


def test_moe_traffic_splits_the_exchanged_bytes_by_node():
    """``moe_traffic``: on one node nothing crosses; EP16 over two nodes with uniform routing
    sends about 8/15 of each rank's bytes to the other node (8 of its 15 peers), and the intra +
    inter bytes of every layer add up to its collectives' matrices; a skewed routing model moves
    the straggler factor."""
    import dataclasses

    from cosim.engine.step import simulate_step
    from cosim.engine.summary import moe_traffic, moe_traffic_summary
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec
    from cosim.trace.expert_routing import StepRouting

    model = load_model("Qwen/Qwen3-30B-A3B")
    kernels = KernelTables.load("h200_sxm", framework="trtllm")
    prec = Precision.from_checkpoint(model, dispatch="fp8")
    one = simulate_step(StepSpec(model, Parallelism(tp=8, ep=8, dp_attention=True), prec, "generation", 16,
                                 prefix_tokens=1024), kernels, load_topology("h200-hgx-node"))
    assert all(t.inter_bytes == 0 and t.intra_bytes > 0 for t in moe_traffic(one))
    spec = StepSpec(model, Parallelism(tp=16, ep=16, dp_attention=True), prec, "generation", 64, prefix_tokens=1024)
    two = simulate_step(spec, kernels, load_topology("h200-hgx-2node"))
    layers = moe_traffic(two)
    assert {t.op for t in layers} == {"dispatch", "combine"} and len(layers) == 2 * model.num_layers
    total = sum(float(np.asarray(c.bytes_matrix).sum()) for c in two.trace.collectives if c.op in ("dispatch", "combine"))
    assert sum(t.intra_bytes + t.inter_bytes for t in layers) == pytest.approx(total)
    assert all(abs(t.inter_fraction - 8 / 15) < 0.04 for t in layers)
    skewed = simulate_step(dataclasses.replace(spec, routing=StepRouting(model=routing_model("power_law", skew=1.0))),
                           kernels, load_topology("h200-hgx-2node"))
    assert moe_traffic_summary(skewed)["straggler_factor"] > moe_traffic_summary(two)["straggler_factor"] + 0.2
    # EPLB replicas of each layer's hot experts (one slot more per rank) take most of that back
    eplb = simulate_step(dataclasses.replace(spec, parallel=Parallelism(tp=16, ep=16, dp_attention=True,
                                                                         redundant_experts=16),
                                             redundant_experts=16,
                                             routing=StepRouting(model=routing_model("power_law", skew=1.0),
                                                                 placement="eplb")),
                         kernels, load_topology("h200-hgx-2node"))
    s_two, s_skew, s_eplb = (moe_traffic_summary(r)["straggler_factor"] for r in (two, skewed, eplb))
    assert s_eplb < s_skew - 0.5 * (s_skew - s_two)
    assert eplb.step_time_s < skewed.step_time_s


def test_placement_policies_keep_experts_per_rank_and_do_what_they_say():
    """Every policy keeps the contiguous number of experts per rank; ``balanced`` evens the rank
    loads; ``domain`` puts each domain's hot experts on its node; with grouping, domain
    placement keeps more of the tokens on their node than contiguous placement."""
    from cosim.trace.expert_routing import StepRouting
    from cosim.trace.moe_traffic import counts_from_choices
    from cosim.trace.placement import PLACEMENTS, LayerStats, place

    dm = routing_model("domain_mixture", domains=2, overlap=0.0, skew=1.0)
    ids = np.arange(4096)
    ch = dm.sample(E, K, 0, requests=ids, domains=ids % 2)
    stats = LayerStats.of(ch, ids % 2, E, 2)
    rank_node = np.repeat([0, 1], 8)  # EP16 on two nodes
    loads = {}
    for name in PLACEMENTS:
        owner = place(name, stats, 16, rank_node)
        assert (np.bincount(owner, minlength=16) == E // 16).all()
        loads[name] = np.bincount(owner, weights=stats.loads, minlength=16)
    assert imbalance(loads["balanced"]).max_over_mean < imbalance(loads["contiguous"]).max_over_mean
    dom_owner = place("domain", stats, 16, rank_node)
    hot0 = np.argsort(-stats.domain_loads[0])[:32]
    assert (rank_node[dom_owner[hot0]] == 0).mean() > 0.75  # most of domain 0's hot experts on node 0 (half by chance)

    def inter_fraction(placement, grouping):
        r = StepRouting(model=dm, placement=placement, grouping=grouping)
        owner = r.owner(0, E, K, 16, tuple(rank_node))
        choices = r.choices(0, 16, 64, E, K, source_node=tuple(rank_node))
        c = counts_from_choices(choices, E, 16, node_of=rank_node, owner=owner)
        same = rank_node[:, None] == rank_node[None, :]
        sel = np.asarray(c.selections)
        return sel[~same].sum() / sel.sum()

    assert inter_fraction("domain", True) < inter_fraction("contiguous", True) - 0.2
    assert inter_fraction("contiguous", False) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ConfigError, match="grouping"):
        StepRouting(model=routing_model("power_law"), grouping=True)
    with pytest.raises(ConfigError, match="placement"):
        StepRouting(model=routing_model("power_law"), placement="magic")


def test_node_domains_and_rank_domains_cover_every_domain():
    """Nodes >= domains: one domain per node, each domain on its share of the nodes; fewer nodes:
    each node hosts several and its ranks take them in turn; every domain has a home rank."""
    from cosim.trace.placement import node_domains, rank_domains

    assert node_domains(8, 4) == [(0,), (1,), (2,), (3,), (0,), (1,), (2,), (3,)]
    assert node_domains(2, 4) == [(0, 2), (1, 3)]
    assert node_domains(1, 3) == [(0, 1, 2)]
    assert rank_domains(np.repeat([0, 1], 4), 4).tolist() == [0, 2, 0, 2, 1, 3, 1, 3]
    for nodes, domains in ((8, 4), (3, 4), (5, 2), (1, 1)):
        rd = rank_domains(np.repeat(np.arange(nodes), 8), domains)
        assert set(rd.tolist()) == set(range(domains))


def test_grouping_purity_mixes_a_ranks_tokens_between_home_and_other_domains():
    """``grouping_purity`` p: the share of a rank's tokens in its home domain is p (within
    sampling noise); p = 1 is full grouping; p = 1/D makes grouping no better than none."""
    from cosim.trace.expert_routing import StepRouting, _grouped_domains
    from cosim.trace.placement import rank_domains

    dm = routing_model("domain_mixture", domains=4, overlap=0.3)
    node = tuple(np.repeat(np.arange(8), 8).tolist())
    home = np.repeat(rank_domains(node, 4), 512)
    for p in (1.0, 0.7, 0.25):
        r = StepRouting(model=dm, grouping=True, grouping_purity=p)
        d = _grouped_domains(r, 4, node, 512, 0)
        assert (d == home).mean() == pytest.approx(p, abs=0.01)
        if p < 1:  # the rest spread evenly over the other domains
            away = np.bincount(((d - home) % 4)[d != home], minlength=4)[1:]
            assert away.min() / away.max() > 0.9
    with pytest.raises(ConfigError, match="grouping_purity"):
        StepRouting(model=dm, grouping=True, grouping_purity=1.5)

    def inter(p):
        from cosim.trace.moe_traffic import counts_from_choices
        r = StepRouting(model=dm, placement="domain", grouping=True, grouping_purity=p)
        rank_node = np.asarray(node)
        c = counts_from_choices(r.choices(0, 64, 32, E, K, source_node=node), E, 64, node_of=rank_node,
                                owner=r.owner(0, E, K, 64, node))
        sel = np.asarray(c.selections)
        return sel[rank_node[:, None] != rank_node[None, :]].sum() / sel.sum()

    assert inter(1.0) < inter(0.7) < inter(0.25)


def test_eplb_replicas_from_a_routing_model_balance_the_ranks_and_conserve_selections():
    """EPLB with a routing model: the hottest experts get replicas, every selection lands on a
    replica of its expert (conservation: tokens x top-k), and the max/mean rank load drops
    below contiguous placement's; other placements with redundant slots are refused."""
    from cosim.models import Parallelism, Precision, load_model
    from cosim.trace.builder import StepSpec
    from cosim.trace.expert_routing import StepRouting
    from cosim.trace.moe_traffic import counts_from_choices

    pl = routing_model("power_law", skew=1.0)
    r = StepRouting(model=pl, placement="eplb")
    rep = r.replicas(0, E, K, 16, 16)
    assert rep.num_slots == E + 16 and max(rep.replicas) > 1
    slots = np.zeros(16, dtype=int)
    for row, k in zip(rep.replica_ranks, rep.replicas):
        for rk in row[:k]:
            slots[rk] += 1
    assert (slots == (E + 16) // 16).all()
    node = np.repeat([0, 1], 8)
    choices = r.choices(0, 16, 256, E, K)
    eplb = counts_from_choices(choices, E, 16, node_of=node, replicas=rep, seed=(0, 0, 0))
    cont = counts_from_choices(choices, E, 16, node_of=node)
    assert np.asarray(eplb.selections).sum() == 16 * 256 * K
    load = lambda c: np.asarray(c.selections).sum(axis=0)
    assert imbalance(load(eplb)).max_over_mean < imbalance(load(cont)).max_over_mean - 0.3
    model = load_model("Qwen/Qwen3-30B-A3B")
    par = Parallelism(tp=16, ep=16, dp_attention=True, redundant_experts=16)
    with pytest.raises(ConfigError, match="eplb"):
        StepSpec(model, par, Precision.from_checkpoint(model), "generation", 8, redundant_experts=16,
                 routing=StepRouting(model=pl, placement="balanced"))
    with pytest.raises(ConfigError, match="eplb"):
        StepRouting(model=pl, placement="domain").replicas(0, E, K, 16, 16)
