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
