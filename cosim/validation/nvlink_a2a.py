"""Validation across a GB200 NVL72 rack: TensorRT-LLM's NVLink MoE all-to-all, EP 2 to 64.

aiconfigurator-core's gb200 ``trtllm_alltoall_perf`` table times TensorRT-LLM's NVLink two-sided
MoE all-to-all (the multi-node NVLink path of wide-EP serving) for DeepSeek-V3's shape (hidden
7168, top-8, 256 experts, balanced routing) at EP 2, 4, 8, 16, 32 and 64, 1 to 65,536 tokens per
rank. EP 2 and 4 fit inside one compute tray (4 GPUs); EP 8-64 span up to 16 trays of the rack.

Traffic per row, on the ``gb200-nvl72`` preset (72 GPUs behind NVSwitch, 900 GB/s per direction):
the expected routing counts of uniform routing (:mod:`cosim.trace.moe_traffic`), each token sent
**once per destination rank** that hosts one of its experts (the kernels exchange per-rank token
lists in their ``prepare`` phase), as a direct all-to-all-v; dispatch carries the activations in
the row's dtype (bf16 ``2 x hidden``, fp8 ``hidden``, nvfp4 ``hidden / 2`` plus one fp8 scale per
16 values) plus the top-k expert ids and weights (``8 x topk`` bytes); combine returns bf16
partial sums (``2 x hidden``, the same time for every dispatch dtype in the table), and
``combine_low_precision`` nvfp4.

Protocol: the kernel-rate model of :mod:`cosim.engine.overheads` (``fixed + max(network /
link_eff, gpu_bytes / rate)``, ``link_eff`` the NVLink efficiency fitted once on h200_sxm) is
fitted per (phase, dtype) on the **EP 2 and 4** rows only (one tray) and reported on the
**EP 8-64** rows (across trays), which were used for nothing. No h200 table measures this kernel,
so its two kernel-side constants are the only communication constants not fitted on h200_sxm. The one-sided kernel
(nvfp4 only, EP <= 32) and the ``prepare`` phase are not validated.

    from cosim.validation.nvlink_a2a import run
    res = run()          # about 3 s; res.summary, res.rows, res.constants
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from cosim.engine.overheads import LibraryOverhead, LinkEfficiency
from cosim.network import FlowSet, simulate
from cosim.network.libraries import BuildOptions, CommCall, add_call_flows
from cosim.network.deepep import gpu_bytes_sent
from cosim.network.nvlink_a2a import PHASES, phase_bytes_per_token
from cosim.topology import Router, Topology, load_topology
from cosim.trace.moe_traffic import routing_counts

SYSTEM = "gb200"
TOPOLOGY = "gb200-nvl72"
KERNEL = "NVLinkTwoSided"
#: EP sizes inside one GB200 compute tray: the fit set. Larger EP sizes are the test.
FIT_EP_SIZES = (2, 4)
def load_rows(kernel: str = KERNEL) -> pd.DataFrame:
    """Measured rows of ``kernel`` (dispatch, combine, combine_low_precision), one per (phase,
    dtype, EP, tokens)."""
    from cosim.kernels.comm_tables import nvlink_alltoall_records, to_dataframe

    df = to_dataframe(nvlink_alltoall_records(SYSTEM))
    df = df[(df.kernel == kernel) & df.phase.isin(PHASES)]
    return df.rename(columns={"latency_s": "measured_s"}).sort_values(
        ["phase", "dtype", "ep_size", "num_tokens"]).reset_index(drop=True)


@lru_cache(maxsize=1)
def _topology() -> tuple[Topology, Router]:
    topo = load_topology(TOPOLOGY)
    return topo, Router(topo)


def row_flows(row) -> FlowSet:
    """The row's all-to-all-v on GPUs ``0..ep-1`` of the rack (dispatch ``i -> j``; combine the
    transpose, which for expected counts is the same matrix)."""
    ep = int(row.ep_size)
    counts = routing_counts(int(row.num_tokens), int(row.num_experts), int(row.topk), ep, traffic="expected",
                            gpus_per_node=ep)
    per_token = phase_bytes_per_token(row.phase, row.dtype, int(row.hidden_size), int(row.topk))
    m = np.rint(np.asarray(counts.tokens) * per_token).astype(np.int64)
    np.fill_diagonal(m, 0)
    op = "dispatch" if row.phase == "dispatch" else "combine"
    fs = FlowSet()
    add_call_flows(fs, CommCall("nvlink_a2a", op, tuple(range(ep)), m if op == "dispatch" else m.T),
                   tag=row.phase, opts=BuildOptions(gpus_per_node=ep))
    return fs


def simulate_rows(rows: pd.DataFrame, backend: str = "flow") -> pd.DataFrame:
    """Adds ``network_s`` (completion on the rack) and ``gpu_bytes`` (most bytes one GPU sends)."""
    topo, router = _topology()
    out = rows.copy()
    net, gb = [], []
    for row in rows.itertuples(index=False):
        fs = row_flows(row)
        net.append(simulate(topo, fs, backend, router=router).completion_time_s if len(fs) else 0.0)
        gb.append(gpu_bytes_sent(fs))
    out["network_s"] = net
    out["gpu_bytes"] = gb
    return out


def links() -> LinkEfficiency:
    """Link efficiencies the kernel constants sit on: the ones fitted once on h200_sxm
    (:data:`cosim.engine.overheads.DEFAULT_OVERHEADS`), not refitted here."""
    from cosim.engine.overheads import DEFAULT_OVERHEADS

    return DEFAULT_OVERHEADS.links


def fit(rows: pd.DataFrame) -> dict[tuple[str, str], LibraryOverhead]:
    """Kernel-rate constants per (phase, dtype), fitted on rows with EP in :data:`FIT_EP_SIZES`
    only (others are refused), on NVLink at the h200-fitted achievable efficiency
    (``fixed + max(network / link_eff, gpu_bytes / rate)``)."""
    from cosim.validation.comm import fit_kernel_rate

    if not rows.ep_size.isin(FIT_EP_SIZES).all():
        raise ValueError(f"fit: only EP {FIT_EP_SIZES} rows may be used for fitting")
    eta = links().nvlink
    return {(p, d): fit_kernel_rate(g, eta) for (p, d), g in rows.groupby(["phase", "dtype"])}


def predict(rows: pd.DataFrame, constants: dict[tuple[str, str], LibraryOverhead]) -> pd.DataFrame:
    out = rows.copy()
    on = links()
    out["predicted_s"] = [constants[(r.phase, r.dtype)].with_links(on, None).duration_s(r.network_s, r.gpu_bytes)
                          for r in rows.itertuples(index=False)]
    out["error_pct"] = (out.predicted_s / out.measured_s - 1.0) * 100.0
    return out


@dataclass
class NvlinkValidation:
    rows: pd.DataFrame                                  # every row, simulated and predicted
    constants: dict[tuple[str, str], LibraryOverhead]   # fitted on EP 2 and 4
    summary: pd.DataFrame                               # median / worst |err| per (phase, dtype, EP)
    timings: dict = field(default_factory=dict)

    def held_out(self) -> pd.DataFrame:
        return self.rows[~self.rows.ep_size.isin(FIT_EP_SIZES)]


def run(backend: str = "flow") -> NvlinkValidation:
    """Load, simulate, fit on EP 2/4, predict every row."""
    t0 = time.perf_counter()
    sim = simulate_rows(load_rows(), backend)
    t1 = time.perf_counter()
    constants = fit(sim[sim.ep_size.isin(FIT_EP_SIZES)])
    pred = predict(sim, constants)
    g = pred.assign(_abs=pred.error_pct.abs()).groupby(["phase", "dtype", "ep_size"])
    summary = pd.DataFrame({"rows": g.size(), "median_abs_pct": g._abs.median(), "worst_abs_pct": g._abs.max(),
                            "median_signed_pct": g.error_pct.median()}).reset_index()
    return NvlinkValidation(pred, constants, summary, {"simulate_s": t1 - t0, "total_s": time.perf_counter() - t0})
