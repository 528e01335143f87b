"""Deployments: pools of model replicas placed on a topology's GPUs, and their memory.

A :class:`Deployment` is a model, a kernel-table system, a topology and one or more
:class:`PoolSpec`. Each pool has a role (:data:`ROLES`: ``mixed`` serves whole requests with
chunked prefill, ``prefill`` and ``decode`` split them, P/D disaggregation), a parallel layout of
one replica (TP/EP/DP-attention, or an AFD layout for a decode or mixed pool), a replica count, a
batching policy (:mod:`cosim.serving.batching`) and, optionally, explicit GPUs. Pools without
GPUs get the next free GPUs of the topology in order.

Memory per GPU of every pool (:func:`pool_memory`): weights of the layout, an activation reserve
and a fixed reserve (CUDA graphs, workspace, allocator slack) against HBM times
``memory_fraction``; what is left holds the KV cache, in tokens per attention rank
(:attr:`PoolMemory.kv_capacity_tokens`). A pool whose weights do not fit is infeasible with its
reason (:attr:`PoolMemory.reason`), never a crash.

The YAML schema (``docs/serving.md``)::

    model: deepseek-ai/DeepSeek-V3
    topology: h200-hgx-8node           # preset or file
    system: h200_sxm                   # default: the topology's GPUs
    framework: trtllm
    pools:
      - name: prefill
        role: prefill
        replicas: 2
        parallel: {tp: 8, ep: 8, dp_attention: true}
        batching: {policy: prefill_only, token_budget: 16384}
      - name: decode
        role: decode
        replicas: 1
        parallel: {tp: 16, ep: 16, dp_attention: true}
        batching: {policy: decode_only, max_batch: 128}
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cosim.errors import ConfigError
from cosim.models import ModelSpec, Parallelism, Precision, kv_cache_bytes_per_token
from cosim.models.memory import activation_bytes_per_gpu
from cosim.topology import Topology
from cosim.topology.loader import Fields, as_float, as_int, as_str
from cosim.trace.builder import AfdSpec, StepSpec
from cosim.trace.expert_routing import StepRouting
from cosim.units import parse_gpu_ranks

Role = Literal["mixed", "prefill", "decode"]
#: Pool roles.
ROLES = ("mixed", "prefill", "decode")
#: How a pool's replicas take their GPUs when ``gpus`` is not given: ``packed``, the next free
#: GPUs in order (attention group first for AFD); ``nvlink``, every replica inside one scale-up
#: (NVLink) domain, so AFD's A2F/F2A and the replica's collectives stay on NVLink; ``rdma``, an
#: AFD replica's attention group in one domain and its FFN group in another, so A2F/F2A cross
#: the scale-out fabric.
PLACEMENTS = ("packed", "nvlink", "rdma")
#: Default fixed reserve per GPU (CUDA graphs, NCCL/DeepEP buffers, workspace).
DEFAULT_RESERVE_BYTES = 4 * 2**30
#: Default share of HBM the serving engine may use (vLLM/SGLang ``mem_fraction_static`` style).
DEFAULT_MEMORY_FRACTION = 0.90


@dataclass(frozen=True)
class BatchingSpec:
    """A batching policy by name (:data:`cosim.serving.batching.POLICIES`) and its limits.

    Attributes:
        policy: ``chunked_prefill`` (mixed pools), ``prefill_only``, ``decode_only``.
        token_budget: most new tokens per step per attention rank (prefill chunks + decodes).
        max_batch: most requests per attention rank decoding at once.
    """

    policy: str = "chunked_prefill"
    token_budget: int = 8192
    max_batch: int = 256

    def __post_init__(self) -> None:
        for name in ("token_budget", "max_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError("<api>", f"batching.{name}", f"expected an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class PoolSpec:
    """One pool: ``replicas`` identical model replicas of ``parallel`` (or an AFD layout).

    Attributes:
        name: unique in the deployment.
        role: ``mixed``, ``prefill`` or ``decode``.
        parallel: one replica's layout (colocated); for AFD the parallelism is in ``afd``.
        replicas: data-parallel copies behind the pool's router.
        batching: the policy and its limits.
        afd: attention-FFN disaggregation of a decode (or mixed-decode) replica.
        gpus: explicit topology GPUs of all replicas, replica after replica (``None``: chosen by
            ``placement``).
        placement: how the replicas take free GPUs when ``gpus`` is not given (:data:`PLACEMENTS`).
        routing: the MoE routing of the pool's steps (a routing model or a replayed routing trace,
            with an expert placement policy and domain grouping: ``docs/routing.md``); ``None``:
            the default routing sample.
        moe_library: MoE dispatch/combine library of the replica's steps (``auto``).
        mtp_tokens / mtp_acceptance: speculative decoding with the model's MTP layers: drafts
            verified per step and the mean accepted fraction (tokens per decode step =
            ``1 + mtp_tokens * mtp_acceptance`` on average).
        memory_fraction / reserve_bytes: the share of HBM the engine uses and the fixed reserve.
    """

    name: str
    role: Role
    parallel: Parallelism = Parallelism(tp=8, ep=8, dp_attention=True)
    replicas: int = 1
    batching: BatchingSpec = BatchingSpec()
    afd: AfdSpec | None = None
    gpus: tuple[int, ...] | None = None
    placement: str = "packed"
    routing: StepRouting | None = None
    moe_library: str = "auto"
    mtp_tokens: int = 0
    mtp_acceptance: float = 0.0
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    reserve_bytes: float = DEFAULT_RESERVE_BYTES

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError("<api>", f"pools.{self.name}.role", f"expected one of {list(ROLES)}, got {self.role!r}")
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ConfigError("<api>", f"pools.{self.name}.replicas", f"expected an integer >= 1, got {self.replicas!r}")
        if self.afd is not None and self.role == "prefill":
            raise ConfigError("<api>", f"pools.{self.name}.afd", "AFD is a decode layout; a prefill pool runs colocated")
        if not 0.0 <= self.mtp_acceptance <= 1.0:
            raise ConfigError("<api>", f"pools.{self.name}.mtp_acceptance", f"expected 0..1, got {self.mtp_acceptance!r}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ConfigError("<api>", f"pools.{self.name}.memory_fraction",
                              f"expected a fraction in (0, 1], got {self.memory_fraction!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError("<api>", f"pools.{self.name}.placement",
                              f"expected one of {list(PLACEMENTS)}, got {self.placement!r}")
        if self.placement == "rdma" and self.afd is None:
            raise ConfigError("<api>", f"pools.{self.name}.placement",
                              "'rdma' places an AFD replica's attention and FFN groups in different domains; "
                              "this pool has no afd layout")
        if self.gpus is not None and len(self.gpus) != self.num_gpus:
            raise ConfigError("<api>", f"pools.{self.name}.gpus", f"{self.replicas} replicas of {self.gpus_per_replica} "
                                                                  f"GPUs need {self.num_gpus} GPUs, {len(self.gpus)} given")

    @property
    def gpus_per_replica(self) -> int:
        return self.afd.num_gpus if self.afd is not None else self.parallel.num_gpus

    @property
    def num_gpus(self) -> int:
        return self.gpus_per_replica * self.replicas

    @property
    def attention_ranks(self) -> int:
        """Attention ranks (DP attention instances) of one replica: each holds its own requests."""
        if self.afd is not None:
            return self.afd.instances
        return self.parallel.attention_dp

    @property
    def tokens_per_decode_step(self) -> float:
        """Mean output tokens a decode step produces per request (MTP: 1 + accepted drafts)."""
        return 1.0 + self.mtp_tokens * self.mtp_acceptance


@dataclass(frozen=True)
class Deployment:
    """A model served by pools on a topology (see the module docstring)."""

    model: ModelSpec
    topology: Topology
    pools: tuple[PoolSpec, ...]
    system: str
    framework: str = "trtllm"
    precision: Precision | None = None
    source: str = "<api>"

    def __post_init__(self) -> None:
        names = [p.name for p in self.pools]
        if not self.pools:
            raise ConfigError(self.source, "pools", "a deployment needs at least one pool")
        if len(set(names)) != len(names):
            raise ConfigError(self.source, "pools", f"pool names must be unique, got {names}")
        roles = {p.role for p in self.pools}
        if "mixed" in roles and roles != {"mixed"}:
            raise ConfigError(self.source, "pools", "a deployment is aggregated (mixed pools) or disaggregated "
                                                    "(prefill + decode pools), not both")
        if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
            raise ConfigError(self.source, "pools", "P/D disaggregation needs a prefill pool and a decode pool")
        if self.precision is None:
            object.__setattr__(self, "precision", Precision.from_checkpoint(self.model))
        placed = self.placement()  # checks the GPUs
        object.__setattr__(self, "_placement", placed)

    @property
    def mode(self) -> str:
        """``aggregated`` or ``disaggregated`` (with ``+afd`` when a decode/mixed pool is AFD)."""
        base = "aggregated" if self.pools[0].role == "mixed" else "disaggregated"
        return base + ("+afd" if any(p.afd is not None for p in self.pools) else "")

    @property
    def num_gpus(self) -> int:
        return sum(p.num_gpus for p in self.pools)

    def placement(self) -> dict[str, list[tuple[int, ...]]]:
        """Topology GPUs of every replica of every pool (explicit GPUs first, then the next free
        ones in order); ConfigError when GPUs overlap or run out."""
        used: set[int] = set()
        out: dict[str, list[tuple[int, ...]]] = {}
        for p in self.pools:
            if p.gpus is not None:
                bad = [g for g in p.gpus if not 0 <= g < self.topology.num_gpus]
                if bad:
                    raise ConfigError(self.source, f"pools.{p.name}.gpus", f"GPU {bad[0]} does not exist: topology "
                                                                           f"{self.topology.name!r} has "
                                                                           f"{self.topology.num_gpus} GPUs")
                clash = used & set(p.gpus)
                if clash:
                    raise ConfigError(self.source, f"pools.{p.name}.gpus", f"GPU {min(clash)} is used by another pool")
                used |= set(p.gpus)
        free = [g for g in range(self.topology.num_gpus) if g not in used]
        for p in self.pools:
            gpus = list(p.gpus) if p.gpus is not None else None
            if gpus is None:
                if len(free) < p.num_gpus:
                    raise ConfigError(self.source, f"pools.{p.name}", f"needs {p.num_gpus} GPUs, only {len(free)} of "
                                                                      f"{self.topology.name!r} are left")
                if p.placement == "packed":
                    gpus, free = free[:p.num_gpus], free[p.num_gpus:]
                else:
                    gpus = self._place_in_domains(p, free)
                    taken = set(gpus)
                    free = [g for g in free if g not in taken]
            n = p.gpus_per_replica
            out[p.name] = [tuple(gpus[i * n:(i + 1) * n]) for i in range(p.replicas)]
        return out

    def _place_in_domains(self, pool: PoolSpec, free: list[int]) -> list[int]:
        """GPUs of every replica of ``pool`` under its ``nvlink`` / ``rdma`` placement, from
        ``free`` (in order; the first domain with room wins), replica after replica."""
        topo = self.topology
        domain_of = [topo.nodes[i].domain for i in topo.gpu_nodes]
        by_domain: dict[int, list[int]] = {}
        for g in free:
            by_domain.setdefault(-1 if domain_of[g] is None else domain_of[g], []).append(g)

        def take(count: int, avoid: int | None = None) -> tuple[int, list[int]]:
            for d, gs in by_domain.items():
                if d != avoid and len(gs) >= count:
                    got, by_domain[d] = gs[:count], gs[count:]
                    return d, got
            room = max((len(gs) for d, gs in by_domain.items() if d != avoid), default=0)
            where = "another scale-up domain than its attention group" if avoid is not None else "one scale-up domain"
            raise ConfigError(self.source, f"pools.{pool.name}.placement",
                              f"{pool.placement!r}: a group of {count} GPUs must fit in {where} of "
                              f"{topo.name!r}; the largest free share of a domain is {room} GPUs")

        out: list[int] = []
        for _ in range(pool.replicas):
            if pool.placement == "nvlink":
                out += take(pool.gpus_per_replica)[1]
            else:  # rdma: attention in one domain, FFN in another
                d, att = take(pool.afd.attention_gpus)
                out += att + take(pool.afd.ffn_gpus, avoid=d)[1]
        return out

    def step_spec(self, pool: PoolSpec, replica: int = 0) -> StepSpec:
        """The decode-step deployment of one replica (the step-time model's base): the pool's
        layout on its GPUs; batch and context are the model's query fields."""
        gpus = self._placement[pool.name][replica]
        if pool.afd is not None:
            return StepSpec(self.model, Parallelism(tp=1), self.precision, "generation", max(1, pool.afd.micro_batches),
                            layout="afd", afd=pool.afd, gpus=gpus, routing=pool.routing)
        return StepSpec(self.model, pool.parallel, self.precision, "generation", 1, gpus=gpus,
                        moe_library=pool.moe_library, mtp_tokens=pool.mtp_tokens, routing=pool.routing,
                        redundant_experts=pool.parallel.redundant_experts)


@dataclass(frozen=True)
class PoolMemory:
    """Memory per GPU of a pool and the KV capacity it leaves.

    Attributes:
        weight_bytes: weights on the most loaded GPU of a replica (AFD: the attention GPUs').
        activation_bytes: activation estimate at the pool's token budget.
        reserve_bytes: the fixed reserve.
        usable_bytes: HBM x memory fraction.
        kv_bytes_per_token: KV bytes one cached token takes on one attention GPU.
        kv_capacity_tokens: tokens of KV cache each attention rank holds (0 when infeasible).
        reason: why the pool does not fit (empty when it does).
    """

    weight_bytes: float
    activation_bytes: float
    reserve_bytes: float
    usable_bytes: float
    kv_bytes_per_token: float
    kv_capacity_tokens: int
    reason: str = ""

    @property
    def feasible(self) -> bool:
        return not self.reason


def pool_memory(dep: Deployment, pool: PoolSpec, hbm_bytes: float) -> PoolMemory:
    """Memory of one GPU of ``pool`` (see the module docstring); an infeasible pool gets its reason
    (how many GiB over) instead of raising."""
    from cosim.engine.step import layout_memory

    spec = dep.step_spec(pool)
    mem = layout_memory(spec, hbm_bytes)
    attention = mem.get("attention", mem.get("all"))
    weights = attention.weight_bytes
    if pool.afd is not None:
        apar = Parallelism(tp=pool.afd.attention_tp)
        ffn = mem["ffn"]
        ffn_need = ffn.total_bytes + pool.reserve_bytes
    else:
        apar = pool.parallel
        ffn_need = 0.0
    tokens = min(pool.batching.token_budget, 16384)
    act = activation_bytes_per_gpu(dep.model, apar, dep.precision, tokens, "context", 0)
    usable = hbm_bytes * pool.memory_fraction
    per_token = kv_cache_bytes_per_token(dep.model, apar, dep.precision)
    free = usable - weights - act - pool.reserve_bytes
    reason = ""
    if free <= 0:
        reason = (f"pool {pool.name!r}: weights {weights / 2**30:.1f} GiB + activations {act / 2**30:.1f} GiB + "
                  f"reserve {pool.reserve_bytes / 2**30:.1f} GiB exceed {usable / 2**30:.1f} GiB usable HBM by "
                  f"{-free / 2**30:.1f} GiB per GPU")
    elif ffn_need > usable:
        reason = (f"pool {pool.name!r}: the FFN GPUs need {ffn_need / 2**30:.1f} GiB, {usable / 2**30:.1f} GiB usable "
                  f"(over by {(ffn_need - usable) / 2**30:.1f} GiB)")
    capacity = 0 if reason else int(free // per_token)
    return PoolMemory(weights, act, pool.reserve_bytes, usable, per_token, capacity, reason)


# ------------------------------------------------------------------------------------- YAML


def _parallel(data: Any, source: str, path: str) -> Parallelism:
    f = Fields(data, source, path)
    p = Parallelism(tp=f.get("tp", as_int), ep=f.get("ep", as_int, None) or f.get("tp", as_int),
                    dp_attention=f.get("dp_attention", _as_bool, False), pp=f.get("pp", as_int, 1),
                    redundant_experts=f.get("redundant_experts", as_int, 0))
    f.finish()
    return p


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _afd(data: Any, source: str, path: str) -> AfdSpec:
    f = Fields(data, source, path)
    spec = AfdSpec(attention_gpus=f.get("attention_gpus", as_int), ffn_gpus=f.get("ffn_gpus", as_int),
                   micro_batches=f.get("micro_batches", as_int, 2), a2f=f.get("a2f", as_str, "routed"),
                   attention_tp=f.get("attention_tp", as_int, 1), ffn_tp=f.get("ffn_tp", as_int, 1),
                   shared_expert=f.get("shared_expert", as_str, "ffn"), dense_layers=f.get("dense_layers", as_str, "ffn"))
    f.finish()
    return spec


def _batching(data: Any, source: str, path: str, role: str) -> BatchingSpec:
    default = {"mixed": "chunked_prefill", "prefill": "prefill_only", "decode": "decode_only"}[role]
    f = Fields(data or {}, source, path)
    spec = BatchingSpec(policy=f.get("policy", as_str, default), token_budget=f.get("token_budget", as_int, 8192),
                        max_batch=f.get("max_batch", as_int, 256))
    f.finish()
    return spec


def _routing(data: Any, source: str, path: str, role: str) -> StepRouting:
    """``routing: {model: KIND[:param=value,...] | trace: FILE, placement: POLICY, grouping: BOOL,
    grouping_purity: SHARE}``."""
    from cosim.trace.expert_routing import routing_from

    f = Fields(data, source, path)
    model = f.get("model", as_str, None)
    trace = f.get("trace", as_str, None)
    placement = f.get("placement", as_str, "contiguous")
    grouping = f.get("grouping", _as_bool, False)
    purity = f.get("grouping_purity", as_float, 1.0)
    f.finish()
    if trace is not None and not Path(trace).is_absolute() and source not in ("<dict>", "<api>"):
        trace = str(Path(source).parent / trace)
    try:
        return routing_from(model, trace, "prefill" if role == "prefill" else "decode", placement, grouping, purity)
    except ConfigError as exc:
        raise ConfigError(source, f"{path}.{exc.field.split('.')[-1]}" if "." in exc.field else path,
                          exc.message) from None


def _gpus(v: Any) -> tuple[int, ...]:
    """``[0, 1, 2]`` or ``"0-7,16-23"``."""
    if isinstance(v, list):
        return tuple(as_int(x) for x in v)
    return tuple(parse_gpu_ranks(as_str(v)))


def _pool(data: Any, source: str, path: str) -> PoolSpec:
    f = Fields(data, source, path)
    role = f.get("role", as_str)
    if role not in ROLES:
        raise f.error("role", f"expected one of {list(ROLES)}, got {role!r}")
    afd = f.get("afd", lambda v: _afd(v, source, f"{path}.afd"), None)
    par = f.get("parallel", lambda v: _parallel(v, source, f"{path}.parallel"), None)
    if par is None and afd is None:
        raise f.error("parallel", "required field is missing (or give an afd layout)")
    try:
        pool = PoolSpec(
            name=f.get("name", as_str), role=role, parallel=par or Parallelism(tp=1),
            replicas=f.get("replicas", as_int, 1),
            batching=f.get("batching", lambda v: _batching(v, source, f"{path}.batching", role), None)
            or _batching(None, source, f"{path}.batching", role),
            afd=afd, gpus=f.get("gpus", _gpus, None), placement=f.get("placement", as_str, "packed"),
            routing=f.get("routing", lambda v: _routing(v, source, f"{path}.routing", role), None),
            moe_library=f.get("moe_library", as_str, "auto"),
            mtp_tokens=f.get("mtp_tokens", as_int, 0), mtp_acceptance=f.get("mtp_acceptance", as_float, 0.0),
            memory_fraction=f.get("memory_fraction", as_float, DEFAULT_MEMORY_FRACTION),
            reserve_bytes=f.get("reserve_gib", as_float, DEFAULT_RESERVE_BYTES / 2**30) * 2**30)
    except ConfigError as exc:
        if exc.source != "<api>":  # already names the file and the field
            raise
        raise ConfigError(source, f"{path}.{exc.field.split('.')[-1]}", exc.message) from None
    f.finish()
    return pool


def deployment_from_dict(data: Any, source: str = "<dict>") -> Deployment:
    """A :class:`Deployment` from its YAML document (strict: unknown keys and bad values are
    ConfigErrors naming the file and field)."""
    from cosim.models import load_model

    f = Fields(data, source, "")
    model = load_model(f.get("model", as_str))
    topo = _topology(f.get("topology", lambda v: v), source)
    system = f.get("system", as_str, None) or topo.gpu_system or "h200_sxm"
    framework = f.get("framework", as_str, "trtllm")
    raw = f.get("pools", lambda v: v if isinstance(v, list) and v else (_ for _ in ()).throw(
        ValueError("expected a non-empty list of pools")))
    precision = f.get("precision", lambda v: _precision(model, v, source), None)
    f.finish()
    pools = tuple(_pool(p, source, f"pools[{i}]") for i, p in enumerate(raw))
    return Deployment(model, topo, pools, system, framework, precision, source)


#: Topologies read by this process, by reference (file: path, modification time and size; inline
#: document: its JSON), oldest dropped first: the points of a sweep share one topology object (and
#: so its routes and digests) instead of reading and validating the file again at every point.
_TOPOLOGIES: OrderedDict[str, Topology] = OrderedDict()
_TOPOLOGIES_MAX = 16


def _topology(ref: Any, source: str) -> Topology:
    """``topology:`` is a preset name, a file, or an inline topology document (what a sweep over
    topology parameters writes). Read once per process and reference (:data:`_TOPOLOGIES`; an
    inline document's topology keeps the ``source`` label of the first deployment that read it)."""
    from cosim.topology import load_topology, topology_from_dict
    from cosim.topology.loader import resolve_topology_path

    if isinstance(ref, str) and ref:
        path = resolve_topology_path(ref)
        st = path.stat()
        key = json.dumps(["file", str(path.resolve()), st.st_mtime_ns, st.st_size])
        build = lambda: load_topology(path)  # noqa: E731
    elif isinstance(ref, dict):
        try:
            key = json.dumps(["document", ref], sort_keys=True)
        except (TypeError, ValueError):
            key = None  # not plain JSON: read it, the reader names what is wrong
        build = lambda: topology_from_dict(ref, source=f"{source}: topology")  # noqa: E731
    else:
        raise ConfigError(source, "topology", f"expected a preset name, a file or a topology document, got {ref!r}")
    if key is None:
        return build()
    topo = _TOPOLOGIES.get(key)
    if topo is None:
        topo = _TOPOLOGIES[key] = build()
        while len(_TOPOLOGIES) > _TOPOLOGIES_MAX:
            _TOPOLOGIES.popitem(last=False)
    return topo


def _precision(model: ModelSpec, data: Any, source: str) -> Precision:
    f = Fields(data, source, "precision")
    overrides = {k: f.get(k, as_str) for k in ("weights", "moe", "kv_cache", "dispatch", "combine") if k in data}
    f.finish()
    return Precision.from_checkpoint(model, **overrides)


def load_deployment(path: str | Path) -> Deployment:
    """Read a deployment YAML file (strict loader: see :mod:`cosim.topology.strict_yaml`)."""
    from cosim.topology.strict_yaml import load_yaml_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "deployment file not found")
    return deployment_from_dict(load_yaml_file(path), str(path))


def with_pool(dep: Deployment, name: str, **changes) -> Deployment:
    """A copy of ``dep`` with pool ``name`` changed (e.g. ``replicas=4``)."""
    pools = tuple(dataclasses.replace(p, **changes) if p.name == name else p for p in dep.pools)
    return dataclasses.replace(dep, pools=pools)


__all__ = ["ROLES", "BatchingSpec", "Deployment", "PoolMemory", "PoolSpec", "deployment_from_dict",
           "load_deployment", "pool_memory", "with_pool"]
