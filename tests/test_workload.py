"""Workloads (cosim.serving.workload) and the prefix cache (cosim.serving.prefix_cache).

Sample statistics are checked against closed forms written here, for a fixed seed, within
4 standard errors (``4 * sd / sqrt(n)`` for a mean) unless stated otherwise.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from cosim.errors import ConfigError, CosimError
from cosim.serving.prefix_cache import PrefixCache, PrefixCacheError
from cosim.serving.workload import (
    ARRIVALS, DISTRIBUTIONS, PRESETS, SLO, ClosedLoop, Fixed, Gamma, LogNormal, Normal, Poisson,
    Requests, TraceArrival, Uniform, WorkloadSpec, Zipf, generate_requests, load_trace,
    load_workload, preset, workload_from_dict, workload_from_trace, write_trace,
)

REPO = Path(__file__).resolve().parent.parent
N = 200_000
RNG_SEED = 12345


def draw(dist, n=N, seed=RNG_SEED):
    return dist.sample(np.random.default_rng(seed), n)


def norm_cdf(z):
    return 0.5 * math.erfc(-z / math.sqrt(2))


def spec(**kw):
    base = dict(name="t", arrival=Poisson(rate_per_s=10.0), slo=SLO(ttft_s=0.05, tpot_s=0.015),
                prefix_tokens=Fixed(0), input_tokens=Fixed(100), output_tokens=Fixed(10))
    base.update(kw)
    return WorkloadSpec(**base)


# --- distributions ---------------------------------------------------------------------------


def test_registries_hold_the_documented_kinds():
    assert set(DISTRIBUTIONS) == {"fixed", "uniform", "normal", "lognormal", "zipf"}
    assert set(ARRIVALS) == {"poisson", "gamma", "closed_loop", "trace"}


def test_fixed_and_uniform_moments():
    assert (draw(Fixed(512)) == 512).all()
    x = draw(Uniform(100, 1000))
    assert x.dtype == np.int64 and x.min() == 100 and x.max() == 1000  # both ends included
    m = 1000 - 100 + 1
    sd = math.sqrt((m * m - 1) / 12)  # discrete uniform: 260.1
    assert abs(x.mean() - 550) < 4 * sd / math.sqrt(N)
    assert x.std() == pytest.approx(sd, rel=0.01)


def test_normal_moments_and_clipping():
    x = draw(Normal(1000, 200))
    assert abs(x.mean() - 1000) < 4 * 200 / math.sqrt(N)
    assert x.std() == pytest.approx(math.sqrt(200**2 + 1 / 12), rel=0.01)  # rounding adds 1/12
    # heavily clipped: E[max(X, m)] = m Phi(a) + mu (1 - Phi(a)) + s phi(a), a = (m - mu) / s
    mu, s, m = 100.0, 100.0, 50
    a = (m - mu) / s
    expect = m * norm_cdf(a) + mu * (1 - norm_cdf(a)) + s * math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    assert expect == pytest.approx(119.78, abs=0.01)  # the clipped mass moves the mean from 100 to 119.8
    d = Normal(mu, s, min_tokens=m)
    y = draw(d)
    assert y.min() == m
    assert abs(y.mean() - expect) < 4 * s / math.sqrt(N) + 0.05
    assert d.mean() == pytest.approx(expect, rel=1e-12)


def test_lognormal_median_and_mean_parameterizations():
    x = draw(LogNormal(sigma=0.5, median_tokens=512))
    mean = 512 * math.exp(0.5**2 / 2)  # 580.2
    sd = mean * math.sqrt(math.exp(0.5**2) - 1)
    assert abs(x.mean() - mean) < 4 * sd / math.sqrt(N)
    assert x.std() == pytest.approx(sd, rel=0.02)
    assert np.median(x) == pytest.approx(512, abs=3)
    y = draw(LogNormal(sigma=1.0, mean_tokens=1000))
    sd = 1000 * math.sqrt(math.e - 1)
    assert abs(y.mean() - 1000) < 4 * sd / math.sqrt(N)
    assert np.median(y) == pytest.approx(1000 / math.sqrt(math.e), rel=0.02)  # median = mean e^(-s^2/2)


def test_lognormal_clipped_mean():
    d = LogNormal(sigma=1.0, median_tokens=500, min_tokens=200, max_tokens=2000)
    x = draw(d)
    assert x.min() == 200 and x.max() == 2000
    # heavily clipped both sides (P(X<200) = 18 %, P(X>2000) = 8 %): closed form vs sampling
    assert norm_cdf(math.log(200 / 500)) == pytest.approx(0.18, abs=0.01)
    assert abs(x.mean() - d.mean()) < 4 * x.std() / math.sqrt(N) + 0.05
    assert d.mean() < 500 * math.exp(0.5)  # the unclipped mean, 824


def test_zipf_moments():
    a, kmax = 1.2, 1000
    x = draw(Zipf(a, kmax))
    k = np.arange(1, kmax + 1, dtype=float)
    p = k**-a / (k**-a).sum()
    mean, sd = (k * p).sum(), math.sqrt((k * k * p).sum() - (k * p).sum() ** 2)
    assert x.min() == 1 and x.max() <= kmax
    assert abs(x.mean() - mean) < 4 * sd / math.sqrt(N)
    assert (x == 1).mean() == pytest.approx(p[0], abs=4 * math.sqrt(p[0] * (1 - p[0]) / N))
    assert Zipf(a, kmax).mean() == pytest.approx(mean, rel=1e-12)
    u = draw(Zipf(0.0, 10))  # a = 0: uniform over 1..10
    assert abs(u.mean() - 5.5) < 4 * math.sqrt(99 / 12) / math.sqrt(N)


@pytest.mark.parametrize("dist, field", [
    (lambda: Uniform(10, 5), "uniform.high_tokens"),
    (lambda: Normal(-1, 5), "normal.mean_tokens"),
    (lambda: LogNormal(sigma=1.0), "lognormal.median_tokens"),
    (lambda: LogNormal(sigma=1.0, median_tokens=5, mean_tokens=6), "lognormal.median_tokens"),
    (lambda: Zipf(1.0, 0), "zipf.max_tokens"),
    (lambda: Fixed(1.5), "fixed.value_tokens"),
    (lambda: Poisson(0), "poisson.rate_per_s"),
    (lambda: Gamma(1.0, cv=0), "gamma.cv"),
    (lambda: ClosedLoop(0), "closed_loop.concurrency"),
    (lambda: SLO(0.05, -1), "slo.tpot_s"),
])
def test_bad_parameters_are_config_errors(dist, field):
    with pytest.raises(ConfigError) as e:
        dist()
    assert e.value.field == field and isinstance(e.value, CosimError)


# --- arrivals ---------------------------------------------------------------------------------


def test_poisson_interarrivals():
    r = generate_requests(spec(arrival=Poisson(rate_per_s=200.0)), num_requests=N, seed=3)
    gaps = np.diff(np.r_[0.0, r.arrival_s])
    assert abs(gaps.mean() - 1 / 200) < 4 * (1 / 200) / math.sqrt(N)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)
    s = r.summary()
    assert s.offered_rate_per_s == pytest.approx(200, rel=0.01) and s.interarrival_cv == pytest.approx(1, abs=0.02)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_interarrival_cv(cv):
    r = generate_requests(spec(arrival=Gamma(rate_per_s=50.0, cv=cv)), num_requests=N, seed=4)
    gaps = np.diff(np.r_[0.0, r.arrival_s])
    assert gaps.mean() == pytest.approx(1 / 50, rel=4 * cv / math.sqrt(N))
    # relative s.e. of a sample std ~ sqrt((2 + excess kurtosis 6 cv^2) / n) / 2: 0.6 % at cv 3
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.03)


def test_duration_counts_and_prefix_property():
    w = spec(arrival=Poisson(rate_per_s=100.0))
    r = generate_requests(w, duration_s=500.0, seed=1)
    assert abs(len(r) - 50_000) < 4 * math.sqrt(50_000)
    assert r.arrival_s[-1] < 500.0
    longer = generate_requests(w, num_requests=len(r) + 100, seed=1)
    for col, a in r.columns().items():  # a duration draw is the start of a longer draw
        assert np.array_equal(a, getattr(longer, col)[: len(r)]), col
    both = generate_requests(w, num_requests=10, duration_s=500.0, seed=1)
    assert np.array_equal(both.arrival_s, r.arrival_s[:10])


def test_closed_loop_has_no_timestamps():
    w = preset("chat").with_arrival(ClosedLoop(concurrency=16, think_time_s=0.5))
    r = generate_requests(w, num_requests=100)
    assert np.isnan(r.arrival_s).all() and not r.open_loop
    assert r.concurrency == 16 and r.think_time_s == 0.5
    assert math.isnan(r.summary().offered_rate_per_s)
    with pytest.raises(ConfigError, match="closed loop"):
        generate_requests(w, duration_s=10.0)


# --- generation -------------------------------------------------------------------------------


def test_determinism_and_seed():
    w = spec(prefix_tokens=LogNormal(sigma=1.0, median_tokens=1000), input_tokens=Uniform(1, 4000),
             output_tokens=Zipf(1.1, 2000), num_prefixes=50, prefix_zipf_a=0.8, arrival=Gamma(10.0, 2.0))
    a, b = generate_requests(w, num_requests=5000), generate_requests(w, num_requests=5000, seed=0)
    c = generate_requests(w, num_requests=5000, seed=1)
    for col in a.columns():
        assert np.array_equal(a.columns()[col], b.columns()[col]), col
    assert not np.array_equal(a.input_tokens, c.input_tokens)
    assert not a.input_tokens.flags.writeable  # frozen columns
    # one stream per column: changing the output distribution leaves the other columns alone
    d = generate_requests(spec(**{**vars_of(w), "output_tokens": Fixed(7)}), num_requests=5000)
    assert np.array_equal(a.input_tokens, d.input_tokens) and np.array_equal(a.arrival_s, d.arrival_s)


def vars_of(w):
    return {f: getattr(w, f) for f in ("name", "arrival", "slo", "prefix_tokens", "input_tokens",
                                       "output_tokens", "num_prefixes", "prefix_zipf_a")}


def test_shared_prefixes():
    k = 40
    w = spec(prefix_tokens=Uniform(1000, 9000), num_prefixes=k)
    r = generate_requests(w, num_requests=N)
    assert r.prefix_id.min() == 0 and r.prefix_id.max() == k - 1
    counts = np.bincount(r.prefix_id, minlength=k) / N
    assert np.abs(counts - 1 / k).max() < 4 * math.sqrt((1 / k) / N)  # uniform popularity
    for pid in range(k):  # one length per prefix id
        assert len(np.unique(r.prefix_tokens[r.prefix_id == pid])) == 1
    s = r.summary()
    assert s.distinct_prefixes == k and s.ideal_prefix_hit_rate == pytest.approx(1 - k / N)
    z = generate_requests(w.with_prefixes(1000, zipf_a=1.0), num_requests=N)
    h = (1.0 / np.arange(1, 1001)).sum()  # P(id 0) = 1 / H_1000 = 0.1336
    assert (z.prefix_id == 0).mean() == pytest.approx(1 / h, abs=4 * math.sqrt(0.1336 / N))
    none = generate_requests(preset("chat"), num_requests=10)
    assert (none.prefix_id == -1).all() and (none.prefix_tokens == 4096).all()


def test_presets():
    rows = {name: (p.prefix_tokens.value_tokens, p.input_tokens.value_tokens, p.output_tokens.value_tokens,
                   p.slo.ttft_s, p.slo.tpot_s) for name, p in PRESETS.items()}
    assert rows == {
        "chat": (4096, 512, 256, 0.050, 0.015),
        "coding": (2048, 4096, 1024, 0.100, 0.015),
        "agentic-coding": (524288, 256, 8192, 0.150, 0.015),
    }
    chat = preset("chat")
    assert chat.arrival == ClosedLoop(concurrency=1) and chat.num_prefixes == 0
    loaded = chat.with_arrival(Poisson(5.0))
    assert loaded.arrival == Poisson(5.0) and loaded.slo == chat.slo and hash(loaded) != hash(chat)
    with pytest.raises(ConfigError, match="presets: chat"):
        preset("chatty")


def test_spec_and_requests_validation():
    with pytest.raises(ConfigError, match="at least 1 output token") as e:
        spec(output_tokens=Uniform(0, 10))
    assert e.value.field == "output_tokens"
    with pytest.raises(ConfigError, match="at least 1 prompt token"):
        spec(input_tokens=Fixed(0))
    with pytest.raises(ConfigError, match="num_requests or duration_s"):
        generate_requests(spec())
    w = spec()
    good = dict(request_id=[0, 1], arrival_s=[0.0, 1.0], prefix_id=[-1, 3], prefix_tokens=[0, 10],
                input_tokens=[5, 5], output_tokens=[1, 2])
    assert len(Requests(**good, workload=w)) == 2
    for col, bad, msg in [("output_tokens", [1, 0], "at least 1 output"), ("input_tokens", [-1, 5], ">= 0"),
                          ("arrival_s", [1.0, 0.5], "non-decreasing"), ("prefix_id", [-2, 3], "prefix ids"),
                          ("request_id", [1, 1], "unique"), ("input_tokens", [5.0, 5.0], "integers")]:
        with pytest.raises(ConfigError, match=msg) as e:
            Requests(**{**good, col: bad}, workload=w)
        assert e.value.field == col
    with pytest.raises(ConfigError, match="one prefix id has one length"):
        Requests(**{**good, "prefix_id": [3, 3], "prefix_tokens": [10, 11]}, workload=w)
    with pytest.raises(ConfigError, match="NaN"):
        Requests(**good, workload=w.with_arrival(ClosedLoop(2)))


def test_million_requests_are_fast():
    w = preset("chat").with_arrival(Poisson(100.0)).with_prefixes(10_000, zipf_a=1.0)
    generate_requests(w, num_requests=1000)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        r = generate_requests(w, num_requests=1_000_000)
        best = min(best, time.perf_counter() - t)
    assert len(r) == 1_000_000 and best < 1.0, best  # measured about 0.1 s


# --- YAML ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_example_workload_file():
    path = REPO / "experiments" / "workloads" / "chat-poisson.yaml"
    w = load_workload(path)
    assert w.name == "chat-poisson" and w.arrival == Poisson(20.0)
    assert w.slo == SLO(0.050, 0.015) and w.prefix_tokens == Fixed(4096) and w.num_prefixes == 64
    assert w.input_tokens == LogNormal(sigma=0.6, median_tokens=512, max_tokens=8192)
    r = generate_requests(w, duration_s=60.0)
    assert r.summary().offered_rate_per_s == pytest.approx(20, rel=0.15)


def test_yaml_full_schema_and_preset_override(tmp_path):
    w = load_workload(write(tmp_path, """
name: mine
prefix_tokens: {kind: zipf, a: 1.1, max: 10000}
input_tokens: {kind: uniform, low: 10, high: 20}
output_tokens: {kind: normal, mean: 100, std: 10, min: 5}
num_prefixes: 8
prefix_zipf_a: 0.5
arrival: {kind: closed_loop, concurrency: 32, think_time: 200ms}
slo: {ttft: 1s, tpot: 20ms}
seed: 3
"""))
    assert w.arrival == ClosedLoop(32, 0.2) and w.slo == SLO(1.0, 0.02) and w.seed == 3
    assert w.output_tokens == Normal(100, 10, min_tokens=5) and w.prefix_tokens == Zipf(1.1, 10000)
    assert workload_from_dict(w.to_dict()) == w  # to_dict is the YAML document
    o = load_workload(write(tmp_path, "name: c\npreset: coding\narrival: {kind: gamma, rate: 600/min, cv: 2}\n"
                                      "slo: {ttft: 200ms}\n", "o.yaml"))
    assert o.arrival == Gamma(10.0, 2.0) and o.slo == SLO(0.2, 0.015)  # tpot kept from the preset
    assert o.input_tokens == Fixed(4096)
    assert load_workload("agentic-coding") is PRESETS["agentic-coding"]


@pytest.mark.parametrize("body, field, message", [
    ("preset: chat\ninput_tokns: 5", "input_tokns", "did you mean 'input_tokens'"),
    ("preset: chat\nseed: 0x10", "seed", "plain decimal only"),
    ("preset: chat\nseed: yes", "seed", "decimal integer"),
    ("preset: chat\nnum_prefixes: 4\nnum_prefixes: 5", "num_prefixes", "duplicate key"),
    ("preset: chat\narrival: {rate: 5}", "arrival.kind", "required field is missing"),
    ("preset: chat\narrival: {kind: poison, rate: 5}", "arrival.kind", "expected one of poisson"),
    ("preset: chat\narrival: {kind: poisson, rate: -5}", "arrival.rate", "must be > 0"),
    ("preset: chat\narrival: {kind: poisson, rate: fast}", "arrival.rate", "'20/s'"),
    ("preset: chat\narrival: {kind: closed_loop, concurrency: 4, think_time: 1}", "arrival.think_time", "unit"),
    ("preset: chat\noutput_tokens: {kind: lognormal, sigma: 1, median: 10, mean: 12}",
     "output_tokens.median", "exactly one"),
    ("preset: chat\noutput_tokens: {kind: uniform, low: 0, high: 4}", "output_tokens", "at least 1 output"),
    ("preset: chat\ninput_tokens: -3", "input_tokens", ">= 0"),
    ("preset: chat\ninput_tokens: 512.5", "input_tokens", "token count"),
    ("preset: chat\nslo: {ttft: 50ms, tpot: 15ms, itl: 5ms}", "slo.itl", "unknown key"),
    ("preset: chats", "preset", "expected one of chat"),
    ("input_tokens: 5\noutput_tokens: 5\nslo: {ttft: 1s, tpot: 1s}", "arrival", "required field is missing"),
    ("preset: chat\ntrace: missing.jsonl", "trace", "cannot read"),
])
def test_yaml_errors_name_file_and_field(tmp_path, body, field, message):
    path = write(tmp_path, "name: bad\n" + body + "\n")
    with pytest.raises(ConfigError) as e:
        load_workload(path)
    assert e.value.source == str(path) and e.value.field == field, str(e.value)
    assert message in e.value.message, str(e.value)


# --- JSONL traces -------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    w = spec(prefix_tokens=Uniform(0, 5000), input_tokens=LogNormal(sigma=1, median_tokens=300),
             output_tokens=Zipf(1.0, 500), num_prefixes=20, arrival=Gamma(30.0, 2.5))
    r = generate_requests(w, num_requests=2000, seed=9)
    write_trace(r, tmp_path / "t.jsonl")
    replay = generate_requests(workload_from_trace(tmp_path / "t.jsonl", w.slo))
    assert isinstance(replay.arrival, TraceArrival)
    for col in r.columns():
        assert np.array_equal(r.columns()[col], replay.columns()[col]), col
    # the same token counts under a closed loop, and the first k of them
    closed = generate_requests(workload_from_trace(tmp_path / "t.jsonl", w.slo, arrival=ClosedLoop(8)),
                               num_requests=100)
    assert np.array_equal(closed.input_tokens, r.input_tokens[:100]) and np.isnan(closed.arrival_s).all()
    # a YAML around the trace (relative path), arrivals up to a duration
    y = write(tmp_path, "name: tr\ntrace: t.jsonl\narrival: {kind: trace}\nslo: {ttft: 1s, tpot: 50ms}\n")
    cut = generate_requests(load_workload(y), duration_s=10.0)
    assert np.array_equal(cut.arrival_s, r.arrival_s[r.arrival_s < 10.0])
    assert load_workload(y) == load_workload(y) and hash(load_workload(y)) == hash(load_workload(y))


def test_jsonl_prefix_forms(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prefix_id": 4, "prefix_tokens": 100, "input_tokens": 5, "output_tokens": 1}\n\n'
                 '{"prefix_id": 4, "input_tokens": 6, "output_tokens": 2}\n'
                 '{"prefix_tokens": 70, "input_tokens": 0, "output_tokens": 3}\n')
    t = load_trace(p)
    assert t.prefix_id.tolist() == [4, 4, -1] and t.prefix_tokens.tolist() == [100, 100, 70]
    assert not t.has_timestamps
    with pytest.raises(ConfigError, match="no SLO"):
        load_workload(p)


@pytest.mark.parametrize("lines, where, message", [
    (['{"input_tokens": 5, "output_tokens": 1}', '{"input_tokens": 5'], "line 2", "not a JSON object"),
    (['[1, 2]'], "line 1", "expected a JSON object"),
    (['{"input_tokens": 5, "output_tokens": 1, "user": 3}'], "line 1, user", "unknown key"),
    (['{"input_tokens": 5.0, "output_tokens": 1}'], "line 1, input_tokens", "integer >= 0"),
    (['{"input_tokens": 5, "output_tokens": 0}'], "line 1, output_tokens", "integer >= 1"),
    (['{"input_tokens": 5}'], "line 1, output_tokens", "required field is missing"),
    (['{"input_tokens": 5, "output_tokens": true}'], "line 1, output_tokens", "integer >= 1"),
    (['{"arrival_s": 2, "input_tokens": 5, "output_tokens": 1}',
      '{"arrival_s": 1, "input_tokens": 5, "output_tokens": 1}'], "line 2, arrival_s", "time order"),
    (['{"arrival_s": 2, "input_tokens": 5, "output_tokens": 1}',
      '{"input_tokens": 5, "output_tokens": 1}'], "line 2, arrival_s", "every line or on none"),
    (['{"arrival_s": NaN, "input_tokens": 5, "output_tokens": 1}'], "line 1", "not a number"),
    (['{"prefix_id": 1, "input_tokens": 5, "output_tokens": 1}'], "line 1, prefix_tokens", "give its prefix_tokens"),
    (['{"prefix_id": 1, "prefix_tokens": 9, "input_tokens": 5, "output_tokens": 1}',
      '{"prefix_id": 1, "prefix_tokens": 8, "input_tokens": 5, "output_tokens": 1}'],
     "line 2, prefix_tokens", "(line 1)"),
    (['{"input_tokens": 0, "output_tokens": 1}'], "line 1, input_tokens", "at least 1 prompt token"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, lines, where, message):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_trace(p)
    assert e.value.source == str(p) and e.value.field == where, str(e.value)
    assert message in e.value.message, str(e.value)


def test_trace_arrival_needs_timestamps(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text(json.dumps({"input_tokens": 5, "output_tokens": 1}) + "\n")
    with pytest.raises(ConfigError, match="needs arrival_s"):
        WorkloadSpec(name="x", arrival=TraceArrival(), slo=SLO(1, 1), trace=load_trace(p))
    with pytest.raises(ConfigError, match="has 1 requests"):
        generate_requests(workload_from_trace(p, SLO(1, 1)), num_requests=2)


# --- prefix cache -------------------------------------------------------------------------------


def test_lru_order_on_a_hand_made_sequence():
    c = PrefixCache(capacity_tokens=300)
    assert [c.lookup(p, 100) for p in (1, 2, 3)] == [0, 0, 0]
    assert c.lru_order() == [1, 2, 3]
    assert c.lookup(1, 100, now_s=5.0) == 100 and c.lru_order() == [2, 3, 1]  # 1 becomes most recent
    assert c.lookup(4, 100) == 0 and c.lru_order() == [3, 1, 4]  # 2 was least recently used
    assert c.lookup(2, 100, now_s=7.0) == 0 and c.lru_order() == [1, 4, 2]  # 3 evicted
    assert c.last_access_s(1) == 5.0 and c.last_access_s(2) == 7.0
    assert c.lookup(5, 200) == 0 and c.lru_order() == [2, 5]     # a 200-token prefix evicts two
    assert c.lookup(6, 301) == 0 and c.lru_order() == [2, 5]     # larger than the capacity: never cached
    s = c.stats()
    assert (s.lookups, s.hits, s.evictions, s.bypasses, s.used_tokens) == (8, 1, 4, 1, 300)
    assert s.hit_rate == pytest.approx(1 / 8) and s.hit_tokens == 100
    assert s.token_hit_rate == pytest.approx(100 / 1101)  # 3x100 + 100 + 100 + 100 + 200 + 301 looked up
    with pytest.raises(PrefixCacheError, match="one prefix id has one length"):
        c.lookup(5, 150)


def test_pins_protect_in_flight_prefixes():
    c = PrefixCache(capacity_tokens=200)
    c.lookup(1, 100)
    c.lookup(2, 100)
    assert c.pin(1) and not c.pin(9)
    c.lookup(3, 100)  # 1 is the LRU but pinned: 2 goes
    assert c.lru_order() == [1, 3]
    assert c.pin(3)
    assert c.lookup(4, 100) == 0 and 4 not in c and c.rejections == 1  # no unpinned room
    c.unpin(1)
    c.lookup(4, 100)
    assert c.lru_order() == [3, 4]
    with pytest.raises(PrefixCacheError, match="not pinned"):
        c.unpin(1)


@pytest.mark.parametrize("num_prefixes", [10, 20, 40, 80, 160])
def test_hit_rate_is_capacity_over_prefixes_under_uniform_access(num_prefixes):
    slots, tokens = 10, 4096
    c = PrefixCache(capacity_tokens=slots * tokens)
    ids = np.random.default_rng(num_prefixes).integers(0, num_prefixes, size=100_000)
    for pid in ids[:5000]:  # warm up
        c.lookup(int(pid), tokens)
    h0, l0 = c.hits, c.lookups
    for t, pid in enumerate(ids[5000:]):
        c.lookup(int(pid), tokens, now_s=float(t))
    rate = (c.hits - h0) / (c.lookups - l0)
    expect = min(1.0, slots / num_prefixes)
    assert rate == pytest.approx(expect, abs=0.01 if expect < 1 else 1e-12)


def test_generated_workload_hit_rate_falls_as_prefixes_compete():
    rates = []
    for k in (8, 32, 128):
        r = generate_requests(preset("chat").with_prefixes(k, zipf_a=0.0), num_requests=20_000)
        c = PrefixCache(capacity_tokens=16 * 4096)
        for pid, tok in zip(r.prefix_id.tolist(), r.prefix_tokens.tolist()):
            c.lookup(pid, tok)
        rates.append(c.hit_rate)
    assert rates[0] == pytest.approx(1 - 8 / 20_000)      # all 8 fit: only the first touches miss
    assert rates[1] == pytest.approx(16 / 32, abs=0.015)
    assert rates[2] == pytest.approx(16 / 128, abs=0.015)
