"""Communication validation: cosim's simulated collectives against aiconfigurator-core's measured
NCCL and DeepEP tables on h200_sxm.

Every measured row becomes traffic on the matching HGX H200 topology (8 GPUs per node; the h200
presets), simulated by a network backend. Per-library overheads (:mod:`cosim.engine.overheads`)
are fitted on the **single-node** rows only (NCCL on 2/4/8 GPUs, DeepEP node_num 1) and then
predict the **multi-node** DeepEP rows (sglang 0.5.6.post2, node_num 2/4/8 = EP16/32/64 over
400 Gb/s RDMA per GPU), which test the network simulation itself.

Traffic per measured row (the method is documented in ``docs/validation-comm.md``):

* **NCCL** (nccl-tests, ``message_size`` elements x dtype bytes = total buffer): ring all-reduce,
  ring all-gather, ring reduce-scatter (:mod:`cosim.network.collectives`), alltoall as a uniform
  all-to-all of ``buffer / n`` per pair, on ``num_gpus`` GPUs of ``h200-hgx-node``.
* **Custom all-reduce** (TensorRT-LLM's own kernels, AUTO strategy, bf16, 2/4/8 GPUs): one-shot
  (every rank sends its buffer to every other) and two-shot (direct reduce-scatter + all-gather),
  both simulated (:func:`cosim.network.collectives.custom_all_reduce`); the prediction is the
  faster one under the fitted constants (:func:`fit_custom_allreduce`).
* **DeepEP routing** (as DeepEP's tests draw it): ``num_token`` tokens per rank, each picks
  ``num_topk`` distinct experts uniformly at random; experts sit contiguously on the EP ranks
  (expert ``e`` on rank ``e * EP // E``). The internode normal-mode test limits each token to
  ``min(node_num, 4)`` nodes (DeepSeek-V3 node-limited routing: keep the nodes with the highest
  expert score, then top-k inside them). The simulated traffic is the expectation of that routing
  (equal for every pair of ranks when experts are spread evenly); ``traffic='sampled'`` draws one
  routing per rank instead.
* **DeepEP normal** (fp8 dispatch: ``hidden`` bytes + ``hidden/128`` fp32 scales per token;
  combine bf16: ``2*hidden``), tokens deduplicated per destination: intra-node traffic goes
  directly over NVLink (one copy per destination rank); inter-node traffic follows DeepEP's
  hierarchical kernels: **one RDMA copy per destination node**, sent to the GPU with the same
  local index there (same rail), which forwards it over NVLink to the ranks that need it, chunk
  by chunk. Combine is the reverse (NVLink gather to the rail-matched GPU, one RDMA copy back).
* **DeepEP low-latency** (fp8 dispatch with scales and a 16-byte header per message, bf16
  combine): **no deduplication**, one message per (token, expert) selection, straight from the
  source GPU to the expert's GPU: NVLink within a node, the source GPU's own NIC across nodes
  (the topology's ``cross_rail: direct``), each inter-node pair split over one queue pair per
  local expert (ECMP hashes them independently). The number of selections is taken from the
  row's own byte count (``bandwidth x time``), which exposes the masked selections of DeepEP's test.

The routing counts come from :mod:`cosim.trace.moe_traffic` and the DeepEP flows from
:mod:`cosim.network.deepep`, the same functions the step engine uses for its MoE dispatch and
combine: the validated traffic model is the engine's.

Predictions use the kernel-rate model of :mod:`cosim.engine.overheads`
(``fixed + max(network, gpu_bytes / kernel_rate)``) for DeepEP and the plain model
(``fixed + network / efficiency``) for NCCL; the plain model is also reported for DeepEP.

Two protocols are reported for the multi-node DeepEP rows: **strict** (single-node constants
only, ``error_strict_pct``: every multi-node row is out of sample) and **calibrated** (plus the
cross-node terms of :mod:`cosim.engine.overheads`, fitted on the 2-node rows only,
``error_pct``: the 4- and 8-node rows are out of sample, the 2-node rows are not).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import lru_cache
from math import ceil
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from cosim.engine.overheads import CommOverheads, LibraryOverhead, custom_allreduce_choice, remote_fraction
from cosim.network import FlowSet, simulate
from cosim.network import deepep as D
from cosim.network.libraries import BuildOptions, CommCall, add_call_flows, get_library
from cosim.network.deepep import (  # noqa: F401  (re-exported: the validated per-token bytes)
    LL_HEADER_BYTES, MAX_CHUNKS, MAX_TOPK_NODES, MIN_CHUNK_BYTES, gpu_bytes_sent,
)
from cosim.topology import Router, Topology, load_topology, topology_from_dict
from cosim.topology.loader import read_topology_file, resolve_topology_path
from cosim.trace.moe_traffic import RoutingCounts, hit_probabilities  # noqa: F401  (re-exported)
from cosim.trace.moe_traffic import routing_counts as _routing_counts
from cosim.trace.moe_traffic import sampled_routing_counts as _sampled_routing_counts

SYSTEM = "h200_sxm"
GPUS_PER_NODE = 8
#: Topology preset per node count (h200 HGX, 400 Gb/s per GPU, rail-optimized, non-blocking).
TOPOLOGY_PRESETS = {1: "h200-hgx-node", 2: "h200-hgx-2node", 4: "h200-hgx-4node", 8: "h200-hgx-8node"}
#: sglang folders: 0.5.12 (single node), 0.5.6.post2 (single node LL, multi-node normal and LL).
SINGLE_NODE_VERSION = "0.5.12"
MULTI_NODE_VERSION = "0.5.6.post2"


@dataclass(frozen=True)
class CommSystem:
    """A GPU system whose measured communication tables are validated.

    Attributes:
        name: aiconfigurator-core system folder (``h200_sxm`` ...).
        topologies: topology preset per DeepEP node count (node_num 1: one scale-up node).
        gpus_per_node: GPUs of one DeepEP "node" (a host: 8 on HGX, 4 on a GB200 compute tray),
            i.e. the EP size of a node_num-1 row.
        deepep_versions: sglang folders with DeepEP tables used (the multi-node 0.5.6.post2 rows
            exist only on h200: the h100 file of that folder is a copy of the h200 one with the
            device relabelled, not a measurement of its own, and is not used).
    """

    name: str
    topologies: dict[int, str]
    gpus_per_node: int
    deepep_versions: tuple[str, ...] = (SINGLE_NODE_VERSION,)


#: Systems with measured communication tables (the fit system first).
COMM_SYSTEMS: dict[str, CommSystem] = {s.name: s for s in (
    CommSystem(SYSTEM, TOPOLOGY_PRESETS, GPUS_PER_NODE, (SINGLE_NODE_VERSION, MULTI_NODE_VERSION)),
    CommSystem("h100_sxm", {1: "h100-hgx-node"}, 8),
    CommSystem("b200_sxm", {1: "b200-hgx-node"}, 8),
    CommSystem("gb200", {1: "gb200-nvl72"}, 4),
)}


def comm_system(name: str) -> CommSystem:
    """The :class:`CommSystem` called ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return COMM_SYSTEMS[name]
    except KeyError:
        raise ValueError(f"no communication validation for system {name!r}; expected one of "
                         f"{', '.join(COMM_SYSTEMS)}") from None


def _row_system(row) -> str:
    """System of a measured row (rows made before systems were a column are h200_sxm)."""
    s = getattr(row, "system", SYSTEM)
    return SYSTEM if s is None or (isinstance(s, float) and np.isnan(s)) else str(s)
#: Tokens per rank actually sampled when drawing routing; larger counts are scaled up.
MAX_SAMPLED_TOKENS = 2048
#: NCCL ring chunk (as cosim.network.collectives), raised for huge buffers to bound flow counts.
NCCL_CHUNK_BYTES = 1 << 20
NCCL_MAX_CHUNKS_PER_SEGMENT = 16
NCCL_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "alltoall": "all_to_all"}

# ------------------------------------------------------------------------------------------ rows


def nccl_rows(ops: Iterable[str] | None = None, num_gpus: Iterable[int] = (2, 4, 8),
              dtypes: Iterable[str] = ("half", "int8"), system: str = SYSTEM) -> pd.DataFrame:
    """Measured nccl-tests rows of ``system`` (the folder the system YAML names), one per
    (op, dtype, GPUs, size); ``op`` uses cosim's names (``all_to_all`` for nccl's ``alltoall``).
    Only measured rows: nothing beyond one node (8 GPUs, 4 on gb200) exists in the table and
    none is made up."""
    from cosim.kernels.comm_tables import nccl_records, to_dataframe

    df = to_dataframe(nccl_records(comm_system(system).name))
    df = df[df.num_gpus.isin(list(num_gpus)) & df.dtype.isin(list(dtypes))].copy()
    df["op"] = df.op.map(NCCL_OPS)
    if ops is not None:
        df = df[df.op.isin(list(ops))]
    out = pd.DataFrame({
        "system": system, "table": "nccl", "op": df.op, "version": df.nccl_version, "node_num": 1, "num_gpus": df.num_gpus,
        "dtype": df.dtype, "message_bytes": df.message_bytes, "measured_s": df.latency_s,
    })
    return out.sort_values(["op", "num_gpus", "dtype", "message_bytes"]).reset_index(drop=True)


def deepep_normal_rows(shapes: str = "all", system: str = SYSTEM) -> pd.DataFrame:
    """DeepEP normal-mode rows, one per (version, node_num, shape, tokens, dispatch|combine): the
    **best time over the SM counts** of that shape (dispatch and combine chosen separately).
    ``measured_s`` is the kernel time (``*_transmit_us``); ``notify_s`` the separately timed notify
    kernel at the chosen SM count (0 in 0.5.12, where it is not recorded). Single node: sglang
    0.5.12 (H200); multi-node: 0.5.6.post2 node_num 2/4/8 (its node_num 1 rows are H100 and are
    dropped). ``shapes='dsv3'`` keeps hidden 7168 / top-8 / 256 experts only. Other systems:
    their 0.5.12 single-node rows (EP = the system's GPUs per node)."""
    from cosim.kernels.comm_tables import deepep_normal_records, to_dataframe

    spec = comm_system(system)
    parts = [to_dataframe(deepep_normal_records(spec.name, SINGLE_NODE_VERSION, node_num=1))]
    if MULTI_NODE_VERSION in spec.deepep_versions:
        parts.append(to_dataframe(deepep_normal_records(spec.name, MULTI_NODE_VERSION)))
    df = pd.concat(parts, ignore_index=True)
    df = df[(df.node_num > 1) | (df.sglang_version == SINGLE_NODE_VERSION)]
    if shapes == "dsv3":
        df = df[(df.hidden_size == 7168) & (df.topk == 8) & (df.num_experts == 256)]
    keys = ["sglang_version", "node_num", "hidden_size", "topk", "num_experts", "num_tokens"]
    rows = []
    for op in ("dispatch", "combine"):
        best = df.loc[df.groupby(keys)[f"{op}_transmit_s"].idxmin()]
        rows.append(pd.DataFrame({
            "system": system, "table": "deepep_normal", "op": op, "version": best.sglang_version,
            "node_num": best.node_num, "num_gpus": best.node_num * spec.gpus_per_node, "hidden": best.hidden_size, "topk": best.topk,
            "num_experts": best.num_experts, "num_tokens": best.num_tokens, "sms": best[f"{op}_sms"],
            "measured_s": best[f"{op}_transmit_s"], "notify_s": best[f"{op}_notify_s"],
        }))
    return pd.concat(rows, ignore_index=True).sort_values(
        ["node_num", "op", "hidden", "topk", "num_experts", "num_tokens"]).reset_index(drop=True)


def ll_dispatch_bytes_per_selection(hidden: int) -> int:
    """fp8 payload, one fp32 scale per 128 values, and DeepEP's 16-byte message header
    (:func:`cosim.network.deepep.ll_dispatch_bytes_per_selection`)."""
    return int(D.ll_dispatch_bytes_per_selection(hidden, "fp8"))


def normal_dispatch_bytes_per_token(hidden: int) -> int:
    """fp8 payload plus one fp32 scale per 128 values (DeepEP's fp8 dispatch;
    :func:`cosim.network.deepep.normal_dispatch_bytes_per_token`)."""
    return int(D.normal_dispatch_bytes_per_token(hidden, "fp8"))


def deepep_ll_rows(shapes: str = "all", system: str = SYSTEM) -> pd.DataFrame:
    """DeepEP low-latency rows (sglang 0.5.12 node_num 1; 0.5.6.post2 node_num 1/2/4/8), one per
    (version, node_num, shape, tokens, dispatch|combine). ``selections`` (per rank) is the row's own
    byte count ``dispatch bandwidth x dispatch time / bytes per selection``: DeepEP's test masks a
    few random selections, which matters at 1-4 tokens."""
    from cosim.kernels.comm_tables import deepep_ll_records, to_dataframe

    spec = comm_system(system)
    df = pd.concat([to_dataframe(deepep_ll_records(spec.name, v)) for v in spec.deepep_versions], ignore_index=True)
    if shapes == "dsv3":
        df = df[(df.hidden_size == 7168) & (df.topk == 8) & df.num_experts.isin([256, 288])]
    # DeepEP needs num_experts divisible by the EP size; the 288-expert rows at node_num 8 (EP64)
    # cannot be placed (their times equal the 256-expert rows' within 3 %) and are left out.
    df = df[df.num_experts % (df.node_num * spec.gpus_per_node) == 0]
    per_sel = df.hidden_size.map(ll_dispatch_bytes_per_selection)
    selections = np.rint(df.dispatch_bandwidth_bytes_per_s * df.dispatch_s / per_sel).astype(int)
    selections = np.clip(selections, 0, df.num_tokens * df.topk)
    rows = []
    for op in ("dispatch", "combine"):
        rows.append(pd.DataFrame({
            "system": system, "table": "deepep_ll", "op": op, "version": df.sglang_version,
            "node_num": df.node_num, "num_gpus": df.node_num * spec.gpus_per_node, "hidden": df.hidden_size, "topk": df.topk,
            "num_experts": df.num_experts, "num_tokens": df.num_tokens, "selections": selections,
            "measured_s": df[f"{op}_s"],
        }))
    return pd.concat(rows, ignore_index=True).sort_values(
        ["node_num", "op", "version", "hidden", "topk", "num_experts", "num_tokens"]).reset_index(drop=True)


#: Framework whose custom all-reduce table is validated (and fitted): TensorRT-LLM's AUTO kernels.
CUSTOM_ALLREDUCE_FRAMEWORK = "trtllm"


def custom_allreduce_rows(framework: str = CUSTOM_ALLREDUCE_FRAMEWORK, system: str = SYSTEM) -> pd.DataFrame:
    """Measured custom all-reduce rows of ``system`` (bf16, 2/4/8 GPUs of one node, CUDA graphs),
    newest folder of ``framework``; ``message_bytes`` is the buffer in bytes."""
    from cosim.kernels.comm_tables import custom_allreduce_records, to_dataframe

    df = to_dataframe(custom_allreduce_records(comm_system(system).name, framework))
    out = pd.DataFrame({
        "system": system, "table": "custom_allreduce", "op": "all_reduce", "version": df.version, "node_num": 1,
        "num_gpus": df.num_gpus, "dtype": df.dtype, "message_bytes": df.message_bytes, "measured_s": df.latency_s,
    })
    return out.sort_values(["num_gpus", "message_bytes"]).reset_index(drop=True)


def load_rows(shapes: str = "all", system: str = SYSTEM) -> pd.DataFrame:
    """All measured rows of ``system`` (NCCL, custom all-reduce, DeepEP normal, DeepEP
    low-latency) in one table."""
    return pd.concat([nccl_rows(system=system), custom_allreduce_rows(system=system),
                      deepep_normal_rows(shapes, system), deepep_ll_rows(shapes, system)], ignore_index=True)


def subsample(rows: pd.DataFrame, nccl_sizes: Sequence[int] | None = None,
              deepep_tokens: Sequence[int] | None = None) -> pd.DataFrame:
    """Keep NCCL and custom all-reduce rows whose buffer (bytes) is in ``nccl_sizes`` and DeepEP
    rows whose tokens per
    rank are in ``deepep_tokens`` (``None`` keeps all)."""
    keep = np.ones(len(rows), dtype=bool)
    is_nccl = rows.table.isin(["nccl", "custom_allreduce"]).to_numpy()  # sized by bytes, not tokens
    if nccl_sizes is not None:
        keep &= ~is_nccl | rows.message_bytes.isin(list(nccl_sizes)).to_numpy()
    if deepep_tokens is not None:
        keep &= is_nccl | rows.num_tokens.isin(list(deepep_tokens)).to_numpy()
    return rows[keep].reset_index(drop=True)


# --------------------------------------------------------------------------------------- routing


# Routing lives in cosim.trace.moe_traffic (shared with the step traces); these wrappers keep the
# validation's defaults: 8 GPUs per node and token counts above MAX_SAMPLED_TOKENS scaled.


def routing_counts(num_tokens: int, num_experts: int, topk: int, ep: int, *, topk_nodes: int = 0,
                   selections: int | None = None, traffic: str = "expected", seed: int = 0,
                   gpus_per_node: int = GPUS_PER_NODE) -> RoutingCounts:
    """Traffic counts of DeepEP-test routing on ``ep`` ranks (``gpus_per_node`` per node):
    :func:`cosim.trace.moe_traffic.routing_counts` with uniform routing; ``traffic='sampled'``
    samples at most :data:`MAX_SAMPLED_TOKENS` tokens per rank and scales."""
    return _routing_counts(num_tokens, num_experts, topk, ep, traffic=traffic, topk_nodes=topk_nodes,
                           gpus_per_node=gpus_per_node, selections=selections, seed=seed,
                           max_sampled=MAX_SAMPLED_TOKENS)


def sampled_routing_counts(num_tokens: int, num_experts: int, topk: int, ep: int, *, topk_nodes: int = 0,
                           selections: int | None = None, seed: int = 0, max_sampled: int = MAX_SAMPLED_TOKENS,
                           gpus_per_node: int = GPUS_PER_NODE) -> RoutingCounts:
    """One random routing per rank (:func:`cosim.trace.moe_traffic.sampled_routing_counts`), at
    most ``max_sampled`` tokens sampled and scaled."""
    return _sampled_routing_counts(num_tokens, num_experts, topk, ep, topk_nodes=topk_nodes,
                                   gpus_per_node=gpus_per_node, selections=selections, seed=seed,
                                   max_sampled=max_sampled)


# --------------------------------------------------------------------------------------- traffic


@lru_cache(maxsize=None)
def topology_for(node_num: int, cross_rail: str = "pxn", system: str = SYSTEM) -> Topology:
    """The preset of ``system`` (default h200 HGX) for ``node_num`` nodes; ``cross_rail='direct'``
    rebuilds it from the same generator with direct cross-rail routing (each GPU uses its own NIC)."""
    name = comm_system(system).topologies[node_num]
    if cross_rail == "pxn" or node_num == 1:
        return load_topology(name)
    path = resolve_topology_path(name)
    data = read_topology_file(path)
    data["name"] = f"{data['name']}-direct"
    data.setdefault("routing", {})["cross_rail"] = cross_rail
    return topology_from_dict(data, source=f"{path} (routing.cross_rail={cross_rail})")


@lru_cache(maxsize=None)
def _router(node_num: int, cross_rail: str, system: str = SYSTEM) -> Router:
    return Router(topology_for(node_num, cross_rail, system))


@lru_cache(maxsize=None)
def gpus_per_node(node_num: int, system: str = SYSTEM) -> int:
    """GPUs per DeepEP node of ``system``'s preset for ``node_num`` nodes: the topology's GPUs
    per scale-up domain, but at most the system's GPUs per host (a GB200 NVL72 rack is one
    NVLink domain of 72 GPUs; DeepEP's single-node rows run on one 4-GPU tray)."""
    return min(D.topology_gpus_per_node(topology_for(node_num, system=system)), comm_system(system).gpus_per_node)


def _flows(call: CommCall, opts: BuildOptions = BuildOptions(), tag: str = "") -> FlowSet:
    """The flows of one library call, built by its library (the engine's one path)."""
    fs = FlowSet()
    add_call_flows(fs, call, tag=tag, opts=opts)
    return fs


def nccl_flows(row) -> FlowSet:
    """nccl-tests traffic of one row on ranks ``0..num_gpus-1`` (ring collectives, uniform
    all-to-all), through the ``nccl`` library."""
    n, size = int(row.num_gpus), int(row.message_bytes)
    ranks = tuple(range(n))
    if row.op not in get_library("nccl").ops:
        raise ValueError(f"unknown NCCL op {row.op!r}")
    if row.op == "all_to_all":
        matrix = np.full((n, n), size // n, dtype=np.int64)
        np.fill_diagonal(matrix, 0)
    else:
        matrix = np.array([[size]], dtype=np.int64)
    chunk = max(NCCL_CHUNK_BYTES, ceil(size / n / NCCL_MAX_CHUNKS_PER_SEGMENT))
    return _flows(CommCall("nccl", row.op, ranks, matrix),
                  BuildOptions(gpus_per_node(1, _row_system(row)), chunk_bytes=chunk), row.op)


def _deepep_counts(row, mode: str, traffic: str) -> RoutingCounts:
    ep, g = int(row.num_gpus), gpus_per_node(int(row.node_num), _row_system(row))
    if mode == "ll":
        sel = getattr(row, "selections", None)
        sel = None if sel is None or pd.isna(sel) else int(sel)
        return routing_counts(int(row.num_tokens), int(row.num_experts), int(row.topk), ep, selections=sel,
                              traffic=traffic, gpus_per_node=g)
    return routing_counts(int(row.num_tokens), int(row.num_experts), int(row.topk), ep,
                          topk_nodes=D.topk_nodes_limit(int(row.node_num)), traffic=traffic, gpus_per_node=g)


def deepep_ll_flows(row, traffic: str = "expected") -> FlowSet:
    """Low-latency dispatch (fp8, per selection) or combine (bf16, transposed) of one row on ranks
    ``0..num_gpus-1``, through the ``deepep_ll`` library (:func:`cosim.network.deepep.deepep_ll_flows`)."""
    counts = _deepep_counts(row, "ll", traffic)
    ep, hidden = int(row.num_gpus), int(row.hidden)
    per_sel = (D.ll_dispatch_bytes_per_selection(hidden, "fp8") if row.op == "dispatch"
               else D.ll_combine_bytes_per_selection(hidden))
    call = CommCall("deepep_ll", row.op, tuple(range(ep)), D.ll_bytes_matrix(counts.selections, per_sel, row.op),
                    qps_per_peer=D.ll_qps_per_peer(int(row.num_experts), ep))
    return _flows(call, BuildOptions(gpus_per_node(int(row.node_num), _row_system(row))), f"ll_{row.op}")


def deepep_normal_flows(row, variant: str = "hierarchical", traffic: str = "expected") -> FlowSet:
    """Normal-mode dispatch (fp8 + scales) or combine (bf16) of one row.

    ``variant='hierarchical'`` (DeepEP's kernels): the ``deepep_normal`` library
    (:func:`cosim.network.deepep.deepep_normal_flows`) on ranks ``0..num_gpus-1``: intra-node
    pairs direct over NVLink; for every (source rank, remote node) one RDMA stream to the
    same-local-index GPU of that node carrying each token once, which forwards it chunk by chunk
    over NVLink to the ranks that need it (combine: the reverse). ``variant='per_rank'``: a
    plain all-to-all-v deduplicated per destination rank (the ``nccl`` library's), routed by the
    topology (PXN across rails); kept for comparison only.
    """
    counts = _deepep_counts(row, "normal", traffic)
    ep, hidden = int(row.num_gpus), int(row.hidden)
    per_token = (D.normal_dispatch_bytes_per_token(hidden, "fp8") if row.op == "dispatch"
                 else D.normal_combine_bytes_per_token(hidden))
    g = gpus_per_node(int(row.node_num), _row_system(row))
    if variant == "per_rank":
        matrix = np.rint(counts.tokens * per_token).astype(np.int64)
        np.fill_diagonal(matrix, 0)
        call = CommCall("nccl", "all_to_all", tuple(range(ep)), matrix if row.op == "dispatch" else matrix.T)
        return _flows(call, BuildOptions(g), f"normal_{row.op}")
    if variant != "hierarchical":
        raise ValueError(f"unknown normal-mode variant {variant!r}")
    tok, node = D.normal_bytes_matrices(counts.tokens, counts.node_tokens, per_token, row.op)
    return _flows(CommCall("deepep_normal", row.op, tuple(range(ep)), tok, node_bytes_matrix=node), BuildOptions(g))


#: Traffic of a measured row per table (each table is one library of the registry).
_ROW_FLOWS: dict[str, Callable[..., FlowSet]] = {
    "nccl": lambda row, variant, traffic: nccl_flows(row),
    "deepep_normal": lambda row, variant, traffic: deepep_normal_flows(row, variant, traffic),
    "deepep_ll": lambda row, variant, traffic: deepep_ll_flows(row, traffic),
}


def build_flows(row, normal_variant: str = "hierarchical", traffic: str = "expected") -> tuple[FlowSet, int, str]:
    """Flows of one measured row, with the node count and cross-rail routing of its topology
    (the library's: ``direct`` for DeepEP low-latency, PXN otherwise)."""
    if row.table == "custom_allreduce":  # one algorithm per FlowSet: see simulate_rows
        raise ValueError("custom all-reduce rows have two flow sets (one_shot, two_shot): use custom_flows")
    if row.table not in _ROW_FLOWS:
        raise ValueError(f"unknown table {row.table!r}")
    node_num = 1 if row.table == "nccl" else int(row.node_num)
    cross_rail = "direct" if get_library(row.table).cross_rail == "direct" else "pxn"
    return _ROW_FLOWS[row.table](row, normal_variant, traffic), node_num, cross_rail


def row_remote_fraction(row) -> float:
    """Mean share of a rank's peers on other nodes for the row's group (0 for NCCL, one node)."""
    if row.table == "nccl" or int(row.node_num) == 1:
        return 0.0
    g = gpus_per_node(int(row.node_num), _row_system(row))
    return remote_fraction(D.group_nodes(range(int(row.num_gpus)), g))


def max_gpu_bytes(fs: FlowSet) -> float:
    """Largest number of bytes one GPU emits (kernel-rate model input;
    :func:`cosim.network.deepep.gpu_bytes_sent`)."""
    return gpu_bytes_sent(fs)


def custom_flows(row, algorithm: str) -> FlowSet:
    """One custom all-reduce row as ``one_shot`` or ``two_shot`` flows on ranks ``0..num_gpus-1``
    (the ``custom_allreduce`` library)."""
    call = CommCall("custom_allreduce", "all_reduce", tuple(range(int(row.num_gpus))),
                    np.array([[int(row.message_bytes)]], dtype=np.int64))
    return _flows(call, BuildOptions(gpus_per_node(1, _row_system(row)), algorithm=algorithm), "custom_all_reduce")


def simulate_rows(rows: pd.DataFrame, backend: str = "flow", normal_variant: str = "hierarchical",
                  traffic: str = "expected", progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Simulate every row; adds ``network_s`` (completion of the traffic on the topology),
    ``gpu_bytes`` (most bytes one GPU emits), ``flows`` and ``sim_wall_s``. Custom all-reduce rows
    are simulated with both algorithms (``network_one_shot_s``, ``network_two_shot_s``;
    ``network_s`` is the faster); :func:`predict` picks one with the fitted overheads."""
    out = rows.copy()
    network, gpu_bytes, nflows, wall = [], [], [], []
    per_algorithm: dict[str, list[float]] = {a: [] for a in get_library("custom_allreduce").algorithms}
    for i, row in enumerate(rows.itertuples(index=False)):
        t0 = time.perf_counter()
        system = _row_system(row)
        if row.table == "custom_allreduce":
            for a in get_library("custom_allreduce").algorithms:
                fs = custom_flows(row, a)
                per_algorithm[a].append(simulate(topology_for(1, system=system), fs, backend,
                                                 router=_router(1, "pxn", system)).completion_time_s)
            network.append(min(times[-1] for times in per_algorithm.values()))
        else:
            for a in per_algorithm:
                per_algorithm[a].append(np.nan)
            fs, node_num, cross_rail = build_flows(row, normal_variant, traffic)
            network.append(simulate(topology_for(node_num, cross_rail, system), fs, backend,
                                    router=_router(node_num, cross_rail, system)).completion_time_s
                           if len(fs) else 0.0)
        gpu_bytes.append(max_gpu_bytes(fs))
        nflows.append(len(fs))
        wall.append(time.perf_counter() - t0)
        if progress is not None:
            progress(i + 1, len(rows))
    out["network_s"] = network
    for a, values in per_algorithm.items():
        out[f"network_{a}_s"] = values
    out["gpu_bytes"] = gpu_bytes
    out["remote_fraction"] = [row_remote_fraction(row) for row in rows.itertuples(index=False)]
    out["flows"] = nflows
    out["sim_wall_s"] = wall
    out["backend"] = backend
    return out


# ------------------------------------------------------------------------------------------- fit


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, 0.5 * cum[-1])])


def _fit_fixed_plus(measured: np.ndarray, term: Callable[[float], np.ndarray], lo: float, hi: float
                    ) -> tuple[float, float, float]:
    """Fit ``measured ~ fixed + term(p)`` minimizing the mean absolute relative error.

    For a given ``p`` the best ``fixed >= 0`` is a weighted median (weights ``1/measured``); ``p`` is
    searched on a log grid in ``[lo, hi]`` and refined. Returns (fixed, p, mean abs rel error).
    """
    w = 1.0 / measured

    def solve(p: float) -> tuple[float, float]:
        z = term(p)
        fixed = max(0.0, _weighted_median(measured - z, w))
        return float(np.mean(np.abs(fixed + z - measured) * w)), fixed

    grid = np.geomspace(lo, hi, 121)
    losses = [solve(p)[0] for p in grid]
    k = int(np.argmin(losses))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    for _ in range(60):  # golden-section on log p
        x1, x2 = a * (b / a) ** 0.382, a * (b / a) ** 0.618
        if solve(x1)[0] <= solve(x2)[0]:
            b = x2
        else:
            a = x1
    p = float(np.sqrt(a * b))
    loss, fixed = solve(p)
    return fixed, p, loss


def fit_plain(rows: pd.DataFrame) -> LibraryOverhead:
    """``fixed + network / efficiency`` on ``rows`` (columns measured_s, network_s)."""
    m, net = rows.measured_s.to_numpy(), rows.network_s.to_numpy()
    fixed, eff, _ = _fit_fixed_plus(m, lambda e: net / e, 0.05, 3.0)
    return LibraryOverhead(fixed, eff)


def fit_kernel_rate(rows: pd.DataFrame) -> LibraryOverhead:
    """``fixed + max(network, gpu_bytes / rate)`` on ``rows``; ``bandwidth_efficiency`` is then fitted
    with the same fixed term (the plain model's fallback when ``gpu_bytes`` is unknown)."""
    m, net, gb = rows.measured_s.to_numpy(), rows.network_s.to_numpy(), rows.gpu_bytes.to_numpy()
    fixed, rate, _ = _fit_fixed_plus(m, lambda r: np.maximum(net, gb / r), 1e9, 2e12)
    w = 1.0 / m
    grid = np.geomspace(0.05, 3.0, 400)
    eff = float(grid[np.argmin([np.mean(np.abs(fixed + net / e - m) * w) for e in grid])])
    return LibraryOverhead(fixed, eff, rate)


def fit_overheads(rows: pd.DataFrame) -> CommOverheads:
    """Fit :class:`CommOverheads` on simulated **single-node** rows (NCCL <= 8 GPUs, DeepEP
    node_num 1); multi-node rows in ``rows`` are refused rather than silently used."""
    if (rows.node_num != 1).any():
        raise ValueError("fit_overheads: only single-node rows may be used for fitting")
    ops: dict[str, LibraryOverhead] = {}
    custom = rows[rows.table == "custom_allreduce"]
    nccl = rows[rows.table == "nccl"]
    nccl_all = fit_plain(nccl)
    for op, part in nccl.groupby("op"):
        ops[f"nccl.{op}"] = fit_plain(part)
    libs = {}
    for lib in ("deepep_normal", "deepep_ll"):
        part = rows[rows.table == lib]
        libs[lib] = fit_kernel_rate(part)
        for op, sub in part.groupby("op"):
            ops[f"{lib}.{op}"] = fit_kernel_rate(sub)
    custom_all = None
    if len(custom):
        one, two = fit_custom_allreduce(custom)
        ops["custom_allreduce.one_shot"], ops["custom_allreduce.two_shot"] = one, two
        custom_all = one
    return CommOverheads(nccl=nccl_all, deepep_normal=libs["deepep_normal"], deepep_ll=libs["deepep_ll"],
                         p2p=nccl_all, ops=ops, custom_allreduce=custom_all)


def fit_custom_allreduce(rows: pd.DataFrame) -> tuple[LibraryOverhead, LibraryOverhead]:
    """Custom all-reduce: ``min(fixed_one + network_one_shot / eff, fixed_two + network_two_shot /
    eff)`` (the kernels take the faster algorithm; one-shot has less fixed cost, two-shot fewer
    bytes), least mean absolute relative error by grid search. Returns the one-shot and two-shot
    constants (same efficiency)."""
    m = rows.measured_s.to_numpy()
    one, two = rows.network_one_shot_s.to_numpy(), rows.network_two_shot_s.to_numpy()
    f2 = np.linspace(0.0, 40e-6, 161)[:, None]
    best = (np.inf, 0.0, 0.0, 1.0)
    for e in np.linspace(0.3, 1.5, 121):
        for f1 in np.linspace(0.0, 6e-6, 61):
            pred = np.minimum(f1 + one / e, f2 + two / e)
            loss = np.mean(np.abs(pred / m - 1.0), axis=1)
            k = int(np.argmin(loss))
            if loss[k] < best[0]:
                best = (float(loss[k]), float(f1), float(f2[k, 0]), float(e))
    _, f1, f2_best, e = best
    return LibraryOverhead(f1, e), LibraryOverhead(f2_best, e)


#: Node count whose rows calibrate the cross-node terms; the other multi-node rows test them.
CROSS_NODE_FIT_NODES = 2


def fit_cross_node(rows: pd.DataFrame, overheads: CommOverheads) -> CommOverheads:
    """Add the cross-node terms (``cross_node_fixed_s``, ``rdma_efficiency``) of every DeepEP
    operation to ``overheads`` (whose single-node constants stay as they are), fitted on simulated
    **2-node** rows only (least mean absolute relative error; ``rdma_efficiency`` <= 1, the
    simulated rate being the most the fabric allows). Rows of other node counts are refused: the
    4- and 8-node rows are the test. Library-wide entries get the pooled fit of their operations."""
    if (rows.node_num != CROSS_NODE_FIT_NODES).any():
        raise ValueError(f"fit_cross_node: only {CROSS_NODE_FIT_NODES}-node rows may be used for fitting")
    ops = dict(overheads.ops)
    libs = {}
    for lib in ("deepep_normal", "deepep_ll"):
        part = rows[rows.table == lib]
        if part.empty:
            libs[lib] = overheads.overhead(lib)
            continue
        libs[lib] = _fit_cross(part, overheads.overhead(lib))
        for op, sub in part.groupby("op"):
            ops[f"{lib}.{op}"] = _fit_cross(sub, overheads.overhead(lib, op))
    return dataclasses.replace(overheads, deepep_normal=libs["deepep_normal"], deepep_ll=libs["deepep_ll"], ops=ops)


def _fit_cross(rows: pd.DataFrame, base: LibraryOverhead) -> LibraryOverhead:
    """Grid search of (cross_node_fixed_s, rdma_efficiency) for one operation, then refinement."""
    m = rows.measured_s.to_numpy()
    rf = rows.remote_fraction.to_numpy()
    net = rows.network_s.to_numpy()
    gb = rows.gpu_bytes.to_numpy()

    def loss(a: float, e: float) -> float:
        o = dataclasses.replace(base, cross_node_fixed_s=a, rdma_efficiency=e)
        pred = np.array([o.duration_s(n, g, r) for n, g, r in zip(net, gb, rf)])
        return float(np.mean(np.abs(pred / m - 1.0)))

    best = min((loss(a, e), a, e) for a in np.linspace(0.0, 100e-6, 51) for e in np.linspace(0.5, 1.0, 26))
    _, a0, e0 = best
    fine = min((loss(a, e), a, e) for a in np.clip(np.linspace(a0 - 2e-6, a0 + 2e-6, 21), 0.0, None)
               for e in np.clip(np.linspace(e0 - 0.02, e0 + 0.02, 21), 0.05, 1.0))
    return dataclasses.replace(base, cross_node_fixed_s=float(fine[1]), rdma_efficiency=float(fine[2]))


def strip_cross_node(overheads: CommOverheads) -> CommOverheads:
    """``overheads`` without cross-node terms (the strict single-node-fitted model)."""
    def plain(o: LibraryOverhead) -> LibraryOverhead:
        return dataclasses.replace(o, cross_node_fixed_s=0.0, rdma_efficiency=1.0)

    return dataclasses.replace(overheads, deepep_normal=plain(overheads.deepep_normal),
                               deepep_ll=plain(overheads.deepep_ll),
                               ops={k: plain(v) for k, v in overheads.ops.items()})


def predict(rows: pd.DataFrame, overheads: CommOverheads) -> pd.DataFrame:
    """Adds ``predicted_s`` (kernel-rate model where the library has a rate, else plain),
    ``predicted_plain_s``, the signed % errors ``error_pct`` / ``error_plain_pct``, the fixed term
    used (``fixed_s``), ``network_dominated`` (the fixed term is less than half the prediction)
    and, for normal-mode rows, ``error_vs_total_pct`` against kernel + notify time."""
    out = rows.copy()
    pred, plain, fixed = [], [], []
    algorithm = []
    for row in rows.itertuples(index=False):
        if row.table == "custom_allreduce":  # the faster algorithm under the fitted constants
            a = custom_allreduce_choice(overheads, {x: getattr(row, f"network_{x}_s")
                                                    for x in get_library("custom_allreduce").algorithms})
            o = overheads.overhead("custom_allreduce", a)
            d = o.duration_s(getattr(row, f"network_{a}_s"))
            pred.append(d)
            plain.append(d)
            fixed.append(o.fixed_s)
            algorithm.append(a)
            continue
        algorithm.append("")
        o = overheads.overhead(row.table, row.op)
        rf = float(getattr(row, "remote_fraction", 0.0))
        pred.append(o.duration_s(row.network_s, row.gpu_bytes, rf))
        plain.append(o.duration_s(row.network_s, None, rf))
        fixed.append(o.fixed_s + rf * o.cross_node_fixed_s)
    out["predicted_s"] = pred
    out["predicted_plain_s"] = plain
    out["algorithm"] = algorithm
    out["fixed_s"] = fixed
    # Rows whose prediction is at least half network/kernel-rate time (not the fixed term).
    out["network_dominated"] = out.predicted_s - out.fixed_s >= 0.5 * out.predicted_s
    out["error_pct"] = (out.predicted_s / out.measured_s - 1.0) * 100.0
    out["error_plain_pct"] = (out.predicted_plain_s / out.measured_s - 1.0) * 100.0
    if "notify_s" in out:  # normal mode: kernel + separately timed notify kernel
        out["error_vs_total_pct"] = (out.predicted_s / (out.measured_s + out.notify_s) - 1.0) * 100.0
    return out


def error_summary(rows: pd.DataFrame, by: Sequence[str] = ("table", "op", "node_num"),
                  column: str = "error_pct") -> pd.DataFrame:
    """Median / worst absolute % error (and median signed error) per group."""
    g = rows.assign(_abs=rows[column].abs()).groupby(list(by), sort=True)
    out = pd.DataFrame({
        "rows": g.size(),
        "median_abs_pct": g._abs.median(),
        "worst_abs_pct": g._abs.max(),
        "median_signed_pct": g[column].median(),
    }).reset_index()
    return out


# ------------------------------------------------------------------------------------------- run


@dataclass
class CommValidation:
    """Everything one validation run produces."""

    rows: pd.DataFrame                     # every simulated row with predictions (flow backend)
    overheads: CommOverheads               # single-node constants + cross-node terms fitted on 2 nodes
    summary: pd.DataFrame                  # error per (table, op, node_num), kernel-rate model
    summary_plain: pd.DataFrame            # same with the plain model
    summary_network: pd.DataFrame          # kernel-rate model, network-dominated rows only
    summary_strict: pd.DataFrame           # single-node constants only (no cross-node terms)
    packet_rows: pd.DataFrame | None = None  # packet-backend subset (same overheads)
    variant_rows: pd.DataFrame | None = None  # multi-node normal mode, per-rank-dedup variant
    sampled_rows: pd.DataFrame | None = None  # subset with sampled (not expected) routing
    timings: dict = field(default_factory=dict)

    def multi_node(self) -> pd.DataFrame:
        return self.rows[self.rows.node_num > 1]

    def single_node(self) -> pd.DataFrame:
        return self.rows[self.rows.node_num == 1]


#: Packet-backend subset: a few token counts per node count (fast enough for ns-3).
PACKET_NORMAL_TOKENS = (16, 256, 1024)
PACKET_LL_TOKENS = (8, 64, 256)
PACKET_NCCL_SIZES = (65536, 4 << 20, 64 << 20)


def packet_subset(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows re-run on the packet backend: DSv3-shaped DeepEP rows at a few token counts for every
    node count, and NCCL on 8 GPUs (half) at three buffer sizes."""
    dsv3 = (rows.hidden == 7168) & (rows.topk == 8) & (rows.num_experts == 256)
    normal = (rows.table == "deepep_normal") & dsv3 & rows.num_tokens.isin(PACKET_NORMAL_TOKENS)
    ll = ((rows.table == "deepep_ll") & dsv3 & rows.num_tokens.isin(PACKET_LL_TOKENS)
          & ((rows.node_num > 1) | (rows.version == MULTI_NODE_VERSION)))
    nccl = ((rows.table == "nccl") & (rows.num_gpus == 8) & (rows.dtype == "half")
            & rows.message_bytes.isin(PACKET_NCCL_SIZES))
    return rows[normal | ll | nccl].reset_index(drop=True)


#: Sensitivity to the routing draw: these token counts are re-run with sampled routing.
SAMPLED_TOKENS = (16, 256)


def sampled_subset(rows: pd.DataFrame) -> pd.DataFrame:
    """DSv3-shaped DeepEP rows at :data:`SAMPLED_TOKENS`, every node count."""
    dsv3 = (rows.hidden == 7168) & (rows.topk == 8) & (rows.num_experts == 256)
    keep = rows.table.str.startswith("deepep") & dsv3 & rows.num_tokens.isin(SAMPLED_TOKENS)
    return rows[keep].reset_index(drop=True)


def run_validation(rows: pd.DataFrame | None = None, *, packet: bool = True, variant: bool = True,
                   sampled: bool = True, progress: Callable[[str, int, int], None] | None = None) -> CommValidation:
    """Simulate ``rows`` (default: :func:`load_rows`) with the flow backend, fit the overheads on
    the single-node rows (the strict model: ``error_strict_pct``), fit the DeepEP cross-node
    terms on the 2-node rows (:func:`fit_cross_node`), predict all rows (``error_pct``); optionally re-run a subset on the packet backend, the
    per-rank-dedup variant of the multi-node normal rows, and a subset with sampled routing."""
    timings = {}
    t0 = time.perf_counter()
    rows = load_rows() if rows is None else rows
    timings["load_s"] = time.perf_counter() - t0

    def prog(stage):
        return (lambda i, n: progress(stage, i, n)) if progress else None

    t0 = time.perf_counter()
    sim = simulate_rows(rows, "flow", progress=prog("flow"))
    timings["flow_s"] = time.perf_counter() - t0
    single = fit_overheads(sim[sim.node_num == 1])
    strict = predict(sim, single)
    overheads = fit_cross_node(strict[strict.node_num == CROSS_NODE_FIT_NODES], single)
    sim = predict(sim, overheads)
    sim["predicted_strict_s"] = strict.predicted_s.to_numpy()
    sim["error_strict_pct"] = strict.error_pct.to_numpy()
    summary = error_summary(sim)
    summary_strict = error_summary(sim, column="error_strict_pct")
    summary_plain = error_summary(sim, column="error_plain_pct")
    summary_network = error_summary(sim[sim.network_dominated])
    packet_rows = variant_rows = None
    if packet:
        from cosim.network.packet_backend import engine_available

        if engine_available():
            t0 = time.perf_counter()
            sub = packet_subset(rows)
            packet_rows = predict(simulate_rows(sub, "packet", progress=prog("packet")), overheads)
            flow_ref = predict(simulate_rows(sub, "flow"), overheads)
            packet_rows["flow_network_s"] = flow_ref.network_s.to_numpy()
            packet_rows["flow_error_pct"] = flow_ref.error_pct.to_numpy()
            timings["packet_s"] = time.perf_counter() - t0
    if variant:
        t0 = time.perf_counter()
        multi = rows[(rows.table == "deepep_normal") & (rows.node_num > 1)]
        variant_rows = predict(simulate_rows(multi, "flow", normal_variant="per_rank", progress=prog("variant")),
                               overheads)
        timings["variant_s"] = time.perf_counter() - t0
    sampled_rows = None
    if sampled:
        t0 = time.perf_counter()
        sub = sampled_subset(rows)
        sampled_rows = predict(simulate_rows(sub, "flow", traffic="sampled", progress=prog("sampled")), overheads)
        ref = sim.set_index(["table", "op", "version", "node_num", "hidden", "topk", "num_experts", "num_tokens"])
        keys = list(sampled_rows[["table", "op", "version", "node_num", "hidden", "topk", "num_experts",
                                  "num_tokens"]].itertuples(index=False, name=None))
        sampled_rows["expected_network_s"] = ref.loc[keys, "network_s"].to_numpy()
        sampled_rows["expected_error_pct"] = ref.loc[keys, "error_pct"].to_numpy()
        timings["sampled_s"] = time.perf_counter() - t0
    return CommValidation(sim, overheads, summary, summary_plain, summary_network, summary_strict, packet_rows,
                          variant_rows, sampled_rows, timings)


# ----------------------------------------------------------------------------- across systems

#: Tables reported per system (``nvlink_a2a``: TensorRT-LLM's NVLink all-to-all, gb200 only).
CROSS_SYSTEM_TABLES = ("nccl", "custom_allreduce", "deepep_normal", "deepep_ll", "nvlink_a2a")
#: NVLink all-to-all rows the engine's constants model: dispatch in bf16 / fp8 and combine (bf16
#: on the wire whatever the dispatch dtype). nvfp4 dispatch and ``combine_low_precision`` are bound
#: by quantization work, which no overhead model here has (docs/validation-comm.md section 9).
NVLINK_A2A_ROWS = (("dispatch", "bfloat16"), ("dispatch", "fp8"), ("combine", "bfloat16"), ("combine", "fp8"),
                   ("combine", "nvfp4"))


def nvlink_a2a_rows(system: str = "gb200") -> pd.DataFrame:
    """The NVLink all-to-all rows of :data:`NVLINK_A2A_ROWS` (TensorRT-LLM two-sided kernel, EP 2-64
    in one NVL72 rack) in this module's columns (``table='nvlink_a2a'``, ``node_num`` 1: one
    NVLink domain); empty for systems without the table."""
    from cosim.validation import nvlink_a2a as N

    if system != N.SYSTEM:
        return pd.DataFrame()
    df = N.load_rows()
    keep = pd.Series(list(zip(df.phase, df.dtype))).isin(NVLINK_A2A_ROWS).to_numpy()
    df = df[keep]
    return pd.DataFrame({
        "system": system, "table": "nvlink_a2a", "op": df.phase, "version": df.version, "node_num": 1,
        "num_gpus": df.ep_size, "dtype": df.dtype, "hidden": df.hidden_size, "topk": df.topk,
        "num_experts": df.num_experts, "num_tokens": df.num_tokens, "measured_s": df.measured_s,
    }).reset_index(drop=True)


def simulate_nvlink_a2a_rows(rows: pd.DataFrame, backend: str = "flow") -> pd.DataFrame:
    """``network_s`` / ``gpu_bytes`` of NVLink all-to-all rows (:mod:`cosim.validation.nvlink_a2a`'s
    traffic on the ``gb200-nvl72`` rack)."""
    from cosim.validation import nvlink_a2a as N

    native = rows.rename(columns={"op": "phase", "num_gpus": "ep_size", "hidden": "hidden_size"})
    sim = N.simulate_rows(native, backend)
    out = rows.copy()
    out["network_s"] = sim.network_s.to_numpy()
    out["gpu_bytes"] = sim.gpu_bytes.to_numpy()
    out["remote_fraction"] = 0.0
    out["backend"] = backend
    return out


def system_rows(system: str, nccl_sizes: Sequence[int] | None = None,
                deepep_tokens: Sequence[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measured single-node rows of ``system`` for the cross-system table: NCCL, custom
    all-reduce, DeepEP normal and low-latency (node_num 1), and on gb200 the NVLink all-to-all
    (second frame); optionally subsampled (:func:`subsample`; the NVLink all-to-all rows by
    ``deepep_tokens``)."""
    rows = load_rows(system=system)
    rows = subsample(rows[rows.node_num == 1], nccl_sizes, deepep_tokens)
    a2a = nvlink_a2a_rows(system)
    if len(a2a) and deepep_tokens is not None:
        a2a = a2a[a2a.num_tokens.isin(list(deepep_tokens))]
    return rows, a2a.reset_index(drop=True)


def simulate_system(system: str, nccl_sizes: Sequence[int] | None = None,
                    deepep_tokens: Sequence[int] | None = None, backend: str = "flow") -> pd.DataFrame:
    """Every (optionally subsampled) single-node row of ``system``, simulated on its topology."""
    rows, a2a = system_rows(system, nccl_sizes, deepep_tokens)
    parts = [simulate_rows(rows, backend)]
    if len(a2a):
        parts.append(simulate_nvlink_a2a_rows(a2a, backend))
    return pd.concat(parts, ignore_index=True)


def cross_system_summary(rows: pd.DataFrame, by: Sequence[str] = ("system", "table", "op"),
                         column: str = "error_pct") -> pd.DataFrame:
    """Median and 90th-percentile absolute % error (and median signed error) per group."""
    g = rows.assign(_abs=rows[column].abs()).groupby(list(by), sort=False)
    return pd.DataFrame({
        "rows": g.size(),
        "median_abs_pct": g._abs.median(),
        "p90_abs_pct": g._abs.quantile(0.9),
        "median_signed_pct": g[column].median(),
    }).reset_index()
