"""Expert routing models, their imbalance statistics, and routing traces (issue 11, first part).

A **routing model** says which ``top_k`` experts each token picks in each MoE layer. Every model
here draws Gumbel top-k over per-token logits ``log p(layer, domain) + bias(request)``: sampling
without replacement proportionally to a popularity ``p`` (the DeepSeek-V3 / Qwen3 routers pick
the top-k of softmax scores; Gumbel top-k is the distribution of that choice when the scores are
noisy around a mean popularity). Models are registered by name in :data:`ROUTING_MODELS` and are
reproducible from a seed:

- ``uniform``: every expert equally likely (DeepEP's tests; the worst case for locality);
- ``power_law``: popularity ``(rank + 1) ** -skew`` over a per-layer random permutation of the
  experts (imbalance that varies by layer, the hot experts differ between layers);
- ``domain_mixture``: each of ``domains`` request domains (code, math, chat ...) has its own
  power law per layer; the domains' logits share a common part with weight ``overlap`` (1: all
  domains route alike; 0: independent hot sets);
- ``request_affinity``: a power law plus a bias per request (Gaussian logits of scale
  ``affinity``), so a request's tokens, prefill and decode alike, share preferred experts (the
  correlation of a request's prefill and decode routing grows with ``affinity``).

Any model can be **node-limited** (``max_nodes``, DeepSeek-V3's training-time rule): with an
expert -> node map, each token first keeps the ``max_nodes`` nodes holding its highest scores,
then takes its top-k inside them.

:func:`imbalance` gives the statistics of a load vector (max / mean, coefficient of variation,
Gini); :func:`layer_loads` the per-layer expert loads of a set of choices.

**Routing traces** (:class:`RoutingTrace`): one row per (token, layer) with the request, its
domain, the phase (``prefill`` / ``decode``), the layer, the token index and its top-k expert ids,
as Parquet (:func:`write_routing_trace`, :func:`read_routing_trace`; the schema is in
``docs/routing.md``). **Load counts** (:class:`LoadCounts`): per layer, tokens routed to each
expert, the form of serving engines' expert-distribution recorders and EPLB statistics: read
from Parquet / CSV (``layer, expert, count``) or JSON (``{"logical_count": [[...], ...]}``,
one list per layer, as SGLang's expert-distribution recorder dumps its ``stat`` mode), written
as Parquet or CSV.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from cosim.errors import ConfigError, CosimError
from cosim.registry import Registry

#: Default power-law exponent: on 256 experts with top-8 (DeepSeek-V3) it gives a routing Gini of
#: about 0.27 per layer (0.4: 0.23, 0.5: 0.30; docs/routing.md), just above the ~0.24 that MLA
#: models keep on real text (arXiv 2605.20982; random-token probes overstate it up to 2.35x).
DEFAULT_SKEW = 0.45
#: Routing models by name (frozen dataclasses whose fields are their parameters).
ROUTING_MODELS = Registry("routing model", name_attr="kind")
PHASES = ("prefill", "decode")


class RoutingTraceError(CosimError, ValueError):
    """A routing trace or load-count file that cannot be read (names the file and the problem)."""


def _stream(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(p) for p in parts]])


@dataclass(frozen=True)
class RoutingModel:
    """Base of the routing models: ``log_popularity`` per layer and domain, an optional
    per-request bias, Gumbel top-k per token (module docstring). ``max_nodes`` > 0 makes any
    model node-limited."""

    kind: ClassVar[str] = ""
    max_nodes: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_nodes, bool) or not isinstance(self.max_nodes, int) or self.max_nodes < 0:
            raise ConfigError("<api>", "routing.max_nodes", f"expected an integer >= 0, got {self.max_nodes!r}")

    # -- what a model defines
    def log_popularity(self, layer: int, domain: int, num_experts: int, seed: int) -> np.ndarray:
        return np.zeros(num_experts)

    def request_bias(self, request: int, num_experts: int, seed: int) -> np.ndarray | None:
        return None

    # -- sampling
    def popularity(self, layer: int, domain: int, num_experts: int, seed: int = 0) -> np.ndarray:
        """Expected share of selections of every expert (for one expert per token; top-k
        selections flatten it a little)."""
        lp = self.log_popularity(layer, domain, num_experts, seed)
        p = np.exp(lp - lp.max())
        return p / p.sum()

    def sample(self, num_experts: int, top_k: int, layer: int, *, requests: Sequence[int] | np.ndarray,
               domains: Sequence[int] | np.ndarray | None = None, seed: int = 0, stream: int = 0,
               expert_node: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Expert ids ``[tokens, top_k]`` (int32, distinct per token) for tokens of the given
        ``requests`` (and ``domains``, default 0) in ``layer``. ``stream`` separates draws of the
        same layer (e.g. prefill and decode, or successive steps); ``expert_node``: node of every
        expert, for ``max_nodes``."""
        if not 1 <= top_k <= num_experts:
            raise ConfigError("<api>", "top_k", f"expected 1..{num_experts}, got {top_k}")
        req = np.asarray(requests, dtype=np.int64)
        dom = np.zeros(len(req), dtype=np.int64) if domains is None else np.asarray(domains, dtype=np.int64)
        if dom.shape != req.shape:
            raise ConfigError("<api>", "domains", "expected one domain per token")
        scores = np.empty((len(req), num_experts))
        for d in np.unique(dom):
            scores[dom == d] = self.log_popularity(layer, int(d), num_experts, seed)[None, :]
        for r in np.unique(req):
            b = self.request_bias(int(r), num_experts, seed)
            if b is not None:
                scores[req == r] += b[None, :]
        scores += _stream(seed, 1, layer, stream).gumbel(size=scores.shape)
        if self.max_nodes:
            if expert_node is None:
                raise ConfigError("<api>", "routing.max_nodes", "node-limited routing needs the node of every expert")
            node = np.asarray(expert_node, dtype=np.int64)
            nodes = int(node.max()) + 1
            if self.max_nodes < nodes:
                best = np.full((len(req), nodes), -np.inf)
                for m in range(nodes):
                    best[:, m] = scores[:, node == m].max(axis=1)
                kept = np.argpartition(-best, self.max_nodes - 1, axis=1)[:, :self.max_nodes]
                allowed = np.zeros((len(req), nodes), dtype=bool)
                np.put_along_axis(allowed, kept, True, axis=1)
                scores = np.where(allowed[:, node], scores, -np.inf)
        chosen = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]
        return np.sort(chosen, axis=1).astype(np.int32)


def _power_law_logits(num_experts: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    return -float(skew) * np.log(rng.permutation(num_experts) + 1.0)


def _check_number(name: str, v, lo: float, hi: float = float("inf")) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or v != v:
        raise ConfigError("<api>", f"routing.{name}", f"expected a number in [{lo}, {hi}], got {v!r}")


@ROUTING_MODELS.register("uniform")
@dataclass(frozen=True)
class Uniform(RoutingModel):
    """Every expert equally likely."""


@ROUTING_MODELS.register("power_law")
@dataclass(frozen=True)
class PowerLaw(RoutingModel):
    """Popularity ``(rank + 1) ** -skew`` over a random permutation per layer."""

    skew: float = DEFAULT_SKEW

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number("skew", self.skew, 0.0, 20.0)

    def log_popularity(self, layer, domain, num_experts, seed):
        return _power_law_logits(num_experts, self.skew, _stream(seed, 2, layer))


@ROUTING_MODELS.register("domain_mixture")
@dataclass(frozen=True)
class DomainMixture(RoutingModel):
    """Per domain and layer a power law; the domains share the part ``overlap`` of their
    logits (1: the same hot experts in every domain, 0: independent hot sets)."""

    domains: int = 4
    skew: float = DEFAULT_SKEW
    overlap: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.domains, bool) or not isinstance(self.domains, int) or self.domains < 1:
            raise ConfigError("<api>", "routing.domains", f"expected an integer >= 1, got {self.domains!r}")
        _check_number("skew", self.skew, 0.0, 20.0)
        _check_number("overlap", self.overlap, 0.0, 1.0)

    def log_popularity(self, layer, domain, num_experts, seed):
        if not 0 <= domain < self.domains:
            raise ConfigError("<api>", "domain", f"expected a domain in 0..{self.domains - 1}, got {domain}")
        shared = _power_law_logits(num_experts, self.skew, _stream(seed, 2, layer))
        own = _power_law_logits(num_experts, self.skew, _stream(seed, 3, layer, domain))
        return self.overlap * shared + (1.0 - self.overlap) * own


@ROUTING_MODELS.register("request_affinity")
@dataclass(frozen=True)
class RequestAffinity(RoutingModel):
    """A power law per layer plus a Gaussian bias per request of scale ``affinity`` (the
    request's preferred experts, the same in every layer and phase)."""

    skew: float = DEFAULT_SKEW
    affinity: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_number("skew", self.skew, 0.0, 20.0)
        _check_number("affinity", self.affinity, 0.0, 20.0)

    def log_popularity(self, layer, domain, num_experts, seed):
        return _power_law_logits(num_experts, self.skew, _stream(seed, 2, layer))

    def request_bias(self, request, num_experts, seed):
        return self.affinity * _stream(seed, 4, request).standard_normal(num_experts)


def routing_model(kind: str, **params) -> RoutingModel:
    """A registered routing model by name with its parameters (clear errors for unknown ones)."""
    cls = ROUTING_MODELS[kind] if kind in ROUTING_MODELS else None
    if cls is None:
        raise ConfigError("<api>", "routing", f"unknown routing model {kind!r}; models: {', '.join(ROUTING_MODELS)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError("<api>", "routing", f"{kind}: {exc}") from None


def parse_routing(text: str) -> RoutingModel:
    """A routing model from ``KIND`` or ``KIND:param=value,...`` (``power_law:skew=0.6,max_nodes=4``)."""
    kind, _, rest = str(text).partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError("<cli>", "routing", f"expected param=value in {text!r}, got {item!r}")
        try:
            params[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ConfigError("<cli>", "routing", f"{key}: expected a number, got {value!r}") from None
    return routing_model(kind.strip(), **params)


def routing_from(model: str | None, trace: str | Path | None, phase: str = "decode", placement: str = "contiguous",
                 grouping: bool = False, grouping_purity: float = 1.0) -> StepRouting | None:
    """The :class:`StepRouting` of a routing model spec (``KIND[:param=value,...]``) or a routing
    trace file, with a placement policy and domain grouping; ``None`` when neither is given (the
    default routing sample, which places experts contiguously). The one reader of these options
    (``cosim step`` flags, a deployment pool's ``routing:``)."""
    if model is not None and trace is not None:
        raise ConfigError("<api>", "routing", "give a routing model or a routing trace, not both")
    if model is not None:
        return StepRouting(model=parse_routing(model), phase=phase, placement=placement, grouping=grouping,
                           grouping_purity=grouping_purity)
    if trace is not None:
        return dataclasses.replace(StepRouting.from_trace(trace, phase=phase), placement=placement, grouping=grouping,
                                   grouping_purity=grouping_purity)
    if placement != "contiguous" or grouping:
        raise ConfigError("<api>", "routing.placement", "a placement policy or grouping needs a routing model or "
                                                        "trace (their statistics place the experts)")
    return None


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class ImbalanceStats:
    """Imbalance of a load vector: ``max / mean``, coefficient of variation (std / mean) and
    Gini coefficient (0: equal loads; ``1 - 1/n``: everything on one)."""

    max_over_mean: float
    cv: float
    gini: float


def imbalance(loads: Sequence[float] | np.ndarray) -> ImbalanceStats:
    """:class:`ImbalanceStats` of ``loads`` (tokens per expert, or per rank)."""
    x = np.asarray(loads, dtype=np.float64).ravel()
    if x.size == 0 or (x < 0).any() or not np.isfinite(x).all():
        raise ConfigError("<api>", "loads", "expected a non-empty vector of finite loads >= 0")
    mean = x.mean()
    if mean == 0:
        return ImbalanceStats(1.0, 0.0, 0.0)
    s = np.sort(x)
    n = len(s)
    gini = float((2.0 * np.arange(1, n + 1) - n - 1).dot(s) / (n * s.sum()))
    return ImbalanceStats(float(x.max() / mean), float(x.std() / mean), gini)


def layer_loads(choices: np.ndarray, num_experts: int) -> np.ndarray:
    """Tokens routed to each expert, from choices ``[tokens, top_k]`` of one layer."""
    return np.bincount(np.asarray(choices).ravel(), minlength=num_experts).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Routing traces


@dataclass(frozen=True)
class RoutingTrace:
    """Per-token routing: row ``i`` is token ``token[i]`` of request ``request[i]`` (domain,
    phase) in MoE layer ``layer[i]``, routed to ``experts[i]`` (``[rows, top_k]``)."""

    request: np.ndarray
    domain: np.ndarray
    phase: np.ndarray      # "prefill" / "decode" (object array of str)
    layer: np.ndarray
    token: np.ndarray
    experts: np.ndarray
    num_experts: int

    def __len__(self) -> int:
        return len(self.request)

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[1])

    def layers(self) -> list[int]:
        return sorted(int(v) for v in np.unique(self.layer))

    def choices(self, layer: int, phase: str | None = None) -> np.ndarray:
        """The ``[tokens, top_k]`` choices of ``layer`` (of one phase), in row order."""
        mask = self.layer == layer
        if phase is not None:
            mask &= self.phase == phase
        return self.experts[mask]

    def loads(self) -> LoadCounts:
        """Per-layer expert load counts of the trace."""
        ls = self.layers()
        return LoadCounts(tuple(ls), np.stack([layer_loads(self.choices(l), self.num_experts) for l in ls]))


def model_trace(model: RoutingModel, num_experts: int, top_k: int, layers: Sequence[int], *,
                requests: Sequence[int], prefill_tokens: Sequence[int], decode_tokens: Sequence[int],
                domains: Sequence[int] | None = None, seed: int = 0) -> RoutingTrace:
    """A routing trace drawn from ``model``: every request's prefill and decode tokens in every
    layer (prefill and decode are separate streams of the same model: with ``request_affinity``
    they share the request's bias)."""
    req = np.asarray(requests, dtype=np.int64)
    dom = np.zeros(len(req), dtype=np.int64) if domains is None else np.asarray(domains, dtype=np.int64)
    cols: dict[str, list] = {k: [] for k in ("request", "domain", "phase", "layer", "token", "experts")}
    for phase, counts, stream in (("prefill", prefill_tokens, 0), ("decode", decode_tokens, 1)):
        n = np.asarray(counts, dtype=np.int64)
        tok_req = np.repeat(req, n)
        tok_dom = np.repeat(dom, n)
        tok_idx = np.concatenate([np.arange(k) for k in n]) if len(n) else np.zeros(0, dtype=np.int64)
        for layer in layers:
            ch = model.sample(num_experts, top_k, int(layer), requests=tok_req, domains=tok_dom, seed=seed,
                              stream=stream)
            cols["request"].append(tok_req)
            cols["domain"].append(tok_dom)
            cols["phase"].append(np.full(len(tok_req), phase, dtype=object))
            cols["layer"].append(np.full(len(tok_req), int(layer), dtype=np.int64))
            cols["token"].append(tok_idx)
            cols["experts"].append(ch)
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    return RoutingTrace(cat["request"].astype(np.int64), cat["domain"].astype(np.int64), cat["phase"],
                        cat["layer"].astype(np.int64), cat["token"].astype(np.int64),
                        cat["experts"].reshape(-1, top_k).astype(np.int32), int(num_experts))


def write_routing_trace(trace: RoutingTrace, path: str | Path) -> Path:
    """Write ``trace`` as Parquet (columns request, domain, phase, layer, token, experts; the
    number of experts in the file metadata), via a temporary file renamed into place."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.table({"request": pa.array(trace.request, pa.int64()), "domain": pa.array(trace.domain, pa.int32()),
                      "phase": pa.array(trace.phase.astype(str)), "layer": pa.array(trace.layer, pa.int32()),
                      "token": pa.array(trace.token, pa.int64()),
                      "experts": pa.FixedSizeListArray.from_arrays(pa.array(trace.experts.ravel(), pa.int32()),
                                                                   trace.top_k)})
    table = table.replace_schema_metadata({"cosim.routing_trace": json.dumps({"version": 1,
                                                                              "num_experts": trace.num_experts})})
    from cosim.io_atomic import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_routing_trace(path: str | Path) -> RoutingTrace:
    """Read a routing trace written by :func:`write_routing_trace` (or any Parquet file with
    its columns; ``num_experts`` from the metadata, else the largest id + 1), checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise RoutingTraceError(f"{path}: not a readable Parquet routing trace ({exc})") from None
    need = ("request", "domain", "phase", "layer", "token", "experts")
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise RoutingTraceError(f"{path}: missing column(s) {', '.join(missing)}; a routing trace has {', '.join(need)}")
    experts_col = table.column("experts").combine_chunks()
    try:
        lengths = {len(v) for v in experts_col.to_pylist()[:1000]}
        experts = np.array(experts_col.to_pylist(), dtype=np.int64)
    except (TypeError, ValueError):
        raise RoutingTraceError(f"{path}: column experts must hold one list of expert ids per row") from None
    if len(lengths) > 1 or experts.ndim != 2:
        raise RoutingTraceError(f"{path}: every row must list the same number (top-k) of experts")
    phase = np.array(table.column("phase").to_pylist(), dtype=object)
    bad = set(phase.tolist()) - set(PHASES)
    if bad:
        raise RoutingTraceError(f"{path}: phase must be one of {', '.join(PHASES)}, got {sorted(map(str, bad))[0]!r}")
    meta = (table.schema.metadata or {}).get(b"cosim.routing_trace")
    num_experts = int(json.loads(meta)["num_experts"]) if meta else int(experts.max()) + 1 if experts.size else 0
    if experts.size and (experts.min() < 0 or experts.max() >= num_experts):
        raise RoutingTraceError(f"{path}: expert ids must be in 0..{num_experts - 1}")
    if experts.size and (np.diff(np.sort(experts, axis=1), axis=1) == 0).any():
        raise RoutingTraceError(f"{path}: a token lists the same expert twice")
    return RoutingTrace(np.asarray(table.column("request").to_numpy(), dtype=np.int64),
                        np.asarray(table.column("domain").to_numpy(), dtype=np.int64), phase,
                        np.asarray(table.column("layer").to_numpy(), dtype=np.int64),
                        np.asarray(table.column("token").to_numpy(), dtype=np.int64), experts.astype(np.int32),
                        num_experts)


# ---------------------------------------------------------------------------------------------
# Load counts


@dataclass(frozen=True)
class LoadCounts:
    """Tokens routed to each expert in each layer: ``counts[i, e]`` for layer ``layers[i]``."""

    layers: tuple[int, ...]
    counts: np.ndarray

    def popularity(self, layer: int) -> np.ndarray:
        """Share of the layer's selections each expert received."""
        c = self.counts[self.layers.index(layer)].astype(np.float64)
        return c / c.sum() if c.sum() else np.full(len(c), 1.0 / len(c))

    def stats(self) -> list[ImbalanceStats]:
        return [imbalance(row) for row in self.counts]


def write_load_counts(counts: LoadCounts, path: str | Path) -> Path:
    """Write ``layer, expert, count`` rows as Parquet (``.parquet``) or CSV (``.csv``)."""
    import pyarrow as pa

    path = Path(path)
    layers = np.repeat(np.asarray(counts.layers, dtype=np.int64), counts.counts.shape[1])
    experts = np.tile(np.arange(counts.counts.shape[1], dtype=np.int64), len(counts.layers))
    table = pa.table({"layer": layers, "expert": experts, "count": counts.counts.ravel().astype(np.int64)})
    if path.suffix not in (".csv", ".parquet"):
        raise RoutingTraceError(f"{path}: load counts are written as .parquet or .csv")
    from cosim.io_atomic import atomic_path

    with atomic_path(path) as tmp:  # a killed writer leaves the earlier file, never a torn one
        if path.suffix == ".csv":
            import pyarrow.csv as pc

            pc.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
    return path


def read_load_counts(path: str | Path) -> LoadCounts:
    """Per-layer expert load counts from Parquet / CSV (``layer, expert, count``) or JSON
    (``{"logical_count": [[...], ...]}``: one list of per-expert counts per layer, layers
    numbered from 0, SGLang's expert-distribution recorder ``stat`` dump)."""
    path = Path(path)
    if not path.is_file():
        raise RoutingTraceError(f"{path}: no such load-count file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            rows = data["logical_count"]
            counts = np.asarray(rows, dtype=np.float64)
        except (ValueError, KeyError, TypeError):
            raise RoutingTraceError(f"{path}: expected JSON {{\"logical_count\": [[counts of layer 0], ...]}}") from None
        if counts.ndim == 3:  # a recorder dump with a leading (forward pass) axis: sum it
            counts = counts.sum(axis=0)
        if counts.ndim != 2 or (counts < 0).any() or not np.isfinite(counts).all():
            raise RoutingTraceError(f"{path}: logical_count must be a layers x experts array of counts >= 0")
        return LoadCounts(tuple(range(counts.shape[0])), counts.astype(np.int64))
    import pyarrow as pa

    try:
        if path.suffix == ".csv":
            import pyarrow.csv as pc

            table = pc.read_csv(path)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise RoutingTraceError(f"{path}: unreadable load counts ({exc})") from None
    missing = [c for c in ("layer", "expert", "count") if c not in table.column_names]
    if missing:
        raise RoutingTraceError(f"{path}: missing column(s) {', '.join(missing)} (expected layer, expert, count)")
    layer = table.column("layer").to_numpy().astype(np.int64)
    expert = table.column("expert").to_numpy().astype(np.int64)
    count = table.column("count").to_numpy().astype(np.float64)
    if (expert < 0).any() or (count < 0).any() or not np.isfinite(count).all():
        raise RoutingTraceError(f"{path}: expert ids and counts must be >= 0")
    layers = tuple(sorted(int(v) for v in np.unique(layer)))
    out = np.zeros((len(layers), int(expert.max()) + 1 if len(expert) else 0), dtype=np.int64)
    np.add.at(out, (np.searchsorted(layers, layer), expert), count.astype(np.int64))
    return LoadCounts(layers, out)


# ---------------------------------------------------------------------------------------------
# Routing of a step's MoE layers


@dataclass(frozen=True)
class StepRouting:
    """Where a step's MoE routing comes from (``StepSpec.routing``): a ``model`` drawn for every
    MoE layer, or a routing trace replayed (``trace_path``, identified by the digest of its
    content, so a changed file is a different routing).

    In a step, each source rank holds ``tokens`` tokens; with a model every token is a request of
    its own (domain ``request % domains`` for ``domain_mixture``; with ``grouping`` the home
    domain of its rank, :func:`cosim.trace.placement.rank_domains`, for a share
    ``grouping_purity`` of the rank's tokens, the other domains evenly for the rest), drawn in
    stream ``micro-batch``; a trace gives layer ``L``'s rows of ``phase`` in file order (cycled when the
    step has more tokens than the trace), the first ``tokens`` to source rank 0, the next to rank
    1 ... :func:`step_routing_trace` writes down exactly what a model draws for a step, so its
    replay is the same routing (tested: the same step time)."""

    model: RoutingModel | None = None
    trace_path: str | None = None
    trace_digest: str = ""
    phase: str = "decode"
    seed: int = 0
    placement: str = "contiguous"
    grouping: bool = False
    grouping_purity: float = 1.0
    stats_tokens: int = 8192

    def __post_init__(self) -> None:
        from cosim.trace.placement import PLACEMENTS

        if (self.model is None) == (self.trace_path is None):
            raise ConfigError("<api>", "routing", "give a routing model or a routing trace, not both")
        if self.phase not in PHASES:
            raise ConfigError("<api>", "routing.phase", f"expected one of {', '.join(PHASES)}, got {self.phase!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError("<api>", "routing.placement", f"expected one of {', '.join(PLACEMENTS)}, "
                                                            f"got {self.placement!r}")
        if self.grouping and not isinstance(self.model, DomainMixture):
            raise ConfigError("<api>", "routing.grouping", "domain grouping needs the domain_mixture routing model")
        p = self.grouping_purity
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError("<api>", "routing.grouping_purity", f"expected a share 0..1 of a rank's tokens in its "
                                                                  f"home domain, got {p!r}")

    @classmethod
    def from_trace(cls, path: str | Path, phase: str = "decode") -> StepRouting:
        """Replay the routing trace at ``path`` (read and checked now)."""
        path = Path(path)
        read_routing_trace(path)
        return cls(trace_path=str(path), trace_digest=hashlib.sha256(path.read_bytes()).hexdigest()[:16], phase=phase)

    def describe(self) -> str:
        if self.model is not None:
            params = ",".join(f"{k}={v}" for k, v in self.model.__dict__.items())
            what = f"{self.model.kind}({params})"
        else:
            what = f"trace:{self.trace_path}@{self.trace_digest}"
        return what + (f"; placement {self.describe_placement()}" if self.placement != "contiguous" or self.grouping
                       else "")

    def describe_placement(self) -> str:
        if not self.grouping:
            return self.placement
        return self.placement + " + grouping" + (f" (purity {self.grouping_purity:g})" if self.grouping_purity < 1
                                                  else "")

    def choices(self, layer: int, sources: int, tokens: int, num_experts: int, top_k: int,
                expert_node: tuple[int, ...] | None = None, stream: int = 0,
                source_node: tuple[int, ...] | None = None) -> list[np.ndarray]:
        """Per source rank, the ``[tokens, top_k]`` expert ids of layer ``layer`` (class
        docstring); ``source_node``: node of every source rank (domain grouping)."""
        flat = _step_choices(self, int(layer), int(sources), int(tokens), int(num_experts), int(top_k), expert_node,
                             int(stream), source_node if self.grouping else None)
        return [flat[s * tokens:(s + 1) * tokens] for s in range(sources)]

    def owner(self, layer: int, num_experts: int, top_k: int, ep: int, rank_node: tuple[int, ...]) -> np.ndarray | None:
        """Rank of every expert of ``layer`` under :attr:`placement` (``None``: contiguous), from
        statistics of the routing itself (:func:`_layer_stats`)."""
        if self.placement == "contiguous":
            return None
        return _owner(self, int(layer), int(num_experts), int(top_k), int(ep), tuple(rank_node))

    def replicas(self, layer: int, num_experts: int, top_k: int, ep: int, redundant: int):
        """EPLB's replicas of ``layer``'s experts (``redundant`` extra slots) from statistics of
        the routing itself (:func:`cosim.trace.placement.eplb_replicas`); needs ``placement``
        ``eplb``."""
        if self.placement != "eplb":
            raise ConfigError("<api>", "routing.placement", f"redundant experts are placed by EPLB: use placement "
                                                            f"'eplb', not {self.placement!r}")
        return _replicas(self, int(layer), int(num_experts), int(top_k), int(ep), int(redundant))


@lru_cache(maxsize=512)
def _trace(path: str, digest: str) -> RoutingTrace:
    return read_routing_trace(path)


def _layer_stats(routing: StepRouting, layer: int, num_experts: int, top_k: int):
    """Routing statistics of a layer for placement: ``stats_tokens`` tokens drawn from the model
    (domains evenly, their own stream) or the trace's rows of the layer."""
    from cosim.trace.placement import LayerStats

    if routing.model is not None:
        m = routing.model
        domains = m.domains if isinstance(m, DomainMixture) else 1
        ids = np.arange(routing.stats_tokens, dtype=np.int64)
        dom = ids % domains
        ch = m.sample(num_experts, top_k, layer, requests=ids, domains=dom if domains > 1 else None,
                      seed=routing.seed, stream=1_000_003)
        return LayerStats.of(ch, dom, num_experts, domains)
    trace = _trace(routing.trace_path, routing.trace_digest)
    mask = trace.layer == layer
    dom = trace.domain[mask]
    return LayerStats.of(trace.experts[mask], dom, num_experts, int(dom.max()) + 1 if len(dom) else 1)


@lru_cache(maxsize=1024)
def _owner(routing: StepRouting, layer: int, num_experts: int, top_k: int, ep: int,
           rank_node: tuple[int, ...]) -> np.ndarray:
    from cosim.trace.placement import place

    out = place(routing.placement, _layer_stats(routing, layer, num_experts, top_k), ep, rank_node)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1024)
def _replicas(routing: StepRouting, layer: int, num_experts: int, top_k: int, ep: int, redundant: int):
    from cosim.trace.placement import eplb_replicas

    return eplb_replicas(_layer_stats(routing, layer, num_experts, top_k), redundant, ep)


def _grouped_domains(routing: StepRouting, domains: int, source_node: tuple[int, ...], tokens: int,
                     stream: int) -> np.ndarray:
    """Domain of every token of a grouped step: its rank's home domain for a share
    ``grouping_purity`` (drawn per token, the same in every layer), another domain evenly
    otherwise."""
    from cosim.trace.placement import rank_domains

    home = np.repeat(rank_domains(source_node, domains), tokens)
    if routing.grouping_purity >= 1.0 or domains == 1:
        return home
    rng = _stream(routing.seed, 5, stream)
    away = rng.random(len(home)) >= routing.grouping_purity
    other = (home + 1 + rng.integers(0, domains - 1, size=len(home))) % domains
    return np.where(away, other, home)


@lru_cache(maxsize=4096)
def _step_choices(routing: StepRouting, layer: int, sources: int, tokens: int, num_experts: int, top_k: int,
                  expert_node: tuple[int, ...] | None, stream: int,
                  source_node: tuple[int, ...] | None = None) -> np.ndarray:
    n = sources * tokens
    if routing.model is not None:
        m = routing.model
        ids = np.arange(n, dtype=np.int64)
        domains = None
        if isinstance(m, DomainMixture):
            # grouping: a source rank's tokens belong to its home domain (the domains of its node)
            domains = (_grouped_domains(routing, m.domains, source_node, tokens, stream)
                       if source_node is not None else ids % m.domains)
        out = m.sample(num_experts, top_k, layer, requests=ids, domains=domains, seed=routing.seed, stream=stream,
                       expert_node=expert_node)
    else:
        trace = _trace(routing.trace_path, routing.trace_digest)
        if trace.num_experts != num_experts or trace.top_k != top_k:
            raise ConfigError(routing.trace_path, "experts", f"the trace routes top-{trace.top_k} of "
                                                             f"{trace.num_experts} experts; the model has top-{top_k} "
                                                             f"of {num_experts}")
        rows = trace.choices(layer, routing.phase)
        if not len(rows):
            raise ConfigError(routing.trace_path, "layer", f"no {routing.phase} routing for MoE layer {layer}")
        out = rows[np.arange(n) % len(rows)] if n else rows[:0]
    out = np.ascontiguousarray(out, dtype=np.int32)
    out.setflags(write=False)
    return out


def step_routing_trace(routing: StepRouting, layers: Sequence[int], sources: int, tokens: int, num_experts: int,
                       top_k: int, expert_node: tuple[int, ...] | None = None, stream: int = 0) -> RoutingTrace:
    """The routing a model draws for a step (``sources`` ranks of ``tokens`` tokens, MoE
    ``layers``) as a routing trace whose replay (:meth:`StepRouting.from_trace`) is the same."""
    rows = [(layer, np.concatenate(routing.choices(layer, sources, tokens, num_experts, top_k, expert_node, stream)))
            for layer in layers]
    n = sources * tokens
    return RoutingTrace(np.tile(np.arange(n, dtype=np.int64), len(layers)), np.zeros(n * len(layers), dtype=np.int64),
                        np.full(n * len(layers), routing.phase, dtype=object),
                        np.repeat(np.asarray(layers, dtype=np.int64), n), np.zeros(n * len(layers), dtype=np.int64),
                        np.concatenate([r for _, r in rows]).reshape(-1, top_k), num_experts)
