"""Load and validate topology YAML files (schema: ``docs/topology.md``).

A file either names a ``generator`` (``star``, ``hgx_node``, ``hgx_cluster``, ``nvl72_rack``,
``nvl72_cluster``) with its parameters, or lists ``nodes`` and ``links`` explicitly. Every error
names the file, the field and the expected form; a file that loads is routable between every
pair of GPUs.

Files are parsed with :class:`cosim.topology.strict_yaml.StrictLoader`: YAML 1.1 forms such as
``2:1`` (base 60), ``1_000``, ``0x10``, ``.inf`` or ``yes`` stay strings, so a numeric field
holding them is an error instead of a silently wrong number; repeated keys are errors.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Callable

import math

import networkx as nx

from cosim.errors import ConfigError
from cosim.topology.generators import GENERATORS
from cosim.topology.model import NODE_KINDS, Link, Node, RoutingPolicy, Topology, TransportConfig
from cosim.topology.strict_yaml import load_yaml_file
from cosim.units import UnitError, parse_bandwidth_bps, parse_size_bytes, parse_time_s

_UNIT_SUFFIXES: dict[str, Callable[[Any], Any]] = {
    "_bps": parse_bandwidth_bps,
    "_s": parse_time_s,
    "_bytes": parse_size_bytes,
}
MAX_FRAME_BYTES = 65535
#: Sanity limits of a network link (the packet engine's clock counts picoseconds in 64 bits).
MAX_LATENCY_S = 1.0
MAX_BANDWIDTH_BPS = 1e15


def presets_dir() -> Path:
    """Directory holding the shipped topology presets (installed copy, else the source tree)."""
    here = Path(__file__).resolve().parent.parent
    installed = here / "_data" / "topologies"
    if installed.is_dir() and any(installed.glob("*.yaml")):
        return installed
    return here.parent / "topologies"


def list_presets() -> list[str]:
    """Names of the shipped topology presets."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def resolve_topology_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the shipped preset of that name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = presets_dir() / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    close = difflib.get_close_matches(str(name_or_path), list_presets(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; presets: {', '.join(list_presets())}"
    raise ConfigError(str(name_or_path), "", f"no such file or topology preset{hint}")


def load_topology(name_or_path: str | Path) -> Topology:
    """Load a topology from a YAML file path or a preset name (see :func:`list_presets`)."""
    path = resolve_topology_path(name_or_path)
    return topology_from_dict(read_topology_file(path), source=str(path))


def read_topology_file(name_or_path: str | Path) -> Any:
    """The parsed (not yet validated) document of a topology file or preset, read with the strict
    YAML loader; edit it and pass it to :func:`topology_from_dict` to derive a variant."""
    return load_yaml_file(resolve_topology_path(name_or_path))


class _Fields:
    """Reads the fields of one YAML mapping strictly: unknown keys and missing keys are errors."""

    def __init__(self, data: Any, source: str, path: str):
        if not isinstance(data, dict):
            raise ConfigError(source, path or "<top level>", f"expected a mapping, got {type(data).__name__}")
        self.data, self.source, self.path = data, source, path
        self.used: set[str] = set()

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.field(key), message)

    def get(self, key: str, parse: Callable[[Any], Any], default: Any = dataclasses.MISSING) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is dataclasses.MISSING:
                raise self.error(key, "required field is missing")
            return default
        try:
            return parse(self.data[key])
        except (UnitError, ValueError, TypeError) as exc:
            raise self.error(key, str(exc)) from None

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), sorted(self.used), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(str(key), f"unknown key{hint}; allowed keys: {', '.join(sorted(self.used))}")


#: Appended to the error of a numeric field that holds a string: YAML 1.1 would have read some
#: of these forms as numbers, cosim's strict loader does not.
_NUMBER_FORMS = "plain decimal only: 0x10, 0o17, 017, 1_000, 1:30, .inf, yes/no are not numbers here"


def _as_str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        hint = f" ({_NUMBER_FORMS})" if isinstance(v, str) else ""
        raise ValueError(f"expected a decimal integer such as 8, got {v!r}{hint}")
    return v


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = f" ({_NUMBER_FORMS})" if isinstance(v, str) else ""
        raise ValueError(f"expected a decimal number such as 2, 1.5 or 1e3, got {v!r}{hint}")
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return float(v)


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return v

    return parse


def _mtu(v: Any) -> int:
    mtu = parse_size_bytes(v)
    if not 64 <= mtu <= 65000:
        raise ValueError(f"expected an MTU between 64 and 65000 bytes, got {v!r}")
    return mtu


def topology_from_dict(data: Any, source: str = "<api>") -> Topology:
    """Build a validated :class:`Topology` from a parsed YAML document."""
    top = _Fields(data, source, "")
    name = top.get("name", _as_str)
    description = top.get("description", str, "")
    gpu_system = top.get("gpu", _gpu_system, None)
    routing = _routing(top)
    transport = _transport(top)
    has_generator = "generator" in top.data
    if has_generator and ("nodes" in top.data or "links" in top.data):
        raise top.error("generator", "use either 'generator' or explicit 'nodes' and 'links', not both")
    if has_generator:
        nodes, links = _generate(top)
    else:
        nodes, links = _explicit(top)
    top.finish()
    topo = Topology(name=name, nodes=tuple(nodes), links=tuple(links), routing=routing,
                    transport=transport, description=description, source=source, gpu_system=gpu_system)
    validate_topology(topo)
    return topo


def _gpu_system(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected the name of a kernel-table system such as h100_sxm, h200_sxm, "
                         f"b200_sxm or gb200 (a non-empty string), got {v!r}")
    return v.strip()


def _routing(top: _Fields) -> RoutingPolicy:
    raw = top.get("routing", lambda v: v, {})
    f = _Fields(raw, top.source, top.field("routing"))
    policy = RoutingPolicy(
        ecmp=f.get("ecmp", _choice("hash", "first"), "hash"),
        cross_rail=f.get("cross_rail", _choice("pxn", "direct"), "pxn"),
    )
    f.finish()
    return policy


def _transport(top: _Fields) -> TransportConfig:
    raw = top.get("transport", lambda v: v, {})
    f = _Fields(raw, top.source, top.field("transport"))
    d = TransportConfig()
    cfg = TransportConfig(
        header_bytes=f.get("header_bytes", parse_size_bytes, d.header_bytes),
        pfc_xoff_bytes=f.get("pfc_xoff_bytes", parse_size_bytes, d.pfc_xoff_bytes),
        pfc_xon_bytes=f.get("pfc_xon_bytes", parse_size_bytes, d.pfc_xon_bytes),
    )
    f.finish()
    if not 2 <= cfg.header_bytes <= 1024:
        raise f.error("header_bytes", f"expected 2..1024 bytes, got {cfg.header_bytes}")
    if not 0 < cfg.pfc_xon_bytes < cfg.pfc_xoff_bytes:
        raise f.error("pfc_xon_bytes", "expected 0 < pfc_xon_bytes < pfc_xoff_bytes")
    return cfg


def _generate(top: _Fields) -> tuple[list[Node], list[Link]]:
    raw = top.get("generator", lambda v: v)
    f = _Fields(raw, top.source, top.field("generator"))
    kind = f.get("kind", _choice(*GENERATORS))
    cls = GENERATORS[kind]
    kwargs = {}
    for fld in dataclasses.fields(cls):
        key, parse = fld.name, None
        for suffix, parser in _UNIT_SUFFIXES.items():
            if fld.name.endswith(suffix):
                key, parse = fld.name[: -len(suffix)], parser
                break
        if "parse" in fld.metadata:
            parse = fld.metadata["parse"]
        elif parse is None:
            parse = {int: _as_int, float: _as_float, str: _as_str}[type(fld.default)]
        kwargs[fld.name] = f.get(key, parse, fld.default)
    f.finish()
    gen = cls(**kwargs)
    for field_name, problem in gen.check():
        key = field_name
        for suffix in _UNIT_SUFFIXES:
            key = key.removesuffix(suffix) if key.endswith(suffix) else key
        raise f.error(key, problem)
    return gen.build()


def _explicit(top: _Fields) -> tuple[list[Node], list[Link]]:
    defaults_raw = top.get("defaults", lambda v: v, {})
    df = _Fields(defaults_raw, top.source, top.field("defaults"))
    default_latency = df.get("latency", parse_time_s, None)
    default_mtu = df.get("mtu", _mtu, 4096)
    default_bw = df.get("bandwidth", parse_bandwidth_bps, None)
    df.finish()

    raw_nodes = top.get("nodes", lambda v: v)
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise top.error("nodes", "expected a non-empty list of {name, kind} mappings")
    nodes: list[Node] = []
    index: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        f = _Fields(raw, top.source, f"nodes[{i}]")
        name = f.get("name", _as_str)
        kind = f.get("kind", _choice(*NODE_KINDS))
        domain = f.get("domain", _as_int, None)
        rail = f.get("rail", _as_int, None)
        f.finish()
        if name in index:
            raise f.error("name", f"duplicate node name {name!r} (first at nodes[{index[name]}])")
        index[name] = i
        nodes.append(Node(name, kind, domain, rail))

    raw_links = top.get("links", lambda v: v)
    if not isinstance(raw_links, list) or not raw_links:
        raise top.error("links", "expected a non-empty list of {a, b, bandwidth, latency} mappings")
    links: list[Link] = []
    seen: dict[frozenset[int], int] = {}

    def node_ref(v: Any) -> int:
        if v not in index:
            close = difflib.get_close_matches(str(v), list(index), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"no node named {v!r}{hint}")
        return index[v]

    for i, raw in enumerate(raw_links):
        f = _Fields(raw, top.source, f"links[{i}]")
        a = f.get("a", node_ref)
        b = f.get("b", node_ref)
        bw = f.get("bandwidth", parse_bandwidth_bps, default_bw)
        if bw is None:
            raise f.error("bandwidth", "required field is missing (or set defaults.bandwidth)")
        lat = f.get("latency", parse_time_s, default_latency)
        if lat is None:
            raise f.error("latency", "required field is missing (or set defaults.latency)")
        mtu = f.get("mtu", _mtu, default_mtu)
        tier = f.get("tier", _as_str, "link")
        f.finish()
        if a == b:
            raise f.error("b", f"a link must join two different nodes, both ends are {nodes[a].name!r}")
        key = frozenset((a, b))
        if key in seen:
            raise f.error("b", f"duplicate link between {nodes[a].name!r} and {nodes[b].name!r} "
                               f"(first at links[{seen[key]}]); model parallel links as one link with their total bandwidth")
        seen[key] = i
        links.append(Link(a, b, bw, lat, mtu, tier))
    return nodes, links


def validate_topology(topo: Topology) -> None:
    """Check a topology built in Python or from YAML: GPUs present, connected and pairwise routable,
    frames within the packet engine's limits."""
    src = topo.source
    if not topo.gpu_nodes:
        raise ConfigError(src, "nodes", "the topology has no node of kind 'gpu'")
    for li, link in enumerate(topo.links):
        if link.mtu_bytes + topo.transport.header_bytes > MAX_FRAME_BYTES:
            raise ConfigError(src, f"links[{li}].mtu", f"mtu + header_bytes must be <= {MAX_FRAME_BYTES}")
        if not 0 <= link.latency_s <= MAX_LATENCY_S:
            raise ConfigError(src, f"links[{li}].latency", f"expected 0 to {MAX_LATENCY_S:g} s, got {link.latency_s:g} s")
        if not 0 < link.bandwidth_bps <= MAX_BANDWIDTH_BPS:
            raise ConfigError(src, f"links[{li}].bandwidth",
                              f"expected more than 0 and at most {MAX_BANDWIDTH_BPS / 1e12:g} Tbps, got {link.bandwidth_bps:g} bit/s")
    g = topo.graph
    for gpu in topo.gpu_nodes:
        if g.degree(gpu) == 0:
            raise ConfigError(src, "links", f"GPU {topo.nodes[gpu].name!r} is disconnected: no link touches it")
    # GPUs are endpoints, not transit nodes: a pair is routable if both touch the same connected
    # component of the non-GPU subgraph, or are linked directly.
    fabric = g.subgraph(i for i, n in enumerate(topo.nodes) if n.kind != "gpu")
    component_of = {v: c for c, comp in enumerate(nx.connected_components(fabric)) for v in comp}
    reach = {gpu: {component_of[v] for v in g.neighbors(gpu) if v in component_of} for gpu in topo.gpu_nodes}
    gpus = topo.gpu_nodes
    for i, u in enumerate(gpus):
        for v in gpus[i + 1:]:
            if not (reach[u] & reach[v]) and not g.has_edge(u, v):
                raise ConfigError(src, "links", f"GPUs {topo.nodes[u].name!r} and {topo.nodes[v].name!r} "
                                                "cannot reach each other (no path through switches)")


# Public names of the strict field reader, for the other YAML schemas (deployments, workloads,
# experiments): one reader for every cosim YAML file.
Fields = _Fields
as_str, as_int, as_float = _as_str, _as_int, _as_float
