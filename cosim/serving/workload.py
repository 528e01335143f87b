"""Workloads of the serving simulation: what requests arrive, when, and which SLOs they carry.

A :class:`WorkloadSpec` names three token counts per request, an arrival process, the SLO and how
requests share prefixes:

* ``prefix_tokens``: the reused prefix (KV that other requests, or this user's earlier turns,
  already computed); ``input_tokens``: the new input tokens (ISL) the prefill computes;
  ``output_tokens``: the output tokens (OSL), at least 1. Each is a :class:`Distribution` from the
  registry :data:`DISTRIBUTIONS` (``fixed``, ``uniform``, ``normal``, ``lognormal``, ``zipf``), or
  the columns of a JSONL :class:`Trace`.
* ``arrival``: an :class:`ArrivalProcess` from :data:`ARRIVALS` (``poisson``, ``gamma``,
  ``closed_loop``, ``trace``). Under ``closed_loop`` the generator cannot produce timestamps: each
  user sends its next request when its previous one finishes, so the simulator decides arrivals
  (``Requests.arrival_s`` is NaN and ``Requests.concurrency`` says how many users).
* ``num_prefixes``: 0 (default) gives every request its own prefix (``prefix_id`` -1), taken as
  already resident (the design study's "KV already cached"); K >= 1 makes requests draw one of K
  shared prefix ids (uniform, or Zipf with exponent ``prefix_zipf_a``), each id with one length
  drawn once from ``prefix_tokens``, looked up in a :class:`cosim.serving.prefix_cache.PrefixCache`.
* ``domains``: the request domains (code, math, chat ...) and their shares: each request draws
  one (``Requests.domain``; default: every request in domain 0). The serving router ``domain``
  sends a request to the ranks of its domain; the ``domain_mixture`` routing model gives each
  domain its own hot experts (``docs/routing.md``).

:func:`generate_requests` turns a spec into columnar :class:`Requests` (numpy arrays),
deterministically for a seed. Presets (:data:`PRESETS`: chat, coding, agentic-coding) fix token
counts and SLOs; the caller sets the load with :meth:`WorkloadSpec.with_arrival`. User workloads
come from strict YAML (:func:`load_workload`) or JSONL traces (:func:`load_trace`). Schema and
examples: ``docs/workloads.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from cosim.errors import ConfigError
from cosim.registry import Registry
from cosim.topology.loader import Fields, as_float, as_int, as_str
from cosim.topology.strict_yaml import load_yaml_file
from cosim.units import parse_time_s

API = "<api>"
#: Largest request count one call may generate (guards ``duration_s`` x a huge rate).
MAX_REQUESTS = 50_000_000
#: Largest support of a bounded Zipf (its inverse CDF is tabulated) and largest ``num_prefixes``.
MAX_ZIPF_SUPPORT = 1 << 24


class ParameterError(ConfigError):
    """A parameter of a distribution, arrival process or SLO is out of range; ``param`` is the
    Python field name (the YAML reader reports it under its YAML key)."""

    def __init__(self, owner: str, param: str, message: str):
        self.param = param
        super().__init__(API, f"{owner}.{param}", message)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


class _Checked:
    """Mixin: ``__post_init__`` raises :class:`ParameterError` for the first problem of ``check``."""

    kind: ClassVar[str] = ""

    def check(self) -> list[tuple[str, str]]:  # pragma: no cover - overridden
        return []

    def __post_init__(self) -> None:
        for name, problem in self.check():
            raise ParameterError(self.kind or type(self).__name__, name, problem)


def _need_int(problems: list, name: str, v: Any, low: int) -> bool:
    if not _is_int(v):
        problems.append((name, f"expected an integer, got {v!r}"))
        return False
    if v < low:
        problems.append((name, f"must be >= {low}, got {v}"))
        return False
    return True


def _need_num(problems: list, name: str, v: Any, low: float, strict: bool = False) -> bool:
    if not _is_num(v):
        problems.append((name, f"expected a finite number, got {v!r}"))
        return False
    if v < low or (strict and v == low):
        problems.append((name, f"must be {'>' if strict else '>='} {low:g}, got {v:g}"))
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Token-count distributions
# ---------------------------------------------------------------------------------------------

DISTRIBUTIONS = Registry("token-count distribution", name_attr="kind")
register_distribution = DISTRIBUTIONS.register


class Distribution(_Checked):
    """A distribution of non-negative integer token counts. Subclasses are frozen dataclasses
    whose fields (units in the names) are the YAML schema, registered with
    :func:`register_distribution`. Continuous ones are rounded to the nearest integer, then
    clipped to ``[min_tokens, max_tokens]``."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover - abstract
        """``n`` int64 draws."""
        raise NotImplementedError

    def support(self) -> tuple[int, int | None]:  # pragma: no cover - abstract
        """Smallest and largest value a draw can take (None: unbounded)."""
        raise NotImplementedError

    def mean(self) -> float:  # pragma: no cover - abstract
        """Closed-form mean of a draw in tokens (including clipping; rounding to integers is ignored)."""
        raise NotImplementedError


@register_distribution("fixed")
@dataclass(frozen=True)
class Fixed(Distribution):
    """Always ``value_tokens``. In YAML a bare integer means ``fixed``."""

    value_tokens: int

    def check(self):
        p: list = []
        _need_int(p, "value_tokens", self.value_tokens, 0)
        return p

    def sample(self, rng, n):
        return np.full(n, self.value_tokens, dtype=np.int64)

    def support(self):
        return self.value_tokens, self.value_tokens

    def mean(self):
        return float(self.value_tokens)


@register_distribution("uniform")
@dataclass(frozen=True)
class Uniform(Distribution):
    """Integers ``low_tokens..high_tokens``, both included, equally likely."""

    low_tokens: int
    high_tokens: int

    def check(self):
        p: list = []
        if _need_int(p, "low_tokens", self.low_tokens, 0) and _need_int(p, "high_tokens", self.high_tokens, 0):
            if self.high_tokens < self.low_tokens:
                p.append(("high_tokens", f"must be >= low ({self.low_tokens}), got {self.high_tokens}"))
        return p

    def sample(self, rng, n):
        return rng.integers(self.low_tokens, self.high_tokens, size=n, endpoint=True, dtype=np.int64)

    def support(self):
        return self.low_tokens, self.high_tokens

    def mean(self):
        return (self.low_tokens + self.high_tokens) / 2.0


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@register_distribution("normal")
@dataclass(frozen=True)
class Normal(Distribution):
    """Normal with ``mean_tokens`` and ``std_tokens``, rounded, values below ``min_tokens`` raised
    to it (clipped, not redrawn: the mean includes the clipped mass)."""

    mean_tokens: float
    std_tokens: float
    min_tokens: int = 1

    def check(self):
        p: list = []
        _need_num(p, "mean_tokens", self.mean_tokens, 0)
        _need_num(p, "std_tokens", self.std_tokens, 0)
        _need_int(p, "min_tokens", self.min_tokens, 0)
        return p

    def sample(self, rng, n):
        x = np.rint(rng.normal(self.mean_tokens, self.std_tokens, size=n))
        return np.maximum(x, self.min_tokens).astype(np.int64)

    def support(self):
        return self.min_tokens, None

    def mean(self):
        mu, s, m = self.mean_tokens, self.std_tokens, self.min_tokens
        if s == 0:
            return float(max(mu, m))
        a = (m - mu) / s
        return m * _cdf(a) + mu * (1 - _cdf(a)) + s * _phi(a)


@register_distribution("lognormal")
@dataclass(frozen=True)
class LogNormal(Distribution):
    """Log-normal: ``ln X ~ N(mu, sigma)`` with ``mu`` set by exactly one of ``median_tokens``
    (= e^mu) or ``mean_tokens`` (= e^(mu + sigma^2/2), before clipping), rounded and clipped to
    ``[min_tokens, max_tokens]``. The usual shape of measured prompt and answer lengths."""

    sigma: float
    median_tokens: float | None = None
    mean_tokens: float | None = None
    min_tokens: int = 1
    max_tokens: int | None = None

    def check(self):
        p: list = []
        _need_num(p, "sigma", self.sigma, 0)
        given = [n for n in ("median_tokens", "mean_tokens") if getattr(self, n) is not None]
        if len(given) != 1:
            p.append(("median_tokens", f"give exactly one of median and mean, got {len(given)}"))
        for n in given:
            _need_num(p, n, getattr(self, n), 0, strict=True)
        if _need_int(p, "min_tokens", self.min_tokens, 0) and self.max_tokens is not None:
            if _need_int(p, "max_tokens", self.max_tokens, 0) and self.max_tokens < self.min_tokens:
                p.append(("max_tokens", f"must be >= min ({self.min_tokens}), got {self.max_tokens}"))
        return p

    @property
    def mu(self) -> float:
        """Mean of ln X."""
        if self.median_tokens is not None:
            return math.log(self.median_tokens)
        return math.log(self.mean_tokens) - self.sigma ** 2 / 2  # type: ignore[arg-type]

    def sample(self, rng, n):
        x = np.rint(rng.lognormal(self.mu, self.sigma, size=n))
        return np.clip(x, self.min_tokens, self.max_tokens).astype(np.int64)

    def support(self):
        return self.min_tokens, self.max_tokens

    def mean(self):
        mu, s = self.mu, self.sigma
        lo, hi = self.min_tokens, self.max_tokens
        if s == 0:
            return float(np.clip(math.exp(mu), lo, hi if hi is not None else math.inf))
        # E[clip(X, lo, hi)] = lo P(X<lo) + E[X; lo<=X<hi] + hi P(X>=hi)
        z_lo = (math.log(lo) - mu) / s if lo > 0 else -math.inf
        z_hi = (math.log(hi) - mu) / s if hi is not None else math.inf
        full = math.exp(mu + s * s / 2)
        middle = full * (_cdf(z_hi - s) - _cdf(z_lo - s))
        top = hi * (1 - _cdf(z_hi)) if hi is not None else 0.0
        return lo * _cdf(z_lo) + middle + top


@lru_cache(maxsize=16)
def _zipf_cdf(a: float, n: int) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -a
    c = np.cumsum(w)
    return c / c[-1]


def _zipf_draw(rng: np.random.Generator, a: float, n_values: int, size: int) -> np.ndarray:
    """Ranks 1..n_values with P(k) proportional to k^-a (int64)."""
    if n_values == 1:
        return np.ones(size, dtype=np.int64)
    if a == 0:
        return rng.integers(1, n_values, size=size, endpoint=True, dtype=np.int64)
    k = np.searchsorted(_zipf_cdf(float(a), int(n_values)), rng.random(size), side="right")
    return np.minimum(k, n_values - 1).astype(np.int64) + 1


@register_distribution("zipf")
@dataclass(frozen=True)
class Zipf(Distribution):
    """Bounded Zipf: ``k`` in ``1..max_tokens`` with probability proportional to ``k^-a``
    (``a >= 0``; 0 is uniform). Heavy-tailed: most draws small, a few near ``max_tokens``."""

    a: float
    max_tokens: int

    def check(self):
        p: list = []
        _need_num(p, "a", self.a, 0)
        if _need_int(p, "max_tokens", self.max_tokens, 1) and self.max_tokens > MAX_ZIPF_SUPPORT:
            p.append(("max_tokens", f"must be <= {MAX_ZIPF_SUPPORT}, got {self.max_tokens}"))
        return p

    def sample(self, rng, n):
        return _zipf_draw(rng, self.a, self.max_tokens, n)

    def support(self):
        return 1, self.max_tokens

    def mean(self):
        k = np.arange(1, self.max_tokens + 1, dtype=np.float64)
        w = k ** -self.a
        return float((k * w).sum() / w.sum())


# ---------------------------------------------------------------------------------------------
# Arrival processes
# ---------------------------------------------------------------------------------------------

ARRIVALS = Registry("arrival process", name_attr="kind")
register_arrival = ARRIVALS.register


class ArrivalProcess(_Checked):
    """When requests arrive. Open-loop processes produce timestamps (:meth:`gaps_s`, or the trace's);
    a closed loop (``open_loop = False``) leaves them to the simulator."""

    open_loop: ClassVar[bool] = True

    def gaps_s(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover - abstract
        """``n`` independent inter-arrival gaps (renewal processes; the first arrival is one gap after 0)."""
        raise NotImplementedError

    def mean_rate_per_s(self) -> float | None:
        """Long-run arrival rate, when the process fixes one."""
        return None


@register_arrival("poisson")
@dataclass(frozen=True)
class Poisson(ArrivalProcess):
    """Poisson arrivals: exponential gaps of mean ``1 / rate_per_s`` (coefficient of variation 1)."""

    rate_per_s: float

    def check(self):
        p: list = []
        _need_num(p, "rate_per_s", self.rate_per_s, 0, strict=True)
        return p

    def gaps_s(self, rng, n):
        return rng.exponential(1.0 / self.rate_per_s, size=n)

    def mean_rate_per_s(self):
        return self.rate_per_s


@register_arrival("gamma")
@dataclass(frozen=True)
class Gamma(ArrivalProcess):
    """Bursty (cv > 1) or regular (cv < 1) arrivals: Gamma gaps of mean ``1 / rate_per_s`` and
    coefficient of variation ``cv`` (shape ``1/cv^2``); ``cv = 1`` is Poisson."""

    rate_per_s: float
    cv: float = 1.0

    def check(self):
        p: list = []
        _need_num(p, "rate_per_s", self.rate_per_s, 0, strict=True)
        _need_num(p, "cv", self.cv, 0, strict=True)
        return p

    def gaps_s(self, rng, n):
        shape = 1.0 / self.cv ** 2
        return rng.gamma(shape, 1.0 / (shape * self.rate_per_s), size=n)

    def mean_rate_per_s(self):
        return self.rate_per_s


@register_arrival("closed_loop")
@dataclass(frozen=True)
class ClosedLoop(ArrivalProcess):
    """``concurrency`` users, each sending its next request ``think_time_s`` after its previous one
    finishes (how benchmark clients measure deployments). No timestamps: the simulator decides."""

    open_loop: ClassVar[bool] = False
    concurrency: int
    think_time_s: float = 0.0

    def check(self):
        p: list = []
        _need_int(p, "concurrency", self.concurrency, 1)
        _need_num(p, "think_time_s", self.think_time_s, 0)
        return p


@register_arrival("trace")
@dataclass(frozen=True)
class TraceArrival(ArrivalProcess):
    """The ``arrival_s`` timestamps of the workload's JSONL trace (no parameters)."""


# ---------------------------------------------------------------------------------------------
# SLO, trace, spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SLO(_Checked):
    """Latency objectives of a request: time to first token and time per output token (after the first)."""

    kind: ClassVar[str] = "slo"
    ttft_s: float
    tpot_s: float

    def check(self):
        p: list = []
        _need_num(p, "ttft_s", self.ttft_s, 0, strict=True)
        _need_num(p, "tpot_s", self.tpot_s, 0, strict=True)
        return p


#: The columns of a request set, in order (also the JSONL trace fields, with ``arrival_s``).
COLUMNS = ("request_id", "arrival_s", "prefix_id", "prefix_tokens", "input_tokens", "output_tokens", "domain")
_TRACE_KEYS = ("arrival_s", "prefix_id", "prefix_tokens", "input_tokens", "output_tokens", "domain")
#: Most request domains a workload may name.
MAX_DOMAINS = 1024


@dataclass(frozen=True)
class Trace:
    """Requests read from a JSONL file (:func:`load_trace`): columns in file order.

    Compared and hashed by content digest, so a spec holding a trace stays hashable. ``arrival_s``
    is NaN throughout when the file gives no timestamps.
    """

    path: str = field(compare=False)
    sha256: str
    arrival_s: np.ndarray = field(compare=False, repr=False)
    prefix_id: np.ndarray = field(compare=False, repr=False)
    prefix_tokens: np.ndarray = field(compare=False, repr=False)
    input_tokens: np.ndarray = field(compare=False, repr=False)
    output_tokens: np.ndarray = field(compare=False, repr=False)
    domain: np.ndarray = field(compare=False, repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.domain is None:
            d = np.zeros(len(self.input_tokens), dtype=np.int64)
            d.setflags(write=False)
            object.__setattr__(self, "domain", d)

    def __len__(self) -> int:
        return len(self.input_tokens)

    @property
    def has_timestamps(self) -> bool:
        return len(self) > 0 and not np.isnan(self.arrival_s[0])


@dataclass(frozen=True)
class WorkloadSpec:
    """What requests a serving run receives (see the module docstring).

    Either the three token distributions are given, or ``trace`` is, and then they are None (the
    trace supplies every request's counts, in order). ``seed`` is the default of
    :func:`generate_requests`. ``domain_weights``: the share of requests in each domain (empty:
    one domain; a trace gives each request's domain itself).
    """

    name: str
    arrival: ArrivalProcess
    slo: SLO
    prefix_tokens: Distribution | None = None
    input_tokens: Distribution | None = None
    output_tokens: Distribution | None = None
    num_prefixes: int = 0
    prefix_zipf_a: float = 0.0
    seed: int = 0
    trace: Trace | None = None
    description: str = ""
    domain_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        def bad(fld: str, msg: str) -> ConfigError:
            return ConfigError(API, fld, msg)

        w = self.domain_weights
        if not isinstance(w, tuple) or len(w) > MAX_DOMAINS or not all(_is_num(x) and x >= 0 for x in w) \
                or (w and not sum(w) > 0):
            raise bad("domains", f"expected up to {MAX_DOMAINS} finite shares >= 0 (not all 0), one per domain, "
                                 f"got {w!r}")
        if w and self.trace is not None:
            raise bad("domains", "a trace gives each request's domain itself (its 'domain' field); leave domains out")

        if not isinstance(self.name, str) or not self.name:
            raise bad("name", f"expected a non-empty string, got {self.name!r}")
        if not isinstance(self.arrival, ArrivalProcess):
            raise bad("arrival", f"expected an ArrivalProcess ({', '.join(ARRIVALS)}), got {self.arrival!r}")
        if not isinstance(self.slo, SLO):
            raise bad("slo", f"expected an SLO, got {self.slo!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", f"expected an integer >= 0, got {self.seed!r}")
        dists = {"prefix_tokens": self.prefix_tokens, "input_tokens": self.input_tokens,
                 "output_tokens": self.output_tokens}
        if self.trace is not None:
            given = [k for k, v in dists.items() if v is not None]
            if given:
                raise bad(given[0], "a trace supplies the token counts; leave the distributions out")
            if self.num_prefixes:
                raise bad("num_prefixes", "a trace names its prefixes itself (prefix_id); leave num_prefixes out")
        else:
            for k, v in dists.items():
                if not isinstance(v, Distribution):
                    raise bad(k, f"expected a Distribution ({', '.join(DISTRIBUTIONS)}), got {v!r}")
            if self.output_tokens.support()[0] < 1:  # type: ignore[union-attr]
                raise bad("output_tokens", f"can draw {self.output_tokens.support()[0]} tokens; "  # type: ignore[union-attr]
                          "every request produces at least 1 output token")
            if self.prefix_tokens.support()[0] + self.input_tokens.support()[0] < 1:  # type: ignore[union-attr]
                raise bad("input_tokens", "prefix_tokens + input_tokens can be 0; a request needs at least 1 prompt token")
            if isinstance(self.arrival, TraceArrival):
                raise bad("arrival", "arrival kind 'trace' needs a trace with arrival_s")
        if not _is_int(self.num_prefixes) or not 0 <= self.num_prefixes <= MAX_ZIPF_SUPPORT:
            raise bad("num_prefixes", f"expected an integer 0..{MAX_ZIPF_SUPPORT}, got {self.num_prefixes!r}")
        if not _is_num(self.prefix_zipf_a) or self.prefix_zipf_a < 0:
            raise bad("prefix_zipf_a", f"expected a finite number >= 0, got {self.prefix_zipf_a!r}")
        if isinstance(self.arrival, TraceArrival) and self.trace is not None and not self.trace.has_timestamps:
            raise bad("arrival", f"arrival kind 'trace' needs arrival_s on the lines of {self.trace.path}")

    def with_arrival(self, arrival: ArrivalProcess) -> "WorkloadSpec":
        """The same workload under another arrival process (how callers set a preset's load)."""
        return dataclasses.replace(self, arrival=arrival)

    def with_prefixes(self, num_prefixes: int, zipf_a: float = 0.0) -> "WorkloadSpec":
        """The same workload with ``num_prefixes`` shared prefixes (0: none shared), drawn with
        Zipf exponent ``zipf_a`` over prefix ids (0: uniform)."""
        return dataclasses.replace(self, num_prefixes=num_prefixes, prefix_zipf_a=zipf_a)

    def with_seed(self, seed: int) -> "WorkloadSpec":
        return dataclasses.replace(self, seed=seed)

    def with_domains(self, weights) -> "WorkloadSpec":
        """The same workload with request domains of these shares (an integer N: N equal ones;
        :func:`domain_shares`)."""
        try:
            shares = domain_shares(weights)
        except ValueError as exc:
            raise ConfigError(API, "domains", str(exc)) from None
        return dataclasses.replace(self, domain_weights=shares)

    @property
    def num_domains(self) -> int:
        """Request domains of the workload (1 without ``domain_weights``; a trace's largest + 1)."""
        if self.trace is not None:
            return int(self.trace.domain.max()) + 1 if len(self.trace) else 1
        return max(1, len(self.domain_weights))

    def to_dict(self) -> dict[str, Any]:
        """The YAML document of this spec (:func:`workload_from_dict` reads it back to an equal
        spec); a trace is written as its path."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.trace is not None:
            d["trace"] = self.trace.path
        else:
            for k in ("prefix_tokens", "input_tokens", "output_tokens"):
                d[k] = _params_to_dict(getattr(self, k))
            d["num_prefixes"] = self.num_prefixes
            d["prefix_zipf_a"] = self.prefix_zipf_a
            if self.domain_weights:
                d["domains"] = list(self.domain_weights)
        d["arrival"] = _params_to_dict(self.arrival)
        d["slo"] = {k: v for k, v in _params_to_dict(self.slo).items() if k != "kind"}
        d["seed"] = self.seed
        return d


def _preset(name, prefix, isl, osl, ttft_s, description) -> WorkloadSpec:
    return WorkloadSpec(name=name, prefix_tokens=Fixed(prefix), input_tokens=Fixed(isl),
                        output_tokens=Fixed(osl), arrival=ClosedLoop(concurrency=1),
                        slo=SLO(ttft_s=ttft_s, tpot_s=0.015), description=description)


#: The design-study presets (DESIGN.md, "Workload presets"); 1k = 1024 tokens (524k = 2^19).
#: Defaults: one user in a closed loop (set the load with ``with_arrival``) and no shared prefix
#: (each request's prefix is its own and already resident; ``with_prefixes`` makes them shared).
PRESETS: Mapping[str, WorkloadSpec] = MappingProxyType({
    p.name: p for p in (
        _preset("chat", 4096, 512, 256, 0.050, "chat: 4k reused prefix, 512 new input, 256 output"),
        _preset("coding", 2048, 4096, 1024, 0.100, "coding: 2k reused prefix, 4k new input, 1k output"),
        _preset("agentic-coding", 524288, 256, 8192, 0.150,
                "agentic coding: 524k reused prefix, 256 new input, 8k output"),
    )
})


def preset(name: str) -> WorkloadSpec:
    """The preset workload ``name`` (chat, coding, agentic-coding)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(API, "preset", f"no workload preset {name!r}; presets: {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Requests: the columnar result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestsSummary:
    """Summary statistics of a request set. Token totals are kept apart (new input vs reused
    prefix): counting reused tokens as input inflates throughput. ``ideal_prefix_hit_rate`` is the
    hit rate of an infinite prefix cache over the shared (``prefix_id >= 0``) requests; the
    inter-arrival figures are NaN under a closed loop."""

    num_requests: int
    open_loop: bool
    concurrency: int | None
    first_arrival_s: float
    last_arrival_s: float
    offered_rate_per_s: float
    interarrival_mean_s: float
    interarrival_cv: float
    mean_prefix_tokens: float
    mean_input_tokens: float
    mean_output_tokens: float
    p50_input_tokens: float
    p99_input_tokens: float
    p50_output_tokens: float
    p99_output_tokens: float
    total_prefix_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    shared_prefix_requests: int
    distinct_prefixes: int
    ideal_prefix_hit_rate: float


@dataclass(frozen=True, eq=False)
class Requests:
    """Requests of a run, one row per request, as read-only numpy arrays (see :data:`COLUMNS`).

    ``arrival_s`` is non-decreasing, or NaN throughout under a closed loop (the simulator sends
    request ``i`` when a user is free: ``concurrency`` users, ``think_time_s`` between a finish and
    the user's next send). ``prefix_id >= 0`` is a shared prefix of ``prefix_tokens`` tokens to look
    up in the prefix cache; ``-1`` is a request whose own prefix (possibly 0 tokens) is taken as
    resident. ``input_tokens`` are the new input tokens; ``output_tokens >= 1``. ``domain`` is
    the request's domain (>= 0; default: all 0).
    """

    request_id: np.ndarray
    arrival_s: np.ndarray
    prefix_id: np.ndarray
    prefix_tokens: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    workload: WorkloadSpec
    seed: int = 0
    domain: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = None
        if self.domain is None:
            object.__setattr__(self, "domain", np.zeros(len(np.asarray(self.request_id)), dtype=np.int64))
        for col in COLUMNS:
            raw = getattr(self, col)
            dtype = np.float64 if col == "arrival_s" else np.int64
            if isinstance(raw, np.ndarray) and raw.dtype == dtype and not raw.flags.writeable:
                arr = raw  # read-only already: share it
            else:
                if col != "arrival_s" and np.asarray(raw).dtype.kind not in "iub":
                    raise ConfigError(API, col, f"expected integers, got {np.asarray(raw).dtype}")
                arr = np.array(raw, dtype=dtype, copy=True)
            if arr.ndim != 1:
                raise ConfigError(API, col, f"expected a 1-d array, got shape {arr.shape}")
            if n is None:
                n = len(arr)
            elif len(arr) != n:
                raise ConfigError(API, col, f"has {len(arr)} rows, request_id has {n}")
            arr.setflags(write=False)
            object.__setattr__(self, col, arr)
        if not isinstance(self.workload, WorkloadSpec):
            raise ConfigError(API, "workload", f"expected a WorkloadSpec, got {self.workload!r}")
        _validate_columns(self)

    # --- views ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def num_requests(self) -> int:
        return len(self.request_id)

    @property
    def arrival(self) -> ArrivalProcess:
        return self.workload.arrival

    @property
    def open_loop(self) -> bool:
        """True when ``arrival_s`` holds timestamps; False under a closed loop."""
        return self.workload.arrival.open_loop

    @property
    def concurrency(self) -> int | None:
        """Number of closed-loop users (None for open-loop arrivals)."""
        return getattr(self.workload.arrival, "concurrency", None)

    @property
    def think_time_s(self) -> float:
        return getattr(self.workload.arrival, "think_time_s", 0.0)

    @property
    def slo(self) -> SLO:
        return self.workload.slo

    def columns(self) -> dict[str, np.ndarray]:
        """The columns by name, in :data:`COLUMNS` order (e.g. for a Parquet table)."""
        return {c: getattr(self, c) for c in COLUMNS}

    def head(self, n: int) -> "Requests":
        """The first ``n`` requests."""
        return dataclasses.replace(self, **{c: getattr(self, c)[:n] for c in COLUMNS})

    def summary(self) -> RequestsSummary:
        """Summary statistics (see :class:`RequestsSummary`)."""
        n = len(self)
        nan = math.nan
        ids = self.prefix_id[self.prefix_id >= 0]
        distinct = int(np.unique(ids).size) if ids.size else 0

        def q(a: np.ndarray, p: float) -> float:
            return float(np.percentile(a, p)) if n else nan

        if self.open_loop and n:
            first, last = float(self.arrival_s[0]), float(self.arrival_s[-1])
            gaps = np.diff(self.arrival_s)
            gap_mean = float(gaps.mean()) if gaps.size else nan
            gap_cv = float(gaps.std() / gap_mean) if gaps.size > 1 and gap_mean > 0 else nan
            rate = (n - 1) / (last - first) if last > first else nan
        else:
            first = last = gap_mean = gap_cv = rate = nan
        return RequestsSummary(
            num_requests=n, open_loop=self.open_loop, concurrency=self.concurrency,
            first_arrival_s=first, last_arrival_s=last, offered_rate_per_s=rate,
            interarrival_mean_s=gap_mean, interarrival_cv=gap_cv,
            mean_prefix_tokens=float(self.prefix_tokens.mean()) if n else nan,
            mean_input_tokens=float(self.input_tokens.mean()) if n else nan,
            mean_output_tokens=float(self.output_tokens.mean()) if n else nan,
            p50_input_tokens=q(self.input_tokens, 50), p99_input_tokens=q(self.input_tokens, 99),
            p50_output_tokens=q(self.output_tokens, 50), p99_output_tokens=q(self.output_tokens, 99),
            total_prefix_tokens=int(self.prefix_tokens.sum()), total_input_tokens=int(self.input_tokens.sum()),
            total_output_tokens=int(self.output_tokens.sum()), shared_prefix_requests=int(ids.size),
            distinct_prefixes=distinct,
            ideal_prefix_hit_rate=(ids.size - distinct) / ids.size if ids.size else 0.0,
        )


def _validate_columns(r: Requests) -> None:
    def bad(col: str, rows: np.ndarray, msg: str) -> ConfigError:
        first = int(np.flatnonzero(rows)[0])
        return ConfigError(API, col, f"{msg} (request {first}, {int(rows.sum())} rows)")

    n = len(r)
    if n and not (r.request_id[0] == 0 and r.request_id[-1] == n - 1
                  and np.array_equal(r.request_id, np.arange(n))):
        ids = np.sort(r.request_id)
        if (ids[1:] == ids[:-1]).any():
            raise ConfigError(API, "request_id", "request ids must be unique")
    for col in ("prefix_tokens", "input_tokens"):
        a = getattr(r, col)
        if (a < 0).any():
            raise bad(col, a < 0, "token counts must be >= 0")
    if (r.output_tokens < 1).any():
        raise bad("output_tokens", r.output_tokens < 1, "every request produces at least 1 output token")
    if (r.domain < 0).any() or (len(r) and r.domain.max() >= MAX_DOMAINS):
        raise bad("domain", (r.domain < 0) | (r.domain >= MAX_DOMAINS), f"domains are 0..{MAX_DOMAINS - 1}")
    if (r.prefix_id < -1).any():
        raise bad("prefix_id", r.prefix_id < -1, "prefix ids are >= 0, or -1 for no shared prefix")
    if ((r.prefix_tokens + r.input_tokens) < 1).any():
        raise bad("input_tokens", (r.prefix_tokens + r.input_tokens) < 1, "a request needs at least 1 prompt token")
    nan = np.isnan(r.arrival_s)
    if r.open_loop:
        if nan.any() or np.isinf(r.arrival_s).any():
            raise bad("arrival_s", nan | np.isinf(r.arrival_s), "open-loop arrivals must be finite timestamps")
        if (r.arrival_s < 0).any():
            raise bad("arrival_s", r.arrival_s < 0, "arrival times must be >= 0")
        if len(r) > 1 and (np.diff(r.arrival_s) < 0).any():
            raise bad("arrival_s", np.r_[False, np.diff(r.arrival_s) < 0], "arrival times must be non-decreasing")
    elif not nan.all():
        raise bad("arrival_s", ~nan, "a closed loop has no timestamps: arrival_s must be NaN")
    shared = r.prefix_id >= 0
    if shared.any():
        ids, toks = r.prefix_id[shared], r.prefix_tokens[shared]
        top = int(ids.max())
        if top > 4 * len(ids) + 1024:  # sparse ids: compact them first
            _, ids = np.unique(ids, return_inverse=True)
            top = int(ids.max())
        ref = np.empty(top + 1, dtype=np.int64)
        ref[ids] = toks  # the last row of each id wins; any other row that differs is an error
        wrong = ref[ids] != toks
        if wrong.any():
            rows = np.zeros(len(r), dtype=bool)
            rows[np.flatnonzero(shared)[wrong]] = True
            raise bad("prefix_tokens", rows, "one prefix id has one length: requests of a prefix id disagree")


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

#: Independent random streams of one seed (changing one column's distribution leaves the others).
_STREAM_ARRIVALS, _STREAM_PREFIX_ID, _STREAM_PREFIX_LEN, _STREAM_INPUT, _STREAM_OUTPUT, _STREAM_DOMAIN = range(6)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _open_loop_arrivals(arrival: ArrivalProcess, rng: np.random.Generator, num_requests: int | None,
                        duration_s: float | None) -> np.ndarray:
    if duration_s is None:
        return np.cumsum(arrival.gaps_s(rng, num_requests))
    rate = arrival.mean_rate_per_s() or 1.0
    expected = rate * duration_s
    if expected > MAX_REQUESTS:
        raise ConfigError(API, "duration_s", f"{duration_s:g} s at {rate:g} requests/s is about {expected:.3g} "
                                             f"requests, more than {MAX_REQUESTS}")
    chunks, t, total = [], 0.0, 0
    chunk = int(expected + 6 * math.sqrt(expected) + 16)
    while True:
        times = t + np.cumsum(arrival.gaps_s(rng, chunk))
        chunks.append(times)
        total += chunk
        t = float(times[-1])
        if t >= duration_s or (num_requests is not None and total >= num_requests):
            break
        if total > MAX_REQUESTS:
            raise ConfigError(API, "duration_s", f"more than {MAX_REQUESTS} requests in {duration_s:g} s")
    times = np.concatenate(chunks)
    times = times[: np.searchsorted(times, duration_s, side="left")]
    return times if num_requests is None else times[:num_requests]


def generate_requests(workload: WorkloadSpec, *, num_requests: int | None = None,
                      duration_s: float | None = None, seed: int | None = None) -> Requests:
    """Draw the requests of ``workload``: ``num_requests`` of them, or those arriving before
    ``duration_s`` (both: whichever ends first; a trace without either: all its lines).

    Deterministic for a seed (default ``workload.seed``); each column has its own random stream,
    and the first ``k`` requests of a larger draw equal a draw of ``k``. Under a closed loop only
    ``num_requests`` applies (arrival times are the simulator's).
    """
    if seed is None:
        seed = workload.seed
    if not _is_int(seed) or seed < 0:
        raise ConfigError(API, "seed", f"expected an integer >= 0, got {seed!r}")
    if num_requests is not None and (not _is_int(num_requests) or not 0 <= num_requests <= MAX_REQUESTS):
        raise ConfigError(API, "num_requests", f"expected an integer 0..{MAX_REQUESTS}, got {num_requests!r}")
    if duration_s is not None and (not _is_num(duration_s) or duration_s <= 0):
        raise ConfigError(API, "duration_s", f"expected a finite number of seconds > 0, got {duration_s!r}")
    arrival, trace = workload.arrival, workload.trace
    if num_requests is None and duration_s is None and trace is None:
        raise ConfigError(API, "num_requests", "give num_requests or duration_s")
    if not arrival.open_loop and duration_s is not None:
        raise ConfigError(API, "duration_s", "a closed loop's arrival times come from the simulation: "
                                             "give num_requests (and stop the simulation at the duration)")
    if isinstance(arrival, TraceArrival):
        times = trace.arrival_s  # type: ignore[union-attr]
        if duration_s is not None:
            times = times[: np.searchsorted(times, duration_s, side="left")]
        if num_requests is not None:
            if num_requests > len(trace):  # type: ignore[arg-type]
                raise ConfigError(API, "num_requests", f"the trace {trace.path} has {len(trace)} requests, "  # type: ignore[union-attr]
                                                       f"{num_requests} asked")
            times = times[:num_requests]
        n = len(times)
    elif arrival.open_loop:
        times = _open_loop_arrivals(arrival, _rng(seed, _STREAM_ARRIVALS), num_requests, duration_s)
        n = len(times)
    else:
        n = num_requests if num_requests is not None else len(trace)  # type: ignore[arg-type]
        times = np.full(n, np.nan)
    if trace is not None:
        if n > len(trace):
            raise ConfigError(API, "num_requests", f"the trace {trace.path} has {len(trace)} requests, {n} needed")
        prefix_id, prefix_tokens = trace.prefix_id[:n], trace.prefix_tokens[:n]
        input_tokens, output_tokens = trace.input_tokens[:n], trace.output_tokens[:n]
        domain = trace.domain[:n]
    else:
        prefix_id, prefix_tokens = _draw_prefixes(workload, seed, n)
        input_tokens = workload.input_tokens.sample(_rng(seed, _STREAM_INPUT), n)  # type: ignore[union-attr]
        output_tokens = workload.output_tokens.sample(_rng(seed, _STREAM_OUTPUT), n)  # type: ignore[union-attr]
        domain = _draw_domains(workload.domain_weights, seed, n)
    cols = dict(request_id=np.arange(n, dtype=np.int64), arrival_s=times, prefix_id=prefix_id,
                prefix_tokens=prefix_tokens, input_tokens=input_tokens, output_tokens=output_tokens, domain=domain)
    for a in cols.values():  # fresh or read-only arrays: Requests shares them instead of copying
        if a.flags.writeable:
            a.setflags(write=False)
    return Requests(**cols, workload=workload, seed=seed)


def _draw_domains(weights: tuple[float, ...], seed: int, n: int) -> np.ndarray:
    if len(weights) <= 1:
        return np.zeros(n, dtype=np.int64)
    p = np.asarray(weights, dtype=np.float64)
    return _rng(seed, _STREAM_DOMAIN).choice(len(p), size=n, p=p / p.sum()).astype(np.int64)


def _draw_prefixes(w: WorkloadSpec, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    if w.num_prefixes == 0:
        return np.full(n, -1, dtype=np.int64), w.prefix_tokens.sample(_rng(seed, _STREAM_PREFIX_LEN), n)  # type: ignore[union-attr]
    ids = _zipf_draw(_rng(seed, _STREAM_PREFIX_ID), w.prefix_zipf_a, w.num_prefixes, n) - 1
    lengths = w.prefix_tokens.sample(_rng(seed, _STREAM_PREFIX_LEN), w.num_prefixes)  # type: ignore[union-attr]
    return ids, lengths[ids]


# ---------------------------------------------------------------------------------------------
# JSONL traces
# ---------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number here")


def load_trace(path: str | Path) -> Trace:
    """Read a JSONL trace: one JSON object per line with ``input_tokens``, ``output_tokens``, and
    optionally ``arrival_s`` (on every line or none, non-decreasing), ``prefix_id`` (a shared
    prefix; its ``prefix_tokens`` on its first line, the same or omitted later) and
    ``prefix_tokens`` (alone: the request's own resident prefix) and ``domain`` (the request's
    domain, an integer >= 0; default 0). Blank lines are skipped; any
    other bad line is a :class:`ConfigError` naming the file and line."""
    path = Path(path)
    src = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(src, "", f"cannot read the file: {exc.strerror or exc}") from None
    cols: dict[str, list] = {k: [] for k in _TRACE_KEYS}
    prefix_len: dict[int, tuple[int, int]] = {}
    has_time: bool | None = None
    last_t = -math.inf
    for lineno, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"line {lineno}"
        try:
            obj = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ConfigError(src, where, f"not a JSON object: {exc}") from None
        if not isinstance(obj, dict):
            raise ConfigError(src, where, f"expected a JSON object, got {type(obj).__name__}")
        unknown = [k for k in obj if k not in _TRACE_KEYS]
        if unknown:
            raise ConfigError(src, f"{where}, {unknown[0]}", f"unknown key; allowed keys: {', '.join(_TRACE_KEYS)}")

        def integer(key: str, low: int, required: bool) -> int | None:
            if key not in obj:
                if required:
                    raise ConfigError(src, f"{where}, {key}", "required field is missing")
                return None
            v = obj[key]
            if not _is_int(v) or v < low:
                raise ConfigError(src, f"{where}, {key}", f"expected an integer >= {low}, got {v!r}")
            return v

        inp = integer("input_tokens", 0, True)
        out = integer("output_tokens", 1, True)
        pid = integer("prefix_id", 0, False)
        ptok = integer("prefix_tokens", 0, False)
        dom = integer("domain", 0, False)
        if dom is not None and dom >= MAX_DOMAINS:
            raise ConfigError(src, f"{where}, domain", f"expected a domain 0..{MAX_DOMAINS - 1}, got {dom}")
        if pid is not None:
            first = prefix_len.get(pid)
            if first is None:
                if ptok is None:
                    raise ConfigError(src, f"{where}, prefix_tokens",
                                      f"first line of prefix {pid}: give its prefix_tokens")
                prefix_len[pid] = (ptok, lineno)
            elif ptok is None:
                ptok = first[0]
            elif ptok != first[0]:
                raise ConfigError(src, f"{where}, prefix_tokens", f"prefix {pid} has {first[0]} tokens "
                                                                  f"(line {first[1]}), here {ptok}")
        if (ptok or 0) + inp < 1:  # type: ignore[operator]
            raise ConfigError(src, f"{where}, input_tokens", "a request needs at least 1 prompt token")
        t_given = "arrival_s" in obj
        if has_time is None:
            has_time = t_given
        elif t_given != has_time:
            raise ConfigError(src, f"{where}, arrival_s", "give arrival_s on every line or on none")
        t = math.nan
        if t_given:
            t = obj["arrival_s"]
            if not _is_num(t) or t < 0:
                raise ConfigError(src, f"{where}, arrival_s", f"expected a number of seconds >= 0, got {t!r}")
            if t < last_t:
                raise ConfigError(src, f"{where}, arrival_s", f"arrivals must be in time order: {t} after {last_t}")
            last_t = t
        for k, v in (("arrival_s", t), ("prefix_id", -1 if pid is None else pid),
                     ("prefix_tokens", ptok or 0), ("input_tokens", inp), ("output_tokens", out),
                     ("domain", dom or 0)):
            cols[k].append(v)
    if not cols["input_tokens"]:
        raise ConfigError(src, "", "the trace has no requests")
    arrays = {k: np.array(v, dtype=np.float64 if k == "arrival_s" else np.int64) for k, v in cols.items()}
    for a in arrays.values():
        a.setflags(write=False)
    return Trace(path=src, sha256=hashlib.sha256(data).hexdigest(), **arrays)


def write_trace(requests: Requests, path: str | Path) -> None:
    """Write requests as a JSONL trace that :func:`load_trace` reads back to the same columns
    (``arrival_s`` omitted under a closed loop; ``prefix_id`` only for shared prefixes)."""
    lines = []
    for i in range(len(requests)):
        obj: dict[str, Any] = {}
        if requests.open_loop:
            obj["arrival_s"] = float(requests.arrival_s[i])
        if requests.prefix_id[i] >= 0:
            obj["prefix_id"] = int(requests.prefix_id[i])
        obj["prefix_tokens"] = int(requests.prefix_tokens[i])
        obj["input_tokens"] = int(requests.input_tokens[i])
        obj["output_tokens"] = int(requests.output_tokens[i])
        if requests.domain[i]:
            obj["domain"] = int(requests.domain[i])
        lines.append(json.dumps(obj, separators=(",", ":")))
    from cosim.io_atomic import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")


def workload_from_trace(trace: Trace | str | Path, slo: SLO, *, name: str | None = None,
                        arrival: ArrivalProcess | None = None) -> WorkloadSpec:
    """A workload replaying a trace: its timestamps (``arrival`` None and the trace has them),
    else ``arrival`` (default: a closed loop of one user)."""
    if not isinstance(trace, Trace):
        trace = load_trace(trace)
    if arrival is None:
        arrival = TraceArrival() if trace.has_timestamps else ClosedLoop(concurrency=1)
    return WorkloadSpec(name=name or Path(trace.path).stem, arrival=arrival, slo=slo, trace=trace)


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------

_RATE_RE = re.compile(r"\s*(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*/\s*(?P<unit>s|min|h)\s*\Z")
_RATE_SCALE = {"s": 1.0, "min": 1 / 60.0, "h": 1 / 3600.0}


def parse_rate_per_s(v: Any) -> float:
    """A rate: a plain number (per second) or a string ``"20/s"``, ``"600/min"``, ``"3600/h"``."""
    if isinstance(v, str):
        m = _RATE_RE.match(v)
        if not m:
            raise ValueError(f"expected a rate such as 20, '20/s', '600/min' or '3600/h', got {v!r}")
        return float(m["num"]) * _RATE_SCALE[m["unit"]]
    return as_float(v)


def _as_text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else parse(v)


def _yaml_key(fld: dataclasses.Field) -> str:
    if "yaml" in fld.metadata:
        return fld.metadata["yaml"]
    for suffix in ("_per_s", "_tokens", "_s"):
        if fld.name.endswith(suffix):
            return fld.name[: -len(suffix)]
    return fld.name


def _yaml_parser(fld: dataclasses.Field) -> Callable[[Any], Any]:
    ann = str(fld.type)
    if fld.name.endswith("_per_s"):
        parse = parse_rate_per_s
    elif fld.name.endswith("_s"):
        parse = parse_time_s
    elif ann.startswith("int"):
        parse = as_int
    elif ann.startswith("float"):
        parse = as_float
    else:  # pragma: no cover - every registered field is int, float or a time/rate
        raise TypeError(f"no YAML reader for field {fld.name}: {ann}")
    return _optional(parse) if "None" in ann else parse


def _read_params(cls: type, f: Fields, base: Any = None) -> Any:
    """Read the fields of a registered parameter dataclass from ``f`` (YAML keys without the unit
    suffix) and build it; missing keys take the field default, or ``base``'s value when given;
    out-of-range values are reported under their YAML key."""
    kwargs = {}
    keys = {}
    for fld in dataclasses.fields(cls):
        key = _yaml_key(fld)
        keys[fld.name] = key
        default = getattr(base, fld.name) if base is not None else fld.default
        kwargs[fld.name] = f.get(key, _yaml_parser(fld), default)
    f.finish()
    try:
        return cls(**kwargs)
    except ParameterError as exc:
        raise f.error(keys.get(exc.param, exc.param), exc.message) from None


def _read_kind(raw: Any, table: dict[str, type], f_parent: Fields, key: str) -> Any:
    f = Fields(raw, f_parent.source, f_parent.field(key))

    def choice(v: Any) -> str:
        if v not in table:
            raise ValueError(f"expected one of {', '.join(table)}, got {v!r}")
        return v

    kind = f.get("kind", choice)
    return _read_params(table[kind], f)


def _read_distribution(parent: Fields, key: str) -> Distribution:
    raw = parent.get(key, lambda v: v)
    if _is_int(raw):
        try:
            return Fixed(raw)
        except ParameterError as exc:
            raise parent.error(key, exc.message) from None
    if not isinstance(raw, dict):
        raise parent.error(key, f"expected a token count (an integer such as 512) or a mapping with 'kind' "
                                f"({', '.join(DISTRIBUTIONS)}), got {raw!r}")
    return _read_kind(raw, DISTRIBUTIONS, parent, key)


_TOP_KEYS = ("name", "description", "preset", "trace", "prefix_tokens", "input_tokens", "output_tokens",
             "num_prefixes", "prefix_zipf_a", "arrival", "slo", "seed", "domains")


def workload_from_dict(data: Any, source: str = API, base_dir: str | Path | None = None) -> WorkloadSpec:
    """Build a :class:`WorkloadSpec` from a parsed YAML document (schema: ``docs/workloads.md``).

    ``preset`` starts from a preset and the other keys override it; without a preset, ``arrival``,
    ``slo`` and the token counts (or ``trace``) are required. A relative ``trace`` path is read
    from ``base_dir`` (the YAML file's folder).
    """
    top = Fields(data, source, "")
    name = top.get("name", as_str)
    description = top.get("description", _as_text, "")

    def preset_name(v: Any) -> str:
        if v not in PRESETS:
            raise ValueError(f"expected one of {', '.join(PRESETS)}, got {v!r}")
        return v

    base = PRESETS[top.get("preset", preset_name)] if "preset" in top.data else None
    kw: dict[str, Any] = {"name": name, "description": description or (base.description if base else "")}
    trace_path = top.get("trace", as_str, None)
    if trace_path is not None:
        p = Path(trace_path)
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        try:
            kw["trace"] = load_trace(p)
        except ConfigError as exc:
            if exc.field:  # a bad line: the trace file and line say where
                raise
            raise top.error("trace", f"{p}: {exc.message}") from None
        for k in ("prefix_tokens", "input_tokens", "output_tokens", "num_prefixes", "prefix_zipf_a"):
            if k in top.data:
                raise top.error(k, "a trace supplies the token counts and prefixes; remove this key or 'trace'")
        kw.update(prefix_tokens=None, input_tokens=None, output_tokens=None, num_prefixes=0)
    else:
        for k in ("prefix_tokens", "input_tokens", "output_tokens"):
            if k in top.data:
                kw[k] = _read_distribution(top, k)
            elif k == "prefix_tokens" and base is None:
                kw[k] = Fixed(0)
            elif base is None:
                top.get(k, lambda v: v)  # raises: required field is missing
        kw["num_prefixes"] = top.get("num_prefixes", as_int, base.num_prefixes if base else 0)
        kw["prefix_zipf_a"] = top.get("prefix_zipf_a", as_float, base.prefix_zipf_a if base else 0.0)
    if "arrival" in top.data or base is None:
        kw["arrival"] = _read_kind(top.get("arrival", lambda v: v), ARRIVALS, top, "arrival")
    if "slo" in top.data or base is None:
        kw["slo"] = _read_params(SLO, Fields(top.get("slo", lambda v: v), source, "slo"),
                                 base.slo if base is not None else None)
    kw["seed"] = top.get("seed", as_int, base.seed if base else 0)
    if "domains" in top.data:
        kw["domain_weights"] = top.get("domains", domain_shares)
    top.used.update(_TOP_KEYS)  # keys skipped above (a preset's or a trace's) are still allowed
    top.finish()
    try:
        return dataclasses.replace(base, **kw) if base is not None else WorkloadSpec(**kw)
    except ConfigError as exc:
        if exc.source != API:
            raise
        raise top.error(exc.field, exc.message) from None


def domain_shares(v: Any) -> tuple[float, ...]:
    """Request domains as ``N`` (N equal shares; 1: one domain, ``()``) or ``[w0, w1, ...]``
    (shares, normalized when drawn): the one reader of YAML ``domains:``,
    :meth:`WorkloadSpec.with_domains` and ``cosim serve --domains``. ValueError otherwise."""
    if _is_int(v):
        if not 1 <= v <= MAX_DOMAINS:
            raise ValueError(f"expected 1..{MAX_DOMAINS} domains, got {v}")
        return (1.0,) * v if v > 1 else ()
    if isinstance(v, (list, tuple)) and v and len(v) <= MAX_DOMAINS and all(_is_num(x) and x >= 0 for x in v) and sum(v) > 0:
        return tuple(float(x) for x in v)
    raise ValueError(f"expected a number of equal domains (e.g. 4) or a list of up to {MAX_DOMAINS} shares >= 0 "
                     f"(e.g. [0.4, 0.3, 0.2, 0.1]), got {v!r}")


def load_workload(name_or_path: str | Path) -> WorkloadSpec:
    """A preset by name, or a workload YAML file (a JSONL trace needs a YAML around it for its SLO)."""
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]
    path = Path(name_or_path)
    if path.suffix == ".jsonl":
        raise ConfigError(str(path), "", "a JSONL trace has no SLO: write a workload YAML with 'trace: "
                                         f"{path.name}' and 'slo', or call workload_from_trace(path, slo)")
    if not path.is_file():
        raise ConfigError(str(path), "", f"no such file or workload preset; presets: {', '.join(PRESETS)}")
    return workload_from_dict(load_yaml_file(path), source=str(path), base_dir=path.parent)


def _params_to_dict(obj: Any) -> Any:
    if isinstance(obj, Fixed):
        return obj.value_tokens
    d: dict[str, Any] = {"kind": obj.kind} if obj.kind else {}
    for fld in dataclasses.fields(obj):
        v = getattr(obj, fld.name)
        if v is None or (fld.default is not dataclasses.MISSING and v == fld.default):
            continue
        if fld.name.endswith("_s") and not fld.name.endswith("_per_s"):
            v = f"{v!r}s"
        d[_yaml_key(fld)] = v
    return d
