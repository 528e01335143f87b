"""Models: Hugging Face configs -> typed specs -> per-rank compute ops, communication sizes, memory.

Entry points:

- :func:`load_model` -- a path to ``config.json`` (or its directory), or a bundled HF id such as
  ``"deepseek-ai/DeepSeek-V3"``; :func:`parse_config` for a dict; :func:`list_bundled_models`.
- :class:`Parallelism` (tp, ep, dp_attention, pp) and :class:`Precision` (formats).
- :func:`layer_ops` / :func:`model_head_ops` -- ops of one layer / the embedding and LM head on one
  GPU; :func:`layer_comm` / :func:`head_comm` -- the sizes of their collectives.
- :func:`param_counts`, :func:`weight_bytes_per_gpu`, :func:`weight_breakdown`,
  :func:`kv_cache_bytes_per_token`, :func:`kv_cache_bytes_per_request`,
  :func:`activation_bytes_per_gpu`.

See ``docs/models.md``.
"""

from cosim.models.comm import HeadComm, LayerComm, head_comm, layer_comm
from cosim.models.layers import HeadOps, Workload, layer_ops, model_head_ops
from cosim.models.loader import SUPPORTED_MODEL_TYPES, parse_config
from cosim.models.memory import (
    StepMemory,
    WeightBytes,
    activation_bytes_per_gpu,
    kv_cache_bytes_per_request,
    kv_cache_bytes_per_token,
    step_memory,
    weight_breakdown,
    weight_bytes_per_gpu,
)
from cosim.models.parallel import Parallelism, Precision
from cosim.models.params import ParamCounts, param_counts
from cosim.models.registry import bundled_configs_dir, list_bundled_models, load_model
from cosim.models.spec import AttentionSpec, IndexerSpec, LayerSpec, ModelSpec, MoESpec

__all__ = [
    "AttentionSpec", "HeadComm", "HeadOps", "IndexerSpec", "LayerComm", "LayerSpec", "ModelSpec", "MoESpec",
    "ParamCounts", "Parallelism", "Precision", "SUPPORTED_MODEL_TYPES", "StepMemory", "WeightBytes", "Workload",
    "activation_bytes_per_gpu", "bundled_configs_dir", "head_comm", "kv_cache_bytes_per_request",
    "kv_cache_bytes_per_token", "layer_comm", "layer_ops", "list_bundled_models", "load_model",
    "model_head_ops", "param_counts", "parse_config", "step_memory", "weight_breakdown", "weight_bytes_per_gpu",
]
