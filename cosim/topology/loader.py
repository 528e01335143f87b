"""Load and validate topology YAML files (schema: ``docs/topology.md``).

A file either names a ``generator`` (``star``, ``hgx_node``, ``hgx_cluster``, ``nvl72_rack``,
``nvl72_cluster``) with its parameters, or lists ``nodes`` and ``links`` explicitly. Every error
names the file, the field and the expected form; a file that loads is routable between every
pair of GPUs.

Files are parsed with :class:`cosim.topology.strict_yaml.StrictLoader`: YAML 1.1 forms such as
``2:1`` (base 60), ``1_000``, ``0x10``, ``.inf`` or ``yes`` stay strings, so a numeric field
holding them is an error instead of a silently wrong number; repeated keys are errors.

Every value is bounded by :mod:`cosim.limits` where it is read (names, descriptions, counts,
bandwidths, latencies, MTUs) and the size of the result (GPUs, nodes, links) before it is built.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Callable

import math
from collections import defaultdict

import networkx as nx

from cosim import limits as L
from cosim.errors import ConfigError
from cosim.limits import quote
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
#: Sanity limits of a network link (the packet engine's clock counts picoseconds in 64 bits);
#: the values live in :mod:`cosim.limits`.
MAX_LATENCY_S = float(L.MAX_LATENCY_S.value)
MAX_BANDWIDTH_BPS = float(L.MAX_BANDWIDTH_BPS.value)
MIN_BANDWIDTH_BPS = float(L.MIN_BANDWIDTH_BPS.value)


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
        except ConfigError:
            raise
        except (UnitError, ValueError, TypeError, OverflowError) as exc:
            raise self.error(key, str(exc)) from None

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            key = unknown[0]
            text = key if isinstance(key, str) and len(key) <= L.MAX_NAME_CHARS.value else quote(key, 60)
            close = difflib.get_close_matches(text, sorted(self.used), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(text, f"unknown key{hint}; allowed keys: {', '.join(sorted(self.used))}")


#: Appended to the error of a numeric field that holds a string: YAML 1.1 would have read some
#: of these forms as numbers, cosim's strict loader does not.
_NUMBER_FORMS = "plain decimal only: 0x10, 0o17, 017, 1_000, 1:30, .inf, yes/no are not numbers here"


def _as_str(v: Any) -> str:
    """A non-empty string of at most ``MAX_NAME_CHARS`` characters (names, kinds, tiers)."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {quote(v)}")
    if len(v) > L.MAX_NAME_CHARS.value:
        raise ValueError(f"{quote(v, 40)} has {len(v):,} characters; the limit MAX_NAME_CHARS is "
                         f"{L.MAX_NAME_CHARS.value} characters")
    return v


def _description(v: Any) -> str:
    """A string (possibly empty) of at most ``MAX_DESCRIPTION_CHARS`` characters."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__} {quote(v)}")
    if len(v) > L.MAX_DESCRIPTION_CHARS.value:
        raise ValueError(f"{len(v):,} characters exceed the limit MAX_DESCRIPTION_CHARS = "
                         f"{L.MAX_DESCRIPTION_CHARS.value:,} characters ({L.MAX_DESCRIPTION_CHARS.reason})")
    return v


def _as_int(v: Any) -> int:
    """A decimal integer of at most ``MAX_CONFIG_INT`` in magnitude (a bool or float is an error)."""
    if isinstance(v, bool) or not isinstance(v, int):
        hint = f" ({_NUMBER_FORMS})" if isinstance(v, str) else ""
        raise ValueError(f"expected a decimal integer such as 8, got {quote(v)}{hint}")
    if abs(v) > L.MAX_CONFIG_INT.value:
        raise ValueError(f"{quote(v)} exceeds the limit MAX_CONFIG_INT = 2**53 ({L.MAX_CONFIG_INT.reason})")
    return v


def _count(v: Any) -> int:
    """A generator count: a decimal integer of at most ``MAX_TIER_COUNT``."""
    if isinstance(v, bool) or not isinstance(v, int):
        return _as_int(v)
    if v > L.MAX_TIER_COUNT.value:
        raise ValueError(f"{quote(v)} exceeds the limit MAX_TIER_COUNT = {L.MAX_TIER_COUNT.value:,} "
                         f"({L.MAX_TIER_COUNT.reason})")
    return v


def _gpu_count(v: Any) -> int:
    """A generator's GPU count: a decimal integer of at most ``MAX_GPUS``."""
    if isinstance(v, bool) or not isinstance(v, int):
        return _as_int(v)
    if v > L.MAX_GPUS.value:
        raise ValueError(f"{quote(v)} GPUs exceed the limit MAX_GPUS = {L.MAX_GPUS.value:,} ({L.MAX_GPUS.reason})")
    return v


def _as_float(v: Any) -> float:
    """A finite decimal number (a bool or string is an error)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = f" ({_NUMBER_FORMS})" if isinstance(v, str) else ""
        raise ValueError(f"expected a decimal number such as 2, 1.5 or 1e3, got {quote(v)}{hint}")
    try:
        x = float(v)
    except OverflowError:
        raise ValueError(f"expected a finite number, got {quote(v)}") from None
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {quote(v)}")
    return x


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {quote(v)}")
        return v

    return parse


def _mtu(v: Any) -> int:
    """An MTU in ``[MIN_MTU_BYTES, MAX_MTU_BYTES]`` (explicit links, defaults and generators)."""
    mtu = parse_size_bytes(v)
    if not L.MIN_MTU_BYTES.value <= mtu <= L.MAX_MTU_BYTES.value:
        raise ValueError(f"expected an MTU between {L.MIN_MTU_BYTES.value} and {L.MAX_MTU_BYTES.value} bytes, "
                         f"got {quote(v)}")
    return mtu


def _bandwidth(v: Any) -> float:
    """A bandwidth in ``[MIN_BANDWIDTH_BPS, MAX_BANDWIDTH_BPS]``."""
    bps = parse_bandwidth_bps(v)
    if not MIN_BANDWIDTH_BPS <= bps <= MAX_BANDWIDTH_BPS:
        raise ValueError(f"{_BANDWIDTH_RANGE}, got {quote(v)} = {bps:g} bit/s")
    return bps


_BANDWIDTH_RANGE = (f"expected more than 0 and at most {MAX_BANDWIDTH_BPS / 1e12:g} Tbps (limits MIN_BANDWIDTH_BPS = "
                    f"{MIN_BANDWIDTH_BPS:g} bit/s, MAX_BANDWIDTH_BPS = {MAX_BANDWIDTH_BPS:g} bit/s)")


def _latency(v: Any) -> float:
    """A latency in ``[0, MAX_LATENCY_S]``."""
    s = parse_time_s(v)
    if not 0 <= s <= MAX_LATENCY_S:
        raise ValueError(f"expected 0 to {MAX_LATENCY_S:g} s, got {quote(v)} (limit MAX_LATENCY_S: "
                         f"{L.MAX_LATENCY_S.reason})")
    return s


def _index(v: Any) -> int:
    """A domain or rail index: an integer in ``[0, MAX_NODES]``."""
    v = _as_int(v)
    if not 0 <= v <= L.MAX_NODES.value:
        raise ValueError(f"{quote(v)} is out of range: expected 0 to {L.MAX_NODES.value:,}")
    return v


def _buffer_bytes(v: Any) -> int:
    """A buffer size in bytes (PFC thresholds), at most ``MAX_FLOW_BYTES``."""
    n = parse_size_bytes(v)
    if n > L.MAX_FLOW_BYTES.value:
        raise ValueError(f"{quote(v)} exceeds the limit MAX_FLOW_BYTES = 2**50 bytes")
    return n


def topology_from_dict(data: Any, source: str = "<api>") -> Topology:
    """Build a validated :class:`Topology` from a parsed YAML document."""
    top = _Fields(data, source, "")
    name = top.get("name", _as_str)
    description = top.get("description", _description, "")
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
    if not isinstance(v, str) or not v.strip() or len(v) > L.MAX_NAME_CHARS.value:
        raise ValueError(f"expected the name of a kernel-table system such as h100_sxm, h200_sxm, "
                         f"b200_sxm or gb200 (a non-empty string of at most {L.MAX_NAME_CHARS.value} "
                         f"characters), got {quote(v)}")
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
        header_bytes=f.get("header_bytes", _buffer_bytes, d.header_bytes),
        pfc_xoff_bytes=f.get("pfc_xoff_bytes", _buffer_bytes, d.pfc_xoff_bytes),
        pfc_xon_bytes=f.get("pfc_xon_bytes", _buffer_bytes, d.pfc_xon_bytes),
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
        elif fld.name.endswith("mtu_bytes"):
            parse = _mtu
        elif fld.name in ("num_gpus", "gpus"):
            parse = _gpu_count
        elif parse is None:
            parse = {int: _count, float: _as_float, str: _as_str}[type(fld.default)]
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
    default_latency = df.get("latency", _latency, None)
    default_mtu = df.get("mtu", _mtu, 4096)
    default_bw = df.get("bandwidth", _bandwidth, None)
    df.finish()

    raw_nodes = top.get("nodes", lambda v: v)
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise top.error("nodes", "expected a non-empty list of {name, kind} mappings")
    if len(raw_nodes) > L.MAX_NODES.value:
        raise L.count_error(top.source, "nodes", len(raw_nodes), L.MAX_NODES, "the file lists")
    nodes: list[Node] = []
    index: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        f = _Fields(raw, top.source, f"nodes[{i}]")
        name = f.get("name", _as_str)
        kind = f.get("kind", _choice(*NODE_KINDS))
        domain = f.get("domain", _index, None)
        rail = f.get("rail", _index, None)
        f.finish()
        if name in index:
            raise f.error("name", f"duplicate node name {name!r} (first at nodes[{index[name]}])")
        index[name] = i
        nodes.append(Node(name, kind, domain, rail))

    raw_links = top.get("links", lambda v: v)
    if not isinstance(raw_links, list) or not raw_links:
        raise top.error("links", "expected a non-empty list of {a, b, bandwidth, latency} mappings")
    if len(raw_links) > L.MAX_LINKS.value:
        raise L.count_error(top.source, "links", len(raw_links), L.MAX_LINKS, "the file lists")
    links: list[Link] = []
    seen: dict[frozenset[int], int] = {}

    def node_ref(v: Any) -> int:
        if not isinstance(v, str) or v not in index:
            close = difflib.get_close_matches(v, list(index), n=1) if isinstance(v, str) and len(v) <= 256 else []
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"no node named {quote(v)}{hint}")
        return index[v]

    for i, raw in enumerate(raw_links):
        f = _Fields(raw, top.source, f"links[{i}]")
        a = f.get("a", node_ref)
        b = f.get("b", node_ref)
        bw = f.get("bandwidth", _bandwidth, default_bw)
        if bw is None:
            raise f.error("bandwidth", "required field is missing (or set defaults.bandwidth)")
        lat = f.get("latency", _latency, default_latency)
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
    """Check a topology built in Python or from YAML: sizes within :mod:`cosim.limits`, GPUs
    present, connected and pairwise routable, links within the packet engine's limits.

    The pairwise check is linear in the common case (one switch fabric touched by every GPU) and
    otherwise groups GPUs by the switch fabrics they touch; it never compares every GPU pair.
    """
    src = topo.source
    for count, limit, what in ((len(topo.nodes), L.MAX_NODES, "nodes"), (len(topo.links), L.MAX_LINKS, "links")):
        if count > limit.value:
            raise L.count_error(src, what, count, limit, "the topology has")
    if not topo.gpu_nodes:
        raise ConfigError(src, "nodes", "the topology has no node of kind 'gpu'")
    if len(topo.gpu_nodes) > L.MAX_GPUS.value:
        raise L.count_error(src, "nodes", len(topo.gpu_nodes), L.MAX_GPUS, "the topology has")
    if len(topo.name) > L.MAX_NAME_CHARS.value:
        raise ConfigError(src, "name", f"{len(topo.name):,} characters exceed the limit MAX_NAME_CHARS = "
                                       f"{L.MAX_NAME_CHARS.value}")
    if len(topo.description) > L.MAX_DESCRIPTION_CHARS.value:
        raise ConfigError(src, "description", f"{len(topo.description):,} characters exceed the limit "
                                              f"MAX_DESCRIPTION_CHARS = {L.MAX_DESCRIPTION_CHARS.value:,}")
    n_nodes = len(topo.nodes)
    for li, link in enumerate(topo.links):
        if not (0 <= link.a < n_nodes and 0 <= link.b < n_nodes):
            raise ConfigError(src, f"links[{li}]", f"endpoints {quote(link.a)}, {quote(link.b)} are not node "
                                                   f"indices 0..{n_nodes - 1}")
        if not L.MIN_MTU_BYTES.value <= link.mtu_bytes <= L.MAX_MTU_BYTES.value:
            raise ConfigError(src, f"links[{li}].mtu", f"expected an MTU between {L.MIN_MTU_BYTES.value} and "
                                                       f"{L.MAX_MTU_BYTES.value} bytes, got {quote(link.mtu_bytes)}")
        if link.mtu_bytes + topo.transport.header_bytes > MAX_FRAME_BYTES:
            raise ConfigError(src, f"links[{li}].mtu", f"mtu + header_bytes must be <= {MAX_FRAME_BYTES}")
        if not 0 <= link.latency_s <= MAX_LATENCY_S:
            raise ConfigError(src, f"links[{li}].latency", f"expected 0 to {MAX_LATENCY_S:g} s, got {link.latency_s:g} s")
        if not MIN_BANDWIDTH_BPS <= link.bandwidth_bps <= MAX_BANDWIDTH_BPS:
            raise ConfigError(src, f"links[{li}].bandwidth",
                              f"{_BANDWIDTH_RANGE}, got {link.bandwidth_bps:g} bit/s"
                              + (" (a derived uplink: check oversubscription and the spine count)"
                                 if link.tier in ("spine", "core") else ""))
    g = topo.graph
    for v, deg in g.degree():
        if deg > L.MAX_PORTS.value:
            raise ConfigError(src, "links", f"node {topo.nodes[v].name!r} has {deg:,} links; the limit MAX_PORTS "
                                            f"is {L.MAX_PORTS.value:,} ({L.MAX_PORTS.reason})")
    for gpu in topo.gpu_nodes:
        if g.degree(gpu) == 0:
            raise ConfigError(src, "links", f"GPU {topo.nodes[gpu].name!r} is disconnected: no link touches it")
    # GPUs are endpoints, not transit nodes: a pair is routable if both touch the same connected
    # component of the non-GPU subgraph, or are linked directly.
    fabric = g.subgraph(i for i, n in enumerate(topo.nodes) if n.kind != "gpu")
    component_of = {v: c for c, comp in enumerate(nx.connected_components(fabric)) for v in comp}
    gpus = topo.gpu_nodes
    reach = {gpu: frozenset(component_of[v] for v in g.neighbors(gpu) if v in component_of) for gpu in gpus}
    members: dict[int, list[int]] = defaultdict(list)  # fabric component -> GPUs touching it
    for gpu in gpus:
        for c in reach[gpu]:
            members[c].append(gpu)
    n = len(gpus)
    if any(len(m) == n for m in members.values()):
        return  # one fabric touches every GPU
    position = {gpu: r for r, gpu in enumerate(gpus)}
    covered_by: dict[frozenset[int], set[int]] = {}  # per distinct set of fabrics: GPUs sharing one
    failure: tuple[int, int] | None = None
    for u in gpus:
        sig = reach[u]
        if sig not in covered_by:
            covered_by[sig] = {v for c in sig for v in members[c]}
        covered = covered_by[sig]
        direct = {v for v in g.neighbors(u) if v in position and v not in covered}
        if len(covered) + len(direct) + (u not in covered) < n:
            v = next(v for v in gpus if v != u and v not in covered and v not in direct)
            pair = (u, v) if position[u] < position[v] else (v, u)
            if failure is None or (position[pair[0]], position[pair[1]]) < (position[failure[0]], position[failure[1]]):
                failure = pair
            break
    if failure is not None:
        u, v = failure
        raise ConfigError(src, "links", f"GPUs {topo.nodes[u].name!r} and {topo.nodes[v].name!r} "
                                        "cannot reach each other (no path through switches)")


# Public names of the strict field reader, for the other YAML schemas (deployments, workloads,
# experiments): one reader for every cosim YAML file.
Fields = _Fields
as_int, as_float = _as_int, _as_float


def as_str(v: Any) -> str:
    """A non-empty string of at most ``MAX_DESCRIPTION_CHARS`` characters (the other schemas'
    strings: paths, rank lists, names; topology names and tiers use ``MAX_NAME_CHARS``)."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {quote(v)}")
    if len(v) > L.MAX_DESCRIPTION_CHARS.value:
        raise ValueError(f"{quote(v, 40)} has {len(v):,} characters; the limit MAX_DESCRIPTION_CHARS is "
                         f"{L.MAX_DESCRIPTION_CHARS.value:,} characters")
    return v
