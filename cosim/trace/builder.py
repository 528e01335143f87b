"""Build the execution trace of one forward step (prefill chunk or decode step) of a MoE model.

For every rank the trace is a DAG of compute nodes (op, per-rank shape, duration and its source
from the kernel tables) and communication nodes (collective, group, per-peer bytes):

- DP attention (``parallel.dp_attention``): each rank runs attention on its own requests; MoE
  layers dispatch tokens to the ranks of their experts and combine the outputs back (DeepEP
  normal for prefill, low-latency for decode, with the traffic of :mod:`cosim.network.deepep`:
  per-selection messages in low-latency mode, per-rank and per-node deduplicated matrices in
  normal mode); the shared expert runs on the compute stream while the dispatch is in flight;
  dense layers run replicated.
- TP attention: heads split over ``tp`` ranks; an all-reduce after ``o_proj`` and after the FFN
  (dense, or MoE with experts sharded over the group).
- Pipeline stages send activations to the next stage after their last layer.

Two-batch overlap (``overlap="tbo"``) splits the batch into two micro-batches and orders each
layer as attention(0), dispatch(0) | attention(1), dispatch(1) | experts(0), combine(0) |
experts(1), combine(1), so one micro-batch communicates while the other computes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cosim.errors import ConfigError
from cosim.models import (
    ModelSpec, Parallelism, Precision, head_comm, layer_comm, layer_ops, model_head_ops,
)
from cosim.ops import AttentionOp, ComputeOp, GemmOp, MemoryOp, MoeOp
from cosim.network import deepep as D
from cosim.network import nvlink_a2a as NV
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode, RankTrace, StepTrace
from cosim.trace.moe_traffic import DEFAULT_GPUS_PER_NODE, sampled_routing_counts

Overlap = Literal["none", "tbo"]
_SKEW_TO_DISTRIBUTION = ((0.0, "balanced"), (1.1, "power_law_1.01"), (float("inf"), "power_law_1.2"))


@dataclass(frozen=True)
class StepSpec:
    """What to simulate: one forward step of ``model`` under ``parallel`` and ``precision``.

    Attributes:
        phase: ``context`` (a prefill chunk) or ``generation`` (one decode step).
        batch_per_rank: requests per attention rank (DP attention) or per TP group.
        new_tokens: tokens per request in this step (prefill chunk length; 1 in decode).
        prefix_tokens: tokens already in the KV cache per request (context length).
        overlap: ``none`` or ``tbo`` (two-batch overlap).
        routing_skew: 0 = uniform routing; > 0 = power-law expert popularity (hot experts).
        seed: seed of the routing sample.
        moe_library: dispatch/combine implementation: DeepEP ``deepep_normal`` / ``deepep_ll``
            (``auto`` = normal in prefill, low-latency in decode), or TensorRT-LLM's NVLink
            all-to-all ``nvlink_a2a`` (one NVLink domain, e.g. a GB200 NVL72 rack; validated on
            gb200, ``docs/validation-comm.md`` section 9).
        moe_load: how the routed-expert compute of each rank is sized. ``per_rank`` (default, with
            DeepEP dispatch): from the (token, expert) selections that rank receives in the step's
            routing sample (the kernel table's balanced rows at the equivalent token count), so
            the random imbalance of uniform routing and the hot ranks under ``routing_skew``
            make stragglers that the dispatch/combine of the next layer waits for. ``table``:
            every rank gets the table's time for the layer's token count and the router
            distribution matching ``routing_skew`` (aiconfigurator's convention: that row times
            the rank holding the hot experts).
        redundant_experts: extra expert slots for expert-parallel load balancing (EPLB): the
            most loaded experts (by the expected popularity of ``routing_skew``) are replicated
            and the replicas packed onto the EP ranks (:func:`cosim.trace.moe_traffic.eplb_placement`);
            each selection goes to one replica. Needs the all-to-all MoE pattern (DP attention),
            ``num_experts + redundant_experts`` divisible by the EP size, and no node-limited
            routing (DeepEP normal mode across nodes).
        allreduce_library: library of the tensor-parallel all-reduces. ``auto`` (default): the
            frameworks' custom one-shot / two-shot kernels (``custom_allreduce``, validated on
            TensorRT-LLM's measured table) when the group is inside one node, NCCL's ring across
            nodes; or force ``nccl`` / ``custom_allreduce``.
        gpus_per_node: GPUs per node (scale-up domain) for DeepEP's per-node traffic; the node of
            rank r is ``r // gpus_per_node``. ``None``: the topology's in
            :func:`cosim.engine.step.simulate_step`, DeepEP's 8 in :func:`build_step_trace`.
    """

    model: ModelSpec
    parallel: Parallelism
    precision: Precision
    phase: Literal["context", "generation"]
    batch_per_rank: int
    new_tokens: int = 1
    prefix_tokens: int = 0
    overlap: Overlap = "none"
    routing_skew: float = 0.0
    seed: int = 0
    moe_library: Literal["auto", "deepep_normal", "deepep_ll", "nvlink_a2a"] = "auto"
    gpus_per_node: int | None = None
    moe_load: Literal["per_rank", "table"] = "per_rank"
    allreduce_library: Literal["auto", "nccl", "custom_allreduce"] = "auto"
    redundant_experts: int = 0

    def __post_init__(self) -> None:
        if self.gpus_per_node is not None and self.gpus_per_node < 1:
            raise ConfigError("<api>", "gpus_per_node", f"expected >= 1, got {self.gpus_per_node}")
        if self.phase not in ("context", "generation"):
            raise ConfigError("<api>", "phase", f"expected 'context' or 'generation', got {self.phase!r}")
        if self.batch_per_rank < 1:
            raise ConfigError("<api>", "batch_per_rank", f"expected >= 1, got {self.batch_per_rank}")
        if self.overlap not in ("none", "tbo"):
            raise ConfigError("<api>", "overlap", f"expected 'none' or 'tbo', got {self.overlap!r}")
        if self.overlap == "tbo" and self.batch_per_rank * self.new_tokens < 2:
            raise ConfigError("<api>", "overlap", "two-batch overlap needs at least 2 tokens per rank")
        if self.allreduce_library not in ("auto", "nccl", "custom_allreduce"):
            raise ConfigError("<api>", "allreduce_library",
                              f"expected 'auto', 'nccl' or 'custom_allreduce', got {self.allreduce_library!r}")
        if self.moe_library not in ("auto", "deepep_normal", "deepep_ll", "nvlink_a2a"):
            raise ConfigError("<api>", "moe_library", "expected 'auto', 'deepep_normal', 'deepep_ll' or "
                                                      f"'nvlink_a2a', got {self.moe_library!r}")
        if self.redundant_experts < 0:
            raise ConfigError("<api>", "redundant_experts", f"expected >= 0, got {self.redundant_experts!r}")
        if self.moe_load not in ("per_rank", "table"):
            raise ConfigError("<api>", "moe_load", f"expected 'per_rank' or 'table', got {self.moe_load!r}")
        if self.phase == "generation" and self.new_tokens != 1:
            raise ConfigError("<api>", "new_tokens", "a decode step has new_tokens = 1")

    @property
    def distribution(self) -> str:
        """Kernel-table router distribution matching ``routing_skew``."""
        return next(name for bound, name in _SKEW_TO_DISTRIBUTION if self.routing_skew <= bound)

    @property
    def library(self) -> str:
        if self.moe_library != "auto":
            return self.moe_library
        return "deepep_normal" if self.phase == "context" else "deepep_ll"


def op_class(op: ComputeOp) -> str:
    """Coarse class of an op for step-time breakdowns."""
    if isinstance(op, AttentionOp):
        return "attention"
    if isinstance(op, MoeOp):
        return "moe_experts"
    name = op.name
    if name.startswith("shared_"):
        return "shared_expert"
    if name.startswith("ffn_"):
        return "dense_ffn"
    if name in ("embedding", "final_norm", "lm_head"):
        return "head"
    if name == "router":
        return "router"
    if isinstance(op, GemmOp):
        return "attention_proj"
    return "norm_and_misc"


class _TraceWriter:
    """Appends nodes to all ranks of a stage and collectives to the step."""

    def __init__(self, num_ranks: int, kernels):
        self.ranks = [RankTrace(r) for r in range(num_ranks)]
        self.collectives: list[CollectiveSpec] = []
        self.kernels = kernels
        self._durations: dict = {}

    def duration(self, op: ComputeOp):
        d = self._durations.get(op)
        if d is None:
            d = self._durations[op] = self.kernels.duration(op)
        return d

    def compute(self, ranks: list[int], op: ComputeOp | dict[int, ComputeOp], deps: dict[int, list[int]],
                layer: int, mb: int) -> dict[int, int]:
        """One compute node on every rank of ``ranks``: the same ``op``, or ``op[rank]`` per rank."""
        out = {}
        for r in ranks:
            rank_op = op[r] if isinstance(op, dict) else op
            d = self.duration(rank_op)
            nodes = self.ranks[r].nodes
            nid = len(nodes)
            nodes.append(ComputeNode(nid, f"L{layer}.mb{mb}.{rank_op.name}", rank_op, d.seconds, d.source,
                                     tuple(deps.get(r, ())), layer, mb, op_class(rank_op)))
            out[r] = nid
        return out

    def collective(self, name: str, kind: str, library: str, ranks: list[int], matrix: np.ndarray,
                   deps: dict[int, list[int]], layer: int, mb: int, num_senders: int = 0, op: str = "",
                   **extra) -> dict[int, int]:
        cid = len(self.collectives)
        self.collectives.append(CollectiveSpec(cid, name, kind, library, tuple(ranks), matrix, layer, mb, num_senders,
                                               op=op, **extra))
        out = {}
        for r in ranks:
            nodes = self.ranks[r].nodes
            nid = len(nodes)
            nodes.append(CommNode(nid, name, cid, tuple(deps.get(r, ())), layer, mb))
            out[r] = nid
        return out


def _split_batch(spec: StepSpec) -> list[int]:
    """Requests (prefill) or tokens (decode) per micro-batch."""
    if spec.overlap == "none":
        return [spec.batch_per_rank]
    if spec.batch_per_rank >= 2:
        half = spec.batch_per_rank // 2
        return [spec.batch_per_rank - half, half]
    return [1, 1]  # one long prefill request: split its chunk in two


def build_step_trace(spec: StepSpec, kernels) -> StepTrace:
    """Per-rank DAGs and collectives of one step; ``kernels`` gives op durations
    (:class:`cosim.kernels.KernelTables` or anything with ``duration(op)``)."""
    model, par, prec = spec.model, spec.parallel, spec.precision
    par.validate(model)
    num_ranks = par.num_gpus
    w = _TraceWriter(num_ranks, kernels)
    stages = par.stage_layers(model)
    mbs = _split_batch(spec)
    tokens_per_req = spec.new_tokens if spec.overlap == "none" or spec.batch_per_rank >= 2 else spec.new_tokens // 2
    last: list[dict[int, list[int]]] = [{} for _ in mbs]  # per micro-batch: rank -> node ids to wait for

    for stage, layer_range in enumerate(stages):
        ranks = list(range(stage * par.tp, (stage + 1) * par.tp))
        ar_lib = _allreduce_library(spec, ranks)
        for mb, batch in enumerate(mbs):
            if stage == 0:
                for op in model_head_ops(model, par, prec, spec.phase, batch, tokens_per_req).pre_layers:
                    last[mb] = _as_deps(w.compute(ranks, op, last[mb], -1, mb))
                hc = head_comm(model, par, prec, spec.phase, batch, tokens_per_req)
                if hc.embedding_allreduce_bytes:
                    last[mb] = _as_deps(w.collective(f"embed.mb{mb}.allreduce", "all_reduce", ar_lib, ranks,
                                                     _scalar(hc.embedding_allreduce_bytes), last[mb], -1, mb))
            else:
                prev_ranks = list(range((stage - 1) * par.tp, stage * par.tp))
                size = layer_comm(model, layer_range[0] - 1, par, prec, spec.phase, batch, tokens_per_req).pp_send_bytes
                for src, dst in zip(prev_ranks, ranks):
                    matrix = np.array([[0, int(size)], [0, 0]], dtype=np.int64)
                    done = w.collective(f"pp{stage}.mb{mb}.{src}->{dst}", "p2p", "p2p", [src, dst], matrix,
                                        {src: last[mb].get(src, [])}, layer_range[0], mb)
                    last[mb][dst] = [done[dst]]
        for layer in layer_range:
            _emit_layer(w, spec, layer, ranks, mbs, tokens_per_req, last, ar_lib)
        if stage == len(stages) - 1:
            for mb, batch in enumerate(mbs):
                for op in model_head_ops(model, par, prec, spec.phase, batch, tokens_per_req).post_layers:
                    last[mb] = _as_deps(w.compute(ranks, op, last[mb], -1, mb))
                hc = head_comm(model, par, prec, spec.phase, batch, tokens_per_req)
                if hc.logits_allgather_bytes:
                    w.collective(f"logits.mb{mb}.allgather", "all_gather", "nccl", ranks,
                                 _scalar(hc.logits_allgather_bytes * len(ranks)), last[mb], -1, mb)
    metadata = {
        "model": model.name, "phase": spec.phase, "batch_per_rank": str(spec.batch_per_rank),
        "new_tokens": str(spec.new_tokens), "prefix_tokens": str(spec.prefix_tokens),
        "tp": str(par.tp), "ep": str(par.ep), "dp_attention": str(par.dp_attention), "pp": str(par.pp),
        "overlap": spec.overlap, "routing_skew": str(spec.routing_skew), "moe_library": spec.library,
        "moe_load": spec.moe_load, "allreduce_library": spec.allreduce_library,
        "redundant_experts": str(spec.redundant_experts),
        "gpus_per_node": str(spec.gpus_per_node or DEFAULT_GPUS_PER_NODE),
        "kernels": getattr(kernels, "describe", lambda: type(kernels).__name__)(),
    }
    return StepTrace(w.ranks, w.collectives, metadata)


def _as_deps(ids: dict[int, int]) -> dict[int, list[int]]:
    return {r: [i] for r, i in ids.items()}


def _scalar(size: float) -> np.ndarray:
    return np.array([[int(round(size))]], dtype=np.int64)


def _emit_layer(w: _TraceWriter, spec: StepSpec, layer: int, ranks: list[int], mbs: list[int],
                tokens_per_req: int, last: list[dict[int, list[int]]], ar_lib: str) -> None:
    """Emit one decoder layer for every micro-batch in TBO order (see module docstring);
    ``ar_lib`` is the library of the stage's tensor-parallel all-reduces."""
    model, par, prec = spec.model, spec.parallel, spec.precision
    per_mb = []
    for mb, batch in enumerate(mbs):
        ops = layer_ops(model, layer, par, prec, spec.phase, batch, tokens_per_req, spec.prefix_tokens,
                        spec.distribution)
        comm = layer_comm(model, layer, par, prec, spec.phase, batch, tokens_per_req)
        split = next(i for i, op in enumerate(ops) if op.name == "post_attention_norm") + 1
        per_mb.append((ops[:split], ops[split:], comm))

    # Phase 1 per micro-batch: attention block, its all-reduce, router, dispatch.
    moe_state = []
    for mb, (attn_ops, ffn_ops, comm) in enumerate(per_mb):
        deps = last[mb]
        for op in attn_ops:
            deps = _as_deps(w.compute(ranks, op, deps, layer, mb))
        if comm.attention_allreduce_bytes:
            deps = _as_deps(w.collective(f"L{layer}.mb{mb}.attn_allreduce", "all_reduce", ar_lib, ranks,
                                         _scalar(comm.attention_allreduce_bytes), deps, layer, mb))
        if comm.moe_pattern in ("all_to_all", "allgather_reducescatter"):
            router = next(op for op in ffn_ops if op.name == "router")
            deps = _as_deps(w.compute(ranks, router, deps, layer, mb))
            (dispatch_m, dispatch_x), combine, received = _moe_matrices(spec, comm, ranks)
            kind = "all_to_all_v" if comm.moe_pattern == "all_to_all" else "all_gather"
            lib = spec.library if kind == "all_to_all_v" else "nccl"
            sent = w.collective(f"L{layer}.mb{mb}.dispatch", kind, lib, ranks, dispatch_m, deps, layer, mb,
                                op="dispatch" if kind == "all_to_all_v" else "", **dispatch_x)
            moe_state.append((deps, sent, combine, kind, lib, received))
        else:
            moe_state.append((deps, None, None, None, None, None))
        last[mb] = deps

    # Phase 2 per micro-batch: experts (after dispatch), shared expert (overlaps the dispatch),
    # combine, FFN all-reduce.
    for mb, (attn_ops, ffn_ops, comm) in enumerate(per_mb):
        after_router, dispatched, combine, kind, lib, received = moe_state[mb]
        if dispatched is None:
            deps = last[mb]
            for op in ffn_ops:
                deps = _as_deps(w.compute(ranks, op, deps, layer, mb))
            if comm.ffn_allreduce_bytes:
                deps = _as_deps(w.collective(f"L{layer}.mb{mb}.ffn_allreduce", "all_reduce", ar_lib, ranks,
                                             _scalar(comm.ffn_allreduce_bytes), deps, layer, mb))
            last[mb] = deps
            continue
        experts = next(op for op in ffn_ops if isinstance(op, MoeOp))
        exp = _as_deps(w.compute(ranks, _expert_ops(spec, experts, ranks, received), _as_deps(dispatched), layer, mb))
        shared = after_router
        for op in ffn_ops:
            if op.name.startswith("shared_"):
                shared = _as_deps(w.compute(ranks, op, shared, layer, mb))
        ckind = "all_to_all_v" if kind == "all_to_all_v" else "reduce_scatter"
        combine_m, combine_x = combine
        combined = w.collective(f"L{layer}.mb{mb}.combine", ckind, lib, ranks, combine_m, exp, layer, mb,
                                op="combine" if ckind == "all_to_all_v" else "", **combine_x)
        last[mb] = {r: [combined[r]] + shared.get(r, []) for r in ranks}


def _allreduce_library(spec: StepSpec, ranks: list[int]) -> str:
    """Library of the tensor-parallel all-reduces of ``ranks``: ``allreduce_library``, where
    ``auto`` means the frameworks' custom kernels inside one node (scale-up domain) and NCCL
    across nodes."""
    if spec.allreduce_library != "auto":
        return spec.allreduce_library
    nodes = D.group_nodes(ranks, spec.gpus_per_node or DEFAULT_GPUS_PER_NODE)
    return "custom_allreduce" if max(nodes) == 0 else "nccl"


def _expert_ops(spec: StepSpec, experts: MoeOp, ranks: list[int],
                received: np.ndarray | None) -> MoeOp | dict[int, MoeOp]:
    """The routed-expert op of every rank. ``moe_load='per_rank'`` with a routing sample: rank
    r's op is the balanced-table op at ``num_tokens * received[r] / mean(received)`` (its own
    load; the mean keeps the table's token convention); otherwise the same op for every rank."""
    if (spec.moe_load != "per_rank" or received is None or experts.tp_size != 1
            or experts.ep_size != len(ranks) or not received.mean() > 0):
        return experts
    scale = received / received.mean()
    return {r: dataclasses.replace(experts, num_tokens=max(1, int(round(experts.num_tokens * f))),
                                   distribution="balanced")
            for r, f in zip(ranks, scale)}


_Traffic = tuple[np.ndarray, dict]


def _moe_matrices(spec: StepSpec, comm, ranks: list[int]) -> tuple[_Traffic, _Traffic, np.ndarray | None]:
    """Dispatch and combine traffic of one MoE layer: (bytes matrix, extra CollectiveSpec
    fields) each, and the (token, expert) selections every rank receives (None without a
    routing sample).

    DeepEP (all-to-all pattern), from the step's routing sample (drawn once, cached, reused by
    every layer; :func:`cosim.trace.moe_traffic.sampled_routing_counts`):

    - low-latency: every (token, expert) selection separately, ``selections x`` bytes per
      selection (dispatch: fp8 + scales + 16-byte header, or the dispatch dtype + header;
      combine: the combine dtype, bf16), and ``qps_per_peer = num_experts / ep``;
    - normal: tokens deduplicated per destination rank (``bytes_matrix``) and per destination
      node (``node_bytes_matrix``, own node 0; only when the group spans several nodes), under
      DeepEP's node-limited routing (at most ``min(nodes, 4)`` nodes per token).

    NVLink all-to-all (:mod:`cosim.network.nvlink_a2a`): tokens deduplicated per destination rank,
    dispatch dtype plus top-k metadata out, bf16 back.
    """
    moe = spec.model.moe
    assert moe is not None
    redundant = spec.redundant_experts
    if redundant and comm.moe_pattern != "all_to_all":
        raise ConfigError("<api>", "redundant_experts", "redundant experts need the all-to-all MoE pattern "
                                                        "(expert parallelism with DP attention)")
    if redundant and (moe.num_experts + redundant) % len(ranks):
        raise ConfigError("<api>", "redundant_experts", f"num_experts + redundant_experts = "
                                                        f"{moe.num_experts + redundant} is not divisible by EP "
                                                        f"{len(ranks)}")
    if comm.moe_pattern == "allgather_reducescatter":
        total = comm.tokens_per_rank * len(ranks)
        return ((_scalar(total * comm.dispatch_bytes_per_token), {}),
                (_scalar(total * comm.combine_bytes_per_token), {}), None)
    ep, hidden, prec = len(ranks), spec.model.hidden_size, spec.precision
    node_of = D.group_nodes(ranks, spec.gpus_per_node or DEFAULT_GPUS_PER_NODE)
    nodes = max(node_of) + 1
    if spec.library == "nvlink_a2a":
        if nodes > 1:
            raise ConfigError("<api>", "moe_library", f"nvlink_a2a needs the EP group in one NVLink domain; its "
                                                      f"{ep} ranks span {nodes} nodes of {spec.gpus_per_node} GPUs")
        counts = sampled_routing_counts(comm.tokens_per_rank, moe.num_experts, moe.top_k, ep, node_of=node_of,
                                        skew=spec.routing_skew, seed=spec.seed, redundant_experts=redundant)
        out = []
        for op, dtype in (("dispatch", prec.dispatch), ("combine", prec.combine)):
            per_token = NV.phase_bytes_per_token(op, dtype, hidden, moe.top_k)
            m = np.rint(np.asarray(counts.tokens) * per_token).astype(np.int64)
            np.fill_diagonal(m, 0)
            out.append((m if op == "dispatch" else m.T.copy(), {}))
        return out[0], out[1], counts.expert_tokens
    if spec.library == "deepep_ll":
        counts = sampled_routing_counts(comm.tokens_per_rank, moe.num_experts, moe.top_k, ep, node_of=node_of,
                                        skew=spec.routing_skew, seed=spec.seed, redundant_experts=redundant)
        qps = {"qps_per_peer": D.ll_qps_per_peer(moe.num_experts + redundant, ep)}
        dispatch = D.ll_bytes_matrix(counts.selections, D.ll_dispatch_bytes_per_selection(hidden, prec.dispatch),
                                     "dispatch")
        combine = D.ll_bytes_matrix(counts.selections, D.ll_combine_bytes_per_selection(hidden, prec.combine),
                                    "combine")
        return (dispatch, qps), (combine, qps), counts.expert_tokens
    if redundant and nodes > 1:
        raise ConfigError("<api>", "redundant_experts", "redundant experts with DeepEP normal mode across nodes "
                                                        "(node-limited routing) are not modelled")
    counts = sampled_routing_counts(comm.tokens_per_rank, moe.num_experts, moe.top_k, ep,
                                    topk_nodes=D.topk_nodes_limit(nodes), node_of=node_of,
                                    skew=spec.routing_skew, seed=spec.seed, redundant_experts=redundant)
    remote = np.asarray(node_of)[:, None] != np.arange(nodes)[None, :]
    out = []
    for op, per_token in (("dispatch", D.normal_dispatch_bytes_per_token(hidden, prec.dispatch)),
                          ("combine", D.normal_combine_bytes_per_token(hidden, prec.combine))):
        tok, node = D.normal_bytes_matrices(counts.tokens, counts.node_tokens * remote, per_token, op)
        extra = {"node_bytes_matrix": np.rint(node).astype(np.int64)} if nodes > 1 else {}
        out.append((np.rint(tok).astype(np.int64), extra))
    return out[0], out[1], counts.expert_tokens
