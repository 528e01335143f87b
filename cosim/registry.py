"""Registries: named implementations that code looks up instead of branching on strings.

One :class:`Registry` per kind of thing (topology generators, communication libraries, step
layouts, batching policies, workload distributions and arrival processes ...): a ``dict`` from
name to implementation with a decorator that fills it, refusing duplicates, and a lookup whose
error names the known entries.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from cosim.errors import ConfigError

T = TypeVar("T")


class Registry(dict):
    """Name -> implementation. ``what`` names the kind in messages; with ``name_attr`` the
    decorator also sets that attribute of a registered class to its name (``cls.kind``)."""

    def __init__(self, what: str, *, name_attr: str | None = None):
        super().__init__()
        self.what = what
        self.name_attr = name_attr

    def add(self, name: str, item: Any) -> Any:
        """Register ``item`` under ``name`` (ValueError on a duplicate: a programming error)."""
        if name in self:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name``."""
        def deco(item: T) -> T:
            if self.name_attr is not None:
                setattr(item, self.name_attr, name)
            self.add(name, item)
            return item
        return deco

    def lookup(self, name: str, source: str = "<api>", field: str = "") -> Any:
        """The implementation ``name``; ConfigError naming ``source``/``field`` and the known names."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ConfigError(source, field, f"unknown {self.what} {name!r}; expected one of {sorted(self)}") from None
