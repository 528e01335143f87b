"""How one model instance is split over GPUs, and the numeric formats it runs in.

Semantics (those of SGLang and TensorRT-LLM): ``tp`` is the number of GPUs of one pipeline
stage; the instance has ``tp * pp`` GPUs.

- TP attention (``dp_attention=False``): attention heads, dense FFNs, shared experts and the
  vocabulary are split ``tp`` ways; every rank of the stage sees the same tokens.
- DP attention (``dp_attention=True``): each of the ``tp`` ranks runs attention with tp=1 on its
  own requests (its own KV cache); dense FFNs, shared experts, embedding and LM head are
  replicated (tp=1) and run on the rank's own tokens.
- MoE layers: experts are split ``ep`` ways and each expert's FFN ``moe_tp = tp // ep`` ways, so
  the MoE group is always the ``tp`` ranks of the stage.
- ``pp`` pipeline stages hold contiguous layer ranges (earlier stages get the extra layers).
"""

from __future__ import annotations

from dataclasses import dataclass

from cosim.errors import ConfigError
from cosim.models.spec import MODULE_GROUPS, ModelSpec
from cosim.ops import DTYPE_BYTES

WEIGHT_DTYPES = ("bfloat16", "fp8", "fp8_block", "nvfp4")
KV_DTYPES = ("bfloat16", "fp8")
COMM_DTYPES = ("bfloat16", "fp8", "nvfp4")
_SRC = "<api>"


def _positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(_SRC, name, f"expected an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Parallelism:
    """Parallel layout of one model instance (see the module docstring for semantics).

    Attributes:
        tp: GPUs per pipeline stage (attention TP degree unless ``dp_attention``).
        ep: expert-parallel degree of MoE layers; must divide ``tp``.
        dp_attention: attention runs data-parallel (tp=1 per rank, own requests).
        pp: pipeline stages.
        redundant_experts: extra expert slots (EPLB replicas of hot experts); the EP group holds
            ``num_experts + redundant_experts`` slots, which ``ep`` must divide (so 256 experts + 32
            redundant run on EP 72 or 144, as DeepSeek's own deployment does).
    """

    tp: int = 1
    ep: int = 1
    dp_attention: bool = False
    pp: int = 1
    redundant_experts: int = 0

    def __post_init__(self) -> None:
        _positive_int(self.tp, "parallel.tp")
        _positive_int(self.ep, "parallel.ep")
        _positive_int(self.pp, "parallel.pp")
        if isinstance(self.redundant_experts, bool) or not isinstance(self.redundant_experts, int) \
                or self.redundant_experts < 0:
            raise ConfigError(_SRC, "parallel.redundant_experts",
                              f"expected an integer >= 0, got {self.redundant_experts!r}")
        if not isinstance(self.dp_attention, bool):
            raise ConfigError(_SRC, "parallel.dp_attention", f"expected true or false, got {self.dp_attention!r}")
        if self.tp % self.ep:
            raise ConfigError(_SRC, "parallel.ep", f"ep={self.ep} must divide tp={self.tp} (the MoE group is the "
                                                   "tp ranks of a stage: ep x moe_tp = tp)")

    @property
    def num_gpus(self) -> int:
        """GPUs of one model instance (``tp * pp``)."""
        return self.tp * self.pp

    @property
    def attention_tp(self) -> int:
        """Ways attention heads are split (1 under DP attention)."""
        return 1 if self.dp_attention else self.tp

    @property
    def attention_dp(self) -> int:
        """Independent attention ranks per stage (``tp`` under DP attention, else 1)."""
        return self.tp if self.dp_attention else 1

    @property
    def moe_tp(self) -> int:
        """Ways each expert's FFN is split (``tp // ep``)."""
        return self.tp // self.ep

    @property
    def dense_tp(self) -> int:
        """Ways dense FFNs, shared experts, embedding and LM head are split."""
        return self.attention_tp

    def validate(self, model: ModelSpec) -> None:
        """Check that ``model`` can be split this way; ConfigError naming the parallel field."""
        att = model.attention
        if att.num_heads % self.attention_tp:
            raise ConfigError(_SRC, "parallel.tp", f"{model.name} has num_attention_heads={att.num_heads}, not "
                                                   f"divisible by attention tp={self.attention_tp}")
        if att.kind == "gqa":
            kv, t = att.num_kv_heads, self.attention_tp
            if kv % t and t % kv:
                raise ConfigError(_SRC, "parallel.tp", f"{model.name} has num_key_value_heads={kv}: attention "
                                                       f"tp={t} must divide it or be a multiple of it")
        if model.num_dense_layers and model.dense_inter_size % self.dense_tp:
            raise ConfigError(_SRC, "parallel.tp", f"dense intermediate_size={model.dense_inter_size} of "
                                                   f"{model.name} is not divisible by tp={self.dense_tp}")
        if model.is_moe:
            moe = model.moe
            slots = moe.num_experts + self.redundant_experts
            if slots % self.ep:
                extra = (f" + {self.redundant_experts} redundant = {slots} expert slots" if self.redundant_experts
                         else " routed experts")
                raise ConfigError(_SRC, "parallel.ep", f"{model.name} has {moe.num_experts}{extra}, not divisible by "
                                                       f"ep={self.ep} (redundant experts can make it divisible: "
                                                       f"{-slots % self.ep} more)")
            if moe.expert_inter_size % self.moe_tp:
                raise ConfigError(_SRC, "parallel.tp", f"expert intermediate size {moe.expert_inter_size} of "
                                                       f"{model.name} is not divisible by moe_tp=tp/ep={self.moe_tp}")
            if moe.shared_inter_size % self.dense_tp:
                raise ConfigError(_SRC, "parallel.tp", f"shared-expert intermediate size {moe.shared_inter_size} "
                                                       f"of {model.name} is not divisible by tp={self.dense_tp}")
        if self.pp > model.num_layers:
            raise ConfigError(_SRC, "parallel.pp",
                              f"pp={self.pp} exceeds the {model.num_layers} layers of {model.name}")

    def stage_layers(self, model: ModelSpec) -> list[range]:
        """Layer index range of each pipeline stage (earlier stages take the remainder)."""
        if self.pp > model.num_layers:
            raise ConfigError(_SRC, "parallel.pp",
                              f"pp={self.pp} exceeds the {model.num_layers} layers of {model.name}")
        base, extra = divmod(model.num_layers, self.pp)
        out, start = [], 0
        for s in range(self.pp):
            n = base + (1 if s < extra else 0)
            out.append(range(start, start + n))
            start += n
        return out

    def stage_of_layer(self, model: ModelSpec, layer_index: int) -> int:
        """Pipeline stage holding ``layer_index``."""
        model.layer(layer_index)
        return next(s for s, r in enumerate(self.stage_layers(model)) if layer_index in r)


@dataclass(frozen=True)
class Precision:
    """Numeric formats (names from :data:`cosim.ops.DTYPE_BYTES`).

    Attributes:
        weights: default format of the non-expert GEMMs -- attention projections, DSA indexer
            projections, dense FFN and shared experts (``bfloat16``, ``fp8``, ``fp8_block``,
            ``nvfp4``). Embedding, LM head, router and norms always stay bfloat16.
        moe: routed experts; defaults to ``weights``.
        kv_cache: ``bfloat16`` or ``fp8``.
        dispatch: activations sent to the experts (MoE dispatch / all-gather). Default ``fp8``,
            as DeepEP's low-latency dispatch and the frameworks' wide-EP recipes send them.
        combine: expert outputs sent back (MoE combine / reduce-scatter); ``bfloat16`` is common.
        allreduce: TP all-reduce and pipeline activations (``bfloat16``).
        modules: per-module formats that differ from ``weights`` / ``moe``: ``(module, format)``
            pairs (a dict is accepted) with ``module`` one of
            :data:`cosim.models.spec.MODULE_GROUPS` -- e.g. ``{"q_proj": "bfloat16",
            "kv_proj": "bfloat16"}`` for an NVFP4 checkpoint that keeps the MLA projections
            unquantized. Stored as a sorted tuple (hashable). :meth:`module_dtype` resolves them.
    """

    weights: str = "bfloat16"
    moe: str = ""
    kv_cache: str = "bfloat16"
    dispatch: str = "fp8"
    combine: str = "bfloat16"
    allreduce: str = "bfloat16"
    modules: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.moe:
            object.__setattr__(self, "moe", self.weights)
        for name, allowed in (("weights", WEIGHT_DTYPES), ("moe", WEIGHT_DTYPES), ("kv_cache", KV_DTYPES),
                              ("dispatch", COMM_DTYPES), ("combine", ("bfloat16", "fp8")),
                              ("allreduce", ("bfloat16", "fp8"))):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(_SRC, f"precision.{name}", f"expected one of {list(allowed)}, got {value!r}")
        object.__setattr__(self, "modules", _module_formats(self.modules))

    def bytes_of(self, name: str) -> float:
        """Bytes per element of the format of field ``name`` (e.g. ``"kv_cache"``)."""
        return DTYPE_BYTES[getattr(self, name)]

    def module_dtype(self, module: str) -> str:
        """Format of the GEMMs of ``module`` (one of :data:`~cosim.models.spec.MODULE_GROUPS`):
        its entry in :attr:`modules`, else :attr:`moe` for ``routed_experts`` and :attr:`weights`
        for every other module."""
        if module not in MODULE_GROUPS:
            raise ConfigError(_SRC, "precision.modules", f"unknown module {module!r}; expected one of "
                                                         f"{list(MODULE_GROUPS)}")
        for name, dtype in self.modules:
            if name == module:
                return dtype
        return self.moe if module == "routed_experts" else self.weights

    @classmethod
    def from_checkpoint(cls, model: ModelSpec, **overrides: str) -> Precision:
        """The formats of the model's checkpoint, with ``overrides`` applied.

        4-bit formats that cosim has no kernels for (``mxfp4`` of gpt-oss, ``int4`` of Kimi-K2.5)
        map to ``nvfp4``, which has nearly the same bytes per weight (0.53 / 0.56 / 0.5625).
        The KV cache is ``fp8`` when the checkpoint ships KV scales, else ``bfloat16``. Modules the
        checkpoint keeps in another format (:attr:`ModelSpec.checkpoint_module_formats`, from its
        ``quantization_config`` exclusions) become :attr:`modules`; pass ``modules=()`` to price
        every module in ``weights`` / ``moe``.
        """
        four_bit = {"mxfp4": "nvfp4", "int4": "nvfp4"}
        values = {
            "weights": four_bit.get(model.checkpoint_weights, model.checkpoint_weights),
            "moe": four_bit.get(model.checkpoint_moe_weights, model.checkpoint_moe_weights),
            "kv_cache": model.checkpoint_kv_cache or "bfloat16",
            "modules": tuple((m, four_bit.get(d, d)) for m, d in model.checkpoint_module_formats),
        }
        fields = ("weights", "moe", "kv_cache", "dispatch", "combine", "allreduce", "modules")
        for key in overrides:
            if key not in fields:
                raise ConfigError(_SRC, f"precision.{key}", f"unknown precision field; expected one of {list(fields)}")
        values.update(overrides)
        return cls(**values)


def _module_formats(value: object) -> tuple[tuple[str, str], ...]:
    """Validated, sorted ``(module, format)`` pairs from a dict or a sequence of pairs."""
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(m, d) for m, d in items]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(_SRC, "precision.modules",
                          f"expected a mapping or (module, format) pairs, got {value!r}") from None
    seen: dict[str, str] = {}
    for module, dtype in pairs:
        if module not in MODULE_GROUPS:
            raise ConfigError(_SRC, "precision.modules", f"unknown module {module!r}; expected one of "
                                                         f"{list(MODULE_GROUPS)}")
        if dtype not in WEIGHT_DTYPES:
            raise ConfigError(_SRC, f"precision.modules.{module}", f"expected one of {list(WEIGHT_DTYPES)}, "
                                                                   f"got {dtype!r}")
        if module in seen and seen[module] != dtype:
            raise ConfigError(_SRC, f"precision.modules.{module}", f"given twice ({seen[module]!r} and {dtype!r})")
        seen[module] = dtype
    return tuple(sorted(seen.items()))
