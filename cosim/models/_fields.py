"""Strict readers for fields of a JSON config, raising ConfigError that names the field, and a
bounded JSON file reader (:func:`read_json_file`).

Integers are bounded where they are read (:mod:`cosim.limits`): a field with an entry in
:data:`FIELD_LIMITS` (``num_hidden_layers``, ``hidden_size``, experts, heads ...) by that limit,
any other by ``MAX_CONFIG_INT``; ``Infinity``, ``NaN`` and non-integral floats are errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cosim import limits as L
from cosim.errors import ConfigError
from cosim.limits import Limit, quote

_MISSING = object()

#: Upper bounds of the integer fields of a Hugging Face config (others: ``MAX_CONFIG_INT``).
FIELD_LIMITS: dict[str, Limit] = {
    "num_hidden_layers": L.MAX_LAYERS,
    "num_nextn_predict_layers": L.MAX_LAYERS,
    "num_mtp_modules": L.MAX_LAYERS,
    "first_k_dense_replace": L.MAX_LAYERS,
    "moe_layer_freq": L.MAX_LAYERS,
    "decoder_sparse_step": L.MAX_LAYERS,
    "interleave_moe_layer_step": L.MAX_LAYERS,
    "no_rope_layer_interval": L.MAX_LAYERS,
    "max_window_layers": L.MAX_LAYERS,
    "index_topk_freq": L.MAX_LAYERS,
    "index_skip_topk_offset": L.MAX_LAYERS,
    "hidden_size": L.MAX_HIDDEN_SIZE,
    "head_dim": L.MAX_HIDDEN_SIZE,
    "v_head_dim": L.MAX_HIDDEN_SIZE,
    "qk_nope_head_dim": L.MAX_HIDDEN_SIZE,
    "qk_rope_head_dim": L.MAX_HIDDEN_SIZE,
    "q_lora_rank": L.MAX_HIDDEN_SIZE,
    "kv_lora_rank": L.MAX_HIDDEN_SIZE,
    "index_head_dim": L.MAX_HIDDEN_SIZE,
    "intermediate_size": L.MAX_INTERMEDIATE_SIZE,
    "intermediate_size_mlp": L.MAX_INTERMEDIATE_SIZE,
    "moe_intermediate_size": L.MAX_INTERMEDIATE_SIZE,
    "shared_expert_intermediate_size": L.MAX_INTERMEDIATE_SIZE,
    "shared_intermediate_size": L.MAX_INTERMEDIATE_SIZE,
    "num_attention_heads": L.MAX_HEADS,
    "num_key_value_heads": L.MAX_HEADS,
    "index_n_heads": L.MAX_HEADS,
    "vocab_size": L.MAX_VOCAB_SIZE,
    "n_routed_experts": L.MAX_EXPERTS,
    "num_experts": L.MAX_EXPERTS,
    "num_local_experts": L.MAX_EXPERTS,
    "n_shared_experts": L.MAX_EXPERTS,
    "num_experts_per_tok": L.MAX_EXPERTS,
    "experts_per_token": L.MAX_EXPERTS,
    "max_position_embeddings": L.MAX_TOKENS,
    "sliding_window": L.MAX_TOKENS,
    "attention_chunk_size": L.MAX_TOKENS,
    "index_topk": L.MAX_TOKENS,
}


class Fields:
    """Typed access to one JSON object; ``prefix`` is its dotted path inside ``source``."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = ""):
        self.data = data
        self.source = source
        self.prefix = prefix

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.path(key), message)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def int(self, key: str, default: Any = _MISSING, minimum: int = 1, maximum: Limit | None = None) -> int:
        """A required (or defaulted) integer in ``[minimum, maximum]`` (``maximum``: the field's
        entry in :data:`FIELD_LIMITS`, else ``MAX_CONFIG_INT``); finite floats with integral value
        accepted."""
        value = self.data.get(key)
        limit = maximum or FIELD_LIMITS.get(key, L.MAX_CONFIG_INT)
        if value is None:
            if default is _MISSING:
                raise self.error(key, f"missing required integer field (expected an integer >= {minimum})")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
            raise self.error(key, f"expected an integer from {minimum} to {limit.name} = {limit.value:,}, "
                                  f"got {quote(value)}")
        if value < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {quote(value)}")
        if value > limit.value:
            raise self.error(key, f"{quote(value)} exceeds the limit {limit.name} = {limit.value:,} "
                                  f"{limit.unit} ({limit.reason})")
        return int(value)

    def first_int(self, keys: tuple[str, ...], default: Any = _MISSING, minimum: int = 1) -> int:
        """The first present key of ``keys`` read as :meth:`int`."""
        for key in keys:
            if self.has(key):
                return self.int(key, minimum=minimum)
        if default is _MISSING:
            raise self.error(keys[0], "missing required integer field"
                             + (f" (also looked for {', '.join(keys[1:])})" if len(keys) > 1 else ""))
        return default

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {quote(value)}")
        return value

    def int_list(self, key: str, length: int | None = None) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise self.error(key, f"expected a list of integers, got {quote(value)}")
        if any(abs(v) > L.MAX_CONFIG_INT.value for v in value):
            raise self.error(key, f"entries exceed the limit MAX_CONFIG_INT = 2**53, got {quote(value)}")
        if length is not None and len(value) != length:
            raise self.error(key, f"expected {length} entries (one per layer), got {len(value)}")
        return list(value)

    def str_list(self, key: str, allowed: tuple[str, ...], length: int | None = None) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {quote(value)}")
        if length is not None and len(value) != length:
            raise self.error(key, f"expected {length} entries (one per layer), got {len(value)}")
        bad = sorted({v for v in value if v not in allowed})
        if bad:
            raise self.error(key, f"unsupported value(s) {quote(bad)}; supported: {list(allowed)}")
        return list(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (expected a finite number)")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise ValueError(f"integer {quote(text, 40)} has {len(text)} digits; the limit MAX_CONFIG_INT is 2**53")
    return int(text)


def _parse_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{quote(text, 40)} overflows a float (expected a finite number)")
    return x


def _json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > L.MAX_NESTING_DEPTH.value:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def loads_json(text: str, source: str) -> Any:
    """Parse JSON strictly: ``NaN``/``Infinity``, integers beyond 19 digits, floats that overflow,
    nesting beyond ``MAX_NESTING_DEPTH`` and text beyond ``MAX_FILE_BYTES`` are ConfigErrors naming
    ``source``."""
    if len(text) > L.MAX_FILE_BYTES.value:
        raise ConfigError(source, "", f"{len(text):,} characters exceed the limit MAX_FILE_BYTES = "
                                      f"{L.MAX_FILE_BYTES.value:,}")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(source, "", f"nesting deeper than the limit MAX_NESTING_DEPTH = "
                                      f"{L.MAX_NESTING_DEPTH.value} levels") from None
    except ValueError as exc:
        raise ConfigError(source, "", f"invalid JSON: {exc}") from None
    if _json_depth(value) > L.MAX_NESTING_DEPTH.value:
        raise ConfigError(source, "", f"nesting deeper than the limit MAX_NESTING_DEPTH = "
                                      f"{L.MAX_NESTING_DEPTH.value} levels")
    return value


def read_json_file(path: str | Path) -> Any:
    """Read a JSON file strictly (see :func:`loads_json`), through the same bounded UTF-8 reader
    as the YAML inputs (:func:`cosim.topology.strict_yaml.read_text_file`: files larger than
    ``MAX_FILE_BYTES`` refused before reading, non-UTF-8 files with an error naming the file)."""
    from cosim.topology.strict_yaml import read_text_file

    return loads_json(read_text_file(path), str(Path(path)))
