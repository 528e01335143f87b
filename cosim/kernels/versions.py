"""Which aiconfigurator data folder serves which table.

One run uses one framework (``trtllm``, ``sglang`` or ``vllm``) at one version. The default
version is aiconfigurator's ``current`` slot (``systems/query_versions.yaml``); the aliases
``current``, ``previous`` and ``next`` (the newest version folder above ``current``) are accepted,
as is any version that has a folder. Each table is then read from the requested version's folder
and, for shapes that folder lacks, from older folders of the same framework, newest first
(*backward fill*, never forward). A ``reuse.yaml`` that points a table at an older collection is
followed. This is how, for example, ``trtllm 1.3.0rc23`` MoE lookups for DeepSeek shapes land in
the ``1.3.0rc20`` table: rc23 only holds Nemotron shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

import yaml

from cosim.errors import ConfigError

FRAMEWORKS = ("trtllm", "sglang", "vllm")

_VERSION_RE = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)(?:(?P<pre>a|b|rc)(?P<prenum>\d+))?(?:\.post(?P<post>\d+))?(?:\.dev(?P<dev>\d+))?$"
)
_PRE_RANK = {"a": 0, "b": 1, "rc": 2}


@total_ordering
@dataclass(frozen=True)
class Version:
    """A PEP 440-style version (``1.3.0rc20``, ``0.5.6.post2``, ``0.1.dev19262``) that sorts."""

    text: str

    def key(self) -> tuple:
        m = _VERSION_RE.match(self.text)
        if not m:
            return ((-1,), 0, 0, 0, 0, self.text)
        release = tuple(int(x) for x in m["release"].split("."))
        release = release + (0,) * (4 - len(release))
        dev = int(m["dev"]) if m["dev"] is not None else None
        if m["pre"]:
            pre = (_PRE_RANK[m["pre"]], int(m["prenum"]))
        elif dev is not None and m["post"] is None:
            pre = (-1, 0)  # 1.0.dev1 < 1.0a1
        else:
            pre = (9, 0)
        post = int(m["post"]) if m["post"] is not None else -1
        return (release, pre, post, dev if dev is not None else 1 << 60, 0, "")

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class TableSource:
    """One parquet file that serves a table, with the version folder it was reached through."""

    version: str  # folder the request resolved to (may differ from the file's folder by reuse)
    path: Path

    @property
    def label(self) -> str:
        """Short human-readable origin, ``h200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf``."""
        parts = self.path.parts[-5:]
        return "/".join(parts)[: -len(".parquet")]


def read_query_versions(systems_dir: Path) -> dict:
    """Parsed ``query_versions.yaml`` (empty dict when missing)."""
    path = systems_dir / "query_versions.yaml"
    if not path.is_file():
        return {}
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def framework_versions(data_dir: Path, framework: str) -> list[str]:
    """All version folders of ``framework`` under any op family of one system, oldest first."""
    found = set()
    if data_dir.is_dir():
        for family in data_dir.iterdir():
            fw = family / framework
            if fw.is_dir():
                found.update(p.name for p in fw.iterdir() if p.is_dir())
    return sorted(found, key=Version)


def resolve_version(systems_dir: Path, system: str, framework: str, version: str | None) -> str:
    """Turn ``None``/``current``/``previous``/``next``/an explicit version into a version folder name.

    Raises :class:`ConfigError` for unknown frameworks, unset slots and versions with no folder.
    """
    if framework not in FRAMEWORKS:
        raise ConfigError("<api>", "framework", f"unknown framework {framework!r}; expected one of {list(FRAMEWORKS)}")
    data_dir = systems_dir / "data" / system
    available = framework_versions(data_dir, framework)
    if not available:
        raise ConfigError(str(data_dir), framework, f"no {framework} tables for system {system!r}")
    qv = read_query_versions(systems_dir)
    slots = dict((qv.get("defaults") or {}).get(framework) or {})
    slots.update(((qv.get("overrides") or {}).get(system) or {}).get(framework) or {})
    qv_path = str(systems_dir / "query_versions.yaml")
    requested = "current" if version is None else str(version)
    if requested in ("current", "previous"):
        value = slots.get(requested)
        if not value:
            raise ConfigError(qv_path, f"{framework}.{requested}", f"no {requested!r} version slot for {system}/{framework}")
        requested = str(value)
    elif requested == "next":
        current = slots.get("current")
        newer = [v for v in available if current is None or Version(current) < Version(v)]
        if not newer:
            raise ConfigError(qv_path, f"{framework}.next", f"no version folder newer than current={current!r}")
        requested = newer[-1]
    if requested not in available:
        raise ConfigError("<api>", "version",
                          f"{framework} version {requested!r} has no data for {system}; available: {available}")
    return requested


def table_sources(data_dir: Path, family: str, framework: str, table_file: str, version: str) -> list[TableSource]:
    """Parquet files that serve ``<family>/<framework>/<version>/<table_file>``, in precedence order.

    The requested version first, then older version folders (backward fill); a ``reuse.yaml``
    entry for the table redirects to the named older folder. Duplicated files are listed once.
    """
    fw_dir = data_dir / family / framework
    if not fw_dir.is_dir():
        return []
    target = Version(version)
    versions = sorted((p.name for p in fw_dir.iterdir() if p.is_dir()), key=Version, reverse=True)
    out: list[TableSource] = []
    seen: set[Path] = set()
    table = table_file.removesuffix(".parquet")
    for v in versions:
        if target < Version(v):
            continue
        path = fw_dir / v / table_file
        if not path.is_file():
            reused = _reused_from(fw_dir / v / "reuse.yaml", table)
            path = fw_dir / reused / table_file if reused else None
        if path is not None and path.is_file() and path not in seen:
            seen.add(path)
            out.append(TableSource(version=v, path=path))
    return out


def _reused_from(reuse_yaml: Path, table: str) -> str | None:
    if not reuse_yaml.is_file():
        return None
    with open(reuse_yaml) as fh:
        doc = yaml.safe_load(fh) or {}
    for entry in doc.get("reuse") or []:
        if entry.get("table") == table and entry.get("from_version"):
            return str(entry["from_version"])
    return None
