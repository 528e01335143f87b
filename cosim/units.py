"""Strict parsing of human-readable units used in YAML files and on the command line.

Bandwidths are per direction. ``b`` means bits and ``B`` means bytes; SI prefixes are decimal
(``G`` = 1e9), binary prefixes (``Ki``, ``Mi``, ``Gi``) are powers of two and allowed for sizes.

>>> parse_bandwidth_bps("400Gbps")
400000000000.0
>>> parse_bandwidth_bps("450GB/s")
3600000000000.0
>>> parse_time_s("1us")
1e-06
>>> parse_size_bytes("4KiB")
4096
>>> parse_ratio("2:1")
2.0
"""

from __future__ import annotations

import math
import re

from cosim.errors import CosimError
from cosim.limits import quote

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_SI = {"": 1.0, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}

_BANDWIDTH_RE = re.compile(
    _NUMBER + r"\s*(?P<prefix>[kKMGTP]?)(?P<unit>bps|b/s|Bps|B/s)"
)
_TIME_RE = re.compile(_NUMBER + r"\s*(?P<unit>ps|ns|us|µs|ms|s)")
_SIZE_RE = re.compile(_NUMBER + r"\s*(?P<prefix>Ki|Mi|Gi|Ti|[kKMGT]?)(?P<unit>B)")
_PLAIN_INT_RE = re.compile(r"[0-9]{1,30}")
_INT_MANTISSA_RE = re.compile(r"[0-9]{1,30}")
_TIME_SCALE = {"ps": 1e-12, "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


class UnitError(CosimError, ValueError):
    """A string could not be parsed as the requested quantity (a :class:`ValueError` too, for
    callers that catch that)."""


def parse_bandwidth_bps(value: str | int | float) -> float:
    """Parse a bandwidth such as ``"400Gbps"``, ``"400 Gb/s"``, ``"450GB/s"`` into bits per second.

    Bare numbers are rejected: the unit (bits or bytes) must be explicit.
    """
    if not isinstance(value, str):
        raise UnitError(
            f"expected a bandwidth string with a unit such as '400Gbps' or '450GB/s', got {quote(value)}"
        )
    m = _BANDWIDTH_RE.fullmatch(value.strip())
    if not m:
        raise UnitError(
            f"expected a bandwidth such as '400Gbps', '400Gb/s', '450GB/s' or '50GBps', got {quote(value)}"
        )
    bits = float(m["num"]) * _SI[m["prefix"]]
    if m["unit"] in ("Bps", "B/s"):
        bits *= 8.0
    return _positive_finite(bits, value, "bandwidth")


def parse_time_s(value: str | int | float) -> float:
    """Parse a duration such as ``"1us"``, ``"500ns"``, ``"1.5ms"`` into seconds (0 allowed)."""
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            return 0.0
        raise UnitError(f"expected a duration with a unit such as '1us' or '500ns', got {quote(value)}")
    m = _TIME_RE.fullmatch(value.strip())
    if not m:
        raise UnitError(
            f"expected a duration such as '1us', '500ns', '2.5ms' or '1s', got {quote(value)}"
        )
    seconds = float(m["num"]) * _TIME_SCALE[m["unit"]]
    if not math.isfinite(seconds):
        raise UnitError(f"duration must be finite, got {quote(value)}")
    return seconds


def parse_size_bytes(value: str | int) -> int:
    """Parse a size such as ``4096``, ``"4096B"``, ``"4KiB"``, ``"1MiB"`` or ``"1MB"`` into bytes."""
    if isinstance(value, bool):
        raise UnitError(f"expected a size in bytes such as 4096 or '4KiB', got {quote(value)}")
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"size must be >= 0, got {quote(value)}")
        return value
    if not isinstance(value, str):
        raise UnitError(f"expected a size in bytes such as 4096 or '4KiB', got {quote(value)}")
    text = value.strip()
    if _PLAIN_INT_RE.fullmatch(text):  # a plain byte count, as on the command line: "4096"
        return int(text)
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise UnitError(f"expected a size such as 4096, '4096B', '4KiB', '1MiB' or '1MB', got {quote(value)}")
    scale = _BIN.get(m["prefix"]) or _SI[m["prefix"]]
    if _INT_MANTISSA_RE.fullmatch(m["num"]):  # exact integer arithmetic: "3TiB", "1000000000000B"
        return int(m["num"]) * int(scale)
    size = float(m["num"]) * scale
    if not math.isfinite(size):
        raise UnitError(f"size must be finite, got {quote(value)}")
    if size != int(size):
        raise UnitError(f"size must be a whole number of bytes, got {quote(value)}")
    return int(size)


_RATIO_RE = re.compile(r"(?P<a>[0-9]+(?:\.[0-9]+)?)\s*:\s*(?P<b>[0-9]+(?:\.[0-9]+)?)")


def parse_ratio(value: str | int | float) -> float:
    """Parse a ratio such as ``2``, ``1.5`` or ``"2:1"`` (= 2.0) into a positive float.

    Used for oversubscription, which people write as ``N:M``; the string form must be quoted or
    read by cosim's strict YAML loader (YAML 1.1 reads a bare ``2:1`` as the base-60 integer 121).
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a number such as 2 or 1.5, or a ratio such as '2:1', got {quote(value)}")
    if isinstance(value, (int, float)):
        return _positive_finite(float(value), value, "ratio")
    if not isinstance(value, str):
        raise UnitError(f"expected a number such as 2 or 1.5, or a ratio such as '2:1', got {quote(value)}")
    m = _RATIO_RE.fullmatch(value.strip())
    if not m:
        raise UnitError(f"expected a number such as 2 or 1.5, or a ratio such as '2:1', got {quote(value)}")
    a, b = float(m["a"]), float(m["b"])
    if b == 0:
        raise UnitError(f"ratio {quote(value)} divides by zero")
    return _positive_finite(a / b, value, "ratio")


#: Most GPU ranks one range expression may name (a typo like ``0-100000000`` is refused, not built).
MAX_GPU_RANKS = 1 << 20


_RANK_PART_RE = re.compile(r"\s*[0-9]{1,12}\s*(?:-\s*[0-9]{1,12}\s*)?")


def parse_gpu_ranks(value: str) -> list[int]:
    """``"0-7,16-23"`` -> ``[0..7, 16..23]`` (UnitError otherwise). Order is kept, repeats are
    refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UnitError(f"expected GPU ranks like '0-7,16' (a string), got {type(value).__name__} {quote(value)}")
    ranks: list[int] = []
    text = str(value).strip()
    for part in text.split(","):
        if not _RANK_PART_RE.fullmatch(part):
            raise UnitError(f"expected GPU ranks like '0-7,16', got {quote(text)}")
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi or lo < 0:
                    raise ValueError
                if len(ranks) + hi - lo + 1 > MAX_GPU_RANKS:
                    raise UnitError(f"{quote(text)} names more than {MAX_GPU_RANKS} GPUs")
                ranks.extend(range(lo, hi + 1))
            else:
                r = int(part)
                if r < 0:
                    raise ValueError
                ranks.append(r)
        except ValueError:
            raise UnitError(f"expected GPU ranks like '0-7,16', got {quote(text)}") from None
    if len(set(ranks)) != len(ranks):
        raise UnitError(f"GPU ranks repeat in {quote(text)}")
    return ranks


def _positive_finite(x: float, raw: object, what: str) -> float:
    if not math.isfinite(x) or x <= 0:
        raise UnitError(f"{what} must be positive and finite, got {quote(raw)}")
    return x


def format_bandwidth(bps: float) -> str:
    """Format bits/s as GB/s per direction, the unit used in reports (e.g. ``'50.0 GB/s'``)."""
    return f"{bps / 8e9:.1f} GB/s"


def format_time(seconds: float) -> str:
    """Format a duration with an adapted unit (``'65.03 us'``)."""
    if seconds == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds / 1e-12:.4g} ps"


def format_bytes(n: float) -> str:
    """Format a byte count with binary prefixes (``'1.0 MiB'``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
