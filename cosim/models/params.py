"""Total and active parameter counts of a model (MTP modules and vision towers excluded)."""

from __future__ import annotations

from dataclasses import dataclass

from cosim.models.spec import ModelSpec
from cosim.models.weights import layer_weights, model_weights


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts by group; ``total`` and ``active_per_token`` are derived.

    ``active_per_token`` counts every non-expert parameter (embedding and LM head included, the
    convention of published "active" figures) plus ``top_k`` of the routed experts per MoE layer.
    """

    embedding: int
    lm_head: int
    norms: int
    attention: int
    dense_ffn: int
    router: int
    shared_experts: int
    routed_experts: int
    routed_experts_active: float

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.norms + self.attention + self.dense_ffn + self.router
                + self.shared_experts + self.routed_experts)

    @property
    def active_per_token(self) -> float:
        return self.total - self.routed_experts + self.routed_experts_active


def param_counts(model: ModelSpec) -> ParamCounts:
    """Count the parameters of ``model`` by group (see :class:`ParamCounts`)."""
    sums = {g: 0 for g in ("embedding", "lm_head", "norm", "attention", "dense_ffn", "router",
                           "shared_expert", "routed_expert")}
    for weight in model_weights(model):
        sums[weight.group] += weight.numel
    for layer in model.layers:
        for weight in layer_weights(model, layer):
            sums[weight.group] += weight.numel
    active_fraction = model.moe.top_k / model.moe.num_experts if model.moe else 0.0
    return ParamCounts(
        embedding=sums["embedding"], lm_head=sums["lm_head"], norms=sums["norm"], attention=sums["attention"],
        dense_ffn=sums["dense_ffn"], router=sums["router"], shared_experts=sums["shared_expert"],
        routed_experts=sums["routed_expert"], routed_experts_active=sums["routed_expert"] * active_fraction)
