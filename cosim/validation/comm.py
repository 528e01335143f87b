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

from cosim.engine.overheads import CommOverheads, LibraryOverhead, LinkEfficiency, remote_fraction
from cosim.network import FlowSet, simulate
from cosim.network import deepep as D
from cosim.network.collectives import CUSTOM_ALLREDUCE_ALGORITHMS as C_ALGORITHMS
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


def deepep_normal_rows(shapes: str = "all", system: str = SYSTEM, sms: str = "best") -> pd.DataFrame:
    """DeepEP normal-mode rows, one per (version, node_num, shape, tokens, dispatch|combine): the
    **best time over the SM counts** of that shape (dispatch and combine chosen separately;
    ``sms='all'``: one row per SM count instead, the data that separates the kernels' SM-bound
    rate from the link).
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
        best = df.loc[df.groupby(keys)[f"{op}_transmit_s"].idxmin()] if sms == "best" else df
        rows.append(pd.DataFrame({
            "system": system, "table": "deepep_normal", "op": op, "version": best.sglang_version,
            "node_num": best.node_num, "num_gpus": best.node_num * spec.gpus_per_node, "hidden": best.hidden_size, "topk": best.topk,
            "num_experts": best.num_experts, "num_tokens": best.num_tokens, "sms": best[f"{op}_sms"],
            "measured_s": best[f"{op}_transmit_s"], "notify_s": best[f"{op}_notify_s"],
        }))
    return pd.concat(rows, ignore_index=True).sort_values(
        ["node_num", "op", "hidden", "topk", "num_experts", "num_tokens", "sms"]).reset_index(drop=True)


def with_network_of(rows: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (e.g. every SM count of a normal-mode shape) with the simulated columns of the
    ``simulated`` row of the same traffic (system, table, op, node_num, shape, tokens)."""
    keys = ["system", "table", "op", "node_num", "hidden", "topk", "num_experts", "num_tokens"]
    cols = ["network_s", "gpu_bytes", "scale_up_bytes_per_s", "remote_fraction"]
    sim = simulated.drop_duplicates(keys)[keys + cols]
    return rows.drop(columns=[c for c in cols if c in rows], errors="ignore").merge(sim, on=keys, how="inner")


def normal_sm_rows(simulated: pd.DataFrame) -> pd.DataFrame:
    """Every SM count of the single-node DeepEP normal-mode rows in ``simulated`` (the same traffic
    on fewer SMs: :func:`with_network_of`), for :func:`fit_overheads`."""
    sims = simulated[(simulated.table == "deepep_normal") & (simulated.node_num == 1)]
    if sims.empty:
        return sims
    parts = [deepep_normal_rows(system=s, sms="all") for s in sims.system.unique()]
    every = pd.concat(parts, ignore_index=True)
    return with_network_of(every[every.node_num == 1], sims)


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


#: Algorithms simulated for a row besides its library's default, per table (the prediction takes
#: the one with the shorter predicted duration, as the kernels' AUTO strategy / NCCL's tuner):
#: custom all-reduce one-shot / two-shot / NVLS; NCCL all-reduce ring / NVLS.
ROW_ALGORITHMS = {"custom_allreduce": C_ALGORITHMS, "nccl": ("nvls",)}


def nccl_nvls_flows(row) -> FlowSet:
    """NCCL's NVLS all-reduce of one row (:func:`cosim.network.collectives.nvls_all_reduce`)."""
    n = int(row.num_gpus)
    call = CommCall("nccl", "all_reduce", tuple(range(n)), np.array([[int(row.message_bytes)]], dtype=np.int64))
    return _flows(call, BuildOptions(gpus_per_node(1, _row_system(row)), algorithm="nvls"), "nvls_all_reduce")


def _row_algorithms(row) -> tuple[str, ...]:
    if row.table == "nccl":
        return ROW_ALGORITHMS["nccl"] if row.op == "all_reduce" else ()
    return ROW_ALGORITHMS.get(row.table, ())


def simulate_rows(rows: pd.DataFrame, backend: str = "flow", normal_variant: str = "hierarchical",
                  traffic: str = "expected", progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Simulate every row; adds ``network_s`` (completion of the traffic on the topology),
    ``gpu_bytes`` (most bytes one GPU emits), ``scale_up_bytes_per_s`` (NVLink bandwidth of the
    topology's GPUs), ``flows`` and ``sim_wall_s``. Rows with several algorithms
    (:data:`ROW_ALGORITHMS`) also get ``network_<alg>_s`` and ``gpu_bytes_<alg>`` for each
    (custom all-reduce: ``network_s`` is the fastest of them; NCCL all-reduce: the ring's);
    :func:`predict` picks one with the fitted overheads."""
    from cosim.engine.overheads import topology_scale_up_bytes_per_s

    out = rows.copy()
    network, gpu_bytes, nflows, wall, scale_up = [], [], [], [], []
    algs = sorted({a for v in ROW_ALGORITHMS.values() for a in v})
    per_algorithm: dict[str, list[float]] = {a: [] for a in algs}
    per_algorithm_bytes: dict[str, list[float]] = {a: [] for a in algs}
    for i, row in enumerate(rows.itertuples(index=False)):
        t0 = time.perf_counter()
        system = _row_system(row)
        own = _row_algorithms(row)
        node_num = 1
        for a in algs:
            if a not in own:
                per_algorithm[a].append(np.nan)
                per_algorithm_bytes[a].append(np.nan)
                continue
            fs = custom_flows(row, a) if row.table == "custom_allreduce" else nccl_nvls_flows(row)
            per_algorithm[a].append(simulate(topology_for(1, system=system), fs, backend,
                                             router=_router(1, "pxn", system)).completion_time_s)
            per_algorithm_bytes[a].append(max_gpu_bytes(fs))
        if row.table == "custom_allreduce":
            network.append(min(per_algorithm[a][-1] for a in own))
        else:
            fs, node_num, cross_rail = build_flows(row, normal_variant, traffic)
            network.append(simulate(topology_for(node_num, cross_rail, system), fs, backend,
                                    router=_router(node_num, cross_rail, system)).completion_time_s
                           if len(fs) else 0.0)
        gpu_bytes.append(max_gpu_bytes(fs))
        scale_up.append(topology_scale_up_bytes_per_s(topology_for(node_num, system=system)))
        nflows.append(len(fs))
        wall.append(time.perf_counter() - t0)
        if progress is not None:
            progress(i + 1, len(rows))
    out["network_s"] = network
    for a in algs:
        out[f"network_{a}_s"] = per_algorithm[a]
        out[f"gpu_bytes_{a}"] = per_algorithm_bytes[a]
    out["gpu_bytes"] = gpu_bytes
    out["scale_up_bytes_per_s"] = scale_up
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


def _mare(pred: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute relative error."""
    return float(np.mean(np.abs(pred / measured - 1.0)))


def _nelder_mead(loss: Callable[[np.ndarray], float], starts: Sequence[Sequence[float]]) -> np.ndarray:
    """Best of Nelder-Mead runs from ``starts`` (scipy comes with aiconfigurator-core)."""
    from scipy.optimize import minimize

    best = None
    for x0 in starts:
        r = minimize(loss, np.asarray(x0, dtype=float), method="Nelder-Mead",
                     options=dict(maxiter=4000, xatol=1e-4, fatol=1e-8))
        if best is None or r.fun < best.fun:
            best = r
    return best.x


def _cols(rows: pd.DataFrame, *names: str) -> list[np.ndarray]:
    return [rows[n].to_numpy(dtype=float) for n in names]


def fit_plain(rows: pd.DataFrame, link_efficiency: float = 1.0) -> LibraryOverhead:
    """``fixed + network / (link_efficiency x efficiency)`` on ``rows`` (columns measured_s,
    network_s); returns the kernel-side constants (``bandwidth_efficiency`` relative to the
    achievable link)."""
    m, net = _cols(rows, "measured_s", "network_s")
    fixed, eff, _ = _fit_fixed_plus(m, lambda e: net / (link_efficiency * e), 0.05, 3.0)
    return LibraryOverhead(fixed, eff)


#: SM budget DeepEP normal mode's kernel rate refers to (the largest of the measured tables, where
#: tuned deployments run); a row timed on ``sms`` SMs has ``rate x sms / 24``.
NORMAL_KERNEL_SMS = 24


def _sm_scale(rows: pd.DataFrame) -> np.ndarray:
    if "sms" not in rows or rows.table.ne("deepep_normal").all():
        return np.ones(len(rows))
    sms = rows.sms.to_numpy(dtype=float)
    return np.where(np.isfinite(sms) & (sms > 0), sms / NORMAL_KERNEL_SMS, 1.0)


def fit_kernel_rate(rows: pd.DataFrame, link_efficiency: float = 1.0) -> LibraryOverhead:
    """``fixed + max(network / link_efficiency, gpu_bytes / rate)`` on ``rows`` (DeepEP normal
    rows: the rate at :data:`NORMAL_KERNEL_SMS` SMs, scaled by each row's SM count);
    ``bandwidth_efficiency`` is then fitted with the same fixed term (the plain model's fallback
    when ``gpu_bytes`` is unknown)."""
    m, net, gb = _cols(rows, "measured_s", "network_s", "gpu_bytes")
    link = net / link_efficiency
    scale = _sm_scale(rows)
    fixed, rate, _ = _fit_fixed_plus(m, lambda r: np.maximum(link, gb / (r * scale)), 1e9, 2e12)
    w = 1.0 / m
    grid = np.geomspace(0.05, 3.0, 400)
    eff = float(grid[np.argmin([np.mean(np.abs(fixed + link / e - m) * w) for e in grid])])
    return LibraryOverhead(fixed, eff, rate)


#: NCCL's LL protocol: 8-byte words of 4 data bytes and a 4-byte flag (twice the wire bytes).
NCCL_LL_WIRE_FACTOR = 2.0


def _nccl_ring_terms(rows: pd.DataFrame, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """Simple and LL network terms of ring rows (as :meth:`LibraryOverhead.duration_s`)."""
    net, gb, up = _cols(rows, "network_s", "gpu_bytes", "scale_up_bytes_per_s")
    simple = net / eta
    return simple, simple + (NCCL_LL_WIRE_FACTOR - 1) * gb / (eta * up)


def _nvls_term(rows: pd.DataFrame, eta: float) -> np.ndarray:
    return rows.network_nvls_s.to_numpy(dtype=float) / eta


def _grid_two_fixed(m: np.ndarray, a: np.ndarray, b: np.ndarray, hi_a: float, hi_b: float) -> tuple[float, float]:
    """Best ``(fa, fb)`` of ``min(fa + a, fb + b) ~ m`` on a grid (least mean absolute relative error)."""
    fa = np.linspace(0.0, hi_a, 121)[:, None, None]
    fb = np.linspace(0.0, hi_b, 121)[None, :, None]
    loss = np.mean(np.abs(np.minimum(fa + a, fb + b) / m - 1.0), axis=2)
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return float(fa[i, 0, 0]), float(fb[0, j, 0])


def fit_nccl(rows: pd.DataFrame, eta: float) -> dict[str, LibraryOverhead]:
    """NCCL constants of one operation's rows on links of NVLink efficiency ``eta``: the Simple
    protocol (``fixed_S + network / eta``) with the LL protocol as alternative (``fixed_LL +
    network / eta`` plus its flags, :data:`NCCL_LL_WIRE_FACTOR`), the faster taken per call; no
    kernel-side bandwidth factor (NCCL fills the achievable link). With NVLS rows
    (``network_nvls_s``), also ``nvls``: ``fixed_N + network_nvls / (eta x efficiency_N)``, the
    switch's reduction efficiency ``efficiency_N``. Returns ``{"ring": ..., "nvls": ...}``."""
    m = rows.measured_s.to_numpy(dtype=float)
    simple, ll = _nccl_ring_terms(rows, eta)
    f_s, f_ll = _grid_two_fixed(m, simple, ll, 80e-6, 30e-6)
    has_nvls = "network_nvls_s" in rows and rows.network_nvls_s.notna().any()
    if not has_nvls:
        x = _nelder_mead(lambda x: _mare(np.minimum(abs(x[0]) * 1e-6 + simple, abs(x[1]) * 1e-6 + ll), m) * 1e2,
                         [[f_s * 1e6, f_ll * 1e6]]) * 1e-6
        ring = LibraryOverhead(abs(x[0]), alternatives=(LibraryOverhead(abs(x[1]), wire_bytes_factor=NCCL_LL_WIRE_FACTOR),))
        return {"ring": ring}
    nv = _nvls_term(rows, 1.0)
    nv = np.where(np.isfinite(nv), nv, np.inf)

    def pred(x):
        ring_t = np.minimum(abs(x[0]) * 1e-6 + simple, abs(x[1]) * 1e-6 + ll)
        return np.minimum(ring_t, abs(x[2]) * 1e-6 + nv / (eta * abs(x[3])))

    starts = [[f_s * 1e6, f_ll * 1e6, fn, k] for fn in (10.0, 40.0, 80.0) for k in (0.6, 1.0)]
    x = _nelder_mead(lambda x: _mare(pred(x), m) * 1e2, starts)
    ring = LibraryOverhead(abs(x[0]) * 1e-6,
                           alternatives=(LibraryOverhead(abs(x[1]) * 1e-6, wire_bytes_factor=NCCL_LL_WIRE_FACTOR),))
    return {"ring": ring, "nvls": LibraryOverhead(abs(x[2]) * 1e-6, abs(x[3]))}


def fit_custom_allreduce(rows: pd.DataFrame, eta: float = 1.0) -> dict[str, LibraryOverhead]:
    """Custom all-reduce: ``min(fixed_one + one_shot / eta, fixed_two + two_shot / eta, fixed_N +
    nvls / (eta x efficiency_N))`` (the kernels take the fastest algorithm: one-shot has the
    least fixed cost, two-shot fewer bytes, NVLS -- TensorRT-LLM hands large buffers to NCCL,
    which reduces in the NVSwitch -- the fewest bytes per port), least mean absolute relative
    error. One-shot and two-shot fill the achievable link (no kernel-side factor). Returns the
    constants per algorithm (``nvls`` only when the rows have ``network_nvls_s``)."""
    m = rows.measured_s.to_numpy(dtype=float)
    one = rows.network_one_shot_s.to_numpy(dtype=float) / eta
    two = rows.network_two_shot_s.to_numpy(dtype=float) / eta
    f1, f2 = _grid_two_fixed(m, one, two, 8e-6, 40e-6)
    if "network_nvls_s" not in rows or rows.network_nvls_s.isna().all():
        return {"one_shot": LibraryOverhead(f1), "two_shot": LibraryOverhead(f2)}
    nv = rows.network_nvls_s.to_numpy(dtype=float) / eta

    def pred(x):
        return np.minimum(np.minimum(abs(x[0]) * 1e-6 + one, abs(x[1]) * 1e-6 + two),
                          abs(x[2]) * 1e-6 + nv / abs(x[3]))

    starts = [[f1 * 1e6, f2 * 1e6, fn, k] for fn in (10.0, 40.0, 80.0) for k in (0.6, 1.0)]
    x = _nelder_mead(lambda x: _mare(pred(x), m) * 1e2, starts)
    return {"one_shot": LibraryOverhead(abs(x[0]) * 1e-6), "two_shot": LibraryOverhead(abs(x[1]) * 1e-6),
            "nvls": LibraryOverhead(abs(x[2]) * 1e-6, abs(x[3]))}


def _single_node_fits(rows: pd.DataFrame, normal: pd.DataFrame, eta: float) -> tuple[dict, dict[str, float]]:
    """Every single-node library fit on links of NVLink efficiency ``eta``: (constants by key,
    mean absolute relative error by (table, op) group)."""
    ops: dict[str, LibraryOverhead] = {}
    losses: dict[str, float] = {}
    nccl = rows[rows.table == "nccl"]
    for op, part in nccl.groupby("op"):
        fits = fit_nccl(part, eta)
        ops[f"nccl.{op}"] = fits["ring"]
        if "nvls" in fits:
            ops["nccl.nvls"] = fits["nvls"]
    if len(nccl):
        ops["nccl"] = fit_nccl(nccl.assign(network_nvls_s=np.nan), eta)["ring"]
    custom = rows[rows.table == "custom_allreduce"]
    if len(custom):
        for a, o in fit_custom_allreduce(custom, eta).items():
            ops[f"custom_allreduce.{a}"] = o
    for lib, part, fit in (("deepep_normal", normal, fit_kernel_rate),
                           ("deepep_ll", rows[rows.table == "deepep_ll"], _fit_ll)):
        if part.empty:
            continue
        ops[lib] = fit(part, eta)
        for op, sub in part.groupby("op"):
            ops[f"{lib}.{op}"] = fit(sub, eta)
    o = _assemble(ops, LinkEfficiency(nvlink=eta))
    pred = predict(pd.concat([rows[rows.table.isin(["nccl", "custom_allreduce", "deepep_ll"])], normal],
                             ignore_index=True), o)
    for (t, op), g in pred.groupby(["table", "op"]):
        losses[f"{t}.{op}"] = float(np.mean(np.abs(g.error_pct / 100.0)))
    return ops, losses


def _fit_ll(rows: pd.DataFrame, eta: float) -> LibraryOverhead:
    """DeepEP low-latency mode: plain within a node (its kernels' rate is a fraction of the
    achievable NVLink rate, so it scales with the link); across nodes the NIC bounds it."""
    return fit_plain(rows, eta)


def _assemble(ops: dict[str, LibraryOverhead], links: LinkEfficiency) -> CommOverheads:
    """A :class:`CommOverheads` from fitted constants by key (``'nccl'``, ``'nccl.all_reduce'``,
    ``'deepep_ll'`` ...)."""
    ops = dict(ops)
    nccl = ops.pop("nccl", LibraryOverhead(0.0))
    libs = {lib: ops.pop(lib, LibraryOverhead(0.0)) for lib in ("deepep_normal", "deepep_ll")}
    custom = ops.get("custom_allreduce.one_shot")
    return CommOverheads(nccl=nccl, deepep_normal=libs["deepep_normal"], deepep_ll=libs["deepep_ll"], p2p=nccl,
                         ops=ops, custom_allreduce=custom, links=links)


#: Search interval of the NVLink efficiency (achievable fraction of line rate).
NVLINK_EFFICIENCY_RANGE = (0.5, 1.0)


def fit_overheads(rows: pd.DataFrame, normal_sm_rows: pd.DataFrame | None = None,
                  nvlink_efficiency: float | None = None) -> CommOverheads:
    """Fit :class:`CommOverheads` on simulated **single-node** rows (NCCL <= 8 GPUs, custom
    all-reduce, DeepEP node_num 1) of one system; multi-node rows are refused rather than silently
    used.

    One link constant, the **NVLink efficiency** (:class:`LinkEfficiency`), is shared by every
    library: NCCL (Simple / LL protocols, NVLS), the custom all-reduce's one-shot / two-shot and
    DeepEP normal mode's link bound use the achievable link with no kernel-side bandwidth factor,
    so the efficiency is what they have in common; it is found by golden-section search on the
    mean of the per-operation errors, every library's kernel-side constants refitted at each
    trial value (``nvlink_efficiency`` fixes it instead). DeepEP normal mode is fitted on
    ``normal_sm_rows`` when given (every SM count: the SM-bound kernel rate and the link bound are
    then separable), else on its rows in ``rows``."""
    if (rows.node_num != 1).any() or (normal_sm_rows is not None and (normal_sm_rows.node_num != 1).any()):
        raise ValueError("fit_overheads: only single-node rows may be used for fitting")
    normal = rows[rows.table == "deepep_normal"] if normal_sm_rows is None else normal_sm_rows
    if nvlink_efficiency is None:
        def loss(eta: float) -> float:
            return float(np.mean(list(_single_node_fits(rows, normal, eta)[1].values())))

        a, b = NVLINK_EFFICIENCY_RANGE
        grid = np.linspace(a, b, 11)
        k = int(np.argmin([loss(e) for e in grid]))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        for _ in range(8):
            x1, x2 = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
            if loss(x1) <= loss(x2):
                hi = x2
            else:
                lo = x1
        nvlink_efficiency = round(float(0.5 * (lo + hi)), 3)
    ops, _ = _single_node_fits(rows, normal, nvlink_efficiency)
    return _assemble(ops, LinkEfficiency(nvlink=nvlink_efficiency))


#: Node count whose rows calibrate the cross-node terms; the other multi-node rows test them.
CROSS_NODE_FIT_NODES = 2


def fit_cross_node(rows: pd.DataFrame, overheads: CommOverheads) -> CommOverheads:
    """Add the RDMA link efficiency and the cross-node terms of every DeepEP operation to
    ``overheads`` (whose single-node constants stay as they are), fitted on simulated **2-node**
    rows only (least mean absolute relative error). Rows of other node counts are refused: the
    4- and 8-node rows are the test.

    The **RDMA efficiency** (:attr:`LinkEfficiency.rdma`, shared by every library) comes from
    the low-latency rows, whose kernels are not SM-bound (the NIC is their limit), jointly with
    their ``cross_node_fixed_s``; then each normal-mode operation gets ``cross_node_fixed_s`` and
    a kernel-side ``rdma_efficiency`` (<= 1: its internode kernels reach less than the achievable
    RDMA rate when they are SM-bound). Library-wide entries get the pooled fit of their operations."""
    if (rows.node_num != CROSS_NODE_FIT_NODES).any():
        raise ValueError(f"fit_cross_node: only {CROSS_NODE_FIT_NODES}-node rows may be used for fitting")
    ops = dict(overheads.ops)
    ll = rows[rows.table == "deepep_ll"]
    links = overheads.links
    if len(ll):
        groups = [(None, ll)] + list(ll.groupby("op"))

        def loss(e: float) -> float:
            trial = dataclasses.replace(overheads, links=dataclasses.replace(links, rdma=float(e)))
            return float(np.mean([_fit_cross(sub, trial, "deepep_ll", op, rdma=False)[1] for op, sub in groups]))

        best = min(np.linspace(0.5, 1.0, 26), key=loss)
        fine = min(np.clip(np.linspace(best - 0.02, best + 0.02, 21), 0.05, 1.0), key=loss)
        links = dataclasses.replace(links, rdma=round(float(fine), 3))
    out = dataclasses.replace(overheads, links=links)
    libs = {}
    for lib in ("deepep_normal", "deepep_ll"):
        part = rows[rows.table == lib]
        if part.empty:
            libs[lib] = getattr(overheads, lib)
            continue
        libs[lib] = _fit_cross(part, out, lib, None, rdma=lib == "deepep_normal")[0]
        for op, sub in part.groupby("op"):
            ops[f"{lib}.{op}"] = _fit_cross(sub, out, lib, op, rdma=lib == "deepep_normal")[0]
    return dataclasses.replace(out, deepep_normal=libs["deepep_normal"], deepep_ll=libs["deepep_ll"], ops=ops)


def _fit_cross(rows: pd.DataFrame, overheads: CommOverheads, library: str, op: str | None,
               rdma: bool) -> tuple[LibraryOverhead, float]:
    """Grid search of ``cross_node_fixed_s`` (and, with ``rdma``, the kernel-side
    ``rdma_efficiency``) for one operation, then refinement; returns the kernel-side constants
    and the loss."""
    m = rows.measured_s.to_numpy()
    rf = rows.remote_fraction.to_numpy()
    net = rows.network_s.to_numpy()
    gb = rows.gpu_bytes.to_numpy()
    scale = _sm_scale(rows)
    base = overheads._kernel_side(library, op)
    links = overheads.links

    def loss(a: float, e: float) -> float:
        o = dataclasses.replace(base, cross_node_fixed_s=a, rdma_efficiency=e)
        rated = [dataclasses.replace(o, kernel_rate_bytes_per_s=o.kernel_rate_bytes_per_s * s)
                 if o.kernel_rate_bytes_per_s is not None and s != 1 else o for s in scale]
        pred = np.array([x.with_links(links, overheads.scale_up_bytes_per_s).duration_s(n, g, r)
                         for x, n, g, r in zip(rated, net, gb, rf)])
        return float(np.mean(np.abs(pred / m - 1.0)))

    effs = np.linspace(0.5, 1.0, 26) if rdma else [1.0]
    _, a0, e0 = min((loss(a, e), a, e) for a in np.linspace(0.0, 100e-6, 51) for e in effs)
    fine_e = np.clip(np.linspace(e0 - 0.02, e0 + 0.02, 21), 0.05, 1.0) if rdma else [1.0]
    fine = min((loss(a, e), a, e) for a in np.clip(np.linspace(a0 - 2e-6, a0 + 2e-6, 21), 0.0, None)
               for e in fine_e)
    return dataclasses.replace(base, cross_node_fixed_s=float(fine[1]), rdma_efficiency=float(fine[2])), fine[0]


def strip_cross_node(overheads: CommOverheads) -> CommOverheads:
    """``overheads`` without cross-node terms and RDMA efficiency (the strict
    single-node-fitted model)."""
    def plain(o: LibraryOverhead) -> LibraryOverhead:
        return dataclasses.replace(o, cross_node_fixed_s=0.0, rdma_efficiency=1.0)

    return dataclasses.replace(overheads, deepep_normal=plain(overheads.deepep_normal),
                               deepep_ll=plain(overheads.deepep_ll),
                               ops={k: plain(v) for k, v in overheads.ops.items()},
                               links=dataclasses.replace(overheads.links, rdma=1.0))


def _candidates(row) -> dict[str, tuple[str, float, float]]:
    """Algorithms a row can run: name -> (constants key op, network time, gpu bytes)."""
    if row.table == "custom_allreduce":
        return {a: (a, getattr(row, f"network_{a}_s"), getattr(row, f"gpu_bytes_{a}")) for a in C_ALGORITHMS
                if np.isfinite(getattr(row, f"network_{a}_s", np.nan))}
    out = {"": (row.op, row.network_s, row.gpu_bytes)}
    if row.table == "nccl" and np.isfinite(getattr(row, "network_nvls_s", np.nan)):
        out["nvls"] = ("nvls", row.network_nvls_s, row.gpu_bytes_nvls)
    return out


def predict(rows: pd.DataFrame, overheads: CommOverheads) -> pd.DataFrame:
    """Adds ``predicted_s`` (kernel-rate model where the library has a rate, else plain; the
    fastest algorithm where a row has several: custom all-reduce one-shot / two-shot / NVLS, NCCL
    all-reduce ring / NVLS), ``predicted_plain_s``, the signed % errors ``error_pct`` /
    ``error_plain_pct``, the algorithm and the fixed term used (``algorithm``, ``fixed_s``),
    ``network_dominated`` (the fixed term is less than half the prediction) and, for normal-mode
    rows, ``error_vs_total_pct`` against kernel + notify time. Each row's constants are applied
    to its topology's NVLink bandwidth (``scale_up_bytes_per_s``; DeepEP normal rows at their SM
    count, :data:`NORMAL_KERNEL_SMS`)."""
    out = rows.copy()
    pred, plain, fixed = [], [], []
    algorithm = []
    scale = _sm_scale(rows)
    bound: dict[float, CommOverheads] = {}
    for row, sm in zip(rows.itertuples(index=False), scale):
        up = getattr(row, "scale_up_bytes_per_s", None)
        up = overheads.scale_up_bytes_per_s if up is None or not np.isfinite(up) else float(up)
        o_all = bound.setdefault(up, dataclasses.replace(overheads, scale_up_bytes_per_s=up))
        rf = float(getattr(row, "remote_fraction", 0.0))
        best = None
        for name, (op, net, gb) in _candidates(row).items():
            o = o_all.overhead(row.table, op)
            if o.kernel_rate_bytes_per_s is not None and sm != 1:
                o = dataclasses.replace(o, kernel_rate_bytes_per_s=o.kernel_rate_bytes_per_s * sm)
            d = o.duration_s(net, gb, rf)
            if best is None or d < best[0]:
                best = (d, o.duration_s(net, None, rf) if not o.alternatives else d, name,
                        o.fixed_s + rf * o.cross_node_fixed_s)
        pred.append(best[0])
        plain.append(best[1])
        algorithm.append(best[2])
        fixed.append(best[3])
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
    single = fit_overheads(sim[sim.node_num == 1], normal_sm_rows(sim))
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
