"""Experiment specs: what a design-space exploration sweeps, read strictly from YAML.

An experiment names the model(s), the topology (or topologies: a sweep over fabrics), a GPU
budget, the workloads with their SLOs, the design space (serving modes x replica layouts x pool
sizes x attention:FFN splits x micro-batches x batch limits x MTP) and how each point's load is
searched. The schema is in ``docs/experiments.md``; every field is read with the strict reader
of the topology loader (unknown keys with a did-you-mean, wrong types and YAML 1.1 oddities are
errors naming the file and the field)::

    name: quickstart
    model: Qwen/Qwen3-30B-A3B          # or models: [a, b]
    topology: h200-hgx-2node            # or topologies: [a, b] (presets or files)
    gpus: 16                            # GPU budget of every point
    workloads: [chat, {workload: coding, slo: {ttft_ms: 500, tpot_ms: 30}}]
    space:
      modes: [aggregated, pd, pd+afd, aggregated+afd]
      replicas: [{tp: 8, ep: 8, dp_attention: true}, {tp: 4}]
      prefill_gpus: [4, 8]
      afd: {gpus: [8], attention_gpus: [2, 4, 6], micro_batches: [2, 3]}
      max_batch: [16, 32]
      token_budget: [1024]
      mtp: [0]
    load: {concurrency: [1, 256], attainment: 0.9, steps: 6, requests_per_user: 4}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.errors import ConfigError
from cosim.models import Parallelism
from cosim.serving.deployment import PLACEMENTS
from cosim.serving.workload import SLO, WorkloadSpec, load_workload
from cosim.topology.loader import Fields, as_float, as_int, as_str

#: Serving modes an experiment may sweep (the point builders are registered in
#: :mod:`cosim.explore.space` under these names).
MODES = ("aggregated", "pd", "pd+afd", "aggregated+afd")


def _int_list(v: Any, minimum: int = 0) -> tuple[int, ...]:
    vals = v if isinstance(v, list) else [v]
    out = []
    for x in vals:
        x = as_int(x)
        if x < minimum:
            raise ValueError(f"expected integers >= {minimum}, got {x}")
        out.append(x)
    if not out:
        raise ValueError("expected at least one value")
    return tuple(dict.fromkeys(out))


def _str_list(v: Any) -> tuple[str, ...]:
    vals = v if isinstance(v, list) else [v]
    out = tuple(as_str(x) for x in vals)
    if not out:
        raise ValueError("expected at least one value")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class AfdSpace:
    """AFD replicas of the sweep: ``gpus`` per replica, split ``attention_gpus`` : the rest
    (any ratio), ``micro_batches`` each."""

    gpus: tuple[int, ...] = (8,)
    attention_gpus: tuple[int, ...] = (4,)
    micro_batches: tuple[int, ...] = (2,)
    placement: tuple[str, ...] = ("packed",)


@dataclass(frozen=True)
class Space:
    """The swept dimensions (cartesian product, per mode: see :mod:`cosim.explore.space`)."""

    modes: tuple[str, ...] = ("aggregated", "pd")
    replicas: tuple[Parallelism, ...] = (Parallelism(tp=8, ep=8, dp_attention=True),)
    prefill_replicas: tuple[Parallelism, ...] | None = None
    prefill_gpus: tuple[int, ...] = (8,)
    placement: str = "packed"
    afd: AfdSpace = AfdSpace()
    max_batch: tuple[int, ...] = (32,)
    token_budget: tuple[int, ...] = (1024,)
    mtp: tuple[int, ...] = (0,)
    mtp_acceptance: float = 0.8


@dataclass(frozen=True)
class LoadSearch:
    """How a point's load is chosen: the largest closed-loop concurrency in ``concurrency``
    whose SLO attainment is at least ``attainment``: from the low end the load grows by
    ``growth`` per run until the SLOs are missed, then ``steps`` bisection runs; each run
    ``max(requests_per_user x users, min_requests)`` requests."""

    concurrency: tuple[int, int] = (1, 256)
    attainment: float = 0.9
    steps: int = 3
    growth: int = 4
    requests_per_user: int = 4
    min_requests: int = 64


@dataclass(frozen=True)
class WorkloadEntry:
    """One workload of the experiment and the SLO its points are held to."""

    name: str
    spec: WorkloadSpec
    slo: SLO


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment (module docstring)."""

    name: str
    models: tuple[str, ...]
    topologies: tuple[str, ...]
    gpus: int
    workloads: tuple[WorkloadEntry, ...]
    space: Space = Space()
    load: LoadSearch = LoadSearch()
    system: str | None = None
    framework: str = "trtllm"
    seed: int = 0
    runner: str = "local"
    ray_address: str | None = None
    workers: int = 2
    source: str = field(default="<api>", compare=False)
    #: label -> what a deployment's ``topology:`` gets: the preset / file, or a variant document
    topology_refs: dict = field(default_factory=dict, compare=False)

    def topology_ref(self, label: str):
        """The deployment document's ``topology`` value of a topology label."""
        return self.topology_refs.get(label, label)

    def identity(self) -> str:
        """What the results of a point depend on besides the point (load search, seed): part of
        every point key, so a changed search never reuses old results."""
        load = self.load
        return json.dumps({"load": [list(load.concurrency), load.attainment, load.steps, load.growth,
                                    load.requests_per_user, load.min_requests], "seed": self.seed, "framework": self.framework,
                           "system": self.system}, sort_keys=True)


def _parallel(data: Any, source: str, path: str) -> Parallelism:
    f = Fields(data, source, path)
    tp = f.get("tp", as_int)
    par = Parallelism(tp=tp, ep=f.get("ep", as_int, tp), dp_attention=f.get("dp_attention", _bool, False),
                      pp=f.get("pp", as_int, 1))
    f.finish()
    return par


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _space(data: Any, source: str) -> Space:
    f = Fields(data, source, "space")
    modes = f.get("modes", _str_list, Space.modes)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise f.error("modes", f"unknown mode {bad[0]!r}; modes: {', '.join(MODES)}")
    reps = f.get("replicas", lambda v: v if isinstance(v, list) and v else (_ for _ in ()).throw(
        ValueError("expected a non-empty list of layouts such as {tp: 8, ep: 8, dp_attention: true}")), None)
    replicas = tuple(_parallel(r, source, f"space.replicas[{i}]") for i, r in enumerate(reps)) if reps else \
        Space.replicas
    pre = f.get("prefill_replicas", lambda v: v if isinstance(v, list) and v else (_ for _ in ()).throw(
        ValueError("expected a non-empty list of layouts such as {tp: 8, ep: 8}")), None)
    prefill_replicas = tuple(_parallel(r, source, f"space.prefill_replicas[{i}]") for i, r in enumerate(pre)) \
        if pre else None
    afd_raw = f.get("afd", lambda v: v, None)
    afd = AfdSpace()
    if afd_raw is not None:
        a = Fields(afd_raw, source, "space.afd")
        afd = AfdSpace(gpus=a.get("gpus", lambda v: _int_list(v, 2), AfdSpace.gpus),
                       attention_gpus=a.get("attention_gpus", lambda v: _int_list(v, 1), AfdSpace.attention_gpus),
                       micro_batches=a.get("micro_batches", lambda v: _int_list(v, 1), AfdSpace.micro_batches),
                       placement=a.get("placement", _str_list, AfdSpace.placement))
        bad = [p for p in afd.placement if p not in PLACEMENTS]
        if bad:
            raise a.error("placement", f"unknown placement {bad[0]!r}; placements: {', '.join(PLACEMENTS)}")
        a.finish()
    placement = f.get("placement", as_str, Space.placement)
    if placement not in ("packed", "nvlink"):
        raise f.error("placement", f"colocated replicas are placed 'packed' or 'nvlink', got {placement!r}")
    space = Space(modes=modes, replicas=replicas, prefill_replicas=prefill_replicas, placement=placement,
                  prefill_gpus=f.get("prefill_gpus", lambda v: _int_list(v, 1), Space.prefill_gpus), afd=afd,
                  max_batch=f.get("max_batch", lambda v: _int_list(v, 1), Space.max_batch),
                  token_budget=f.get("token_budget", lambda v: _int_list(v, 1), Space.token_budget),
                  mtp=f.get("mtp", lambda v: _int_list(v, 0), Space.mtp),
                  mtp_acceptance=f.get("mtp_acceptance", as_float, Space.mtp_acceptance))
    f.finish()
    if not 0.0 <= space.mtp_acceptance <= 1.0:
        raise ConfigError(source, "space.mtp_acceptance", f"expected 0..1, got {space.mtp_acceptance}")
    return space


def _load(data: Any, source: str) -> LoadSearch:
    f = Fields(data, source, "load")

    def pair(v):
        if not (isinstance(v, list) and len(v) == 2):
            raise ValueError(f"expected [low, high] user counts, got {v!r}")
        lo, hi = as_int(v[0]), as_int(v[1])
        if not 1 <= lo <= hi:
            raise ValueError(f"expected [low, high] user counts with 1 <= low <= high, got {v!r}")
        return lo, hi

    load = LoadSearch(concurrency=f.get("concurrency", pair, LoadSearch.concurrency),
                      attainment=f.get("attainment", as_float, LoadSearch.attainment),
                      steps=f.get("steps", as_int, LoadSearch.steps),
                      growth=f.get("growth", as_int, LoadSearch.growth),
                      requests_per_user=f.get("requests_per_user", as_int, LoadSearch.requests_per_user),
                      min_requests=f.get("min_requests", as_int, LoadSearch.min_requests))
    f.finish()
    if not 0.0 < load.attainment <= 1.0:
        raise ConfigError(source, "load.attainment", f"expected a fraction in (0, 1], got {load.attainment}")
    if load.steps < 0 or load.requests_per_user < 1 or load.min_requests < 1 or load.growth < 2:
        raise ConfigError(source, "load", "steps >= 0, growth >= 2, requests_per_user >= 1 and min_requests >= 1 "
                                          "expected")
    return load


def _workload(data: Any, source: str, path: str, base_dir: Path | None) -> WorkloadEntry:
    if isinstance(data, str):
        name, slo_raw = data, None
    else:
        f = Fields(data, source, path)
        name = f.get("workload", as_str)
        slo_raw = f.get("slo", lambda v: v, None)
        f.finish()
    ref = name
    if base_dir is not None and not Path(name).is_absolute() and (base_dir / name).exists():
        ref = str(base_dir / name)
    try:
        spec = load_workload(ref)
    except ConfigError as exc:
        raise ConfigError(source, path, f"workload {name!r}: {exc.message}") from None
    slo = spec.slo
    if slo_raw is not None:
        s = Fields(slo_raw, source, f"{path}.slo")
        slo = SLO(ttft_s=s.get("ttft_ms", as_float) / 1e3, tpot_s=s.get("tpot_ms", as_float) / 1e3)
        s.finish()
    return WorkloadEntry(Path(name).stem if name.endswith((".yaml", ".yml", ".jsonl")) else name, spec, slo)


def _topology_entries(raw: list, source: str, base_dir: Path | None) -> dict[str, Any]:
    """Topology labels -> references: a preset or file as given, or, for ``{base: NAME, sweep:
    {PARAM: [v1, v2]}}``, one variant document per combination of generator parameter values,
    labelled ``NAME PARAM=v1 ...`` (checked by loading each)."""
    import itertools

    from cosim.topology import read_topology_file, topology_from_dict

    out: dict[str, Any] = {}
    for i, entry in enumerate(raw):
        path = f"topologies[{i}]"
        if isinstance(entry, str):
            ref = str(base_dir / entry) if base_dir is not None and (base_dir / entry).exists() else entry
            out[entry] = ref
            continue
        f = Fields(entry, source, path)
        base = f.get("base", as_str)
        sweep = f.get("sweep", lambda v: v if isinstance(v, dict) and v else (_ for _ in ()).throw(
            ValueError("expected a mapping of generator parameters to lists of values")))
        f.finish()
        ref = str(base_dir / base) if base_dir is not None and (base_dir / base).exists() else base
        try:
            doc = read_topology_file(ref)
        except ConfigError as exc:
            raise ConfigError(source, f"{path}.base", exc.message) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("generator"), dict):
            raise ConfigError(source, f"{path}.base", f"{base!r} has no generator: only generated topologies "
                                                       "can sweep their parameters")
        names = list(sweep)
        values = [v if isinstance(v, list) and v else [v] for v in sweep.values()]
        for combo in itertools.product(*values):
            variant = dict(doc)
            variant["generator"] = {**doc["generator"], **dict(zip(names, combo))}
            label = f"{doc.get('name', base)} " + " ".join(f"{k}={v}" for k, v in zip(names, combo))
            variant["name"] = label.replace(" ", "_")
            try:
                topology_from_dict(variant, source=f"{source}: {path} ({label})")
            except ConfigError as exc:
                raise ConfigError(source, f"{path}.sweep", f"{label}: {exc}") from None
            out[label] = variant
    return out


def experiment_from_dict(data: Any, source: str = "<dict>", base_dir: Path | None = None) -> ExperimentSpec:
    """An :class:`ExperimentSpec` from its YAML document (strict; see the module docstring)."""
    f = Fields(data, source, "")
    name = f.get("name", as_str)
    models = f.get("models", _str_list, None)
    model = f.get("model", as_str, None)
    if (models is None) == (model is None):
        raise f.error("model", "give model (one) or models (a list), not both")
    topologies = f.get("topologies", lambda v: v if isinstance(v, list) and v else (_ for _ in ()).throw(
        ValueError("expected a non-empty list of presets, files or {base, sweep} entries")), None)
    topology = f.get("topology", as_str, None)
    if (topologies is None) == (topology is None):
        raise f.error("topology", "give topology (one) or topologies (a list), not both")
    refs = _topology_entries(topologies or [topology], source, base_dir)
    raw_wl = f.get("workloads", lambda v: v if isinstance(v, list) and v else (_ for _ in ()).throw(
        ValueError("expected a non-empty list of workloads (presets chat, coding, agentic-coding or files)")))
    space_raw = f.get("space", lambda v: v, None)
    load_raw = f.get("load", lambda v: v, None)
    runner_raw = f.get("runner", lambda v: v, "local")
    runner, ray_address = "local", None
    if isinstance(runner_raw, dict):
        r = Fields(runner_raw, source, "runner")
        ray_address = r.get("ray", as_str)
        r.finish()
        runner = "ray"
    elif runner_raw != "local":
        raise f.error("runner", f"expected 'local' or {{ray: ADDRESS}}, got {runner_raw!r}")
    spec = ExperimentSpec(
        name=name, models=models or (model,), topologies=tuple(refs), topology_refs=refs,
        gpus=f.get("gpus", as_int),
        workloads=tuple(_workload(w, source, f"workloads[{i}]", base_dir) for i, w in enumerate(raw_wl)),
        space=_space(space_raw, source) if space_raw is not None else Space(),
        load=_load(load_raw, source) if load_raw is not None else LoadSearch(),
        system=f.get("system", as_str, None), framework=f.get("framework", as_str, "trtllm"),
        seed=f.get("seed", as_int, 0), runner=runner, ray_address=ray_address,
        workers=f.get("workers", as_int, 2), source=source)
    f.finish()
    if spec.gpus < 1:
        raise ConfigError(source, "gpus", f"expected a GPU budget >= 1, got {spec.gpus}")
    if spec.workers < 1:
        raise ConfigError(source, "workers", f"expected >= 1, got {spec.workers}")
    return spec


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read an experiment YAML file (relative workload and topology files resolve against its folder)."""
    from cosim.topology.strict_yaml import load_yaml_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "experiment file not found")
    return experiment_from_dict(load_yaml_file(path), str(path), path.parent)
