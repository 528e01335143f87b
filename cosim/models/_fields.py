"""Strict readers for fields of a JSON config, raising ConfigError that names the field."""

from __future__ import annotations

from typing import Any

from cosim.errors import ConfigError

_MISSING = object()


class Fields:
    """Typed access to one JSON object; ``prefix`` is its dotted path inside ``source``."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = ""):
        self.data = data
        self.source = source
        self.prefix = prefix

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.path(key), message)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def int(self, key: str, default: Any = _MISSING, minimum: int = 1) -> int:
        """A required (or defaulted) integer ``>= minimum``; floats with integral value accepted."""
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, f"missing required integer field (expected an integer >= {minimum})")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise self.error(key, f"expected an integer >= {minimum}, got {value!r}")
        if value < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {value!r}")
        return int(value)

    def first_int(self, keys: tuple[str, ...], default: Any = _MISSING, minimum: int = 1) -> int:
        """The first present key of ``keys`` read as :meth:`int`."""
        for key in keys:
            if self.has(key):
                return self.int(key, minimum=minimum)
        if default is _MISSING:
            raise self.error(keys[0], "missing required integer field"
                             + (f" (also looked for {', '.join(keys[1:])})" if len(keys) > 1 else ""))
        return default

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def int_list(self, key: str, length: int | None = None) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise self.error(key, f"expected a list of integers, got {value!r}")
        if length is not None and len(value) != length:
            raise self.error(key, f"expected {length} entries (one per layer), got {len(value)}")
        return list(value)

    def str_list(self, key: str, allowed: tuple[str, ...], length: int | None = None) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        if length is not None and len(value) != length:
            raise self.error(key, f"expected {length} entries (one per layer), got {len(value)}")
        bad = sorted({v for v in value if v not in allowed})
        if bad:
            raise self.error(key, f"unsupported value(s) {bad}; supported: {list(allowed)}")
        return list(value)
