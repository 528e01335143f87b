"""Design points: the cartesian product of an experiment's space, one deployment each.

A :class:`DesignPoint` is frozen and hashable; its :attr:`~DesignPoint.key` is a digest of
everything its result depends on (the deployment document, the workload, the SLO, the load
search and the seed), stable across processes and runs: that is what lets a resumed run skip the
points it finished. Each serving mode has a point builder registered in :data:`MODE_BUILDERS`
(``aggregated``, ``pd``, ``pd+afd``, ``aggregated+afd``) that turns the space into deployment
documents (the YAML schema of :mod:`cosim.serving.deployment`) using at most the GPU budget:

- ``aggregated``: ``budget // replica GPUs`` mixed replicas of each layout, chunked prefill with
  each ``token_budget`` and ``max_batch`` (no MTP: mixed steps with MTP are not modelled);
- ``pd``: a prefill pool of ``prefill_gpus`` (whole replicas of a layout) and a decode pool of
  the rest (whole replicas of a layout), every pair of layouts;
- ``pd+afd``: the same prefill pool and AFD decode replicas of ``afd.gpus`` GPUs split
  ``attention_gpus`` : the rest, each micro-batch count;
- ``aggregated+afd``: mixed AFD replicas (prefill chunks on the attention group).

Combinations that cannot be built (a pool that is not a whole number of replicas, no GPU left
for decode, an attention group as large as the replica, MTP on AFD, with chunked prefill or on a model
without MTP layers) are not points; they are counted in :class:`Enumeration`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Callable, Iterator

from cosim.explore.spec import ExperimentSpec, WorkloadEntry
from cosim.models import Parallelism
from cosim.registry import Registry


@dataclass(frozen=True)
class DesignPoint:
    """One deployment of the sweep under one workload.

    Attributes:
        model / topology / workload / mode: what it is.
        deployment: the deployment document as canonical JSON (``json.loads`` it, or
            :meth:`deployment_dict`).
        labels: descriptive columns for tables (layouts, pool sizes, split, limits), as strings.
        context: the experiment's identity (load search, seed, framework, system).
    """

    model: str
    topology: str
    workload: str
    mode: str
    deployment: str
    labels: tuple[tuple[str, str], ...] = ()
    context: str = field(default="", repr=False)

    @property
    def key(self) -> str:
        """Stable digest of what the point's result depends on."""
        payload = json.dumps([self.deployment, self.workload, self.context], sort_keys=True)
        return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()

    def deployment_dict(self) -> dict:
        return json.loads(self.deployment)

    def label(self, name: str, default: str = "") -> str:
        return dict(self.labels).get(name, default)


@dataclass
class Enumeration:
    """The points of an experiment and what was left out while building them."""

    points: list[DesignPoint]
    skipped: dict[str, int]


#: Point builders by serving mode: ``fn(spec, budget) -> iterator of (pools, labels)`` or a
#: skip reason string.
MODE_BUILDERS = Registry("serving mode")
register_mode = MODE_BUILDERS.register


def _par(p: Parallelism) -> dict:
    return {"tp": p.tp, "ep": p.ep, "dp_attention": p.dp_attention, "pp": p.pp}


def _layout(p: Parallelism) -> str:
    return f"TP{p.tp}/EP{p.ep}" + (" DP-attn" if p.dp_attention else "") + (f" PP{p.pp}" if p.pp > 1 else "")


def _mixed(spec: ExperimentSpec, par: Parallelism | None, replicas: int, budget: int, batch: int, mtp: int,
           afd: dict | None = None) -> dict:
    pool = {"name": "agg", "role": "mixed", "replicas": replicas,
            "batching": {"policy": "chunked_prefill", "token_budget": budget, "max_batch": batch}}
    if afd is not None:
        pool["afd"] = afd
    else:
        pool["parallel"] = _par(par)
    if mtp:
        pool.update(mtp_tokens=mtp, mtp_acceptance=spec.space.mtp_acceptance)
    return pool if afd is not None else _placed(pool, spec.space.placement)


def _prefill(spec: ExperimentSpec, par: Parallelism, replicas: int, budget: int) -> dict:
    return _placed({"name": "prefill", "role": "prefill", "replicas": replicas, "parallel": _par(par),
                    "batching": {"policy": "prefill_only", "token_budget": budget, "max_batch": 256}},
                   spec.space.placement)


def _afd_splits(spec: ExperimentSpec) -> Iterator[tuple[int, int, int, str] | str]:
    a = spec.space.afd
    for g, na, m, place in itertools.product(a.gpus, a.attention_gpus, a.micro_batches, a.placement):
        if na >= g:
            yield "attention group as large as the AFD replica"
            continue
        yield g, na, m, place


def _placed(pool: dict, placement: str) -> dict:
    """``pool`` with its placement (the default ``packed`` is left out of the document, so the
    points of experiments that do not sweep it keep their keys)."""
    if placement != "packed":
        pool["placement"] = placement
    return pool


@register_mode("aggregated")
def _aggregated(spec: ExperimentSpec, budget_gpus: int):
    s = spec.space
    for par, tb, mb, mtp in itertools.product(s.replicas, s.token_budget, s.max_batch, s.mtp):
        n = budget_gpus // par.num_gpus
        if n < 1:
            yield f"replica of {par.num_gpus} GPUs above the budget"
            continue
        if mtp:
            yield "MTP with chunked prefill (mixed steps) is not modelled"
            continue
        yield ([_mixed(spec, par, n, tb, mb, mtp)],
               {"pools": f"{n} x {_layout(par)}", "gpus_used": str(n * par.num_gpus), "token_budget": str(tb),
                "max_batch": str(mb), "mtp": str(mtp)})


def _prefill_pools(spec: ExperimentSpec, budget_gpus: int):
    layouts = spec.space.prefill_replicas or spec.space.replicas
    for par, pg in itertools.product(layouts, spec.space.prefill_gpus):
        if pg % par.num_gpus:
            yield f"prefill GPUs not a multiple of the replica's {par.num_gpus}"
        elif pg >= budget_gpus:
            yield "no GPU left for decode"
        else:
            yield par, pg


@register_mode("pd")
def _pd(spec: ExperimentSpec, budget_gpus: int):
    s = spec.space
    for pre in _prefill_pools(spec, budget_gpus):
        if isinstance(pre, str):
            yield pre
            continue
        ppar, pg = pre
        for dpar, tb, mb, mtp in itertools.product(s.replicas, s.token_budget, s.max_batch, s.mtp):
            nd = (budget_gpus - pg) // dpar.num_gpus
            if nd < 1:
                yield f"decode replica of {dpar.num_gpus} GPUs above the GPUs left"
                continue
            dec = _placed({"name": "decode", "role": "decode", "replicas": nd, "parallel": _par(dpar),
                           "batching": {"policy": "decode_only", "max_batch": mb}}, s.placement)
            if mtp:
                dec.update(mtp_tokens=mtp, mtp_acceptance=s.mtp_acceptance)
            yield ([_prefill(spec, ppar, pg // ppar.num_gpus, tb), dec],
                   {"pools": f"prefill {pg // ppar.num_gpus} x {_layout(ppar)}; decode {nd} x {_layout(dpar)}",
                    "gpus_used": str(pg + nd * dpar.num_gpus), "prefill_gpus": str(pg), "token_budget": str(tb),
                    "max_batch": str(mb), "mtp": str(mtp)})


@register_mode("pd+afd")
def _pd_afd(spec: ExperimentSpec, budget_gpus: int):
    s = spec.space
    for pre in _prefill_pools(spec, budget_gpus):
        if isinstance(pre, str):
            yield pre
            continue
        ppar, pg = pre
        for split, tb, mb, mtp in itertools.product(_afd_splits(spec), s.token_budget, s.max_batch, s.mtp):
            if isinstance(split, str):
                yield split
                continue
            if mtp:
                yield "MTP with an AFD decode pool is not modelled"
                continue
            g, na, m, place = split
            nd = (budget_gpus - pg) // g
            if nd < 1:
                yield f"AFD replica of {g} GPUs above the GPUs left"
                continue
            dec = _placed({"name": "decode", "role": "decode", "replicas": nd,
                           "afd": {"attention_gpus": na, "ffn_gpus": g - na, "micro_batches": m},
                           "batching": {"policy": "decode_only", "max_batch": mb}}, place)
            yield ([_prefill(spec, ppar, pg // ppar.num_gpus, tb), dec],
                   {"pools": f"prefill {pg // ppar.num_gpus} x {_layout(ppar)}; decode {nd} x AFD {na}A+{g - na}F "
                             f"m={m}", "gpus_used": str(pg + nd * g), "prefill_gpus": str(pg),
                    "afd_split": f"{na}:{g - na}", "micro_batches": str(m), "afd_placement": place,
                    "token_budget": str(tb), "max_batch": str(mb), "mtp": "0"})


@register_mode("aggregated+afd")
def _aggregated_afd(spec: ExperimentSpec, budget_gpus: int):
    s = spec.space
    for split, tb, mb, mtp in itertools.product(_afd_splits(spec), s.token_budget, s.max_batch, s.mtp):
        if isinstance(split, str):
            yield split
            continue
        if mtp:
            yield "MTP with the AFD layout is not modelled"
            continue
        g, na, m, place = split
        n = budget_gpus // g
        if n < 1:
            yield f"AFD replica of {g} GPUs above the budget"
            continue
        afd = {"attention_gpus": na, "ffn_gpus": g - na, "micro_batches": m}
        yield ([_placed(_mixed(spec, None, n, tb, mb, 0, afd=afd), place)],
               {"pools": f"{n} x AFD {na}A+{g - na}F m={m}", "gpus_used": str(n * g), "afd_split": f"{na}:{g - na}",
                "micro_batches": str(m), "afd_placement": place, "token_budget": str(tb), "max_batch": str(mb),
                "mtp": "0"})


def enumerate_points(spec: ExperimentSpec) -> Enumeration:
    """Every design point of ``spec`` (models x topologies x workloads x modes x the mode's
    space), in a deterministic order, and the count of each reason a combination was left out."""
    points: list[DesignPoint] = []
    skipped: dict[str, int] = {}
    context = spec.identity()
    mtp_layers = {m: _mtp_layers(m) for m in spec.models}
    for model, topo, wl, mode in itertools.product(spec.models, spec.topologies, spec.workloads, spec.space.modes):
        build: Callable = MODE_BUILDERS[mode]
        for made in build(spec, spec.gpus):
            if isinstance(made, str):
                skipped[made] = skipped.get(made, 0) + 1
                continue
            pools, labels = made
            if mtp_layers[model] == 0 and any(p.get("mtp_tokens") for p in pools):
                why = "MTP on a model without MTP layers"
                skipped[why] = skipped.get(why, 0) + 1
                continue
            doc = {"model": model, "topology": spec.topology_ref(topo), "framework": spec.framework, "pools": pools}
            if spec.system:
                doc["system"] = spec.system
            wl_identity = json.dumps([wl.spec.to_dict(), wl.slo.ttft_s, wl.slo.tpot_s,
                                      wl.spec.trace.sha256 if wl.spec.trace is not None else None], sort_keys=True,
                                     default=str)
            points.append(DesignPoint(model, topo, wl.name, mode, json.dumps(doc, sort_keys=True),
                                      tuple(sorted(labels.items())), context + wl_identity))
    # a workload is given once per name; the same point twice (duplicate space values) once
    unique = list({p.key: p for p in points}.values())
    if len(unique) < len(points):
        skipped["duplicate combination"] = len(points) - len(unique)
    return Enumeration(unique, skipped)


def _mtp_layers(model: str) -> int | None:
    """The model's MTP layers (``None`` when its config cannot be read: its points are then
    built and fail with the loader's error as ``invalid`` rows)."""
    from cosim.errors import CosimError
    from cosim.models import load_model

    try:
        return load_model(model).num_mtp_layers
    except CosimError:
        return None


def workload_of(spec: ExperimentSpec, point: DesignPoint) -> WorkloadEntry:
    """The experiment's workload entry a point is evaluated under."""
    return next(w for w in spec.workloads if w.name == point.workload)
