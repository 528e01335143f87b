"""Attention-FFN disaggregation (AFD) as a step layout: a decode step on two GPU groups.

The **attention group** (``afd.attention_gpus`` GPUs, step ranks ``0 .. n_A - 1``) runs the
attention block of every layer with data parallelism over ``n_A / attention_tp`` instances
(heads split ``attention_tp`` ways inside an instance, which all-reduces after ``o_proj``) and
holds the KV cache; ``batch_per_rank`` requests per instance. The **FFN group** (``ffn_gpus``
GPUs, step ranks ``n_A .. n_A + n_F - 1``) holds the routed experts under EP ``n_F / ffn_tp``
(any count: 256 experts on 56 GPUs puts 4 or 5 on each), and by default the shared expert and the
dense layers' FFN.

Every layer, each of the ``m`` micro-batches of every instance goes through
``attention -> A2F -> FFN -> F2A`` (the next layer's attention of that micro-batch waits for its
F2A). A2F and F2A are ``bipartite`` collectives through the network:

- ``routed``: the router runs on the attention side; each token goes once to every FFN rank
  holding one of its top-k experts (the step's routing sample,
  :func:`cosim.trace.moe_traffic.sampled_routing_counts` with the attention ranks as sources),
  fp8 activations + scales + top-k ids and weights; F2A returns each rank's partial sum (bf16)
  the same way back. A shared expert on the FFN side is computed on each token's home FFN rank
  (token ``i`` of a micro-batch on rank ``i mod EP``: its bytes go there unless already routed
  there, in expectation); a dense layer's FFN spreads the tokens evenly over the FFN ranks.
- ``broadcast``: every FFN rank receives the whole micro-batch of every instance, computes its
  expert shards (EP x TP) and its shard of the shared expert / dense FFN, the FFN group
  reduce-scatters the partial sums, and every FFN rank returns its slice of each instance's
  outputs.

With ``attention_tp > 1`` each TP rank of an instance sends ``1 / attention_tp`` of its tokens
and receives them back, then the instance all-gathers them.

**Mixed steps** (aggregated + AFD: ``prefill_chunks`` on the attention group). Every attention
instance runs its ``batch_per_rank`` decode requests and the step's prefill chunks. The decode
requests are split evenly over the micro-batches, then each chunk (whole, in the given order)
joins the micro-batch with the fewest tokens (:func:`afd_micro_batches`, shared with the
step-time model); a micro-batch without tokens is not run. Each micro-batch is a mixed step of
its own (:func:`cosim.trace.builder.layer_op_lists`: attention per request class, everything
else on its tokens), and its tokens go through A2F / FFN / F2A.

The overlap is not a formula: the attention ranks run the attention of micro-batch ``j + 1``
while micro-batch ``j`` is in A2F / FFN / F2A, because the schedule (:mod:`cosim.engine.schedule`)
puts compute and the two transfer directions on separate per-rank streams (A2F on stream 1, F2A
on stream 2). With one micro-batch the step is serial; with ``m >= 2 (1 + T_c / T_f)`` the
communication hides (MegaScale-Infer's bound; checked against its closed form in the tests).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from cosim.errors import ConfigError
from cosim.models import Parallelism
from cosim.models.memory import (
    StepMemory, activation_bytes_per_gpu, kv_cache_bytes_per_request, weight_breakdown,
)
from cosim.network import deepep as D
from cosim.ops import MoeOp
from cosim.trace.builder import (
    PrefillChunk, StepSpec, _as_deps, _expert_ops, _scalar, _TraceWriter, decode_batch, head_ops, layer_op_lists,
    layer_shape, register_layout, routing_counts_of,
)
from cosim.trace.model import StepTrace
from cosim.trace.moe_traffic import DEFAULT_GPUS_PER_NODE

#: Top-k expert ids (int32) and weights (fp32) travel with every routed token.
ROUTING_METADATA_BYTES_PER_TOPK = 8
#: Communication streams of AFD transfers (stream 0 stays for in-group collectives).
A2F_STREAM, F2A_STREAM = 1, 2


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


@dataclass(frozen=True)
class MicroBatch:
    """One AFD micro-batch of an attention instance: ``decode`` decode requests and prefill
    ``chunks``."""

    decode: int
    chunks: tuple[PrefillChunk, ...] = ()

    @property
    def tokens(self) -> int:
        """Tokens through the layers (decode tokens + every chunk's new tokens)."""
        return self.decode + sum(c.new_tokens for c in self.chunks)

    @property
    def requests(self) -> int:
        """Requests whose next token the LM head computes."""
        return self.decode + len(self.chunks)


def afd_micro_batches(spec: StepSpec) -> list[MicroBatch]:
    """The micro-batches of an AFD step (module docstring), empty ones included."""
    return partition(decode_batch(spec), spec.prefill_chunks, spec.afd.micro_batches)


def partition(decode: int, chunks, micro_batches: int) -> list[MicroBatch]:
    """``decode`` requests split evenly over ``micro_batches`` (the first ones get one more),
    then each prefill chunk (:class:`PrefillChunk`, in order) to the micro-batch with the fewest
    tokens (the first of equals)."""
    counts = _split(decode, micro_batches)
    parts: list[list[PrefillChunk]] = [[] for _ in counts]
    tokens = list(counts)
    for c in chunks:
        j = tokens.index(min(tokens))
        parts[j].append(c)
        tokens[j] += c.new_tokens
    return [MicroBatch(d, tuple(cs)) for d, cs in zip(counts, parts)]


def micro_batch_spec(spec: StepSpec, mb: MicroBatch) -> StepSpec:
    """The step spec whose op lists are one micro-batch's (its own chunks, no others)."""
    return dataclasses.replace(spec, prefill_chunks=mb.chunks) if mb.chunks != spec.prefill_chunks else spec


def attention_parallel(spec: StepSpec) -> Parallelism:
    """Parallelism of one attention instance (heads split ``attention_tp`` ways)."""
    tp = spec.afd.attention_tp
    return Parallelism(tp=tp, ep=math.gcd(tp, spec.model.moe.num_experts) if spec.model.moe else 1)


@dataclass(frozen=True)
class AttentionSideOps:
    """What an attention rank computes for one micro-batch of one layer, in the order the AFD
    layout runs it: ``block`` (the attention block), then ``local_ffn`` (a dense layer's FFN kept on
    the attention side; the micro-batch then does not leave), or ``router`` (routed A2F) before the
    A2F and ``alongside`` (a shared expert kept on the attention side, while the micro-batch is
    away). ``comm`` is the layer's :class:`~cosim.models.LayerComm` on the attention instance;
    ``ffn_block`` the layer's FFN ops as the attention instance would run them (the FFN group's
    routed-expert op is derived from its ``MoeOp``)."""

    block: tuple
    router: tuple
    alongside: tuple
    local_ffn: tuple
    comm: object
    leaves: bool  # the micro-batch goes to the FFN group in this layer
    ffn_block: tuple = ()

    @property
    def ops(self) -> tuple:
        """Every op, in order."""
        return self.block + self.local_ffn + self.router + self.alongside


def attention_side_ops(spec: StepSpec, layer_index: int, batch: int) -> AttentionSideOps:
    """The attention rank's ops of one micro-batch of ``batch`` requests in layer ``layer_index``
    (the one place that decides what stays on the attention side; the step-time model reuses it)."""
    afd, model = spec.afd, spec.model
    attn_ops, ffn_ops, comm = layer_op_lists(spec, layer_index, attention_parallel(spec), batch, 1)
    moe = model.layer(layer_index).ffn == "moe"
    leaves = moe or afd.dense_layers == "ffn"
    router = tuple(op for op in ffn_ops if op.name == "router") if moe and afd.a2f == "routed" else ()
    alongside = tuple(op for op in ffn_ops if op.name.startswith("shared_")) if (
        moe and afd.shared_expert == "attention") else ()
    return AttentionSideOps(tuple(attn_ops), router, alongside, () if leaves else tuple(ffn_ops), comm, leaves,
                            tuple(ffn_ops))


def _check(spec: StepSpec) -> None:
    afd, model = spec.afd, spec.model
    if spec.phase != "generation":
        raise ConfigError("<api>", "layout", "the afd layout is a decode or mixed step (phase 'generation'); "
                                             "a prefill-only pool runs colocated")
    if spec.overlap != "none":
        raise ConfigError("<api>", "overlap", "AFD overlaps through its micro-batches (afd.micro_batches), not "
                                              "two-batch overlap")
    if spec.mtp_tokens:
        raise ConfigError("<api>", "mtp_tokens", "MTP drafting with the afd layout is not modelled")
    if not model.is_moe:
        raise ConfigError("<api>", "layout", f"{model.name} has no MoE layers: nothing to disaggregate")
    if afd.ffn_ep > model.moe.num_experts:
        raise ConfigError("<api>", "afd.ffn_gpus", f"EP {afd.ffn_ep} exceeds the {model.moe.num_experts} experts")
    if spec.redundant_experts:
        raise ConfigError("<api>", "redundant_experts", "redundant experts with the afd layout are not modelled")
    if not spec.prefill_chunks and decode_batch(spec) < afd.micro_batches:
        raise ConfigError("<api>", "afd.micro_batches", f"{afd.micro_batches} micro-batches need at least as many "
                                                        f"requests per attention instance, got {decode_batch(spec)}")


@register_layout("afd")
def build_afd_trace(spec: StepSpec, kernels) -> StepTrace:
    """The AFD decode step (see the module docstring)."""
    _check(spec)
    afd, model = spec.afd, spec.model
    n_a, n_f, atp = afd.attention_gpus, afd.ffn_gpus, afd.attention_tp
    attn = list(range(n_a))
    ffn = list(range(n_a, n_a + n_f))
    instances = [attn[i * atp:(i + 1) * atp] for i in range(afd.instances)]
    apar = attention_parallel(spec)
    w = _TraceWriter(n_a + n_f, kernels)
    mbs = [m for m in afd_micro_batches(spec) if m.tokens]
    specs = [micro_batch_spec(spec, m) for m in mbs]
    last: list[dict[int, list[int]]] = [{} for _ in mbs]
    gpus = spec.gpu_ranks
    g = spec.gpus_per_node or DEFAULT_GPUS_PER_NODE
    ffn_nodes = D.group_nodes([gpus[r] for r in ffn], g)

    def in_instances(name, kind, size_bytes, deps, layer, mb):
        """One collective per attention instance (TP > 1), e.g. the o_proj all-reduce."""
        out: dict[int, list[int]] = {}
        for group in instances:
            lib = "custom_allreduce" if kind == "all_reduce" and len(set(D.group_nodes(
                [gpus[r] for r in group], g))) == 1 else "nccl"
            done = w.collective(f"{name}.i{group[0]}", kind, lib, group, _scalar(size_bytes), deps, layer, mb)
            out.update(_as_deps(done))
        return out

    for mb, m in enumerate(mbs):
        heads, hc = head_ops(specs[mb], apar, m.decode, 1)
        for op in heads.pre_layers:
            last[mb] = _as_deps(w.compute(attn, op, last[mb], -1, mb))
        if atp > 1 and hc.embedding_allreduce_bytes:
            last[mb] = in_instances(f"embed.mb{mb}.allreduce", "all_reduce", hc.embedding_allreduce_bytes,
                                    last[mb], -1, mb)

    per_shape: dict = {}  # what a layer of this shape and micro-batch computes and sends (layer_shape)
    for layer in model.layers:
        for mb, m in enumerate(mbs):
            key = (layer_shape(spec, layer), mb)
            if key not in per_shape:
                side = attention_side_ops(specs[mb], layer.index, m.decode)
                made = None
                if side.leaves:
                    a2f_m, f2a_m, received, ffn_compute = _afd_traffic(spec, layer, side.ffn_block, m.tokens,
                                                                       ffn_nodes, mb)
                    a2f_m.setflags(write=False)
                    f2a_m.setflags(write=False)
                    made = a2f_m, f2a_m, [_expert_ops(spec, op, ffn, received) if isinstance(op, MoeOp) else op
                                          for op in ffn_compute]
                per_shape[key] = side, made
            side, made = per_shape[key]
            comm = side.comm
            label = f"L{layer.index}"
            deps = last[mb]
            for op in side.block:
                deps = _as_deps(w.compute(attn, op, deps, layer.index, mb))
            if comm.attention_allreduce_bytes:
                deps = in_instances(f"{label}.mb{mb}.attn_allreduce", "all_reduce", comm.attention_allreduce_bytes,
                                    deps, layer.index, mb)
            if not side.leaves:  # dense FFN on the attention ranks
                for op in side.local_ffn:
                    deps = _as_deps(w.compute(attn, op, deps, layer.index, mb))
                if comm.ffn_allreduce_bytes:
                    deps = in_instances(f"{label}.mb{mb}.ffn_allreduce", "all_reduce", comm.ffn_allreduce_bytes,
                                        deps, layer.index, mb)
                last[mb] = deps
                continue
            for op in side.router:
                deps = _as_deps(w.compute(attn, op, deps, layer.index, mb))
            keep = {}  # attention-side work that runs while the micro-batch is away
            if side.alongside:
                keep = deps
                for op in side.alongside:
                    keep = _as_deps(w.compute(attn, op, keep, layer.index, mb))
            a2f_m, f2a_m, ffn_compute = made
            sent = w.collective(f"{label}.mb{mb}.a2f", "bipartite", "bipartite", attn + ffn, a2f_m, deps,
                                layer.index, mb, num_senders=n_a, op="a2f", stream=A2F_STREAM)
            fdeps = _as_deps({r: sent[r] for r in ffn})
            for op in ffn_compute:
                fdeps = _as_deps(w.compute(ffn, op, fdeps, layer.index, mb))
            if afd.a2f == "broadcast" and n_f > 1:
                total = afd.instances * m.tokens
                fdeps = _as_deps(w.collective(f"{label}.mb{mb}.ffn_reduce_scatter", "reduce_scatter", "nccl", ffn,
                                              _scalar(total * model.hidden_size * 2.0), fdeps, layer.index, mb))
            back = w.collective(f"{label}.mb{mb}.f2a", "bipartite", "bipartite", ffn + attn, f2a_m, fdeps,
                                layer.index, mb, num_senders=n_f, op="f2a", stream=F2A_STREAM)
            deps = {r: [back[r]] + keep.get(r, []) for r in attn}
            if atp > 1:
                deps = in_instances(f"{label}.mb{mb}.gather", "all_gather", m.tokens * model.hidden_size * 2.0, deps,
                                    layer.index, mb)
            last[mb] = deps

    for mb, m in enumerate(mbs):
        heads, hc = head_ops(specs[mb], apar, m.decode, 1)
        for op in heads.post_layers:
            last[mb] = _as_deps(w.compute(attn, op, last[mb], -1, mb))
        if atp > 1 and hc.logits_allgather_bytes:
            in_instances(f"logits.mb{mb}.allgather", "all_gather", hc.logits_allgather_bytes * atp, last[mb], -1, mb)
    trace = StepTrace(w.ranks, w.collectives, {
        "afd.attention_gpus": str(n_a), "afd.ffn_gpus": str(n_f), "afd.micro_batches": str(afd.micro_batches),
        "afd.a2f": afd.a2f, "afd.attention_tp": str(atp), "afd.ffn_tp": str(afd.ffn_tp),
        "afd.shared_expert": afd.shared_expert, "afd.dense_layers": afd.dense_layers})
    trace.groups = {"attention": tuple(attn), "ffn": tuple(ffn)}
    return trace


def _afd_traffic(spec: StepSpec, layer, ffn_ops, batch: int, ffn_nodes, stream: int = 0):
    """A2F ``[n_A x n_F]`` and F2A ``[n_F x n_A]`` byte matrices of one micro-batch of ``batch``
    tokens per instance, the (token, expert) selections each FFN rank computes (``None`` when
    not routed), and the FFN-side ops."""
    afd, model, prec = spec.afd, spec.model, spec.precision
    n_a, n_f, atp = afd.attention_gpus, afd.ffn_gpus, afd.attention_tp
    hidden = model.hidden_size
    total = afd.instances * batch
    per_sender = [len(part) for part in _sender_tokens(batch, atp)] * afd.instances  # tokens each sender holds
    out_bytes = D.normal_combine_bytes_per_token(hidden, prec.combine)
    ops: list = []
    received = None
    if afd.a2f == "broadcast":
        in_bytes = D.normal_dispatch_bytes_per_token(hidden, prec.dispatch)
        sender = np.array(per_sender, dtype=float)
        a2f = np.tile(sender[:, None] * in_bytes, (1, n_f))
        f2a = np.tile(sender[None, :] * out_bytes / n_f, (n_f, 1))
        return _whole(a2f), _whole(f2a), None, _group_ffn_ops(spec, layer, ffn_ops, batch)
    t_max = max(per_sender)
    if layer.ffn == "moe":
        moe = model.moe
        in_bytes = D.normal_dispatch_bytes_per_token(hidden, prec.dispatch) + ROUTING_METADATA_BYTES_PER_TOPK * moe.top_k
        counts = routing_counts_of(spec, t_max, afd.ffn_ep, ffn_nodes, layer.index, sources=n_a, stream=stream)
        scale = np.array(per_sender, dtype=float)[:, None] / t_max
        tokens = np.asarray(counts.tokens) * scale
        received = (np.asarray(counts.selections) * scale).sum(axis=0)
        if afd.shared_expert == "ffn" and moe.shared_inter_size:
            home = np.array(per_sender, dtype=float)[:, None] / n_f
            tokens = tokens + home * (1.0 - tokens / np.maximum(np.array(per_sender, dtype=float)[:, None], 1.0))
    else:
        in_bytes = D.normal_dispatch_bytes_per_token(hidden, prec.dispatch)
        tokens = np.array(per_sender, dtype=float)[:, None] / n_f * np.ones((1, n_f))
    return _whole(tokens * in_bytes), _whole(tokens.T * out_bytes), received, _group_ffn_ops(spec, layer, ffn_ops, batch)


def _group_ffn_ops(spec: StepSpec, layer, ffn_ops, batch: int) -> list:
    """An FFN rank's ops for one micro-batch of ``batch`` tokens per instance (routed experts as
    one ``MoeOp`` over every instance's tokens; the builder then splits it by the routing
    sample)."""
    afd = spec.afd
    total = afd.instances * batch
    if afd.a2f == "broadcast":
        return _ffn_ops(spec, layer, total, ffn_ops, expert_ep=afd.ffn_ep, shard=afd.ffn_gpus)
    return _ffn_ops(spec, layer, math.ceil(total / afd.ffn_gpus), ffn_ops, expert_ep=afd.ffn_ep, expert_tokens=total)


def ffn_rank_seconds(spec: StepSpec, layer_index: int, mb: MicroBatch, kernels) -> float:
    """The slowest FFN rank's compute for micro-batch ``mb`` in layer ``layer_index``, with the
    per-rank expert loads of the step's routing sample as the builder puts them (0 when the
    layer's FFN stays on the attention side); the step-time model's FFN-side work."""
    side = attention_side_ops(micro_batch_spec(spec, mb), layer_index, mb.decode)
    if not side.leaves:
        return 0.0
    ffn = list(range(spec.afd.attention_gpus, spec.afd.num_gpus))
    gpus = spec.gpu_ranks
    nodes = D.group_nodes([gpus[r] for r in ffn], spec.gpus_per_node or DEFAULT_GPUS_PER_NODE)
    *_, received, ops = _afd_traffic(spec, spec.model.layer(layer_index), side.ffn_block, mb.tokens, nodes)
    per_rank = np.zeros(len(ffn))
    for op in ops:
        made = _expert_ops(spec, op, ffn, received) if isinstance(op, MoeOp) else op
        if isinstance(made, dict):
            per_rank += [float(kernels.duration(made[r]).seconds) for r in ffn]
        else:
            per_rank += float(kernels.duration(made).seconds)
    return float(per_rank.max())


def _sender_tokens(batch: int, atp: int) -> list[range]:
    """The tokens of an instance's micro-batch each of its TP ranks sends (contiguous slices)."""
    sizes = _split(batch, atp)
    starts = np.cumsum([0] + sizes)
    return [range(int(starts[i]), int(starts[i + 1])) for i in range(atp)]


def _ffn_ops(spec: StepSpec, layer, tokens: int, attention_side_ffn_ops, *, expert_ep: int,
             expert_tokens: int | None = None, shard: int = 1) -> list:
    """FFN-group ops of one micro-batch on one FFN rank: the routed experts (``MoeOp`` over the
    micro-batch's tokens of every instance, EP ``expert_ep``, TP ``ffn_tp``) and, where placed on
    the FFN side, the shared expert or the dense FFN, on ``tokens`` tokens, their intermediate
    dimension split ``shard`` ways (broadcast A2F: the whole FFN group shares them)."""
    afd, model = spec.afd, spec.model
    from cosim.models import layer_ops

    own = layer_ops(model, layer.index, Parallelism(tp=1), spec.precision, "generation", max(1, tokens), 1, 0,
                    spec.distribution)
    split = next(i for i, op in enumerate(own) if op.name == "post_attention_norm") + 1
    ffn_side = [_sharded(op, shard) for op in own[split:]]
    out = []
    if layer.ffn != "moe":
        return ffn_side
    experts = next(op for op in attention_side_ffn_ops if isinstance(op, MoeOp))
    total = expert_tokens if expert_tokens is not None else tokens
    out.append(dataclasses.replace(experts, num_tokens=max(1, int(total)), ep_size=expert_ep, tp_size=afd.ffn_tp))
    if afd.shared_expert == "ffn":
        out += [op for op in ffn_side if op.name.startswith("shared_")]
    return out


def _sharded(op, shard: int):
    """A dense / shared MLP op with its intermediate dimension split ``shard`` ways."""
    if shard == 1:
        return op
    name = op.name
    if name.endswith("_gate_up"):
        return dataclasses.replace(op, n=max(1, op.n // shard))
    if name.endswith("_down"):
        return dataclasses.replace(op, k=max(1, op.k // shard))
    if name.endswith("_act"):
        return dataclasses.replace(op, bytes=op.bytes / shard, flop_count=op.flop_count / shard)
    return op


def _whole(m: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(m, dtype=float)).astype(np.int64)


def afd_memory(spec: StepSpec, capacity_bytes: float | None) -> dict[str, StepMemory]:
    """Memory per GPU of each AFD group: attention (attention weights, embedding, LM head,
    router and whatever FFN parts are placed there, plus the KV cache of its requests and
    activations) and FFN (its experts, ``ceil(E / EP)`` per GPU split ``ffn_tp`` ways, plus the
    shared expert / dense FFN placed there, plus receive and send buffers of one micro-batch)."""
    afd, model, prec = spec.afd, spec.model, spec.precision
    apar = attention_parallel(spec)
    wa = weight_breakdown(model, apar, prec)
    one = weight_breakdown(model, Parallelism(tp=1), prec)
    broadcast = afd.a2f == "broadcast"
    shard = afd.ffn_gpus if broadcast else 1
    attention_w = wa.embedding_bytes + wa.lm_head_bytes + wa.norm_bytes + wa.attention_bytes + wa.router_bytes
    if afd.shared_expert == "attention":
        attention_w += wa.shared_expert_bytes
    if afd.dense_layers == "attention":
        attention_w += wa.dense_ffn_bytes
    ctx = spec.prefix_tokens + 1
    kv = spec.batch_per_rank * kv_cache_bytes_per_request(model, apar, prec, ctx)
    act = activation_bytes_per_gpu(model, apar, prec, max(1, decode_batch(spec)), "generation", spec.prefix_tokens)
    moe = model.moe
    ffn_w = one.routed_expert_bytes * math.ceil(moe.num_experts / afd.ffn_ep) / moe.num_experts / afd.ffn_tp
    if afd.shared_expert == "ffn":
        ffn_w += one.shared_expert_bytes / shard
    if afd.dense_layers == "ffn":
        ffn_w += one.dense_ffn_bytes / shard
    mb_tokens = afd.instances * math.ceil(decode_batch(spec) / afd.micro_batches)
    per_token = (D.normal_dispatch_bytes_per_token(model.hidden_size, prec.dispatch)
                 + D.normal_combine_bytes_per_token(model.hidden_size, prec.combine))
    received = mb_tokens if broadcast else mb_tokens * min(1.0, moe.top_k / afd.ffn_ep * 1.0 + 1.0 / afd.ffn_ep)
    buffers = 2.0 * afd.micro_batches * received * per_token  # in and out, every micro-batch in flight
    return {"attention": StepMemory(attention_w, kv, act, capacity_bytes),
            "ffn": StepMemory(ffn_w, 0.0, buffers, capacity_bytes)}
