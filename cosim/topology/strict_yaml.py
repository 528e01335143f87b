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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cosim.errors import ConfigError, CosimError

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
        super().__init__(None, None, f"duplicate key {key!r} (first at line {first_line}, again at line {line})", mark)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without YAML 1.1's implicit number/bool/date forms, rejecting duplicate keys."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

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


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_RE, list("tTfF"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+.0123456789"))
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with :class:`StrictLoader`; errors become :class:`ConfigError` naming ``source``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except DuplicateKeyError as exc:
        raise ConfigError(source, str(exc.key),
                          f"duplicate key (first at line {exc.first_line}, again at line {exc.line}); "
                          "each key may appear once per mapping") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file strictly (see :func:`load_yaml_text`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the file: {exc.strerror or exc}") from None
    return load_yaml_text(text, str(path))
