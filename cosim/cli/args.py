"""Checks of command-line options, run by each command before it loads or simulates anything.

argparse converts the text (``type=int`` / ``type=float``); these checks then hold every number
against :mod:`cosim.limits`: finite, an integer where a count is meant, in range. An error is a
:class:`~cosim.errors.ConfigError` naming the option, the value (a bounded prefix) and the limit,
e.g. ``--batch: 100000000 exceeds the limit MAX_BATCH = 1,048,576 requests per step (...)``; the
CLI prints it as one line and exits with status 2.

Also here: GPU rank lists (``--gpus 0-7,16``) checked against the topology *before* a range is
expanded, prefill chunk lists, and user text printed literally and bounded (:func:`literal`).

Public API: :class:`IntOption`, :class:`NumberOption`, :func:`check_options`, :func:`check_text_options`,
:func:`parse_gpus`, :func:`parse_prefill_chunks`, :func:`literal`.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from rich.markup import escape

from cosim.errors import ConfigError
from cosim.io_atomic import describe_os_error
from cosim.limits import (MAX_OPTION_CHARS, MAX_TOKENS, Limit, check_count, check_int, check_number, check_text,
                          quote)

__all__ = ["IntOption", "NumberOption", "Parser", "check_options", "cli_float", "cli_int", "check_text_options", "literal", "load_option",
           "parse_gpus", "parse_prefill_chunks"]

T = TypeVar("T")

_INT_RE = re.compile(r"[+-]?[0-9]{1,40}")

#: Characters of a user-provided text (description, name) the terminal shows before cutting it.
MAX_SHOWN_CHARS = 2_000


@dataclass(frozen=True)
class IntOption:
    """An integer option ``flag`` (attribute ``dest`` of the parsed arguments) in ``[lo, limit]``;
    ``limit`` is a :class:`~cosim.limits.Limit` (named in the error) or a plain bound."""

    flag: str
    dest: str
    lo: int
    limit: Limit | int

    def check(self, value) -> int:
        if isinstance(self.limit, Limit):
            return check_count(self.flag, "", value, self.limit, lo=self.lo)
        return check_int(self.flag, "", value, self.lo, self.limit)


@dataclass(frozen=True)
class NumberOption:
    """A real option: finite, in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); ``hint`` says what
    the number means (appended to a range error)."""

    flag: str
    dest: str
    lo: float
    hi: Limit | float
    lo_open: bool = False
    hint: str = ""

    def check(self, value) -> float:
        hi = float(self.hi.value) if isinstance(self.hi, Limit) else float(self.hi)
        try:
            return check_number(self.flag, "", value, self.lo, hi, lo_open=self.lo_open)
        except ConfigError as exc:
            extra = f" ({self.hint})" if self.hint else ""
            limit = f"; the limit {self.hi.name}: {self.hi.reason}" if isinstance(self.hi, Limit) and \
                isinstance(value, (int, float)) and math.isfinite(value) and value > hi else ""
            raise ConfigError(self.flag, "", f"{exc.message}{extra}{limit}") from None


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors quote a bounded prefix of a bad choice (argparse
    echoes the whole value, which may be a 100 KiB argument)."""

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {quote(value)} (choose from {choices})")


def cli_int(text: str) -> int:
    """argparse ``type`` of integer options: a decimal integer; the error quotes a bounded prefix
    (argparse's own ``type=int`` echoes the whole value)."""
    if not _INT_RE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer, got {quote(text)}")
    return int(text)


def cli_float(text: str) -> float:
    """argparse ``type`` of real options (``inf``/``nan`` parse here and are refused by
    :func:`check_options`); the error quotes a bounded prefix."""
    if len(text) > 100:
        raise argparse.ArgumentTypeError(f"expected a number, got {quote(text)}")
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {quote(text)}") from None


def check_options(args: argparse.Namespace, options: Iterable[IntOption | NumberOption]) -> None:
    """Check every option of ``options`` that is set (not ``None``) in ``args``."""
    for opt in options:
        value = getattr(args, opt.dest, None)
        if value is not None:
            opt.check(value)


def check_text_options(args: argparse.Namespace, flags_dests: Iterable[tuple[str, str]]) -> None:
    """Text options ``(flag, dest)`` hold at most :data:`~cosim.limits.MAX_OPTION_CHARS` characters."""
    for flag, dest in flags_dests:
        value = getattr(args, dest, None)
        if value is not None:
            check_text(flag, "", value, MAX_OPTION_CHARS)


def _rank_int(flag: str, text: str, spec: str) -> int | None:
    """A decimal rank of a ``--gpus`` part (``None`` if not decimal: parse_gpu_ranks words the error)."""
    t = text.strip()
    if not (t.isascii() and t.isdecimal()):
        return None
    if len(t) > 12:
        raise ConfigError(flag, "", f"rank {quote(t, 20)} in {quote(spec)} is out of range")
    return int(t)


def parse_gpus(flag: str, spec: str | None, num_gpus: int) -> list[int]:
    """``"0-7,16"`` -> ``[0..7, 16]`` on a topology of ``num_gpus`` GPUs (``None``: all of them).

    Every range is checked against the topology before it is expanded, so ``0-100000000`` fails
    at once instead of building a list of 10^8 ranks.
    """
    from cosim.units import UnitError, parse_gpu_ranks

    if spec is None:
        return list(range(num_gpus))
    check_text(flag, "", spec, MAX_OPTION_CHARS)
    parts = spec.split(",")
    for part in parts:
        lo_text, dash, hi_text = part.partition("-")
        lo = _rank_int(flag, lo_text, spec)
        hi = _rank_int(flag, hi_text, spec) if dash else lo
        if lo is None or hi is None:
            continue
        if hi >= num_gpus or lo >= num_gpus:
            first = max(lo, num_gpus) if dash and lo <= hi else (lo if lo >= num_gpus else hi)
            raise ConfigError(flag, "", f"rank {first} does not exist (the topology has GPUs 0..{num_gpus - 1})")
    if len(parts) > num_gpus:
        raise ConfigError(flag, "", f"{len(parts):,} entries for a topology of {num_gpus:,} GPUs: ranks repeat")
    try:
        ranks = parse_gpu_ranks(spec)
    except UnitError as exc:
        raise ConfigError(flag, "", str(exc)) from None
    bad = [r for r in ranks if not 0 <= r < num_gpus]
    if bad:
        raise ConfigError(flag, "", f"rank {bad[0]} does not exist (the topology has GPUs 0..{num_gpus - 1})")
    return ranks


def parse_prefill_chunks(flag: str, text: str | None) -> tuple:
    """``"0+512,1024+256"`` -> prefill chunks (tokens already cached + new tokens of each)."""
    from cosim.trace.builder import PrefillChunk

    if not text:
        return ()
    check_text(flag, "", text, MAX_OPTION_CHARS)
    chunks = []
    for part in text.split(","):
        fields = part.split("+")
        if len(fields) != 2 or not all(f.strip().isascii() and f.strip().isdecimal() and len(f.strip()) <= 12
                                       for f in fields):
            raise ConfigError(flag, "", f"expected PREFIX+NEW[,PREFIX+NEW...] such as '0+512,4096+256', "
                                        f"got {quote(text)}")
        prefix, new = (int(f) for f in fields)
        check_count(flag, "prefix tokens", prefix, MAX_TOKENS, lo=0)
        check_count(flag, "new tokens", new, MAX_TOKENS, lo=1)
        chunks.append(PrefillChunk(prefix, new))
    return tuple(chunks)


def load_option(flag: str, loader: Callable[..., T], value: Any, *args: Any, **kwargs: Any) -> T:
    """``loader(value, ...)`` (a topology, model, deployment ... named by option ``flag``); an
    operating-system error reading it (name too long, permission denied, a folder) becomes a
    :class:`~cosim.errors.ConfigError` naming the option."""
    try:
        return loader(value, *args, **kwargs)
    except OSError as exc:
        raise ConfigError(flag, "", f"cannot read {quote(str(value))}: {describe_os_error(exc).split(': ')[0]}") \
            from None


def literal(text: object, max_chars: int = MAX_SHOWN_CHARS) -> str:
    """User text (a name, a description) for rich markup: escaped so it prints literally, and cut
    to ``max_chars`` characters with a note of the full length."""
    s = str(text)
    if len(s) > max_chars:
        s = f"{s[:max_chars]}... ({len(s):,} characters, cut)"
    return escape(s)
