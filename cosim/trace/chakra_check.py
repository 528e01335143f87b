"""Check a Chakra ET export against what ASTRA-sim 2.0 needs to run it to completion.

ASTRA-sim loads files that break these rules without a word and then stalls (it still exits 0),
so a trace is checked before it is handed over. The rules (:data:`RULES`):

- every rank has its file, ``{prefix}.0.et`` .. ``{prefix}.{N-1}.et``;
- node ids are unique and of a known type, every ``data_deps`` / ``ctrl_deps`` id is a node of
  the same file, and the dependency graph is acyclic;
- all ranks of a process group (``pg_name``, resolved with ``{prefix}.comm_groups.json``; no
  ``pg_name``: all ranks) issue the same sequence of collectives, in node id order, with the same
  ``comm_type`` and ``comm_size`` (ASTRA-sim pairs them by position and size), a positive size,
  and only on groups they belong to;
- no process group has a single rank (such a collective never completes);
- every send has a receive with the same source, destination, tag and size, and vice versa;
- compute nodes that give ``tensor_size`` have ``num_ops`` > 0 (roofline mode divides by it),
  and no compute node lasts 0 µs (ASTRA-sim aborts on zero delays).

Public API: :func:`check_chakra` (the violations), :func:`inspect_chakra` (one
:class:`ChakraCheck` per export in a directory), :func:`find_exports`, :class:`Violation`,
:class:`Rule`.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cosim.trace.chakra import read_chakra
from cosim.trace.proto import et_def_pb2 as et
from cosim.trace.serialize import TraceFormatError

__all__ = ["RULES", "ChakraCheck", "Rule", "Violation", "check_chakra", "find_exports", "inspect_chakra"]

_RANK_FILE = re.compile(r"^(?P<prefix>.+)\.(?P<rank>\d+)\.et$")
#: ``pg_name`` of collectives that give none: ASTRA-sim runs them on all ranks.
WORLD = ""


class Rule(str, Enum):
    """A rule of :func:`check_chakra`; the value is the name printed and matched in tests."""

    FILES = "files"
    NODE_IDS = "node-ids"
    DEPENDENCY = "dependency"
    CYCLE = "cycle"
    COLLECTIVE = "collective"
    GROUP = "group"
    SINGLE_RANK_GROUP = "single-rank-group"
    P2P = "p2p"
    NUM_OPS = "num-ops"
    ZERO_DURATION = "zero-duration"


#: What each rule checks (the CLI prints it).
RULES: dict[Rule, str] = {
    Rule.FILES: "one file per rank, ranks 0..N-1",
    Rule.NODE_IDS: "node ids unique, node types known",
    Rule.DEPENDENCY: "data/ctrl dependencies name nodes of the same file",
    Rule.CYCLE: "the dependency graph is acyclic",
    Rule.COLLECTIVE: "ranks of a group issue the same collectives: comm_type and comm_size (> 0) in order",
    Rule.GROUP: "pg_name is a group of the comm-groups file and the rank is a member",
    Rule.SINGLE_RANK_GROUP: "no collective on a group of one rank",
    Rule.P2P: "every send has a receive with the same src, dst, tag and size, and vice versa",
    Rule.NUM_OPS: "compute nodes with tensor_size have num_ops > 0",
    Rule.ZERO_DURATION: "no compute node of 0 µs",
}
assert set(RULES) == set(Rule)


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``file`` is the path of the rank file (or comm-groups file), ``node_id``
    the Chakra node id (``None`` for a whole file or group)."""

    rule: Rule
    file: str
    node_id: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.node_id is None else f"{self.file} node {self.node_id}"
        return f"[{self.rule.value}] {where}: {self.message}"


@dataclass(frozen=True)
class ChakraCheck:
    """The check of one export ``{directory}/{prefix}.*.et``."""

    directory: str
    prefix: str
    num_ranks: int
    node_types: dict[str, int]      # NodeType name -> nodes over all ranks
    groups: dict[str, list[int]]    # pg_name -> ranks (the comm-groups file)
    violations: tuple[Violation, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def num_nodes(self) -> int:
        return sum(self.node_types.values())

    def by_rule(self) -> dict[Rule, list[Violation]]:
        out: dict[Rule, list[Violation]] = {rule: [] for rule in Rule}
        for v in self.violations:
            out[v.rule].append(v)
        return out


# --- public API --------------------------------------------------------------------------------

def check_chakra(directory: str | Path, prefix: str | None = None) -> list[Violation]:
    """The violations of every export in ``directory`` (or of ``{prefix}.*.et`` only).

    Raises :class:`~cosim.trace.serialize.TraceFormatError` (a :class:`~cosim.errors.CosimError`)
    for a missing directory, one without Chakra files, or a file that cannot be read.
    """
    return [v for check in inspect_chakra(directory, prefix) for v in check.violations]


def inspect_chakra(directory: str | Path, prefix: str | None = None) -> list[ChakraCheck]:
    """Check each export in ``directory``: one :class:`ChakraCheck` per file prefix, sorted."""
    exports = find_exports(directory, prefix)
    return [_check_export(Path(directory), p, files) for p, files in sorted(exports.items())]


def find_exports(directory: str | Path, prefix: str | None = None) -> dict[str, dict[int, Path]]:
    """The Chakra rank files of ``directory``: prefix -> rank -> path (``{prefix}.{rank}.et``)."""
    directory = Path(directory)
    if not directory.exists():
        raise TraceFormatError(directory, "no such directory")
    if not directory.is_dir():
        raise TraceFormatError(directory, "not a directory; expected the folder of a Chakra export")
    found: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in directory.iterdir():
        m = _RANK_FILE.match(path.name)
        if m and path.is_file() and (prefix is None or m["prefix"] == prefix):
            found[m["prefix"]][int(m["rank"])] = path
    if not found:
        what = f"{prefix}.<rank>.et" if prefix else "<prefix>.<rank>.et"
        raise TraceFormatError(directory, f"no Chakra files ({what}) in this directory")
    return dict(found)


# --- one export --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Coll:
    node_id: int
    comm_type: int | None
    comm_size: int | None

    def describe(self) -> str:
        kind = "no comm_type" if self.comm_type is None else _comm_type_name(self.comm_type)
        size = "no comm_size" if self.comm_size is None else f"{self.comm_size} B"
        return f"{kind} of {size}"

    def same(self, other: _Coll) -> bool:
        return (self.comm_type, self.comm_size) == (other.comm_type, other.comm_size)


def _check_export(directory: Path, prefix: str, files: dict[int, Path]) -> ChakraCheck:
    out: list[Violation] = []
    n = max(files) + 1
    missing = [r for r in range(n) if r not in files]
    if missing:
        out.append(Violation(Rule.FILES, str(directory / f"{prefix}.*.et"), None,
                             f"ranks 0..{n - 1} expected, no file for rank(s) {_short(missing)}"))
    groups_path = directory / f"{prefix}.comm_groups.json"
    groups = _read_groups(groups_path)
    for name, members in groups.items():
        if len(set(members)) < 2:
            out.append(Violation(Rule.SINGLE_RANK_GROUP, str(groups_path), None,
                                 f"group {name!r} has one rank {members}"))
    types: Counter[str] = Counter()
    colls: dict[str, dict[int, list[_Coll]]] = defaultdict(lambda: defaultdict(list))
    sends: dict[tuple, list[tuple[str, int]]] = defaultdict(list)
    recvs: dict[tuple, list[tuple[str, int]]] = defaultdict(list)
    for rank, path in sorted(files.items()):
        _, nodes = read_chakra(path, validate=False)
        f = str(path)
        types.update(et.NodeType.Name(x.type) if x.type in et.NodeType.values() else "INVALID_NODE" for x in nodes)
        out += _check_graph(f, nodes)
        for node in nodes:
            a = _attrs(node)
            if node.type == et.COMP_NODE:
                out += _check_compute(f, node, a)
            elif node.type == et.COMM_COLL_NODE:
                out += _check_collective(f, rank, n, node, a, groups, groups_path, colls)
            elif node.type in (et.COMM_SEND_NODE, et.COMM_RECV_NODE):
                out += _check_p2p_node(f, rank, n, node, a, sends, recvs)
    out += _match_collectives(colls, groups, files, n)
    out += _match_p2p(sends, recvs)
    return ChakraCheck(str(directory), prefix, n, dict(types), groups, tuple(out))


def _read_groups(path: Path) -> dict[str, list[int]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceFormatError(path, f"not a JSON comm-groups file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(r, int) for r in v)
                                             for v in data.values()):
        raise TraceFormatError(path, "expected a JSON object {pg_name: [ranks]}")
    return {str(k): list(v) for k, v in data.items()}


def _check_graph(f: str, nodes: list[et.Node]) -> list[Violation]:
    out = []
    known = set(et.NodeType.values()) - {et.INVALID_NODE}
    ids: set[int] = set()
    for node in nodes:
        if node.type not in known:
            out.append(Violation(Rule.NODE_IDS, f, node.id, f"invalid node type {node.type}"))
        if node.id in ids:
            out.append(Violation(Rule.NODE_IDS, f, node.id, "duplicate node id"))
        ids.add(node.id)
    parents: dict[int, set[int]] = defaultdict(set)
    for node in nodes:
        deps = [*node.data_deps, *node.ctrl_deps]
        dangling = sorted({d for d in deps if d not in ids})
        if dangling:
            out.append(Violation(Rule.DEPENDENCY, f, node.id, f"depends on id(s) {_short(dangling)} not in the file"))
        parents[node.id].update(d for d in deps if d in ids)
    # Kahn's algorithm: what never becomes ready sits on (or behind) a cycle.
    children: dict[int, list[int]] = defaultdict(list)
    waiting = {i: len(parents[i]) for i in ids}
    for i in ids:
        for p in parents[i]:
            children[p].append(i)
    ready = [i for i, k in waiting.items() if k == 0]
    while ready:
        i = ready.pop()
        for c in children[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    stuck = sorted(i for i, k in waiting.items() if k > 0)
    if stuck:
        out.append(Violation(Rule.CYCLE, f, stuck[0], f"{len(stuck)} node(s) on or behind a dependency cycle: "
                                                        f"{_short(stuck)}"))
    return out


def _check_compute(f: str, node: et.Node, a: dict) -> list[Violation]:
    out = []
    if "tensor_size" in a and not a.get("num_ops", 0) > 0:
        out.append(Violation(Rule.NUM_OPS, f, node.id, f"{node.name!r}: num_ops {a.get('num_ops', 'missing')} with "
                                                       f"tensor_size {a['tensor_size']}: roofline mode hangs on it"))
    if node.duration_micros == 0:
        out.append(Violation(Rule.ZERO_DURATION, f, node.id, f"{node.name!r}: duration_micros 0"))
    return out


def _check_collective(f: str, rank: int, n: int, node: et.Node, a: dict, groups: dict[str, list[int]],
                      groups_path: Path, colls: dict) -> list[Violation]:
    out = []
    pg = a.get("pg_name", WORLD)
    if pg == WORLD:
        members = list(range(n))
    elif pg in groups:
        members = groups[pg]
    else:
        where = f"not in {groups_path.name}" if groups else f"and there is no {groups_path.name}"
        return [Violation(Rule.GROUP, f, node.id, f"{node.name!r}: pg_name {pg!r} {where}")]
    if rank not in members:
        out.append(Violation(Rule.GROUP, f, node.id, f"{node.name!r}: rank {rank} is not in group {pg!r} "
                                                     f"{_short(members)}"))
    if len(set(members)) < 2:
        out.append(Violation(Rule.SINGLE_RANK_GROUP, f, node.id, f"{node.name!r}: collective on group {pg!r} of "
                                                                 f"one rank {members}: it never completes"))
    coll = _Coll(node.id, a.get("comm_type"), a.get("comm_size"))
    if coll.comm_type is None or coll.comm_size is None or coll.comm_size <= 0:
        out.append(Violation(Rule.COLLECTIVE, f, node.id, f"{node.name!r}: {coll.describe()}"))
    colls[pg][rank].append(coll)
    return out


def _check_p2p_node(f: str, rank: int, n: int, node: et.Node, a: dict, sends: dict, recvs: dict) -> list[Violation]:
    need = [k for k in ("comm_src", "comm_dst", "comm_tag", "comm_size") if k not in a]
    send = node.type == et.COMM_SEND_NODE
    what = "send" if send else "receive"
    if need:
        return [Violation(Rule.P2P, f, node.id, f"{what} {node.name!r} has no {', '.join(need)}")]
    src, dst = (rank, a["comm_dst"]) if send else (a["comm_src"], rank)
    peer = dst if send else src
    if not 0 <= peer < n or peer == rank:
        return [Violation(Rule.P2P, f, node.id, f"{what} {node.name!r}: peer rank {peer} (this is rank {rank} of "
                                                f"0..{n - 1})")]
    (sends if send else recvs)[(src, dst, a["comm_tag"], a["comm_size"])].append((f, node.id))
    return []


def _match_collectives(colls: dict, groups: dict[str, list[int]], files: dict[int, Path], n: int) -> list[Violation]:
    out = []
    for pg, by_rank in colls.items():
        members = sorted(set(range(n) if pg == WORLD else groups[pg]) & set(files))
        if len(members) < 2:
            continue
        label = "all ranks (no pg_name)" if pg == WORLD else f"group {pg!r} {_short(members)}"
        ref_rank = members[0]
        ref = by_rank.get(ref_rank, [])
        for rank in members[1:]:
            seq = by_rank.get(rank, [])
            f = str(files[rank])
            bad = next((i for i, (x, y) in enumerate(zip(ref, seq)) if not x.same(y)), None)
            if bad is not None:
                out.append(Violation(Rule.COLLECTIVE, f, seq[bad].node_id,
                                     f"{label}: collective #{bad + 1} is {seq[bad].describe()} on rank {rank}, "
                                     f"{ref[bad].describe()} on rank {ref_rank} (node {ref[bad].node_id}): "
                                     f"ASTRA-sim never pairs them"))
            elif len(seq) != len(ref):
                extra = seq[len(ref)] if len(seq) > len(ref) else None
                out.append(Violation(Rule.COLLECTIVE, f, extra.node_id if extra else None,
                                     f"{label}: rank {rank} issues {len(seq)} collectives, rank {ref_rank} "
                                     f"{len(ref)}"))
    return out


def _match_p2p(sends: dict, recvs: dict) -> list[Violation]:
    out = []
    recv_sizes = defaultdict(set)
    send_sizes = defaultdict(set)
    for src, dst, tag, size in recvs:
        recv_sizes[(src, dst, tag)].add(size)
    for src, dst, tag, size in sends:
        send_sizes[(src, dst, tag)].add(size)
    for key in sorted(set(sends) | set(recvs)):
        src, dst, tag, size = key
        s, r = sends.get(key, []), recvs.get(key, [])
        for f, node_id in s[len(r):]:
            other = sorted(recv_sizes[(src, dst, tag)] - {size})
            hint = f" (rank {dst} receives {_short(other)} B with this tag)" if other else ""
            out.append(Violation(Rule.P2P, f, node_id, f"send {src}->{dst} tag {tag} of {size} B has no matching "
                                                      f"receive on rank {dst}{hint}"))
        for f, node_id in r[len(s):]:
            other = sorted(send_sizes[(src, dst, tag)] - {size})
            hint = f" (rank {src} sends {_short(other)} B with this tag)" if other else ""
            out.append(Violation(Rule.P2P, f, node_id, f"receive {src}->{dst} tag {tag} of {size} B has no matching "
                                                      f"send on rank {src}{hint}"))
    return out


# --- helpers -----------------------------------------------------------------------------------

def _attrs(node: et.Node) -> dict:
    """Scalar attributes of a node: name -> value (list attributes are skipped)."""
    out = {}
    for a in node.attr:
        case = a.WhichOneof("value")
        if case is not None and not case.endswith("_list"):
            out[a.name] = getattr(a, case)
    return out


def _comm_type_name(value: int) -> str:
    try:
        return et.CollectiveCommType.Name(value)
    except ValueError:
        return f"comm_type {value}"


def _short(values, limit: int = 8) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"
