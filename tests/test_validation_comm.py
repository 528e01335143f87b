"""Communication validation (cosim.validation.comm, cosim.engine.overheads).

The data-dependent test re-simulates a subsample of aiconfigurator-core's measured h200_sxm NCCL
and DeepEP rows (flow backend, a few seconds) and asserts the errors reported in
docs/validation-comm.md, with a little headroom, under both protocols: strict (single-node
constants only) and calibrated (plus the RDMA link efficiency and the DeepEP cross-node terms
fitted on the 2-node rows; the 4- and 8-node rows are held out). The other systems are in
tests/test_validation_comm_systems.py. The issue's target (median absolute error <= 15 % on the
multi-node DeepEP rows) is met by the calibrated protocol overall and per table except EP64
normal-mode dispatch; the strict protocol misses it. The comments say which.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pd = pytest.importorskip("pandas")  # comes with aiconfigurator-core

from cosim.engine.overheads import DEFAULT_OVERHEADS, CommOverheads, LibraryOverhead
from cosim.errors import ConfigError
from cosim.network.packet_backend import engine_available

try:
    import aiconfigurator_core  # noqa: F401
    HAVE_AIC = True
except ImportError:
    HAVE_AIC = False

needs_aic = pytest.mark.skipif(not HAVE_AIC, reason="aiconfigurator-core (measured tables) not installed")

QUICK_NCCL_BYTES = (4096, 1 << 20, 64 << 20)
QUICK_TOKENS = (1, 2, 16, 128, 256, 1024, 16384)

# Median |error| bounds (%) on the quick subsample with DEFAULT_OVERHEADS. Measured values
# (docs/validation-comm.md, quick subsample) in comments.
SINGLE_NODE_BOUNDS = {  # in-sample
    ("nccl", "all_gather"): 7,        # 4.6
    ("nccl", "all_reduce"): 9,        # 6.7
    ("nccl", "all_to_all"): 14,       # 11.4
    ("nccl", "reduce_scatter"): 7,    # 4.9
    ("custom_allreduce", "all_reduce"): 8,  # 5.2 (9 quick rows; 5.3 on all 69)
    ("deepep_normal", "dispatch"): 10,  # 7.6
    ("deepep_normal", "combine"): 12,   # 10.0
    ("deepep_ll", "dispatch"): 9,       # 7.4
    ("deepep_ll", "combine"): 8,        # 6.1
}
MULTI_NODE_BOUNDS = {  # calibrated protocol (DEFAULT_OVERHEADS): 2 nodes in sample, 4 and 8 held out
    ("deepep_normal", "dispatch", 2): 14,   # 11.2
    ("deepep_normal", "dispatch", 4): 16,   # 13.5
    ("deepep_normal", "dispatch", 8): 48,   # 45.7  missed: measured EP64 dispatch 2.6x slower than its traffic
    ("deepep_normal", "combine", 2): 11,    # 8.4
    ("deepep_normal", "combine", 4): 8,     # 4.8
    ("deepep_normal", "combine", 8): 11,    # 8.7
    ("deepep_ll", "dispatch", 2): 4,        # 1.7
    ("deepep_ll", "dispatch", 4): 6,        # 3.1
    ("deepep_ll", "dispatch", 8): 6,        # 3.4
    ("deepep_ll", "combine", 2): 5,         # 2.9
    ("deepep_ll", "combine", 4): 4,         # 2.1
    ("deepep_ll", "combine", 8): 9,         # 6.6
}
STRICT_MULTI_NODE_BOUNDS = {  # strict protocol (single-node constants only): all out of sample
    ("deepep_normal", "dispatch", 2): 13,   # 10.1
    ("deepep_normal", "dispatch", 4): 22,   # 18.7  cross-node fixed cost missing (small token counts)
    ("deepep_normal", "dispatch", 8): 52,   # 49.2
    ("deepep_normal", "combine", 2): 25,    # 22.0
    ("deepep_normal", "combine", 4): 27,    # 24.0
    ("deepep_normal", "combine", 8): 31,    # 28.2
    ("deepep_ll", "dispatch", 2): 24,       # 21.1
    ("deepep_ll", "dispatch", 4): 27,       # 24.2
    ("deepep_ll", "dispatch", 8): 29,       # 25.8
    ("deepep_ll", "combine", 2): 26,        # 23.7
    ("deepep_ll", "combine", 4): 26,        # 22.9
    ("deepep_ll", "combine", 8): 23,        # 20.1
}


# ---------------------------------------------------------------------- no data needed


def test_library_overhead_models():
    plain = LibraryOverhead(10e-6, 0.5)
    assert plain.duration_s(100e-6) == pytest.approx(210e-6)
    assert plain.duration_s(100e-6, gpu_bytes=1e9) == pytest.approx(210e-6)  # no rate: plain model
    rate = LibraryOverhead(10e-6, 0.5, kernel_rate_bytes_per_s=100e9)
    assert rate.duration_s(100e-6) == pytest.approx(210e-6)                  # no bytes: plain fallback
    assert rate.duration_s(100e-6, gpu_bytes=20e6) == pytest.approx(210e-6)  # kernel-bound: 200 us
    assert rate.duration_s(100e-6, gpu_bytes=5e6) == pytest.approx(110e-6)   # network-bound, no penalty
    for bad in (dict(fixed_s=-1.0), dict(fixed_s=0.0, bandwidth_efficiency=0.0),
                dict(fixed_s=0.0, kernel_rate_bytes_per_s=-5.0)):
        with pytest.raises(ConfigError):
            LibraryOverhead(**bad)


def test_comm_overheads_lookup_and_defaults():
    o = CommOverheads(nccl=LibraryOverhead(1e-6), deepep_normal=LibraryOverhead(2e-6),
                      deepep_ll=LibraryOverhead(3e-6), p2p=LibraryOverhead(4e-6),
                      ops={"nccl.all_reduce": LibraryOverhead(5e-6)})
    assert o.duration_s("nccl", 0.0) == pytest.approx(1e-6)
    assert o.duration_s("nccl", 0.0, op="all_reduce") == pytest.approx(5e-6)
    assert o.duration_s("nccl", 0.0, op="all_gather") == pytest.approx(1e-6)  # falls back to the library
    assert o.duration_s("p2p", 1e-6) == pytest.approx(5e-6)
    with pytest.raises(ConfigError):
        o.duration_s("mpi", 0.0)
    with pytest.raises(ConfigError):
        CommOverheads(o.nccl, o.deepep_normal, o.deepep_ll, o.p2p, ops={"all_reduce": LibraryOverhead(0.0)})
    with pytest.raises(TypeError):
        o.ops["nccl.x"] = LibraryOverhead(0.0)  # read-only mapping
    # The fitted defaults are physical: microseconds of fixed cost, efficiencies below 1, the
    # SM-bound DeepEP normal-mode rate below NVLink4's line rate, link efficiencies in (0.5, 1).
    for lib in ("nccl", "deepep_normal", "deepep_ll", "p2p"):
        x = DEFAULT_OVERHEADS.overhead(lib)
        assert 1e-6 < x.fixed_s < 50e-6 and 0.3 < x.bandwidth_efficiency <= 1.0
    for op in ("dispatch", "combine"):
        assert 100e9 < DEFAULT_OVERHEADS.overhead("deepep_normal", op).kernel_rate_bytes_per_s < 450e9
        assert DEFAULT_OVERHEADS.overhead("deepep_ll", op).kernel_rate_bytes_per_s is None  # link-relative
    assert 0.5 < DEFAULT_OVERHEADS.links.nvlink < 0.9 and 0.85 < DEFAULT_OVERHEADS.links.rdma <= 1.0
    # The link constants are not stored with the kernel-side ones; overhead() applies them.
    assert DEFAULT_OVERHEADS.ops["nccl.all_reduce"].link_efficiency == 1.0
    assert DEFAULT_OVERHEADS.overhead("nccl", "all_reduce").link_efficiency == DEFAULT_OVERHEADS.links.nvlink


def test_routing_expectation_matches_closed_form_and_sampling():
    from cosim.trace.moe_traffic import expected_dispatch_tokens
    from cosim.validation import comm as V

    # Uniform routing, per-rank dedup: the closed form shared with the step engine.
    c = V.routing_counts(1000, 256, 8, 16)
    assert c.tokens[0, 1] == pytest.approx(expected_dispatch_tokens(1000, 256, 8, 16))
    assert c.selections.sum(axis=1) == pytest.approx(np.full(16, 8000.0))
    # Per-node dedup on 2 nodes: almost every token needs the other node once.
    assert c.node_tokens[0, 1] / 1000 == pytest.approx(1 - math.comb(128, 8) / math.comb(256, 8))
    # Node-limited routing (DeepEP's internode test on 8 nodes): tokens reach at most 4 nodes,
    # and in practice all 4.
    p_rank, p_node = V.hit_probabilities(256, 8, 64, topk_nodes=4)
    assert 8 * p_node == pytest.approx(4.0, rel=0.02)
    s = V.sampled_routing_counts(512, 256, 8, 64, topk_nodes=4)
    assert ((s.node_tokens > 0).sum(axis=1) <= 8).all() and s.node_tokens.sum(axis=1).max() <= 4 * 512
    assert s.node_tokens.mean() / 512 == pytest.approx(p_node, rel=0.03)
    assert s.tokens.mean() / 512 == pytest.approx(p_rank, rel=0.05)
    # Masked selections (DeepEP's low-latency test) thin the traffic.
    m = V.sampled_routing_counts(2, 256, 8, 16, selections=5)
    assert m.selections.sum(axis=1) == pytest.approx(np.full(16, 5.0))


def test_deepep_traffic_volumes():
    from cosim.validation import comm as V

    row = pd.Series(dict(table="deepep_normal", op="dispatch", node_num=2, num_gpus=16, hidden=7168, topk=8,
                         num_experts=256, num_tokens=1024))
    c = V.routing_counts(1024, 256, 8, 16)
    per_token = 7168 + 7168 // 128 * 4
    fs = V.deepep_normal_flows(row)
    tags = np.array(fs.tags)
    size = np.array(fs.size_bytes, dtype=float)
    src, dst = np.array(fs.src), np.array(fs.dst)
    # RDMA: one copy per (source, remote node), to the same local index on the other node.
    rdma = tags == "rdma"
    assert size[rdma].sum() == pytest.approx(16 * c.node_tokens[0, 1] * per_token, rel=1e-6)
    assert (src[rdma] % 8 == dst[rdma] % 8).all() and (src[rdma] // 8 != dst[rdma] // 8).all()
    # NVLink: direct intra-node pairs plus forwarding inside the destination node.
    assert size[tags == "nvl_direct"].sum() == pytest.approx(16 * 7 * c.tokens[0, 1] * per_token, rel=1e-6)
    assert size[tags == "nvl_forward"].sum() == pytest.approx(16 * 7 * c.tokens[0, 1] * per_token, rel=1e-6)
    assert (src[~rdma] // 8 == dst[~rdma] // 8).all()
    # Combine moves bf16 the other way over the same structure.
    comb = V.deepep_normal_flows(row.copy().replace({"dispatch": "combine"}))
    assert sum(comb.size_bytes) == pytest.approx(sum(fs.size_bytes) * 2 * 7168 / per_token, rel=1e-6)
    # Low latency: no dedup, every remote selection once, spread over one QP per local expert.
    ll = pd.Series(dict(table="deepep_ll", op="dispatch", node_num=2, num_gpus=16, hidden=7168, topk=8,
                        num_experts=256, num_tokens=64, selections=500))
    fl = V.deepep_ll_flows(ll)
    assert sum(fl.size_bytes) == pytest.approx(16 * 500 * 15 / 16 * (7168 + 224 + 16), rel=1e-4)
    assert max(fl.path_keys) == 256 // 16 - 1
    # The per-rank variant (all-to-all-v over PXN) sends 3.3x more bytes across nodes.
    var = V.deepep_normal_flows(row, variant="per_rank")
    vsrc, vdst, vsize = np.array(var.src), np.array(var.dst), np.array(var.size_bytes, dtype=float)
    cross = vsize[vsrc // 8 != vdst // 8].sum()
    assert cross / size[rdma].sum() == pytest.approx(8 * c.tokens[0, 1] / c.node_tokens[0, 1], rel=1e-6)
    assert cross / size[rdma].sum() > 3.2


def test_fit_recovers_known_constants_and_refuses_multi_node():
    from cosim.validation import comm as V

    net = np.geomspace(1e-6, 1e-2, 40)
    gb = net * 450e9
    rows = pd.DataFrame(dict(table="deepep_ll", op="dispatch", node_num=1, network_s=net, gpu_bytes=gb,
                             measured_s=12e-6 + np.maximum(net, gb / 250e9)))
    o = V.fit_kernel_rate(rows)
    assert o.fixed_s == pytest.approx(12e-6, rel=1e-3) and o.kernel_rate_bytes_per_s == pytest.approx(250e9, rel=1e-3)
    plain = rows.assign(measured_s=5e-6 + net / 0.7)
    p = V.fit_plain(plain)
    assert p.fixed_s == pytest.approx(5e-6, rel=1e-3) and p.bandwidth_efficiency == pytest.approx(0.7, rel=1e-3)
    with pytest.raises(ValueError, match="single-node"):
        V.fit_overheads(rows.assign(node_num=2))


def test_cross_node_fit_recovers_known_terms_and_refuses_other_node_counts():
    from cosim.validation import comm as V

    base = LibraryOverhead(10e-6, 0.6, 250e9)
    overheads = CommOverheads(LibraryOverhead(5e-6), base, base, LibraryOverhead(5e-6))
    net = np.geomspace(2e-6, 5e-4, 30)
    rf = 8 / 15
    truth = dataclasses.replace(base, cross_node_fixed_s=20e-6, rdma_efficiency=0.9)
    rows = pd.DataFrame(dict(table="deepep_ll", op="dispatch", node_num=2, network_s=net, gpu_bytes=net * 50e9,
                             remote_fraction=rf))
    rows["measured_s"] = [truth.duration_s(n, g, rf) for n, g in zip(rows.network_s, rows.gpu_bytes)]
    fitted = V.fit_cross_node(rows, overheads)
    o = fitted.overhead("deepep_ll", "dispatch")
    assert o.cross_node_fixed_s == pytest.approx(20e-6, abs=0.3e-6)
    # The low-latency rows give the RDMA link efficiency (shared by every library), not a
    # kernel-side factor of the library.
    assert fitted.links.rdma == pytest.approx(0.9, abs=0.005) and o.rdma_efficiency == 1.0
    assert o.rdma_link_efficiency == fitted.links.rdma
    assert o.fixed_s == base.fixed_s  # the single-node constants are not refitted
    assert V.strip_cross_node(fitted).links.rdma == 1.0
    with pytest.raises(ValueError, match="2-node"):
        V.fit_cross_node(rows.assign(node_num=4), overheads)


def test_custom_allreduce_fit_recovers_the_two_fixed_costs_and_picks_the_faster_algorithm():
    from cosim.engine.overheads import custom_allreduce_choice
    from cosim.validation import comm as V

    size = np.geomspace(256, 1 << 30, 40)
    one, two = size * 7 / 450e9, size * 2 * 7 / 8 / 450e9  # one-shot sends 7x, two-shot 1.75x
    truth_one, truth_two = LibraryOverhead(2e-6, 0.75), LibraryOverhead(18e-6, 0.75)
    measured = np.minimum([truth_one.duration_s(x) for x in one], [truth_two.duration_s(x) for x in two])
    rows = pd.DataFrame(dict(measured_s=measured, network_one_shot_s=one, network_two_shot_s=two))
    fits = V.fit_custom_allreduce(rows, eta=0.75)  # one-/two-shot fill the achievable link
    a, b = fits["one_shot"], fits["two_shot"]
    assert a.fixed_s == pytest.approx(2e-6, abs=0.1e-6) and b.fixed_s == pytest.approx(18e-6, abs=0.34e-6)
    assert a.bandwidth_efficiency == 1.0 and "nvls" not in fits
    a, b = dataclasses.replace(a, bandwidth_efficiency=0.75), dataclasses.replace(b, bandwidth_efficiency=0.75)
    o = CommOverheads(LibraryOverhead(5e-6), a, a, a, ops={"custom_allreduce.one_shot": a,
                                                           "custom_allreduce.two_shot": b}, custom_allreduce=a)
    assert custom_allreduce_choice(o, {"one_shot": one[0], "two_shot": two[0]}) == "one_shot"    # 256 B
    assert custom_allreduce_choice(o, {"one_shot": one[-1], "two_shot": two[-1]}) == "two_shot"  # 1 GiB


def test_remote_fraction_and_cross_node_terms():
    from cosim.engine.overheads import remote_fraction

    assert remote_fraction([0] * 8) == 0.0
    assert remote_fraction([0]) == 0.0
    assert remote_fraction([0] * 8 + [1] * 8) == pytest.approx(8 / 15)
    assert remote_fraction([i // 8 for i in range(64)]) == pytest.approx(56 / 63)
    assert remote_fraction([0, 0, 0, 1]) == pytest.approx((1 + 1 + 1 + 3) / 12)  # unequal nodes
    o = LibraryOverhead(10e-6, 0.5, 100e9, cross_node_fixed_s=20e-6, rdma_efficiency=0.8)
    # Within a node the cross-node terms are inert; across nodes fixed and network time grow.
    assert o.duration_s(40e-6, 1e6) == pytest.approx(10e-6 + 40e-6)
    assert o.duration_s(40e-6, 1e6, 0.5) == pytest.approx(10e-6 + 10e-6 + 50e-6)
    assert o.duration_s(1e-6, 1e7, 0.5) == pytest.approx(20e-6 + 100e-6)  # kernel rate still bounds
    for bad in (dict(cross_node_fixed_s=-1e-6), dict(rdma_efficiency=0.0), dict(rdma_efficiency=1.5)):
        with pytest.raises(ConfigError):
            LibraryOverhead(1e-6, **bad)
    with pytest.raises(ValueError):
        o.duration_s(1e-6, None, 1.5)


# ---------------------------------------------------------------------- measured tables


@pytest.fixture(scope="module")
def quick():
    from cosim.validation import comm as V

    rows = V.subsample(V.load_rows(), QUICK_NCCL_BYTES, QUICK_TOKENS)
    sim = V.simulate_rows(rows, "flow")
    return sim, V.predict(sim, DEFAULT_OVERHEADS)


@needs_aic
def test_rows_are_measured_and_complete():
    from cosim.validation import comm as V

    rows = V.load_rows()
    nccl = rows[rows.table == "nccl"]
    assert set(nccl.num_gpus) == {2, 4, 8} and (nccl.node_num == 1).all()  # never an extrapolated row
    assert len(nccl) == 4 * 2 * 3 * 21
    normal = rows[rows.table == "deepep_normal"]
    assert sorted(set(normal.node_num)) == [1, 2, 4, 8]
    assert (normal[normal.node_num > 1].version == "0.5.6.post2").all()
    assert (normal[normal.node_num == 1].version == "0.5.12").all()
    assert ((normal.hidden == 7168) & (normal.topk == 8) & (normal.num_experts == 256))[normal.node_num > 1].all()
    ll = rows[rows.table == "deepep_ll"]
    assert sorted(set(ll.node_num)) == [1, 2, 4, 8]
    assert ((ll.num_experts % ll.num_gpus) == 0).all()
    assert (rows.measured_s > 0).all()


@needs_aic
def test_errors_within_stated_bounds(quick):
    from cosim.validation import comm as V

    _, pred = quick
    summary = V.error_summary(pred)
    seen = set()
    for r in summary.itertuples(index=False):
        if r.node_num == 1:
            bound = SINGLE_NODE_BOUNDS[(r.table, r.op)]
        else:
            bound = MULTI_NODE_BOUNDS[(r.table, r.op, r.node_num)]
        seen.add((r.table, r.op, r.node_num))
        assert r.median_abs_pct <= bound, (r.table, r.op, r.node_num, r.median_abs_pct, bound)
    assert len(seen) == len(SINGLE_NODE_BOUNDS) + len(MULTI_NODE_BOUNDS)
    multi = pred[pred.node_num > 1]
    assert multi.error_pct.abs().median() <= 7                             # 5.3: the 15 % target
    assert multi[multi.node_num > 2].error_pct.abs().median() <= 8         # 6.4 on the held-out node counts
    # NCCL picks a protocol per size: LL (flags, twice the bytes) for small buffers, Simple for
    # large ones, NVLS (in-switch reduction) for large all-reduces on 8 GPUs.
    nccl = pred[(pred.table == "nccl") & (pred.num_gpus == 8) & (pred.op == "all_reduce")]
    assert (nccl[nccl.message_bytes >= 64 << 20].algorithm == "nvls").all()
    assert (nccl[nccl.message_bytes <= 4096].algorithm == "").all()


@needs_aic
def test_strict_protocol_errors_within_stated_bounds(quick):
    """Single-node constants only: what the network simulation alone explains across nodes."""
    from cosim.validation import comm as V

    sim, _ = quick
    strict = V.predict(sim, V.strip_cross_node(DEFAULT_OVERHEADS))
    for r in V.error_summary(strict[strict.node_num > 1]).itertuples(index=False):
        bound = STRICT_MULTI_NODE_BOUNDS[(r.table, r.op, r.node_num)]
        assert r.median_abs_pct <= bound, (r.table, r.op, r.node_num, r.median_abs_pct, bound)
    # Too fast at small token counts: the cross-node fixed cost is what single-node rows cannot show.
    small = strict[(strict.node_num > 1) & (strict.table == "deepep_ll") & (strict.num_tokens <= 16)]
    assert (small.error_pct < 0).all()


@needs_aic
def test_cross_node_terms_refit_on_two_node_rows_are_stable(quick):
    from cosim.validation import comm as V

    sim, _ = quick
    base = V.strip_cross_node(DEFAULT_OVERHEADS)
    o = V.fit_cross_node(V.predict(sim[sim.node_num == 2], base), base)
    for op in ("dispatch", "combine"):  # low-latency: 8 quick rows per op reproduce the 26-row fit
        a, b = o.overhead("deepep_ll", op), DEFAULT_OVERHEADS.overhead("deepep_ll", op)
        assert a.cross_node_fixed_s == pytest.approx(b.cross_node_fixed_s, abs=2.5e-6)
        assert a.rdma_efficiency == pytest.approx(b.rdma_efficiency, abs=0.02)
    assert o.nccl == DEFAULT_OVERHEADS.nccl  # NCCL has no cross-node data: untouched


@needs_aic
def test_refit_on_subsample_is_stable(quick):
    from cosim.validation import comm as V

    sim, _ = quick
    o = V.fit_overheads(sim[sim.node_num == 1], V.normal_sm_rows(sim))
    assert o.links.nvlink == pytest.approx(DEFAULT_OVERHEADS.links.nvlink, abs=0.05)  # 0.734 vs 0.694
    for lib, op in (("deepep_normal", "dispatch"), ("deepep_normal", "combine"), ("deepep_ll", "dispatch"),
                    ("deepep_ll", "combine")):
        a, b = o.overhead(lib, op), DEFAULT_OVERHEADS.overhead(lib, op)
        assert a.fixed_s == pytest.approx(b.fixed_s, rel=0.1)
        if lib == "deepep_normal":  # SM-bound rate: 6 % lower on the subsample
            assert a.kernel_rate_bytes_per_s == pytest.approx(b.kernel_rate_bytes_per_s, rel=0.1)
        else:  # link-relative: the product with the link efficiency is what the rows fix
            assert a.bandwidth_efficiency * o.links.nvlink == pytest.approx(
                b.bandwidth_efficiency * DEFAULT_OVERHEADS.links.nvlink, rel=0.05)


@needs_aic
@pytest.mark.skipif(not engine_available(), reason="native ns-3 engine not built")
def test_packet_backend_agrees_on_multi_node_rows():
    from cosim.validation import comm as V

    rows = V.load_rows(shapes="dsv3")
    sub = rows[(rows.node_num == 2) & (rows.num_tokens == 256) & (rows.table != "nccl")
               & (rows.num_experts == 256) & (rows.op == "dispatch")]
    assert len(sub) == 2
    flow = V.simulate_rows(sub, "flow")
    packet = V.simulate_rows(sub, "packet")
    assert np.allclose(packet.network_s, flow.network_s, rtol=0.08)
