"""cosim's input limits, in one place, each with the reason it exists.

Every value that enters cosim (YAML, JSON, ``config.json``, CLI, Python API) is checked against
these limits *before* anything is allocated or simulated, so a typo such as ``gpus_per_rack:
2**64`` gives an error naming the source, the field, the value and the limit instead of a hang, a
memory blow-up or a silently wrong result. ``docs/limits.md`` shows the same table
(:func:`markdown_table` generates it; a test keeps the two equal).

The checking helpers (:func:`check_int`, :func:`check_count`, :func:`check_number`,
:func:`check_text`) raise :class:`cosim.errors.ConfigError` ``(source, field, message)``; the
message quotes at most a bounded prefix of the bad value (:func:`quote`).

>>> check_int("<api>", "gpus", 8, 1, MAX_GPUS.value)
8
>>> quote("x" * 1000, max_chars=10)
"'xxxxxxxxx... (1,000 chars)"
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from cosim.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    """One limit of cosim's inputs.

    Attributes:
        name: identifier (the module constant holding this entry).
        value: the bound (inclusive).
        unit: unit of ``value`` (``"GPUs"``, ``"bytes"``, ``"bit/s"`` ...).
        kind: ``"max"`` or ``"min"``.
        reason: why the bound exists.
    """

    name: str
    value: int | float
    unit: str
    kind: str
    reason: str


def _limit(name: str, value: int | float, unit: str, reason: str, kind: str = "max") -> Limit:
    entry = Limit(name, value, unit, kind, reason)
    LIMITS.append(entry)
    return entry


#: Every limit, in the order of the documentation table.
LIMITS: list[Limit] = []

# --- topologies --------------------------------------------------------------------------------
MAX_GPUS = _limit("MAX_GPUS", 65_536, "GPUs per topology",
                  "the largest deployments modelled (64K GPUs); route tables and per-GPU arrays are O(GPUs)")
MAX_NODES = _limit("MAX_NODES", 262_144, "nodes per topology (GPUs + switches + NICs)",
                   "4 nodes per GPU at MAX_GPUS covers NICs and three switch tiers")
MAX_LINKS = _limit("MAX_LINKS", 4_194_304, "links per topology",
                   "64 links per GPU at MAX_GPUS; link arrays and the C++ route engine index links in int32")
MAX_PORTS = _limit("MAX_PORTS", 65_536, "links per node (switch radix)",
                   "far above any real switch radix (<= 512 ports); bounds per-node adjacency lists")
MAX_TIER_COUNT = _limit("MAX_TIER_COUNT", 65_536, "count of one generator parameter (racks, rails, leaves ...)",
                        "a generator multiplies its counts; each factor alone must stay below MAX_GPUS")
MIN_BANDWIDTH_BPS = _limit("MIN_BANDWIDTH_BPS", 1e3, "bit/s", kind="min",
                           reason="below 1 kb/s transfer times of a flow overflow the picosecond clocks")
MAX_BANDWIDTH_BPS = _limit("MAX_BANDWIDTH_BPS", 1e15, "bit/s",
                           reason="1 Pb/s per link; the packet engine counts serialization in whole picoseconds")
MAX_LATENCY_S = _limit("MAX_LATENCY_S", 1.0, "s per link",
                       "the packet engine's clock counts picoseconds in 64 bits; a link of > 1 s is a typo")
MIN_MTU_BYTES = _limit("MIN_MTU_BYTES", 64, "bytes", kind="min",
                       reason="smallest Ethernet frame; a smaller MTU makes the packet count of a flow explode")
MAX_MTU_BYTES = _limit("MAX_MTU_BYTES", 65_000, "bytes",
                       reason="mtu + header must fit a 16-bit frame length (65,535 bytes) in the packet engine")
MAX_OVERSUBSCRIPTION = _limit("MAX_OVERSUBSCRIPTION", 1_024.0, "ratio",
                              "a fabric oversubscribed more than 1024:1 is a typo; the uplink bandwidth must "
                              "stay above MIN_BANDWIDTH_BPS")

# --- flows and collectives ---------------------------------------------------------------------
MAX_FLOWS = _limit("MAX_FLOWS", 1 << 26, "flows per simulation",
                   "67M flows at ~100 bytes each is ~7 GB of flow arrays: the memory of a large host")
MAX_FLOW_BYTES = _limit("MAX_FLOW_BYTES", 1 << 50, "bytes per flow",
                        "1 PiB: byte counts stay exact in float64 (53-bit mantissa) and in int64 picosecond "
                        "arithmetic of the C++ engines")
MAX_TOTAL_BYTES = _limit("MAX_TOTAL_BYTES", 1 << 53, "bytes per simulation (sum over flows)",
                         "8 PiB: sums of byte counts stay exact in float64")
MAX_FLOWS_PER_COLLECTIVE = _limit("MAX_FLOWS_PER_COLLECTIVE", 1 << 26, "flows per collective",
                                  "67M flows, a whole simulation's (MAX_FLOWS): a ring all-reduce over 4,096 GPUs "
                                  "(33.5M flows) is built, one chunked into 1-byte pieces is refused")
MIN_CHUNK_BYTES = _limit("MIN_CHUNK_BYTES", 1, "bytes per collective chunk", kind="min",
                         reason="a chunk carries at least one byte")
MAX_PACKETS = _limit("MAX_PACKETS", 1 << 27, "packets per packet-level simulation",
                     "the packet engine simulates roughly 0.2-1 M packets per second: 128 M packets of 4 KiB "
                     "(512 GiB; a ring all-reduce of 64 MiB over 1,024 GPUs is a quarter of it) take minutes "
                     "to hours; larger transfers belong on the flow backend")
MAX_SIM_TIME_S = _limit("MAX_SIM_TIME_S", 1e6, "s of simulated time",
                        "~11 days; the packet engine's int64 picosecond clock overflows at ~106 days")

# --- models and serving ------------------------------------------------------------------------
MAX_LAYERS = _limit("MAX_LAYERS", 1_024, "layers per model",
                    "largest published models have < 200 layers; per-layer arrays are built eagerly")
MAX_HIDDEN_SIZE = _limit("MAX_HIDDEN_SIZE", 1 << 20, "hidden size",
                         "1M; weight sizes hidden^2 x layers must stay exact integers in float64")
MAX_INTERMEDIATE_SIZE = _limit("MAX_INTERMEDIATE_SIZE", 1 << 22, "FFN intermediate size",
                               "4M; 4x MAX_HIDDEN_SIZE")
MAX_HEADS = _limit("MAX_HEADS", 65_536, "attention heads", "heads <= hidden size in every real model")
MAX_VOCAB_SIZE = _limit("MAX_VOCAB_SIZE", 1 << 24, "vocabulary entries", "16M; real vocabularies are < 300K")
MAX_EXPERTS = _limit("MAX_EXPERTS", 65_536, "routed experts per layer",
                     "one expert per GPU at MAX_GPUS; expert placement arrays are O(experts x GPUs)")
MAX_REDUNDANT_EXPERTS = _limit("MAX_REDUNDANT_EXPERTS", 65_536, "redundant expert replicas per layer",
                               "at most one replica per GPU at MAX_GPUS")
MAX_BATCH = _limit("MAX_BATCH", 1 << 20, "requests per step",
                   "1M requests; per-request arrays are built for every step")
MAX_TOKENS = _limit("MAX_TOKENS", 1 << 24, "tokens per request (context length)",
                    "16M tokens; KV-cache sizes stay exact in float64")
MAX_CONFIG_INT = _limit("MAX_CONFIG_INT", 1 << 53, "any integer in a config file",
                        "larger integers are not exact in float64 and no field needs them")

# --- files and text ----------------------------------------------------------------------------
MAX_FILE_BYTES = _limit("MAX_FILE_BYTES", 16 << 20, "bytes per YAML/JSON input file",
                        "16 MiB; the largest shipped input is < 100 KiB and parsing is in memory")
MAX_NESTING_DEPTH = _limit("MAX_NESTING_DEPTH", 64, "levels of YAML/JSON nesting",
                           "cosim's schemas nest < 8 deep; deeper input would hit Python's recursion limit")
MAX_YAML_NODES = _limit("MAX_YAML_NODES", 1_000_000, "YAML nodes after alias expansion",
                        "stops alias bombs (billion laughs): anchors may be reused, not blown up")
MAX_NAME_CHARS = _limit("MAX_NAME_CHARS", 256, "characters per name",
                        "names become file names and table cells; 255 bytes is the usual file-name limit")
MAX_DESCRIPTION_CHARS = _limit("MAX_DESCRIPTION_CHARS", 65_536, "characters per description",
                               "64 Ki; descriptions are printed, and terminal wrapping is super-linear")
MAX_QUOTE_CHARS = _limit("MAX_QUOTE_CHARS", 80, "characters of a bad value quoted in an error",
                         "an error must stay one readable line, even for a 10 MB value")


def table_from_markdown(text: str) -> str:
    """The limits table embedded in a Markdown page between the ``limits-table`` markers."""
    begin, end = "<!-- limits-table:begin -->\n", "<!-- limits-table:end -->"
    return text[text.index(begin) + len(begin):text.index(end)]


# --- helpers -----------------------------------------------------------------------------------

def quote(value: Any, max_chars: int = int(MAX_QUOTE_CHARS.value)) -> str:
    """``repr(value)`` cut to ``max_chars`` characters: ``prefix + "... (N chars)"``.

    Never builds the full repr of a long string, list or dict (a 10 MB description or an expanded
    YAML alias bomb is quoted in O(max_chars)).
    """
    if isinstance(value, str):
        if len(value) <= max_chars:
            return repr(value)
        return f"{repr(value[:max_chars])[:max_chars]}... ({len(value):,} chars)"
    if isinstance(value, (bytes, bytearray)) and len(value) > max_chars:
        return f"{repr(bytes(value[:max_chars]))[:max_chars - 1]}... ({len(value)} bytes)"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        n = len(value)
        text = _bounded_repr(value, max_chars + 1, depth=0)
        if len(text) > max_chars:
            return f"{text[:max_chars - 1]}... ({type(value).__name__} of {n} items)"
        return text
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not mask the real error
        text = f"<{type(value).__name__}>"
    if len(text) > max_chars:
        return f"{text[:max_chars - 1]}... ({len(text)} chars)"
    return text


def _bounded_repr(value: Any, budget: int, depth: int) -> str:
    """A repr of containers that stops once ``budget`` characters are produced."""
    if depth > 8:
        return "..."
    if isinstance(value, dict):
        open_, close, items = "{", "}", value.items()
    elif isinstance(value, list):
        open_, close, items = "[", "]", value
    elif isinstance(value, tuple):
        open_, close, items = "(", ")", value
    elif isinstance(value, (set, frozenset)):
        open_, close, items = "{", "}", value
    else:
        return quote(value, budget)
    parts: list[str] = []
    used = 1
    for item in items:
        if used >= budget:
            parts.append("...")
            break
        if isinstance(value, dict):
            k, v = item
            text = f"{_bounded_repr(k, budget - used, depth + 1)}: {_bounded_repr(v, budget - used, depth + 1)}"
        else:
            text = _bounded_repr(item, budget - used, depth + 1)
        parts.append(text)
        used += len(text) + 2
    return open_ + ", ".join(parts) + close


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _fmt(x: int | float) -> str:
    """A limit in a readable form: ``65,536`` or ``1e+15``."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return f"{int(x):,}"
    return f"{x:g}"


def check_int(source: str, field: str, value: Any, lo: int, hi: int, what: str = "an integer") -> int:
    """``value`` as an ``int`` in ``[lo, hi]``; a bool, float (even ``2.0``), str, None ... is an error.

    numpy integers are accepted (and converted).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(source, field, f"expected {what} ({_fmt(lo)} to {_fmt(hi)}), got "
                                         f"{_type_name(value)} {quote(value)}")
    v = int(value)
    if not lo <= v <= hi:
        raise ConfigError(source, field, f"{quote(v)} is out of range: expected {_fmt(lo)} to {_fmt(hi)}")
    return v


def check_count(source: str, field: str, value: Any, limit: Limit, lo: int = 1) -> int:
    """An integer count in ``[lo, limit.value]``; the error names the limit and its reason."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(source, field, f"expected an integer count ({_fmt(lo)} to {_fmt(limit.value)} "
                                         f"{limit.unit}), got {_type_name(value)} {quote(value)}")
    v = int(value)
    if v < lo:
        raise ConfigError(source, field, f"{quote(v)} is too small: expected at least {_fmt(lo)}")
    if v > limit.value:
        raise ConfigError(source, field, f"{quote(v)} exceeds the limit {limit.name} = {_fmt(limit.value)} "
                                         f"{limit.unit} ({limit.reason})")
    return v


def check_number(source: str, field: str, value: Any, lo: float, hi: float,
                 lo_open: bool = False, what: str = "a number") -> float:
    """``value`` as a finite real ``float`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``);
    bool, str, None, NaN and infinities are errors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(source, field, f"expected {what}, got {_type_name(value)} {quote(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise ConfigError(source, field, f"{quote(value)} is out of range: expected {_fmt(lo)} to {_fmt(hi)}") from None
    if not math.isfinite(v):
        raise ConfigError(source, field, f"expected a finite number, got {quote(value)}")
    if v < lo or (lo_open and v == lo) or v > hi:
        bracket = "(" if lo_open else "["
        raise ConfigError(source, field, f"{quote(value)} is out of range: expected {bracket}{_fmt(lo)}, {_fmt(hi)}]")
    return v


def check_text(source: str, field: str, value: Any, limit: Limit = MAX_NAME_CHARS,
               allow_empty: bool = False) -> str:
    """A ``str`` of at most ``limit.value`` characters (non-empty unless ``allow_empty``)."""
    if not isinstance(value, str):
        raise ConfigError(source, field, f"expected a string, got {_type_name(value)} {quote(value)}")
    if not value and not allow_empty:
        raise ConfigError(source, field, "expected a non-empty string")
    if len(value) > limit.value:
        raise ConfigError(source, field, f"{quote(value, 40)} has {len(value):,} characters; the limit "
                                         f"{limit.name} is {_fmt(limit.value)} {limit.unit}")
    return value


def count_error(source: str, field: str, count: int, limit: Limit, what: str = "") -> ConfigError:
    """The error for a derived count (GPUs a generator would build, flows a collective would make)
    above ``limit``; raise it before allocating."""
    subject = f"{what} " if what else ""
    return ConfigError(source, field, f"{subject}{_fmt(count)} {limit.unit}, more than the limit "
                                      f"{limit.name} = {_fmt(limit.value)} ({limit.reason})")


def markdown_table() -> str:
    """The Markdown table of :data:`LIMITS` shown in ``docs/limits.md``."""
    rows = ["| limit | bound | unit | reason |", "|---|---|---|---|"]
    for lim in LIMITS:
        bound = ("≥ " if lim.kind == "min" else "≤ ") + _fmt(lim.value)
        rows.append(f"| `{lim.name}` | {bound} | {lim.unit} | {lim.reason} |")
    return "\n".join(rows) + "\n"


# CLI ------------------------------------------------------------------------------------------
# Limits of command-line options that no input file has (cosim/cli/args.py checks every numeric
# option against these or the limits above before anything is loaded or simulated).
MAX_ROUTING_SKEW = _limit("MAX_ROUTING_SKEW", 100.0, "power-law exponent (--skew)",
                          "expert popularity ~ (e + 1) ** -skew: at 100 the second expert already gets 2^-100 "
                          "of the first's tokens, so larger values change nothing but overflow risks")
MAX_REQUESTS = _limit("MAX_REQUESTS", 1 << 24, "requests per serving run (--requests, --rate x --duration)",
                      "16M requests; the serving simulator keeps per-request arrays")
MAX_MTP_TOKENS = _limit("MAX_MTP_TOKENS", 64, "MTP draft tokens per request (--mtp)",
                        "real multi-token prediction verifies 1-4 drafts; each one multiplies the step's tokens")
MAX_MICRO_BATCHES = _limit("MAX_MICRO_BATCHES", 64, "AFD micro-batches (--micro-batches)",
                           "AFD ping-pongs 2-3 micro-batches; the step trace repeats every layer per micro-batch")
MAX_WORKERS = _limit("MAX_WORKERS", 1_024, "local worker processes (--workers)",
                     "each worker is a process holding its own simulator state")
MAX_OPTION_CHARS = _limit("MAX_OPTION_CHARS", 65_536, "characters of a text option (--gpus, --prefill-chunks ...)",
                          "a rank list or chunk list longer than this names more GPUs or chunks than any limit allows")


if __name__ == "__main__":  # python -m cosim.limits > table (docs/limits.md embeds it)
    print(markdown_table(), end="")
