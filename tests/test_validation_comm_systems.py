"""Communication constants fitted on h200_sxm, carried unchanged to h100_sxm, b200_sxm and gb200.

The physics of the overhead model (cosim.engine.overheads): per-tier link efficiency, NCCL's LL /
Simple protocols and NVLS, DeepEP normal mode's SM-bound rate, DeepEP low-latency mode's
link-relative rate. The data-dependent tests re-simulate a fixed subsample of the other systems'
measured single-node tables (flow backend, a few seconds) with DEFAULT_OVERHEADS, nothing
refitted, and assert the per-system, per-table median |error| against the bounds
docs/validation-comm.md (section 10) reports. The target (median within 1.5x of the fitted
system's) is met on h100_sxm and missed on b200_sxm and gb200: their bounds are the measured
values plus headroom, and the comments say so.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cosim.engine.overheads import (
    DEFAULT_OVERHEADS, CommOverheads, LibraryOverhead, LinkEfficiency, topology_scale_up_bytes_per_s,
)
from cosim.errors import ConfigError

try:
    import aiconfigurator_core  # noqa: F401
    HAVE_AIC = True
except ImportError:
    HAVE_AIC = False

needs_aic = pytest.mark.skipif(not HAVE_AIC, reason="aiconfigurator-core (measured tables) not installed")

#: The fixed subsample (also ``benchmarks/validate_comm_systems.py --quick``).
NCCL_BYTES = (4096, 1 << 20, 64 << 20)
TOKENS = (1, 16, 128, 1024, 16384)

# Median |error| % per (system, table) on the subsample with DEFAULT_OVERHEADS (measured in comments;
# h200_sxm, the fit system: nccl 7.1, custom_allreduce 5.2, deepep_normal 8.2, deepep_ll 6.7).
BOUNDS = {
    ("h100_sxm", "nccl"): 9,                # 7.7   target met (1.08x)
    ("h100_sxm", "custom_allreduce"): 7,    # 4.7   met (0.90x)
    ("h100_sxm", "deepep_normal"): 10,      # 8.0   met (0.97x)
    ("h100_sxm", "deepep_ll"): 9,           # 7.2   met (1.07x)
    ("b200_sxm", "nccl"): 31,               # 28.0  missed: Blackwell's per-call latency (section 10)
    ("b200_sxm", "custom_allreduce"): 32,   # 28.5  missed
    ("b200_sxm", "deepep_normal"): 22,      # 19.3  missed
    ("b200_sxm", "deepep_ll"): 40,          # 36.8  missed (41.8 with the fixed per-GPU rate)
    ("gb200", "nccl"): 26,                  # 22.9  missed
    ("gb200", "custom_allreduce"): 18,      # 15.1  missed
    ("gb200", "deepep_normal"): 24,         # 21.0  missed
    ("gb200", "deepep_ll"): 24,             # 21.0  missed (30.8 with the fixed per-GPU rate)
    ("gb200", "nvlink_a2a"): 16,            # 13.2  kernel constants fitted on gb200 EP 2/4 (no h200 table)
}


# ---------------------------------------------------------------------- no data needed


def test_link_efficiency_applies_per_tier_and_stays_out_of_kernel_constants():
    with pytest.raises(ConfigError, match="nvlink"):
        LinkEfficiency(nvlink=1.2)
    with pytest.raises(ConfigError, match="rdma"):
        LinkEfficiency(rdma=0.0)
    zero = LibraryOverhead(0.0)
    o = CommOverheads(zero, zero, zero, zero, ops={"nccl.all_reduce": LibraryOverhead(5e-6, 0.5)},
                      links=LinkEfficiency(nvlink=0.8, rdma=0.9))
    assert o.ops["nccl.all_reduce"].link_efficiency == 1.0  # stored kernel-side only
    # Within a node the NVLink efficiency, across nodes the RDMA one (no kernel factor there).
    assert o.duration_s("nccl", 40e-6, op="all_reduce") == pytest.approx(5e-6 + 40e-6 / 0.8 / 0.5)
    assert o.duration_s("nccl", 40e-6, op="all_reduce", remote_fraction=0.5) == pytest.approx(5e-6 + 40e-6 / 0.9)
    # Kernel-rate model: the link bound is the achievable rate, the kernel rate is absolute.
    k = CommOverheads(zero, LibraryOverhead(10e-6, kernel_rate_bytes_per_s=100e9), zero, zero,
                      links=LinkEfficiency(nvlink=0.5))
    assert k.duration_s("deepep_normal", 40e-6, gpu_bytes=1e6) == pytest.approx(10e-6 + 80e-6)  # link-bound
    assert k.duration_s("deepep_normal", 40e-6, gpu_bytes=1e7) == pytest.approx(10e-6 + 100e-6)  # kernel-bound


def test_nccl_protocols_take_the_faster_and_price_the_flags():
    ll = LibraryOverhead(4e-6, wire_bytes_factor=2.0)
    nccl = LibraryOverhead(20e-6, alternatives=(ll,))
    o = CommOverheads(nccl, nccl, nccl, nccl, links=LinkEfficiency(nvlink=0.5), scale_up_bytes_per_s=100e9)
    # Small buffer: LL (4 us + network / eta + the flag bytes once more).
    small = o.duration_s("nccl", 2e-6, gpu_bytes=1e5)
    assert small == pytest.approx(4e-6 + 2e-6 / 0.5 + 1e5 / (0.5 * 100e9))
    # Large buffer: Simple (twice fewer wire bytes beat LL's 16 us smaller fixed cost).
    big = o.duration_s("nccl", 1e-3, gpu_bytes=1e8)
    assert big == pytest.approx(20e-6 + 1e-3 / 0.5)
    # LL needs the bytes to be priced: without them only Simple is a candidate.
    assert o.duration_s("nccl", 2e-6) == pytest.approx(20e-6 + 2e-6 / 0.5)
    with pytest.raises(ConfigError, match="wire_bytes_factor"):
        LibraryOverhead(0.0, wire_bytes_factor=0.5)


def test_nvls_all_reduce_moves_one_plus_one_over_n_of_the_buffer_per_port():
    from cosim.network import FlowSet, simulate
    from cosim.network import collectives as C
    from cosim.network.libraries import BuildOptions, CommCall, add_call_flows
    from cosim.topology import load_topology

    size, n = 64 << 20, 8
    fs = FlowSet()
    C.nvls_all_reduce(fs, range(n), size)
    src, dst, b = np.array(fs.src), np.array(fs.dst), np.array(fs.size_bytes, dtype=float)
    for g in range(n):
        assert b[src == g].sum() == pytest.approx((1 + 1 / n) * size, rel=1e-6)
        assert b[dst == g].sum() == pytest.approx((1 + 1 / n) * size, rel=1e-6)
    node = load_topology("h200-hgx-node")
    t = simulate(node, fs, "flow").completion_time_s
    assert t == pytest.approx((1 + 1 / n) * size / 450e9 + 0.7e-6, rel=0.03)  # + packet headers
    ring = FlowSet()
    C.ring_all_reduce(ring, range(n), size)
    assert simulate(node, ring, "flow").completion_time_s > 1.5 * t  # 2(n-1)/n vs 1 + 1/n
    with pytest.raises(ConfigError, match="one NVSwitch"):
        add_call_flows(FlowSet(), CommCall("nccl", "all_reduce", tuple(range(16)), np.array([[size]])),
                       opts=BuildOptions(8, algorithm="nvls"))


def test_constants_follow_the_topology_nvlink_bandwidth():
    from cosim.topology import load_topology

    assert topology_scale_up_bytes_per_s(load_topology("h200-hgx-node")) == pytest.approx(450e9)
    assert topology_scale_up_bytes_per_s(load_topology("b200-hgx-node")) == pytest.approx(900e9)
    assert topology_scale_up_bytes_per_s(load_topology("gb200-nvl72")) == pytest.approx(900e9)
    b200 = DEFAULT_OVERHEADS.for_topology(load_topology("b200-hgx-node"))
    assert b200.scale_up_bytes_per_s == pytest.approx(900e9) and b200.links == DEFAULT_OVERHEADS.links
    # Same call on a 2x faster link: the LL protocol's flags cost half as long.
    h = DEFAULT_OVERHEADS.overhead("nccl", "all_gather").alternatives[0]
    fast = b200.overhead("nccl", "all_gather").alternatives[0]
    assert (fast.duration_s(10e-6, 1e6) - fast.duration_s(10e-6, 0.0)) == pytest.approx(
        0.5 * (h.duration_s(10e-6, 1e6) - h.duration_s(10e-6, 0.0)))


# ---------------------------------------------------------------------- measured tables


@pytest.fixture(scope="module")
def systems():
    import pandas as pd

    from cosim.validation import comm as V

    sims = [V.simulate_system(s, NCCL_BYTES, TOKENS) for s in V.COMM_SYSTEMS]
    return V.predict(pd.concat(sims, ignore_index=True), DEFAULT_OVERHEADS)


@needs_aic
def test_rows_of_every_system_are_measured_on_its_own_topology():
    from cosim.validation import comm as V

    assert list(V.COMM_SYSTEMS) == ["h200_sxm", "h100_sxm", "b200_sxm", "gb200"]
    gb = V.load_rows(system="gb200")
    assert set(gb[gb.table == "nccl"].num_gpus) == {2, 4}  # measured rows only: one 4-GPU tray
    assert (gb[gb.table.str.startswith("deepep")].num_gpus == 4).all()
    b2 = V.load_rows(system="b200_sxm")
    assert (b2.node_num == 1).all() and set(b2.table) == {"nccl", "custom_allreduce", "deepep_normal", "deepep_ll"}
    assert V.topology_for(1, system="b200_sxm").name == "b200-hgx-node"


@needs_aic
def test_cross_system_medians_within_stated_bounds(systems):
    from cosim.validation import comm as V

    summary = V.cross_system_summary(systems, ("system", "table")).set_index(["system", "table"])
    for key, bound in BOUNDS.items():
        err = summary.loc[key, "median_abs_pct"]
        assert err <= bound, (key, err, bound)
    # The 1.5x target, where it is met: h100_sxm (NVLink4, Hopper, the fit system's twin).
    for table in ("nccl", "custom_allreduce", "deepep_normal", "deepep_ll"):
        ratio = summary.loc[("h100_sxm", table), "median_abs_pct"] / summary.loc[("h200_sxm", table), "median_abs_pct"]
        assert ratio <= 1.5, (table, ratio)


@needs_aic
def test_low_latency_rate_scales_with_the_link(systems):
    """DeepEP low-latency mode on B200 / GB200 (NVLink5, 900 GB/s): the link-relative rate fitted
    on h200 predicts the bandwidth-bound rows; the fixed per-GPU rate fitted on h200 before
    (253 / 222 GB/s) is 1.6-2.7x too slow there."""
    ll = systems[(systems.table == "deepep_ll") & (systems.num_tokens >= 1024)
                 & systems.system.isin(["b200_sxm", "gb200"])]
    assert len(ll) >= 16
    fixed_rate = {"dispatch": 253e9, "combine": 222e9}
    old = ll.apply(lambda r: DEFAULT_OVERHEADS.ops[f"deepep_ll.{r.op}"].fixed_s + max(
        r.network_s, r.gpu_bytes / fixed_rate[r.op]), axis=1)
    old_err = (old / ll.measured_s - 1).abs().median() * 100
    new_err = ll.error_pct.abs().median()
    assert new_err <= 25 and old_err >= 2.5 * new_err, (new_err, old_err)  # measured 21.7 vs 69.6


@needs_aic
def test_normal_mode_rate_is_sm_bound_and_carries():
    """DeepEP normal mode: on 4 SMs the same traffic takes the same time on H100, H200 and B200
    (an SM-bound copy rate, not a link property); the kernel rate fitted on h200's SM sweep
    predicts B200's large-token rows, which run at 24 SMs without reaching NVLink5's bound."""
    from cosim.kernels.comm_tables import deepep_normal_records, to_dataframe

    times = {}
    for s in ("h100_sxm", "h200_sxm", "b200_sxm"):
        df = to_dataframe(deepep_normal_records(s, "0.5.12", node_num=1))
        row = df[(df.hidden_size == 7168) & (df.topk == 8) & (df.num_experts == 256) & (df.num_tokens == 131072)
                 & (df.dispatch_sms == 4)]
        times[s] = float(row.dispatch_transmit_s.iloc[0])
    assert max(times.values()) / min(times.values()) < 1.05
    from cosim.validation import comm as V

    big = V.predict(V.simulate_system("b200_sxm", (), (16384, 131072)), DEFAULT_OVERHEADS)
    big = big[(big.table == "deepep_normal") & (big.hidden == 7168) & (big.topk == 8) & (big.num_experts == 256)]
    assert len(big) == 4 and (big.error_pct.abs() <= 20).all(), big.error_pct.tolist()  # +5 to +15 %


@needs_aic
def test_blackwell_fixed_cost_is_not_the_compute_launch_floor():
    """Why no per-GPU fixed-cost scale is derived (docs/validation-comm.md section 10): the fixed
    cost per call that Blackwell adds is in the communication kernels' cross-GPU signalling, not
    in a floor that the GPU's compute-kernel tables measure. Model-free, from the smallest measured
    rows: NCCL and the custom all-reduce are 1.5-1.7x slower per call on b200 / gb200 than on h200,
    h100 is h200's twin; the same GPUs' GEMM launch floor (the fastest GEMMs of the trtllm table,
    thousands of shapes) is 0.77x h200's on both Blackwell systems: the other way round.
    ``benchmarks/validate_comm_systems.py --floors`` has every compute table and system figure."""
    import pandas as pd

    from cosim.kernels.system import aiconfigurator_systems_dir
    from cosim.validation import comm as V

    def smallest(system):
        rows = V.load_rows(system=system)
        rows = rows[(rows.node_num == 1) & rows.table.isin(["nccl", "custom_allreduce"])]
        rows = rows[rows.message_bytes <= 4 * rows.groupby(["table", "op", "num_gpus"]).message_bytes.transform("min")]
        return rows.groupby(["table", "op", "num_gpus"]).measured_s.median()

    def gemm(system):
        path = aiconfigurator_systems_dir() / "data" / system / "gemm" / "trtllm" / "1.3.0rc20" / "gemm_perf.parquet"
        return pd.read_parquet(path).groupby(["gemm_dtype", "m", "n", "k"]).latency.min()

    comm_ref, gemm_ref = smallest("h200_sxm"), gemm("h200_sxm")
    floor = gemm_ref[gemm_ref <= 1.25 * gemm_ref.min()]
    assert len(floor) >= 1000 and floor.median() < 3e-3  # ms: a few-us launch floor, many shapes
    for system, comm_range, gemm_range in (("h100_sxm", (0.95, 1.08), (0.95, 1.08)),
                                           ("b200_sxm", (1.4, 1.8), (0.7, 0.85)),
                                           ("gb200", (1.4, 1.8), (0.7, 0.85))):
        c = float((smallest(system) / comm_ref).dropna().groupby(level=0).median().median())
        g = float((gemm(system) / floor).dropna().median())
        # measured: h100 1.02 / 1.02, b200 1.59 / 0.77, gb200 1.59 / 0.77
        assert comm_range[0] <= c <= comm_range[1], (system, c)
        assert gemm_range[0] <= g <= gemm_range[1], (system, g)
