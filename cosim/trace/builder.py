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
    LayerSpec, ModelSpec, Parallelism, Precision, head_comm, layer_comm, layer_ops, model_head_ops,
)
from cosim.models.layers import HeadOps
from cosim.ops import AttentionOp, ComputeOp, GemmOp, MemoryOp, MoeOp
from cosim.registry import Registry
from cosim.network import deepep as D
from cosim.network import nvlink_a2a as NV
from cosim.trace.model import CollectiveSpec, CommNode, ComputeNode, RankTrace, StepTrace
from cosim.trace.expert_routing import StepRouting
from cosim.trace.moe_traffic import DEFAULT_GPUS_PER_NODE, counts_from_choices, expert_rank, sampled_routing_counts

Overlap = Literal["none", "tbo"]
A2FStyle = Literal["routed", "broadcast"]
Placement = Literal["attention", "ffn"]
_SKEW_TO_DISTRIBUTION = ((0.0, "balanced"), (1.1, "power_law_1.01"), (float("inf"), "power_law_1.2"))


@dataclass(frozen=True)
class PrefillChunk:
    """One prefill chunk of a mixed (chunked-prefill) step: ``new_tokens`` of one request after
    ``prefix_tokens`` already in its KV cache (a reused prefix or its earlier chunks)."""

    prefix_tokens: int
    new_tokens: int

    def __post_init__(self) -> None:
        for name, minimum in (("prefix_tokens", 0), ("new_tokens", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError("<api>", f"prefill_chunks.{name}", f"expected an integer >= {minimum}, got {v!r}")


@dataclass(frozen=True)
class AfdSpec:
    """Attention-FFN disaggregation: an attention group and an FFN group exchanging activations
    every layer (layout ``afd``; see :mod:`cosim.trace.afd`).

    Attributes:
        attention_gpus: GPUs of the attention group (n_A): data-parallel attention instances of
            ``attention_tp`` GPUs each, holding the KV cache; ``batch_per_rank`` requests per instance.
        ffn_gpus: GPUs of the FFN group (n_F): routed experts under EP ``ffn_gpus / ffn_tp``, each
            expert split ``ffn_tp`` ways.
        micro_batches: m, the ping-pong micro-batches each instance's batch is cut into.
        a2f: ``routed`` (each token goes to the FFN ranks holding its top-k experts, once per rank;
            the router runs on the attention side; needs ``ffn_tp = 1``) or ``broadcast`` (every
            FFN rank receives the whole batch; the FFN group reduce-scatters its partial sums and
            returns each token's output once).
        attention_tp: GPUs per attention instance (heads split; all-reduce after ``o_proj``).
        ffn_tp: tensor parallelism inside the FFN group.
        shared_expert: where the shared expert runs (``ffn`` default, or ``attention``).
        dense_layers: where the FFN of dense layers runs (``ffn`` default, or ``attention``).
    """

    attention_gpus: int
    ffn_gpus: int
    micro_batches: int = 2
    a2f: A2FStyle = "routed"
    attention_tp: int = 1
    ffn_tp: int = 1
    shared_expert: Placement = "ffn"
    dense_layers: Placement = "ffn"

    def __post_init__(self) -> None:
        for name in ("attention_gpus", "ffn_gpus", "micro_batches", "attention_tp", "ffn_tp"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("<api>", f"afd.{name}", f"expected an integer >= 1, got {v!r}")
        if self.a2f not in ("routed", "broadcast"):
            raise ConfigError("<api>", "afd.a2f", f"expected 'routed' or 'broadcast', got {self.a2f!r}")
        for name in ("shared_expert", "dense_layers"):
            if getattr(self, name) not in ("attention", "ffn"):
                raise ConfigError("<api>", f"afd.{name}", f"expected 'attention' or 'ffn', got {getattr(self, name)!r}")
        if self.attention_gpus % self.attention_tp:
            raise ConfigError("<api>", "afd.attention_tp", f"attention_tp={self.attention_tp} must divide "
                                                           f"attention_gpus={self.attention_gpus}")
        if self.ffn_gpus % self.ffn_tp:
            raise ConfigError("<api>", "afd.ffn_tp", f"ffn_tp={self.ffn_tp} must divide ffn_gpus={self.ffn_gpus}")
        if self.a2f == "routed" and self.ffn_tp != 1:
            raise ConfigError("<api>", "afd.a2f", "routed A2F sends each token to the ranks of its experts and "
                                                  "needs ffn_tp = 1; use a2f: broadcast for a TP-sharded FFN group")

    @property
    def num_gpus(self) -> int:
        return self.attention_gpus + self.ffn_gpus

    @property
    def instances(self) -> int:
        """Data-parallel attention instances."""
        return self.attention_gpus // self.attention_tp

    @property
    def ffn_ep(self) -> int:
        """Expert parallelism inside the FFN group."""
        return self.ffn_gpus // self.ffn_tp


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
            GPU g is ``g // gpus_per_node``. ``None``: the topology's in
            :func:`cosim.engine.step.simulate_step`, DeepEP's 8 in :func:`build_step_trace`.
        gpus: the topology GPU ranks the step runs on, in the order of the step's ranks (any set:
            GPUs 64-127, an attention group in one rack and an FFN group in another); ``None``:
            GPUs ``0 .. num_gpus - 1``. Checked against the topology by ``simulate_step``.
        layout: step layout, a name in :data:`LAYOUTS`: ``colocated`` (every rank runs every
            layer) or ``afd`` (attention-FFN disaggregation, parameters in ``afd``; decode only).
        afd: the AFD groups, micro-batches and A2F style (layout ``afd``).
        prefill_chunks: a mixed (chunked-prefill) step: on every attention rank these prefill
            chunks run together with ``batch_per_rank`` decode requests (which may then be 0) of
            ``prefix_tokens`` context each; ``phase`` must be ``generation``. Attention is costed
            per request class, GEMMs, MoE and dispatch/combine on the total tokens.
        routing: the MoE routing of every layer from a routing model or a replayed routing
            trace (:class:`cosim.trace.expert_routing.StepRouting`; each MoE layer its own draw);
            ``None``: the single sample of ``routing_skew`` / ``seed`` that every layer reuses.
        mtp_tokens: speculative decoding with the model's MTP layers: the decode step verifies
            ``mtp_tokens`` draft tokens per request (``batch x (1 + k)`` tokens through every
            layer; decode attention over ``batch x (1 + k)`` queries, aiconfigurator's convention)
            and drafts the next ``k`` with ``k`` passes of the MTP layer over ``batch`` tokens.
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
    gpus: tuple[int, ...] | None = None
    layout: str = "colocated"
    afd: AfdSpec | None = None
    prefill_chunks: tuple[PrefillChunk, ...] = ()
    mtp_tokens: int = 0
    routing: StepRouting | None = None

    def __post_init__(self) -> None:
        if self.gpus_per_node is not None and self.gpus_per_node < 1:
            raise ConfigError("<api>", "gpus_per_node", f"expected >= 1, got {self.gpus_per_node}")
        if self.phase not in ("context", "generation"):
            raise ConfigError("<api>", "phase", f"expected 'context' or 'generation', got {self.phase!r}")
        minimum = 0 if self.prefill_chunks else 1
        if isinstance(self.batch_per_rank, bool) or not isinstance(self.batch_per_rank, int) \
                or self.batch_per_rank < minimum:
            raise ConfigError("<api>", "batch_per_rank", f"expected an integer >= {minimum}, got {self.batch_per_rank!r}")
        if not (isinstance(self.routing_skew, (int, float)) and 0 <= self.routing_skew < float("inf")):
            raise ConfigError("<api>", "routing_skew", f"expected a finite number >= 0 (0 = uniform routing), "
                                                       f"got {self.routing_skew!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError("<api>", "layout", f"expected one of {sorted(LAYOUTS)}, got {self.layout!r}")
        if (self.layout == "afd") != (self.afd is not None):
            raise ConfigError("<api>", "afd", "layout 'afd' needs its AfdSpec (afd=...), and afd is only "
                                              "meaningful with layout 'afd'")
        if self.prefill_chunks:
            if self.phase != "generation":
                raise ConfigError("<api>", "prefill_chunks", "a mixed step is a decode step (phase 'generation') "
                                                             "carrying prefill chunks")
            if self.overlap != "none":
                raise ConfigError("<api>", "overlap", "mixed (chunked-prefill) steps run without two-batch overlap")
            if any(not isinstance(c, PrefillChunk) for c in self.prefill_chunks):
                raise ConfigError("<api>", "prefill_chunks", "expected a tuple of PrefillChunk")
        if self.routing is not None:
            if not isinstance(self.routing, StepRouting):
                raise ConfigError("<api>", "routing", "expected a StepRouting (a routing model or trace)")
            if self.routing_skew:
                raise ConfigError("<api>", "routing", "give a routing model / trace or routing_skew, not both")
            if self.redundant_experts and self.routing.placement != "eplb":
                raise ConfigError("<api>", "routing.placement", f"redundant experts are placed by EPLB from the "
                                                                f"routing's statistics: use placement 'eplb', not "
                                                                f"{self.routing.placement!r}")
        if isinstance(self.mtp_tokens, bool) or not isinstance(self.mtp_tokens, int) or self.mtp_tokens < 0:
            raise ConfigError("<api>", "mtp_tokens", f"expected an integer >= 0, got {self.mtp_tokens!r}")
        if self.mtp_tokens:
            if self.phase != "generation":
                raise ConfigError("<api>", "mtp_tokens", "speculative decoding (MTP) applies to decode steps")
            if self.model.num_mtp_layers < 1:
                raise ConfigError("<api>", "mtp_tokens", f"{self.model.name} has no MTP layers "
                                                         "(num_nextn_predict_layers = 0 in its config)")
        if self.gpus is not None:
            gpus = tuple(self.gpus)
            if any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 0 for g in gpus):
                raise ConfigError("<api>", "gpus", f"expected non-negative integer GPU ranks, got {list(gpus)[:8]}")
            if len(set(gpus)) != len(gpus):
                raise ConfigError("<api>", "gpus", "GPU ranks must be distinct")
            if len(gpus) != self.num_gpus:
                raise ConfigError("<api>", "gpus", f"the step needs {self.num_gpus} GPUs, {len(gpus)} given")
            object.__setattr__(self, "gpus", tuple(int(g) for g in gpus))
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
        if isinstance(self.redundant_experts, bool) or not isinstance(self.redundant_experts, int) \
                or self.redundant_experts < 0:
            raise ConfigError("<api>", "redundant_experts", f"expected an integer >= 0, got {self.redundant_experts!r}")
        if self.redundant_experts != self.parallel.redundant_experts:  # the step's value sets the EP slots
            object.__setattr__(self, "parallel", dataclasses.replace(self.parallel,
                                                                     redundant_experts=self.redundant_experts))
        if self.moe_load not in ("per_rank", "table"):
            raise ConfigError("<api>", "moe_load", f"expected 'per_rank' or 'table', got {self.moe_load!r}")
        if self.phase == "generation" and self.new_tokens != 1:
            raise ConfigError("<api>", "new_tokens", "a decode step has new_tokens = 1")

    @property
    def num_gpus(self) -> int:
        """GPUs the step runs on (the layout's)."""
        return self.afd.num_gpus if self.afd is not None else self.parallel.num_gpus

    @property
    def gpu_ranks(self) -> tuple[int, ...]:
        """Topology GPU of each step rank (``gpus``, or ``0 .. num_gpus - 1``)."""
        return self.gpus if self.gpus is not None else tuple(range(self.num_gpus))

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
        self._resolved: dict[int, tuple] = {}  # id(op) -> (op, its per-rank or single resolution)
        #: id(spec) -> (spec, per-layer-shape memo of a layout; the entry keeps its spec alive)
        self.layer_memo: dict[int, tuple] = {}

    def duration(self, op: ComputeOp):
        d = self._durations.get(op)
        if d is None:
            d = self._durations[op] = self.kernels.duration(op)
        return d

    def _resolve(self, op: ComputeOp | dict[int, ComputeOp]):
        """``(name, class, seconds, source)`` of ``op``, or a dict of them per rank. Looked up by
        identity first (a builder passes the same op objects layer after layer; the entry keeps
        its op alive, so its id cannot be reused), then by value (:meth:`duration`)."""
        hit = self._resolved.get(id(op))
        if hit is not None and hit[0] is op:
            return hit[1]
        if isinstance(op, dict):
            made = {r: self._resolve(o) for r, o in op.items()}
        else:
            d = self.duration(op)
            made = (op.name, op_class(op), d.seconds, d.source)
        self._resolved[id(op)] = (op, made)
        return made

    def compute(self, ranks: list[int], op: ComputeOp | dict[int, ComputeOp], deps: dict[int, list[int]],
                layer: int, mb: int, label: str | None = None) -> dict[int, int]:
        """One compute node on every rank of ``ranks``: the same ``op``, or ``op[rank]`` per rank;
        named ``{label}.mb{mb}.{op}`` (``label`` default ``L{layer}``). Ranks whose node is equal
        (same op, position and dependencies) share one node object."""
        prefix = f"{label or f'L{layer}'}.mb{mb}."
        resolved = self._resolve(op)
        single = not isinstance(op, dict)
        out = {}
        node = prev_dep = None  # the previous rank's node and its dependency list
        for r in ranks:
            rank_op = op if single else op[r]
            nodes = self.ranks[r].nodes
            nid = len(nodes)
            dep = deps.get(r, ())
            if node is None or node.op is not rank_op or node.id != nid or prev_dep != dep:
                name, cls, seconds, source = resolved if single else resolved[r]
                node = ComputeNode(nid, prefix + name, rank_op, seconds, source, tuple(dep), layer, mb, cls)
                prev_dep = dep
            nodes.append(node)
            out[r] = nid
        return out

    def collective(self, name: str, kind: str, library: str, ranks: list[int], matrix: np.ndarray,
                   deps: dict[int, list[int]], layer: int, mb: int, num_senders: int = 0, op: str = "",
                   stream: int = 0, **extra) -> dict[int, int]:
        cid = len(self.collectives)
        self.collectives.append(CollectiveSpec(cid, name, kind, library, tuple(ranks), matrix, layer, mb, num_senders,
                                               op=op, **extra))
        out = {}
        node = None
        for r in ranks:  # ranks whose node is equal share one node object (see compute)
            nodes = self.ranks[r].nodes
            nid = len(nodes)
            dep = tuple(deps.get(r, ()))
            if node is None or node.id != nid or node.deps != dep:
                node = CommNode(nid, name, cid, dep, layer, mb, stream)
            nodes.append(node)
            out[r] = nid
        return out


def decode_batch(spec: StepSpec) -> int:
    """Requests' tokens through the main layers per attention rank: ``batch_per_rank`` times
    ``1 + mtp_tokens`` in a decode step verifying MTP drafts."""
    return spec.batch_per_rank * (1 + spec.mtp_tokens)


def _split_batch(spec: StepSpec) -> list[int]:
    """Requests (prefill) or tokens (decode) per micro-batch."""
    batch = decode_batch(spec)
    if spec.overlap == "none":
        return [batch]
    if batch >= 2:
        half = batch // 2
        return [batch - half, half]
    return [1, 1]  # one long prefill request: split its chunk in two


#: Step layouts by name: a function ``(spec, kernels) -> StepTrace``. Register with :func:`register_layout`.
LAYOUTS = Registry("step layout")
#: Decorator registering a step layout builder under a name.
register_layout = LAYOUTS.register


def build_step_trace(spec: StepSpec, kernels) -> StepTrace:
    """Per-rank DAGs and collectives of one step, built by the spec's layout (:data:`LAYOUTS`);
    ``kernels`` gives op durations (:class:`cosim.kernels.KernelTables` or anything with
    ``duration(op)``). Trace ranks are step ranks ``0 .. n-1``; ``StepTrace.gpus`` maps them to
    topology GPUs."""
    trace = LAYOUTS[spec.layout](spec, kernels)
    trace.gpus = spec.gpu_ranks
    trace.metadata.update(base_metadata(spec, kernels))
    return trace


def base_metadata(spec: StepSpec, kernels) -> dict[str, str]:
    """How a step trace was made, as strings (survives serialization)."""
    par = spec.parallel
    return {
        "model": spec.model.name, "phase": spec.phase, "batch_per_rank": str(spec.batch_per_rank),
        "new_tokens": str(spec.new_tokens), "prefix_tokens": str(spec.prefix_tokens),
        "tp": str(par.tp), "ep": str(par.ep), "dp_attention": str(par.dp_attention), "pp": str(par.pp),
        "overlap": spec.overlap, "routing_skew": str(spec.routing_skew), "moe_library": spec.library,
        "moe_load": spec.moe_load, "allreduce_library": spec.allreduce_library,
        "redundant_experts": str(spec.redundant_experts), "layout": spec.layout,
        "prefill_chunks": ";".join(f"{c.prefix_tokens}+{c.new_tokens}" for c in spec.prefill_chunks),
        "mtp_tokens": str(spec.mtp_tokens),
        "routing": spec.routing.describe() if spec.routing is not None else "",
        "gpus_per_node": str(spec.gpus_per_node or DEFAULT_GPUS_PER_NODE),
        "kernels": getattr(kernels, "describe", lambda: type(kernels).__name__)(),
    }


#: Attention-block ops costed per request class in a mixed step (the others run once on all tokens).
PER_REQUEST_OPS = frozenset({"attention", "kv_b_proj", "mla_q_absorb", "mla_v_up", "indexer_logits"})


def _attention_split(ops: list[ComputeOp]) -> int:
    return next(i for i, op in enumerate(ops) if op.name == "post_attention_norm") + 1


def layer_op_lists(spec: StepSpec, layer: int, par: Parallelism, batch: int, tokens_per_req: int):
    """``(attention-block ops, FFN-block ops, LayerComm)`` of ``layer`` for one micro-batch of
    ``batch`` requests (decode tokens) on one attention rank under ``par``.

    A mixed step (``prefill_chunks``) runs the per-token GEMMs, norms, the FFN / MoE and its
    communication on all tokens (``batch`` decode tokens + every chunk's new tokens) and the
    attention kernels (and MLA's per-class projections, :data:`PER_REQUEST_OPS`) per request
    class: decode attention of the ``batch`` decode requests over ``prefix_tokens``, and prefill
    attention of every chunk over its prefix + chunk."""
    model, prec = spec.model, spec.precision
    if not spec.prefill_chunks:
        ops = layer_ops(model, layer, par, prec, spec.phase, batch, tokens_per_req, spec.prefix_tokens,
                        spec.distribution)
        comm = layer_comm(model, layer, par, prec, spec.phase, batch, tokens_per_req)
        split = _attention_split(ops)
        return ops[:split], ops[split:], comm
    total = batch + sum(c.new_tokens for c in spec.prefill_chunks)
    base = layer_ops(model, layer, par, prec, "generation", total, 1, 0, spec.distribution)
    comm = layer_comm(model, layer, par, prec, "generation", total, 1)
    split = _attention_split(base)
    classes = [layer_ops(model, layer, par, prec, "generation", batch, 1, spec.prefix_tokens, spec.distribution)
               ] if batch else []
    classes += [layer_ops(model, layer, par, prec, "context", 1, c.new_tokens, c.prefix_tokens, spec.distribution)
                for c in spec.prefill_chunks]
    specific = [op for ops in classes for op in ops[:_attention_split(ops)] if op.name in PER_REQUEST_OPS]
    attn = base[:split]
    at = next(i for i, op in enumerate(attn) if op.name == "attention")
    attn = ([op for op in attn[:at] if op.name not in PER_REQUEST_OPS] + specific
            + [op for op in attn[at + 1:] if op.name not in PER_REQUEST_OPS])
    return attn, base[split:], comm


def head_ops(spec: StepSpec, par: Parallelism, batch: int, tokens_per_req: int):
    """``(HeadOps, HeadComm)`` of a micro-batch: embedding over its tokens, the LM head over one
    token per request (a mixed step: the decode requests and one per prefill chunk)."""
    model, prec = spec.model, spec.precision
    if not spec.prefill_chunks:
        return (model_head_ops(model, par, prec, spec.phase, batch, tokens_per_req),
                head_comm(model, par, prec, spec.phase, batch, tokens_per_req))
    total = batch + sum(c.new_tokens for c in spec.prefill_chunks)
    requests = batch + len(spec.prefill_chunks)
    pre = model_head_ops(model, par, prec, "generation", total, 1).pre_layers
    post = model_head_ops(model, par, prec, "generation", requests, 1).post_layers
    hc = dataclasses.replace(head_comm(model, par, prec, "generation", requests, 1),
                             embedding_allreduce_bytes=head_comm(model, par, prec, "generation", total,
                                                                 1).embedding_allreduce_bytes)
    return HeadOps(pre, post), hc


@register_layout("colocated")
def build_colocated_trace(spec: StepSpec, kernels) -> StepTrace:
    """Every rank of a pipeline stage runs every layer of the stage (TP or DP attention, EP
    MoE, see the module docstring); with ``mtp_tokens`` the last stage then drafts with the
    model's MTP layer."""
    model, par = spec.model, spec.parallel
    par.validate(model)
    num_ranks = par.num_gpus
    w = _TraceWriter(num_ranks, kernels)
    stages = par.stage_layers(model)
    mbs = _split_batch(spec)
    tokens_per_req = spec.new_tokens if spec.overlap == "none" or decode_batch(spec) >= 2 else spec.new_tokens // 2
    last: list[dict[int, list[int]]] = [{} for _ in mbs]  # per micro-batch: rank -> node ids to wait for

    for stage, layer_range in enumerate(stages):
        ranks = list(range(stage * par.tp, (stage + 1) * par.tp))
        ar_lib = _allreduce_library(spec, ranks)
        for mb, batch in enumerate(mbs):
            if stage == 0:
                heads, hc = head_ops(spec, par, batch, tokens_per_req)
                for op in heads.pre_layers:
                    last[mb] = _as_deps(w.compute(ranks, op, last[mb], -1, mb))
                if hc.embedding_allreduce_bytes:
                    last[mb] = _as_deps(w.collective(f"embed.mb{mb}.allreduce", "all_reduce", ar_lib, ranks,
                                                     _scalar(hc.embedding_allreduce_bytes), last[mb], -1, mb))
            else:
                prev_ranks = list(range((stage - 1) * par.tp, stage * par.tp))
                size = layer_op_lists(spec, layer_range[0] - 1, par, batch, tokens_per_req)[2].pp_send_bytes
                for src, dst in zip(prev_ranks, ranks):
                    matrix = np.array([[0, int(size)], [0, 0]], dtype=np.int64)
                    done = w.collective(f"pp{stage}.mb{mb}.{src}->{dst}", "p2p", "p2p", [src, dst], matrix,
                                        {src: last[mb].get(src, [])}, layer_range[0], mb)
                    last[mb][dst] = [done[dst]]
        for layer in layer_range:
            _emit_layer(w, spec, layer, ranks, mbs, tokens_per_req, last, ar_lib)
        if stage == len(stages) - 1:
            for mb, batch in enumerate(mbs):
                heads, hc = head_ops(spec, par, batch, tokens_per_req)
                for op in heads.post_layers:
                    last[mb] = _as_deps(w.compute(ranks, op, last[mb], -1, mb))
                if hc.logits_allgather_bytes:
                    last[mb] = _as_deps(w.collective(f"logits.mb{mb}.allgather", "all_gather", "nccl", ranks,
                                                     _scalar(hc.logits_allgather_bytes * len(ranks)), last[mb], -1, mb))
            if spec.mtp_tokens:
                _emit_mtp_drafts(w, spec, ranks, last, ar_lib)
    return StepTrace(w.ranks, w.collectives, {})


def mtp_layer_index(model: ModelSpec) -> int:
    """The decoder layer an MTP module is costed as: DeepSeek's MTP module is one more MoE
    decoder layer (plus ``eh_proj`` and norms), so the last MoE layer (or the last layer)."""
    moe = [layer.index for layer in model.layers if layer.ffn == "moe"]
    return moe[-1] if moe else model.num_layers - 1


def mtp_extra_ops(model: ModelSpec, par: Parallelism, batch: int) -> list[ComputeOp]:
    """Ops of an MTP module besides its decoder layer, before it: the two RMSNorms of the
    embedding and hidden state and ``eh_proj`` (``2h -> h``, bf16)."""
    h = model.hidden_size
    norm = MemoryOp("mtp_norms", bytes=2 * 4.0 * batch * h * 2.0, flop_count=8.0 * batch * h)
    return [norm, GemmOp("mtp_eh_proj", m=batch, n=h, k=2 * h)]


def _emit_mtp_drafts(w: _TraceWriter, spec: StepSpec, ranks: list[int], last: list[dict[int, list[int]]],
                     ar_lib: str) -> None:
    """``mtp_tokens`` sequential draft passes of the MTP module over ``batch_per_rank`` tokens:
    embedding, norms + ``eh_proj``, one MoE decoder layer (with its dispatch/combine), final
    norm and LM head. Runs after the verify pass (one micro-batch, joined)."""
    model, par, prec = spec.model, spec.parallel, spec.precision
    deps = {r: [i for mb in last for i in mb.get(r, [])] for r in ranks}
    draft = dataclasses.replace(spec, mtp_tokens=0, overlap="none")
    for k in range(spec.mtp_tokens):
        layer_id = model.num_layers + k
        state = [deps]
        heads = model_head_ops(model, par, prec, "generation", spec.batch_per_rank, 1)
        for op in list(heads.pre_layers) + mtp_extra_ops(model, par, spec.batch_per_rank):
            state[0] = _as_deps(w.compute(ranks, op, state[0], layer_id, 0))
        _emit_layer(w, draft, mtp_layer_index(model), ranks, [spec.batch_per_rank], 1, state, ar_lib,
                    label=f"mtp{k}", trace_layer=layer_id)
        for op in heads.post_layers:
            state[0] = _as_deps(w.compute(ranks, op, state[0], layer_id, 0))
        deps = state[0]
    for mb in last:
        mb.update(deps)


def _as_deps(ids: dict[int, int]) -> dict[int, list[int]]:
    return {r: [i] for r, i in ids.items()}


def _scalar(size: float) -> np.ndarray:
    return np.array([[int(round(size))]], dtype=np.int64)


def _emit_layer(w: _TraceWriter, spec: StepSpec, layer: int, ranks: list[int], mbs: list[int],
                tokens_per_req: int, last: list[dict[int, list[int]]], ar_lib: str, label: str | None = None,
                trace_layer: int | None = None) -> None:
    """Emit one decoder layer for every micro-batch in TBO order (see module docstring);
    ``ar_lib`` is the library of the stage's tensor-parallel all-reduces. ``label`` /
    ``trace_layer`` name the nodes (default ``L{layer}`` / ``layer``; MTP passes use their own)."""
    par = spec.parallel
    routed = layer if trace_layer is None else trace_layer  # the layer id routing statistics are drawn for
    # what a layer of this shape computes and sends, derived once per step and spec (layer_shape)
    key = (layer_shape(spec, spec.model.layer(layer)), routed if spec.routing is not None else None, tuple(mbs),
           tokens_per_req, tuple(ranks))
    memo = w.layer_memo.setdefault(id(spec), (spec, {}))[1]
    if key not in memo:
        per_mb = [layer_op_lists(spec, layer, par, batch, tokens_per_req) for batch in mbs]
        traffic = []
        for mb, (attn_ops, ffn_ops, comm) in enumerate(per_mb):
            if comm.moe_pattern in ("all_to_all", "allgather_reducescatter"):
                (dispatch_m, dispatch_x), combine, received = _moe_matrices(spec, comm, ranks, routed, mb)
                dispatch_m.setflags(write=False)  # shared by the layers of this shape
                combine[0].setflags(write=False)
                experts = next(op for op in ffn_ops if isinstance(op, MoeOp))
                traffic.append(((dispatch_m, dispatch_x), combine, _expert_ops(spec, experts, ranks, received)))
            else:
                traffic.append(None)
        memo[key] = per_mb, traffic
    per_mb, traffic = memo[key]
    label = label or f"L{layer}"
    layer = layer if trace_layer is None else trace_layer

    # Phase 1 per micro-batch: attention block, its all-reduce, router, dispatch.
    moe_state = []
    for mb, (attn_ops, ffn_ops, comm) in enumerate(per_mb):
        deps = last[mb]
        for op in attn_ops:
            deps = _as_deps(w.compute(ranks, op, deps, layer, mb, label))
        if comm.attention_allreduce_bytes:
            deps = _as_deps(w.collective(f"{label}.mb{mb}.attn_allreduce", "all_reduce", ar_lib, ranks,
                                         _scalar(comm.attention_allreduce_bytes), deps, layer, mb))
        if comm.moe_pattern in ("all_to_all", "allgather_reducescatter"):
            router = next(op for op in ffn_ops if op.name == "router")
            deps = _as_deps(w.compute(ranks, router, deps, layer, mb, label))
            (dispatch_m, dispatch_x), combine, expert_ops = traffic[mb]
            kind = "all_to_all_v" if comm.moe_pattern == "all_to_all" else "all_gather"
            lib = spec.library if kind == "all_to_all_v" else "nccl"
            sent = w.collective(f"{label}.mb{mb}.dispatch", kind, lib, ranks, dispatch_m, deps, layer, mb,
                                op="dispatch" if kind == "all_to_all_v" else "", **dispatch_x)
            moe_state.append((deps, sent, combine, kind, lib, expert_ops))
        else:
            moe_state.append((deps, None, None, None, None, None))
        last[mb] = deps

    # Phase 2 per micro-batch: experts (after dispatch), shared expert (overlaps the dispatch),
    # combine, FFN all-reduce.
    for mb, (attn_ops, ffn_ops, comm) in enumerate(per_mb):
        after_router, dispatched, combine, kind, lib, expert_ops = moe_state[mb]
        if dispatched is None:
            deps = last[mb]
            for op in ffn_ops:
                deps = _as_deps(w.compute(ranks, op, deps, layer, mb, label))
            if comm.ffn_allreduce_bytes:
                deps = _as_deps(w.collective(f"{label}.mb{mb}.ffn_allreduce", "all_reduce", ar_lib, ranks,
                                             _scalar(comm.ffn_allreduce_bytes), deps, layer, mb))
            last[mb] = deps
            continue
        exp = _as_deps(w.compute(ranks, expert_ops, _as_deps(dispatched), layer, mb, label))
        shared = after_router
        for op in ffn_ops:
            if op.name.startswith("shared_"):
                shared = _as_deps(w.compute(ranks, op, shared, layer, mb, label))
        ckind = "all_to_all_v" if kind == "all_to_all_v" else "reduce_scatter"
        combine_m, combine_x = combine
        combined = w.collective(f"{label}.mb{mb}.combine", ckind, lib, ranks, combine_m, exp, layer, mb,
                                op="combine" if ckind == "all_to_all_v" else "", **combine_x)
        last[mb] = {r: [combined[r]] + shared.get(r, []) for r in ranks}


def layer_shape(spec: StepSpec, layer: LayerSpec) -> tuple:
    """What a layer's ops and traffic in a step depend on besides the step itself: its FFN kind
    and attention shape; and its index when the step carries a :class:`StepRouting` (per-layer
    routing statistics). Without one every layer shares the step's one routing sample, so the
    layouts derive the ops and traffic of layers of one shape once."""
    if spec.routing is not None:
        return (layer.index,)
    return layer.ffn, layer.window_kind, layer.window_tokens, layer.indexer


def _allreduce_library(spec: StepSpec, ranks: list[int]) -> str:
    """Library of the tensor-parallel all-reduces of ``ranks``: ``allreduce_library``, where
    ``auto`` means the frameworks' custom kernels inside one node (scale-up domain) and NCCL
    across nodes."""
    if spec.allreduce_library != "auto":
        return spec.allreduce_library
    gpus = spec.gpu_ranks
    nodes = D.group_nodes([gpus[r] for r in ranks], spec.gpus_per_node or DEFAULT_GPUS_PER_NODE)
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


def routing_counts_of(spec: StepSpec, tokens: int, ep: int, node_of, layer: int, *, topk_nodes: int = 0,
                      sources: int | None = None, stream: int = 0):
    """The routing counts of one MoE layer of a step: its :class:`StepRouting` drawn or replayed
    for this layer (node-limited to ``topk_nodes`` when the library needs it), or the one cached
    sample of ``routing_skew`` / ``seed`` shared by every layer."""
    moe = spec.model.moe
    if spec.routing is None:
        return sampled_routing_counts(tokens, moe.num_experts, moe.top_k, ep, topk_nodes=topk_nodes, node_of=node_of,
                                      skew=spec.routing_skew, seed=spec.seed, redundant_experts=spec.redundant_experts,
                                      num_sources=sources)
    routing = spec.routing
    node = np.asarray(node_of, dtype=np.int64)
    if spec.redundant_experts:  # EPLB replicas from the routing's statistics; a replica at random
        if topk_nodes or (routing.model is not None and routing.model.max_nodes):
            raise ConfigError("<api>", "redundant_experts", "redundant experts with node-limited routing are not "
                                                            "modelled (an expert's node is not unique)")
        replicas = routing.replicas(layer, moe.num_experts, moe.top_k, ep, spec.redundant_experts)
        choices = routing.choices(layer, ep if sources is None else sources, int(tokens), moe.num_experts, moe.top_k,
                                  None, stream, tuple(int(v) for v in node) if sources is None else None)
        return counts_from_choices(choices, moe.num_experts, ep, node_of=node_of, replicas=replicas,
                                   seed=(routing.seed, layer, stream))
    owner = routing.owner(layer, moe.num_experts, moe.top_k, ep, tuple(int(v) for v in node))
    expert_node = tuple(int(v) for v in node[expert_rank(moe.num_experts, ep) if owner is None else owner])
    if routing.model is not None and topk_nodes and len(set(expert_node)) > topk_nodes:
        limit = min(routing.model.max_nodes or topk_nodes, topk_nodes)
        if limit != routing.model.max_nodes:
            routing = dataclasses.replace(routing, model=dataclasses.replace(routing.model, max_nodes=limit))
    source_node = tuple(int(v) for v in node) if sources is None else None
    choices = routing.choices(layer, ep if sources is None else sources, int(tokens), moe.num_experts, moe.top_k,
                              expert_node, stream, source_node)
    return counts_from_choices(choices, moe.num_experts, ep, node_of=node_of, owner=owner)


def _moe_matrices(spec: StepSpec, comm, ranks: list[int], layer: int = 0,
                  micro_batch: int = 0) -> tuple[_Traffic, _Traffic, np.ndarray | None]:
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
    gpus = spec.gpu_ranks
    node_of = D.group_nodes([gpus[r] for r in ranks], spec.gpus_per_node or DEFAULT_GPUS_PER_NODE)
    nodes = max(node_of) + 1
    if spec.library == "nvlink_a2a":
        if nodes > 1:
            raise ConfigError("<api>", "moe_library", f"nvlink_a2a needs the EP group in one NVLink domain; its "
                                                      f"{ep} ranks span {nodes} nodes of {spec.gpus_per_node} GPUs")
        counts = routing_counts_of(spec, comm.tokens_per_rank, ep, node_of, layer, stream=micro_batch)
        out = []
        for op, dtype in (("dispatch", prec.dispatch), ("combine", prec.combine)):
            per_token = NV.phase_bytes_per_token(op, dtype, hidden, moe.top_k)
            m = np.rint(np.asarray(counts.tokens) * per_token).astype(np.int64)
            np.fill_diagonal(m, 0)
            out.append((m if op == "dispatch" else m.T.copy(), {}))
        return out[0], out[1], counts.expert_tokens
    if spec.library == "deepep_ll":
        counts = routing_counts_of(spec, comm.tokens_per_rank, ep, node_of, layer, stream=micro_batch)
        qps = {"qps_per_peer": D.ll_qps_per_peer(moe.num_experts + redundant, ep)}
        dispatch = D.ll_bytes_matrix(counts.selections, D.ll_dispatch_bytes_per_selection(hidden, prec.dispatch),
                                     "dispatch")
        combine = D.ll_bytes_matrix(counts.selections, D.ll_combine_bytes_per_selection(hidden, prec.combine),
                                    "combine")
        return (dispatch, qps), (combine, qps), counts.expert_tokens
    if redundant and nodes > 1:
        raise ConfigError("<api>", "redundant_experts", "redundant experts with DeepEP normal mode across nodes "
                                                        "(node-limited routing) are not modelled")
    counts = routing_counts_of(spec, comm.tokens_per_rank, ep, node_of, layer, topk_nodes=D.topk_nodes_limit(nodes),
                               stream=micro_batch)
    remote = np.asarray(node_of)[:, None] != np.arange(nodes)[None, :]
    out = []
    for op, per_token in (("dispatch", D.normal_dispatch_bytes_per_token(hidden, prec.dispatch)),
                          ("combine", D.normal_combine_bytes_per_token(hidden, prec.combine))):
        tok, node = D.normal_bytes_matrices(counts.tokens, counts.node_tokens * remote, per_token, op)
        extra = {"node_bytes_matrix": np.rint(node).astype(np.int64)} if nodes > 1 else {}
        out.append((np.rint(tok).astype(np.int64), extra))
    return out[0], out[1], counts.expert_tokens
