"""Flows at scale: columnar flow sets built as arrays, and the compiled flow-level event loop with
incremental max-min re-solves, against the per-flow Python builders and the Python event loop."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.errors import FlowError
from cosim.network import FlowSet, simulate
from cosim.network import collectives as C
from cosim.network import flow_backend as FB
from cosim.network.flows import route_flows
from cosim.topology import Router, topology_from_dict

from conftest import star

needs_loop = pytest.mark.skipif(FB._native_simulate_flows is None, reason="compiled flow loop not built")


def columns(fs: FlowSet) -> dict:
    return {"src": fs.src.tolist(), "dst": fs.dst.tolist(), "size": fs.size_bytes.tolist(),
            "start": fs.earliest_start_s.tolist(), "key": fs.path_keys.tolist(), "tags": list(fs.tags),
            "deps": list(fs.deps), "sent": list(fs.sent_deps)}


# ------------------------------------------------------------------ reference builders (per flow)

def reference_rotated(fs, senders, receivers, m, pairs, after, tag, channels):
    flows = []
    for i, j in pairs:
        size = int(m[i, j])
        if size == 0 or senders[i] == receivers[j]:
            continue
        for c, part in enumerate(C._split(size, channels)):
            if part:
                flows.append(fs.add(senders[i], receivers[j], part, after=after, tag=tag, path_key=c))
    return flows


def reference_ring(fs, ranks, size_bytes, phases, chunk_bytes, after, tag):
    n = len(ranks)
    segments = C._split(int(size_bytes), n)
    chunks_per_segment = [C._split(s, C._num_chunks(s, chunk_bytes)) for s in segments]
    max_chunks = max(len(c) for c in chunks_per_segment)
    prev = [[None] * max_chunks for _ in range(n)]
    flows, step = [], 0
    for phase in phases:
        for s in range(n - 1):
            current = [[None] * max_chunks for _ in range(n)]
            for i in range(n):
                seg = (i - s) % n if phase == "rs" else (i + 1 - s) % n
                last_on_link = None
                for c, chunk in enumerate(chunks_per_segment[seg]):
                    deps = list(after) if step == 0 else []
                    if prev[i][c] is not None:
                        deps.append(prev[i][c])
                    f = fs.add(ranks[i], ranks[(i + 1) % n], chunk, after=deps, tag=f"{tag}:{phase}{s}",
                               after_sent=[last_on_link] if last_on_link is not None else [])
                    flows.append(f)
                    current[(i + 1) % n][c] = f
                    last_on_link = f
            prev = current
            step += 1
    return flows, [f for row in prev for f in row if f is not None]


def with_prefix(fs: FlowSet) -> list[int]:
    """Two flows before the collective, so it has something to wait for."""
    return [fs.add(0, 1, 1000, tag="pre"), fs.add(2, 3, 0, earliest_start_s=1e-6, tag="pre")]


@pytest.mark.parametrize("channels", [1, 3])
def test_all_to_all_v_block_equals_the_per_flow_builder(channels):
    rng = np.random.default_rng(0)
    n = 7
    m = rng.integers(0, 5000, size=(n, n))
    m[rng.random((n, n)) < 0.3] = 0
    m[1, 2] = 2  # fewer bytes than channels: empty channels are skipped
    ranks = [3, 0, 6, 1, 5, 2, 4]
    fs, ref = FlowSet(), FlowSet()
    after, ref_after = with_prefix(fs), with_prefix(ref)
    coll = C.all_to_all_v(fs, ranks, m, after=after, tag="a2a", channels=channels)
    flows = reference_rotated(ref, ranks, ranks, m, ((i, (i + k) % n) for k in range(1, n) for i in range(n)),
                              ref_after, "a2a", channels)
    assert columns(fs) == columns(ref)
    assert list(coll.flows) == flows and list(coll.last) == flows


def test_bipartite_block_equals_the_per_flow_builder():
    rng = np.random.default_rng(1)
    senders, receivers = [0, 1, 2], [3, 4, 1, 5]
    m = rng.integers(0, 3000, size=(3, 4)).astype(float) + 0.7  # bipartite takes floats (truncated)
    fs, ref = FlowSet(), FlowSet()
    coll = C.bipartite(fs, senders, receivers, m, tag="a2f", channels=2)
    flows = reference_rotated(ref, senders, receivers, m, ((i, (i + k) % 4) for k in range(4) for i in range(3)),
                              [], "a2f", 2)
    assert columns(fs) == columns(ref) and list(coll.flows) == flows


@pytest.mark.parametrize("n,size,chunk", [(2, 5 << 20, 1 << 20), (3, (5 << 20) + 3, 1 << 20), (5, 7, 2),
                                          (8, 64 << 20, 1 << 20), (4, 1000, None)])
@pytest.mark.parametrize("phases", [("rs", "ag"), ("ag",), ("rs",)])
def test_ring_blocks_equal_the_per_flow_builder(n, size, chunk, phases):
    ranks = list(range(n))[::-1]
    fs, ref = FlowSet(), FlowSet()
    after, ref_after = with_prefix(fs), with_prefix(ref)
    coll = C._ring(fs, ranks, size, phases, chunk, after, "ar")
    flows, last = reference_ring(ref, ranks, size, phases, chunk, ref_after, "ar")
    assert columns(fs) == columns(ref)
    assert list(coll.flows) == flows and list(coll.last) == last


def test_add_many_checks_like_add():
    fs = FlowSet()
    fs.add(0, 1, 10)
    with pytest.raises(FlowError, match="flow 3: src and dst are both GPU 2"):
        fs.add_many([0, 1, 2], [1, 2, 2], [5, 5, 5])
    with pytest.raises(FlowError, match="flow 2: size_bytes must be a non-negative integer, got -1"):
        fs.add_many([0, 1], [1, 2], [5, -1])
    with pytest.raises(FlowError, match="size_bytes must be a non-negative integer"):
        fs.add_many([0], [1], [1.5])
    with pytest.raises(FlowError, match="dependency 4 must be the index of an earlier flow"):
        fs.add_many([0], [1], [5], after=[4])
    with pytest.raises(FlowError, match="earliest_start_s"):
        fs.add_many([0], [1], [5], earliest_start_s=float("nan"))
    with pytest.raises(FlowError, match="flow 2: dependency 2 must be the index of an earlier flow"):
        fs.add_many([0, 1], [1, 2], [5, 5], deps=(np.array([0, 0, 1]), np.array([2])))
    assert len(fs) == 1  # nothing was added by the failed calls
    block = fs.add_many(np.array([0, 1]), 3, 7, after=[0], tag="x", path_key=[4, 5])
    assert block == range(1, 3) and fs[2].deps == (0,) and fs[2].path_key == 5 and fs[2].tag == "x"
    assert "x" in fs.tags and "y" not in fs.tags and np.array(fs.tags).tolist() == ["", "x", "x"]


def test_columns_are_writable_views_and_tags_convert():
    import pyarrow as pa

    fs = FlowSet()
    b = fs.barrier([], gpu=3)
    fs.earliest_start_s[b] = 2e-6  # the step engine delays a collective this way
    fs.add(0, 1, 100, after=[b], tag="t")
    assert fs[0].earliest_start_s == 2e-6 and fs[1].deps == (0,)
    assert pa.array(fs.tags).to_pylist() == ["barrier", "t"]
    assert fs.total_bytes() == 100


def test_route_flows_matches_per_flow_routes_and_packetization():
    topo = topology_from_dict({"name": "mixed-mtu", "nodes": [
        {"name": f"g{i}", "kind": "gpu", "domain": i // 2, "rail": i % 2} for i in range(4)] + [
        {"name": "sw0", "kind": "nvswitch"}, {"name": "sw1", "kind": "nvswitch"}, {"name": "core", "kind": "switch"}],
        "links": [{"a": "g0", "b": "sw0", "bandwidth": "100Gbps", "latency": "1us", "mtu": 9000},
                  {"a": "g1", "b": "sw0", "bandwidth": "100Gbps", "latency": "1us", "mtu": 9000},
                  {"a": "g2", "b": "sw1", "bandwidth": "100Gbps", "latency": "1us", "mtu": 1500},
                  {"a": "g3", "b": "sw1", "bandwidth": "100Gbps", "latency": "1us", "mtu": 9000},
                  {"a": "sw0", "b": "core", "bandwidth": "100Gbps", "latency": "1us", "mtu": 4096},
                  {"a": "sw1", "b": "core", "bandwidth": "100Gbps", "latency": "1us", "mtu": 4096}]})
    fs = FlowSet()
    for s in range(4):
        for d in range(4):
            fs.add(s, d, 0 if s == d else 10000 + s, path_key=s)
    routed = route_flows(topo, fs)
    router = Router(topo, engine="python")
    for f in range(len(fs)):
        route = router.route(int(fs.src[f]), int(fs.dst[f]), int(fs.path_keys[f])) if fs.src[f] != fs.dst[f] else ()
        assert tuple(routed.route(f).tolist()) == route
        mtu = min((topo.links[l // 2].mtu_bytes for l in route), default=int(topo.link_mtu_bytes.max()))
        assert routed.payload_per_packet[f] == mtu
        assert routed.num_packets[f] == -(-int(fs.size_bytes[f]) // mtu)


# ------------------------------------------------------------------------- compiled event loop

def moe_like(fs: FlowSet, n: int, seed: int, gpus_per_node: int = 8) -> None:
    """Unequal all-to-alls chained by dependencies, with barriers, sent-dependencies and delays:
    most completions change rates (the case the incremental re-solve is for)."""
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 200_000, size=(n, n))
    m[rng.random((n, n)) < 0.2] = 0
    np.fill_diagonal(m, 0)
    first = C.all_to_all_v(fs, range(n), m, tag="dispatch", channels=2)
    gate = fs.barrier(list(first.last[: len(first.last) // 2]))
    start = fs.add(0, 0, 0, earliest_start_s=3e-6, tag="delay")
    C.all_to_all_v(fs, range(n), m.T // 3, after=[gate, start], tag="combine")
    C.ring_all_reduce(fs, list(range(0, n, 3)), 3 << 20, chunk_bytes=256 << 10, after=[gate])
    C.tree_all_reduce(fs, list(range(1, n, 4)), 1 << 20, chunk_bytes=300_000)


FABRICS = {
    "star": lambda: star(24),
    "rail2": lambda: topology_from_dict({"name": "rail2", "generator": {
        "kind": "hgx_cluster", "num_nodes": 4, "nodes_per_leaf": 2, "spines": 2, "oversubscription": 2}}),
    "fattree3": lambda: topology_from_dict({"name": "ft", "generator": {
        "kind": "fat_tree", "num_nodes": 6, "nodes_per_leaf": 1, "nodes_per_pod": 2, "spines_per_pod": 2,
        "cores": 2, "core_oversubscription": 3}}),
}


@needs_loop
@pytest.mark.parametrize("fabric", sorted(FABRICS))
@pytest.mark.parametrize("seed", [0, 1])
def test_incremental_re_solves_give_the_full_re_solve_and_python_results(fabric, seed):
    topo = FABRICS[fabric]()
    fs = FlowSet()
    moe_like(fs, topo.num_gpus, seed)
    routed = route_flows(topo, fs)
    inc = FB.simulate_flow_level(topo, fs, routed, rate_solver="incremental")
    full = FB.simulate_flow_level(topo, fs, routed, rate_solver="full")
    py = FB.simulate_flow_level(topo, fs, routed, rate_solver="python")
    assert inc.stats["incremental_solves"] > 0.5 * inc.stats["rate_updates"] > 0
    assert full.stats["incremental_solves"] == 0
    assert inc.stats["resolved_flows"] < 0.5 * full.stats["resolved_flows"]
    for other in (full, py):
        np.testing.assert_allclose(inc.flow_start_s, other.flow_start_s, rtol=1e-8, atol=1e-15)
        np.testing.assert_allclose(inc.flow_finish_s, other.flow_finish_s, rtol=1e-8, atol=1e-15)
        np.testing.assert_array_equal(inc.links.tx_bytes, other.links.tx_bytes)
        np.testing.assert_array_equal(inc.links.tx_packets, other.links.tx_packets)
        assert inc.links.bin_s == other.links.bin_s and inc.links.bin_bytes.shape == other.links.bin_bytes.shape
        np.testing.assert_allclose(inc.links.bin_bytes, other.links.bin_bytes, rtol=1e-6,
                                   atol=1e-6 * other.links.bin_bytes.max())
    # the bins hold every wire byte that was sent
    assert inc.links.bin_bytes.sum() == pytest.approx(inc.links.tx_bytes.sum(), rel=1e-9)
    assert np.isfinite(inc.flow_finish_s).all()


@needs_loop
def test_bins_widen_like_the_python_loop():
    topo = star(4)
    fs = FlowSet()
    C.ring_all_reduce(fs, range(4), 64 << 20)
    routed = route_flows(topo, fs)
    a = FB.simulate_flow_level(topo, fs, routed, max_bins=100)
    b = FB.simulate_flow_level(topo, fs, routed, max_bins=100, rate_solver="python")
    assert a.links.bin_s == b.links.bin_s > 1e-6 and a.links.bin_bytes.shape == b.links.bin_bytes.shape
    np.testing.assert_allclose(a.links.bin_bytes, b.links.bin_bytes, rtol=1e-9, atol=1e-3)


@needs_loop
def test_progress_is_reported_and_its_exceptions_stop_the_run():
    topo = star(8)
    fs = FlowSet()
    C.all_to_all_v(fs, range(8), np.arange(64).reshape(8, 8) * 1000 + 1)
    seen = []
    result = simulate(topo, fs, "flow", progress=lambda done, t: seen.append((done, t)))
    assert seen[-1][0] == len(fs) and 0 < seen[-1][1] <= result.flow_finish_s.max()  # time of the last byte sent

    def boom(done, t):
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt, match="stop"):
        simulate(topo, fs, "flow", progress=boom)
    with pytest.raises(Exception, match="rate_solver"):
        FB.simulate_flow_level(topo, fs, route_flows(topo, fs), rate_solver="fast")


@needs_loop
def test_large_all_to_all_on_one_switch_matches_the_closed_form():
    n, per_pair = 256, 1 << 18
    topo = star(n, header=2)
    fs = FlowSet()
    coll = C.all_to_all(fs, range(n), per_pair)
    assert isinstance(coll.flows, range) and len(fs) == n * (n - 1)
    result = simulate(topo, fs, "flow")
    wire = per_pair + 2 * (per_pair // 4096)
    # every GPU link carries (n-1) flows at 1/(n-1) of 400 Gb/s; one frame of store-and-forward
    expected = (n - 1) * wire * 8 / 400e9 + 2e-6 + (4096 + 2) * 8 / 400e9
    assert result.completion_time_s == pytest.approx(expected, rel=1e-9)
    assert result.stats["rate_updates"] == 1


@needs_loop
@pytest.mark.parametrize("seed", range(24))
def test_random_flow_sets_agree_across_rate_solvers(seed):
    """Random fabrics (oversubscribed, mixed link speeds) and random flow DAGs: arrivals and
    completions at many times, chains on receipt and on send, delays, zero-byte barriers."""
    rng = np.random.default_rng(100 + seed)
    kind = ["hgx_cluster", "fat_tree", "nvl72_cluster"][seed % 3]
    gen = {"hgx_cluster": {"num_nodes": 3, "gpus_per_node": 4, "nodes_per_leaf": 1, "spines": 2,
                           "oversubscription": float(rng.choice([1, 2, 3]))},
           "fat_tree": {"num_nodes": 6, "gpus_per_node": 2, "nodes_per_leaf": 1, "nodes_per_pod": 2,
                        "spines_per_pod": 2, "cores": 2, "core_oversubscription": float(rng.choice([1, 4]))},
           "nvl72_cluster": {"num_racks": 2, "gpus_per_rack": 6, "rails": 2, "spines": 1}}[kind]
    topo = topology_from_dict({"name": f"rand{seed}", "generator": {"kind": kind, **gen},
                               "routing": {"cross_rail": str(rng.choice(["pxn", "direct"]))}})
    g = topo.num_gpus
    fs = FlowSet()
    for f in range(600):
        s, d = rng.integers(0, g, 2)
        size = 0 if d == s else int(rng.choice([0, 1, 4096, 10_000, 65_536, 1 << 20]) + rng.integers(0, 3000))
        after = [int(x) for x in rng.integers(0, f, rng.integers(0, 3))] if f and rng.random() < 0.5 else []
        sent = [int(x) for x in rng.integers(0, f, 1)] if f and rng.random() < 0.2 else []
        fs.add(int(s), int(d), size, after=after, after_sent=sent, path_key=int(rng.integers(0, 4)),
               earliest_start_s=float(rng.choice([0.0, 0.0, 1e-6, 3.3e-6, 2e-5])))
    routed = route_flows(topo, fs)
    runs = {s: FB.simulate_flow_level(topo, fs, routed, rate_solver=s) for s in ("incremental", "full", "python")}
    ref = runs["python"]
    assert runs["incremental"].stats["incremental_solves"] > 0
    for name in ("incremental", "full"):
        r = runs[name]
        np.testing.assert_allclose(r.flow_start_s, ref.flow_start_s, rtol=1e-8, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(r.flow_finish_s, ref.flow_finish_s, rtol=1e-8, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(r.links.bin_bytes, ref.links.bin_bytes, rtol=1e-6,
                                   atol=1e-6 * max(ref.links.bin_bytes.max(), 1), err_msg=name)


# ------------------------------------------------------------ opt-in time tolerance (approximate)

def _receipt_deps_hold(routed, result) -> bool:
    """Every flow starts no earlier than the receipt of the flows it waits for."""
    offs, deps = routed.dep_offsets, routed.dep_flows
    flow = np.repeat(np.arange(len(offs) - 1), np.diff(offs))
    recv = deps >= 0
    return bool(np.all(result.flow_start_s[flow[recv]] >= result.flow_finish_s[deps[recv]] * (1 - 1e-12)))


def one_phase(fs: FlowSet, n: int, seed: int) -> None:
    """Unequal all-to-alls without dependencies (the DeepEP dispatch / combine shape), two of
    them starting at different times."""
    rng = np.random.default_rng(seed)
    for k, start in enumerate((0.0, 4e-6)):
        m = rng.integers(1, 6, size=(n, n)) * 7408
        m[rng.random((n, n)) < 0.3] = 0
        np.fill_diagonal(m, 0)
        for i, j in zip(*np.nonzero(m)):
            fs.add(int(i), int(j), int(m[i, j]), earliest_start_s=start, tag=f"a2a{k}")


@needs_loop
@pytest.mark.parametrize("fabric", sorted(FABRICS))
@pytest.mark.parametrize("tol", [1e-4, 1e-3, 1e-2])
def test_time_tolerance_bounds_the_error_of_one_phase_traffic(fabric, tol):
    topo = FABRICS[fabric]()
    fs = FlowSet()
    one_phase(fs, topo.num_gpus, 3)
    routed = route_flows(topo, fs)
    exact = FB.simulate_flow_level(topo, fs, routed)
    approx = FB.simulate_flow_level(topo, fs, routed, time_tolerance=tol)
    assert approx.stats["events"] < exact.stats["events"] and approx.stats["coalesced_flows"] > 0
    # completion within 2 x tol, every flow within 5 x tol (of the completion) of its exact finish
    assert abs(approx.completion_time_s - exact.completion_time_s) <= 2 * tol * exact.completion_time_s
    err = np.abs(approx.flow_finish_s - exact.flow_finish_s) / exact.completion_time_s
    assert err.max() <= 5 * tol
    np.testing.assert_array_equal(approx.flow_start_s, exact.flow_start_s)
    np.testing.assert_array_equal(approx.links.tx_bytes, exact.links.tx_bytes)
    assert approx.links.bin_bytes.sum() == pytest.approx(approx.links.tx_bytes.sum(), rel=1e-9)


@needs_loop
@pytest.mark.parametrize("fabric", sorted(FABRICS))
def test_time_tolerance_on_dependency_chains_keeps_the_rules(fabric):
    """With chains (rings, trees, phases after barriers) the errors compound over the steps
    (measured up to ~40 x the tolerance): only the invariants and a loose bound are checked."""
    topo = FABRICS[fabric]()
    fs = FlowSet()
    moe_like(fs, topo.num_gpus, 0)
    routed = route_flows(topo, fs)
    exact = FB.simulate_flow_level(topo, fs, routed)
    approx = FB.simulate_flow_level(topo, fs, routed, time_tolerance=1e-3)
    assert approx.stats["events"] < exact.stats["events"] and approx.stats["coalesced_flows"] > 0
    assert np.isfinite(approx.flow_finish_s).all() and _receipt_deps_hold(routed, approx)
    assert abs(approx.completion_time_s - exact.completion_time_s) <= 0.05 * exact.completion_time_s
    np.testing.assert_array_equal(approx.links.tx_bytes, exact.links.tx_bytes)
    assert approx.links.bin_bytes.sum() == pytest.approx(approx.links.tx_bytes.sum(), rel=1e-9)


@needs_loop
def test_time_tolerance_zero_is_the_exact_loop_and_bad_values_are_refused():
    topo = FABRICS["rail2"]()
    fs = FlowSet()
    moe_like(fs, topo.num_gpus, 1)
    routed = route_flows(topo, fs)
    a = FB.simulate_flow_level(topo, fs, routed)
    b = FB.simulate_flow_level(topo, fs, routed, time_tolerance=0.0)
    np.testing.assert_array_equal(a.flow_finish_s, b.flow_finish_s)
    assert b.stats["coalesced_flows"] == 0
    for bad in (-1e-3, 1.0, float("nan"), "0.1"):
        with pytest.raises(Exception, match="time_tolerance"):
            FB.simulate_flow_level(topo, fs, routed, time_tolerance=bad)
    with pytest.raises(Exception, match="time_tolerance"):
        FB.simulate_flow_level(topo, fs, routed, rate_solver="python", time_tolerance=1e-3)


@pytest.mark.parametrize("n, gpus_per_node, qps", [(16, 8, 2), (24, 4, 3), (8, 8, 4), (40, 8, 5), (3, 1, 2)])
def test_deepep_ll_block_equals_the_per_flow_loop(n, gpus_per_node, qps):
    """deepep_ll_flows builds its flows as one add_many block: the same flows, in the same order,
    as adding them pair by pair (rotation k, source i, QP q) with their split over QPs."""
    from cosim.network import deepep as D

    rng = np.random.default_rng(n)
    m = rng.integers(0, 7, (n, n)) * int(rng.integers(1, 5)) * 7408 // 3
    m[rng.random((n, n)) < 0.3] = 0
    np.fill_diagonal(m, 0)
    ranks = [int(r) for r in rng.permutation(2 * n)[:n]] if n > 3 else [0, 1, 2]
    a, b = FlowSet(), FlowSet()
    a.add(0, 0, 0)
    b.add(0, 0, 0)
    coll = D.deepep_ll_flows(a, ranks, m, qps, gpus_per_node, after=[0], tag="dispatch")
    node, _ = D._groups(ranks, gpus_per_node)
    ref = []
    for k in range(1, n):
        for i in range(n):
            j = (i + k) % n
            if m[i, j]:
                parts = D._chunks(int(m[i, j]), qps) if node[i] != node[j] else [int(m[i, j])]
                ref += [b.add(ranks[i], ranks[j], p, after=[0], tag="dispatch", path_key=q)
                        for q, p in enumerate(parts) if p]
    assert list(coll.flows) == ref and list(coll.last) == ref
    for col in ("src", "dst", "size_bytes", "path_keys"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))
    assert list(a.deps) == list(b.deps) and list(a.tags) == list(b.tags)


@needs_loop
def test_flow_fast_backend_is_the_tolerance_registered_by_name():
    """``flow_fast`` = the flow backend with FAST_TIME_TOLERANCE, through every layer that takes a
    backend name: a DeepSeek-V3 EP16 decode step on two HGX nodes within 0.5 % of exact, with
    the same bytes on every link, and ``cosim step -b flow_fast``."""
    from cosim.cli.main import main
    from cosim.engine.step import simulate_step
    from cosim.kernels import KernelTables
    from cosim.models import Parallelism, Precision, load_model
    from cosim.network.backends import BACKENDS, FAST_TIME_TOLERANCE
    from cosim.topology import load_topology
    from cosim.trace.builder import StepSpec

    assert BACKENDS["flow_fast"].keywords == {"time_tolerance": FAST_TIME_TOLERANCE}
    model = load_model("deepseek-ai/DeepSeek-V3")
    spec = StepSpec(model, Parallelism(tp=16, ep=16, dp_attention=True), Precision.from_checkpoint(model),
                    "generation", 64, prefix_tokens=2048)
    kernels, topo = KernelTables.load("h200_sxm", framework="trtllm"), load_topology("h200-hgx-2node")
    exact, fast = (simulate_step(spec, kernels, topo, b) for b in ("flow", "flow_fast"))
    assert fast.step_time_s == pytest.approx(exact.step_time_s, rel=5e-3)
    np.testing.assert_allclose(fast.link_tx_bytes, exact.link_tx_bytes, rtol=1e-9)
    assert main(["step", "-m", "Qwen/Qwen3-30B-A3B", "-t", "h200-hgx-2node", "--tp", "16", "--dp-attention",
                 "--batch", "8", "-b", "flow_fast"]) == 0
