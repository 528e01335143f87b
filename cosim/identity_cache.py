"""A small cache of values derived from an object, looked up by the object's identity.

Some inputs are large frozen objects (a :class:`~cosim.topology.Topology` of thousands of links, a
kernel-table set) whose digests or derived tables are asked for at every design point of a sweep.
Hashing such an object by value costs as much as deriving the value again; looking it up by
``id()`` is free, and safe because every entry holds a reference to its object (so the id cannot
be reused by another object while the entry lives). Entries beyond ``maxsize`` are dropped
oldest first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable


class IdentityCache:
    """``get(obj, build, extra)``: ``build()`` once per ``(obj, extra)``; ``obj`` by identity,
    ``extra`` (hashable) by value."""

    def __init__(self, maxsize: int = 64):
        self.maxsize = int(maxsize)
        self._entries: OrderedDict[tuple[int, Hashable], tuple[Any, Any]] = OrderedDict()

    def get(self, obj: Any, build: Callable[[], Any], extra: Hashable = None) -> Any:
        key = (id(obj), extra)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is obj:
            self._entries.move_to_end(key)
            return hit[1]
        value = build()
        self._entries[key] = (obj, value)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return value
