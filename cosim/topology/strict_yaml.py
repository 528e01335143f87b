"""A strict YAML loader for cosim's configuration files (topologies, and any later spec file).

PyYAML follows YAML 1.1, which turns many innocent-looking scalars into numbers or booleans:
``2:1`` is the base-60 integer 121, ``1_000`` is 1000, ``0x10`` is 16, ``017`` is 15, ``.inf`` is
infinity and ``yes``/``no``/``on``/``off`` are booleans. In a configuration file those readings
are almost always wrong and silent. :class:`StrictLoader` resolves plain scalars like this
instead (close to the YAML 1.2 core schema):

========================================  ==========================================
plain scalar                              becomes
========================================  ==========================================
``0``, ``8``, ``-3``                      int (decimal digits, no leading zero)
``1.5``, ``-0.25``, ``1e3``, ``2.5e-3``   float
``true``, ``false`` (any capitalization)  bool
``null``, ``~``, empty                    None
anything else (``2:1``, ``1_000``,        str, left to the field reader, which says
``0x10``, ``0o17``, ``017``, ``.inf``,    what form it expected
``yes``, ``on``, ``2024-01-01`` ...)
========================================  ==========================================

A mapping that repeats a key is an error (PyYAML would keep the last value silently).

Bounded input (limits in :mod:`cosim.limits`): a file larger than ``MAX_FILE_BYTES`` is refused
before it is read; a file that is not UTF-8 (UTF-16, Latin-1 ...) is an error naming the file (a
UTF-8 byte-order mark is fine); nesting deeper than ``MAX_NESTING_DEPTH`` is an error (not a
``RecursionError``); anchors and aliases may be reused, but a document whose alias expansion
counts more than ``MAX_YAML_NODES`` nodes (a "billion laughs" bomb) or that refers to itself is
refused before any value is built. Error messages never embed an expanded value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cosim.errors import ConfigError, CosimError
from cosim.limits import MAX_FILE_BYTES, MAX_NESTING_DEPTH, MAX_YAML_NODES, quote

_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT_RE = re.compile(r"[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)\Z")
_BOOL_RE = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
#: YAML 1.1 tags whose implicit resolvers are replaced.
_REPLACED_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                  "tag:yaml.org,2002:timestamp"}


class DuplicateKeyError(CosimError, yaml.constructor.ConstructorError):
    """A mapping repeats a key; carries the key and both line numbers (1-based). Raised inside the
    YAML constructor (hence a ``yaml`` error too); :func:`load_yaml_text` turns it into a
    :class:`ConfigError`."""

    def __init__(self, key: Any, first_line: int, line: int, mark: yaml.Mark):
        self.key, self.first_line, self.line = key, first_line, line
        super().__init__(None, None, f"duplicate key {quote(key, 60)} (first at line {first_line}, again at line {line})", mark)


class YamlLimitError(CosimError, yaml.YAMLError):
    """The document exceeds a limit of :mod:`cosim.limits` (nesting depth, alias expansion);
    :func:`load_yaml_text` turns it into a :class:`ConfigError`."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(message)


class _Strict:
    """The strict rules, shared by the pure-Python loader and the libyaml-backed one."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING_DEPTH.value:
                mark = self.peek_event().start_mark
                raise YamlLimitError("", f"nesting deeper than the limit MAX_NESTING_DEPTH = "
                                         f"{MAX_NESTING_DEPTH.value} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: SafeLoader reports it below
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, first.line + 1, key_node.start_mark.line + 1, key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        return self._number(node, int)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        return self._number(node, float)

    def _number(self, node: yaml.ScalarNode, kind: type) -> Any:
        text = self.construct_scalar(node)
        pattern = _INT_RE if kind is int else _FLOAT_RE
        if not pattern.match(text):  # only reachable with an explicit !!int / !!float tag
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a decimal {kind.__name__}, got {text!r}", node.start_mark)
        return kind(text)


class StrictLoader(_Strict, yaml.SafeLoader):
    """``yaml.SafeLoader`` without YAML 1.1's implicit number/bool/date forms, rejecting duplicate
    keys, nesting deeper than ``MAX_NESTING_DEPTH`` and alias expansion beyond ``MAX_YAML_NODES``."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_RE, list("tTfF"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+.0123456789"))
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)

try:  # libyaml's scanner and parser (4x faster on large files); the composer stays Python's
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _CParser = None

if _CParser is not None:
    class _StrictCLoader(_Strict, yaml.composer.Composer, _CParser, yaml.constructor.SafeConstructor,
                         yaml.resolver.Resolver):
        """:class:`StrictLoader` with libyaml's scanner/parser: the same events, resolvers,
        constructors and limits (the Python composer counts the nesting depth)."""

        yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers
        yaml_constructors = StrictLoader.yaml_constructors

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _FAST_LOADER: type = _StrictCLoader
else:  # pragma: no cover
    _FAST_LOADER = StrictLoader


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of ``root`` with every alias expanded (memoized per node, so linear in the
    document); refuse more than ``MAX_YAML_NODES`` and self-referencing anchors."""
    limit = int(MAX_YAML_NODES.value)
    size: dict[int, int] = {}
    on_stack: set[int] = set()
    # iterative post-order walk: (node, children visited?)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_stack.discard(key)
            total = 1
            for child in _children(node):
                total += size[id(child)]
            if total > limit:
                raise YamlLimitError("", f"anchors and aliases expand to more than the limit MAX_YAML_NODES = "
                                         f"{limit:,} nodes (line {node.start_mark.line + 1}); "
                                         "an alias may repeat a value, not blow it up")
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_stack:
            raise YamlLimitError("", f"an alias refers to the value that contains it (line "
                                     f"{node.start_mark.line + 1}); recursive values are not allowed")
        on_stack.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_stack:
                raise YamlLimitError("", f"an alias refers to the value that contains it (line "
                                         f"{child.start_mark.line + 1}); recursive values are not allowed")
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with :class:`StrictLoader`; errors become :class:`ConfigError` naming ``source``."""
    if len(text) > MAX_FILE_BYTES.value:
        raise ConfigError(source, "", f"{len(text):,} characters exceed the limit MAX_FILE_BYTES = "
                                      f"{MAX_FILE_BYTES.value:,} ({MAX_FILE_BYTES.reason})")
    try:
        return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a SafeLoader with stricter rules
    except YamlLimitError as exc:
        raise ConfigError(source, exc.field, exc.message) from None
    except RecursionError:
        raise ConfigError(source, "", f"nesting too deep (limit MAX_NESTING_DEPTH = "
                                      f"{MAX_NESTING_DEPTH.value} levels)") from None
    except DuplicateKeyError as exc:
        raise ConfigError(source, str(exc.key)[:80] if isinstance(exc.key, str) else quote(exc.key, 60),
                          f"duplicate key (first at line {exc.first_line}, again at line {exc.line}); "
                          "each key may appear once per mapping") from None
    except yaml.YAMLError as exc:
        text = str(exc)
        if "maximum nesting depth" in text:  # libyaml's own guard (1,000 flow levels) fired first
            raise ConfigError(source, "", f"nesting deeper than the limit MAX_NESTING_DEPTH = "
                                          f"{MAX_NESTING_DEPTH.value} levels") from None
        if len(text) > 400:
            text = text[:400] + " ..."
        raise ConfigError(source, "", f"not valid YAML: {text}") from None


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (a UTF-8 byte-order mark is dropped), refusing files larger
    than ``MAX_FILE_BYTES`` before reading them and other encodings with an error naming the file."""
    path = Path(path)
    limit = int(MAX_FILE_BYTES.value)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(str(path), "", f"the {what} is larger than the limit MAX_FILE_BYTES = {limit:,} bytes "
                                         f"({MAX_FILE_BYTES.reason})")
    return decode_utf8(data, str(path))


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` decoded as UTF-8 (an initial byte-order mark dropped); ConfigError naming
    ``source`` for UTF-16/UTF-32 or any invalid UTF-8 byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) >= 2 and (data[0] == 0 or data[1] == 0)):
        raise ConfigError(source, "", "expected UTF-8 text; the file looks UTF-16 or UTF-32 encoded "
                                      "(re-save it as UTF-8)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(source, "", f"expected UTF-8 text; byte 0x{data[exc.start]:02x} at offset {exc.start} "
                                      f"(line {line}) is not valid UTF-8 (a Latin-1 or other legacy encoding? "
                                      "re-save the file as UTF-8)") from None
    if "\x00" in text:
        raise ConfigError(source, "", "expected UTF-8 text; the file contains NUL characters")
    return text


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file strictly (see :func:`load_yaml_text` and :func:`read_text_file`)."""
    return load_yaml_text(read_text_file(path), str(Path(path)))
