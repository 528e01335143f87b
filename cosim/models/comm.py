"""Communication one decoder layer needs, as sizes only (the network layer turns them into flows).

All byte counts are per GPU: the buffer each rank contributes (all-reduce: the buffer being
reduced, not the wire bytes of a ring; all-to-all: per token, before multiplying by the token's
destinations). Groups are the ``tp`` ranks of one pipeline stage.

MoE patterns (``LayerComm.moe_pattern``):

- ``none``: tp = 1, nothing to exchange.
- ``allreduce``: TP attention; every rank holds all tokens and a partial MoE (+ shared expert)
  output, summed by an all-reduce of ``ffn_allreduce_bytes``.
- ``all_to_all``: DP attention with ep = tp: each token's hidden state is dispatched to the ranks
  of its top-k experts (``dispatch_bytes_per_token`` each; tokens bound for several experts on one
  rank are sent once) and the expert outputs come back (``combine_bytes_per_token``).
- ``allgather_reducescatter``: DP attention with moe_tp > 1: every rank all-gathers all tokens
  (``dispatch_bytes_per_token`` each), computes its expert shards, and reduce-scatters the
  outputs (``combine_bytes_per_token`` each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cosim.models.layers import Workload
from cosim.models.parallel import Parallelism, Precision
from cosim.models.spec import FfnKind, ModelSpec
from cosim.ops import DTYPE_BYTES, Phase

MoePattern = Literal["none", "allreduce", "all_to_all", "allgather_reducescatter"]


@dataclass(frozen=True)
class LayerComm:
    """Collectives of one layer on one GPU (sizes in bytes; see the module docstring)."""

    layer_index: int
    ffn: FfnKind
    tokens_per_rank: int
    group_size: int
    attention_allreduce_bytes: float
    ffn_allreduce_bytes: float
    moe_pattern: MoePattern
    top_k: int
    dispatch_bytes_per_token: float
    combine_bytes_per_token: float
    pp_send_bytes: float

    @property
    def dispatch_bytes_max(self) -> float:
        """Upper bound of the bytes one rank dispatches: every token to min(top_k, group) ranks."""
        if self.moe_pattern == "all_to_all":
            return self.tokens_per_rank * min(self.top_k, self.group_size) * self.dispatch_bytes_per_token
        if self.moe_pattern == "allgather_reducescatter":
            return self.tokens_per_rank * self.dispatch_bytes_per_token
        return 0.0

    @property
    def combine_bytes_max(self) -> float:
        """Upper bound of the bytes one rank receives back in the combine."""
        if self.moe_pattern == "all_to_all":
            return self.tokens_per_rank * min(self.top_k, self.group_size) * self.combine_bytes_per_token
        if self.moe_pattern == "allgather_reducescatter":
            return self.tokens_per_rank * self.combine_bytes_per_token
        return 0.0


@dataclass(frozen=True)
class HeadComm:
    """Collectives of the embedding and LM head under vocab-parallel TP (0 when tp = 1 or DP attention)."""

    group_size: int
    embedding_allreduce_bytes: float
    logits_allgather_bytes: float


def layer_comm(model: ModelSpec, layer_index: int, parallel: Parallelism, precision: Precision,
               phase: Phase, batch: int, new_tokens: int = 1) -> LayerComm:
    """Sizes of the collectives layer ``layer_index`` needs on one GPU for this workload.

    Attention all-reduce after ``o_proj`` (TP attention, tp > 1); after the FFN, either a TP
    all-reduce (dense layers and TP-attention MoE) or MoE dispatch/combine (DP attention); and the
    activations sent to the next pipeline stage after a stage's last layer.
    """
    parallel.validate(model)
    layer = model.layer(layer_index)
    work = Workload(phase, batch, new_tokens, 0)
    t, h = work.tokens, model.hidden_size
    ar = DTYPE_BYTES[precision.allreduce]
    tp_buffer = t * h * ar
    attention_ar = tp_buffer if parallel.attention_tp > 1 else 0.0
    ffn_ar, pattern, top_k, dispatch, combine = 0.0, "none", 0, 0.0, 0.0
    if layer.ffn == "moe":
        assert model.moe is not None
        top_k = model.moe.top_k
        if parallel.tp > 1 and not parallel.dp_attention:
            pattern, ffn_ar = "allreduce", tp_buffer
        elif parallel.tp > 1:
            pattern = "all_to_all" if parallel.moe_tp == 1 else "allgather_reducescatter"
            dispatch = h * DTYPE_BYTES[precision.dispatch]
            combine = h * DTYPE_BYTES[precision.combine]
    elif parallel.dense_tp > 1:
        ffn_ar = tp_buffer
    stages = parallel.stage_layers(model)
    stage = parallel.stage_of_layer(model, layer_index)
    is_stage_end = layer_index == stages[stage][-1] and stage < parallel.pp - 1
    return LayerComm(
        layer_index=layer_index, ffn=layer.ffn, tokens_per_rank=t, group_size=parallel.tp,
        attention_allreduce_bytes=attention_ar, ffn_allreduce_bytes=ffn_ar, moe_pattern=pattern, top_k=top_k,
        dispatch_bytes_per_token=dispatch, combine_bytes_per_token=combine,
        pp_send_bytes=t * h * ar if is_stage_end else 0.0)


def head_comm(model: ModelSpec, parallel: Parallelism, precision: Precision, phase: Phase,
              batch: int, new_tokens: int = 1) -> HeadComm:
    """Vocab-parallel embedding all-reduce (``tokens x hidden``) and the logits all-gather
    (this rank's ``batch x vocab/tp`` bfloat16 slice) when the vocabulary is split."""
    parallel.validate(model)
    work = Workload(phase, batch, new_tokens, 0)
    tp = parallel.dense_tp
    if tp == 1:
        return HeadComm(group_size=1, embedding_allreduce_bytes=0.0, logits_allgather_bytes=0.0)
    ar = DTYPE_BYTES[precision.allreduce]
    return HeadComm(group_size=tp, embedding_allreduce_bytes=work.tokens * model.hidden_size * ar,
                    logits_allgather_bytes=work.batch * -(-model.vocab_size // tp) * 2.0)
