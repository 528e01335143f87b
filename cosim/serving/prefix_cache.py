"""A capacity-limited LRU cache of reusable prompt prefixes (the KV cache of shared prefixes).

Each entry is one prefix id holding its ``prefix_tokens`` of KV. :meth:`PrefixCache.lookup` is a
full hit (the whole prefix is resident, its tokens need no prefill) or a miss, after which the
prefix is inserted, evicting least recently used entries until it fits. A prefix larger than the
capacity is never cached. Requests in flight may :meth:`~PrefixCache.pin` their prefix so that it
is not evicted under them; pinned entries are skipped by eviction, and a miss that cannot make
room without evicting a pinned entry is not inserted.

The cache counts by lookup (``hit_rate``) and by token (``token_hit_rate``). With uniform access
to K equal prefixes and room for C of them, the steady-state hit rate of an LRU (and of any
policy) is C/K; ``tests/test_workload.py`` checks it. Semantics and examples: ``docs/workloads.md``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cosim.errors import CosimError


class PrefixCacheError(CosimError, ValueError):
    """A prefix cache was used inconsistently (a prefix id with two lengths, unpin without pin ...)."""


@dataclass(frozen=True)
class PrefixCacheStats:
    """Counters of a :class:`PrefixCache` at one moment.

    ``hit_rate`` is hits / lookups and ``token_hit_rate`` hit_tokens / lookup_tokens (both 0 before
    the first lookup). ``bypasses`` counts misses of prefixes larger than the whole capacity (never
    cached) and ``rejections`` misses that found no room because pinned entries filled the cache.
    """

    capacity_tokens: int
    used_tokens: int
    entries: int
    lookups: int
    hits: int
    lookup_tokens: int
    hit_tokens: int
    insertions: int
    evictions: int
    evicted_tokens: int
    bypasses: int
    rejections: int

    @property
    def misses(self) -> int:
        return self.lookups - self.hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def token_hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0


class _Entry:
    __slots__ = ("tokens", "pins", "last_access_s")

    def __init__(self, tokens: int, now_s: float):
        self.tokens, self.pins, self.last_access_s = tokens, 0, now_s


class PrefixCache:
    """LRU cache of prefix ids, each holding a fixed number of KV tokens, within ``capacity_tokens``.

    >>> c = PrefixCache(capacity_tokens=8192)
    >>> c.lookup(7, 4096, now_s=0.0)   # miss: inserted
    0
    >>> c.lookup(7, 4096, now_s=1.0)   # hit: 4096 tokens need no prefill
    4096
    >>> c.hit_rate
    0.5
    """

    def __init__(self, capacity_tokens: int):
        if isinstance(capacity_tokens, bool) or not isinstance(capacity_tokens, int) or capacity_tokens < 0:
            raise PrefixCacheError(f"capacity_tokens must be an integer >= 0, got {capacity_tokens!r}")
        self.capacity_tokens = capacity_tokens
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self.used_tokens = 0
        self.lookups = self.hits = self.lookup_tokens = self.hit_tokens = 0
        self.insertions = self.evictions = self.evicted_tokens = self.bypasses = self.rejections = 0

    # --- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prefix_id: int) -> bool:
        return prefix_id in self._entries

    def lru_order(self) -> list[int]:
        """Resident prefix ids, least recently used first (the next victim is the first unpinned)."""
        return list(self._entries)

    def tokens_of(self, prefix_id: int) -> int:
        """KV tokens held by a resident prefix (:class:`PrefixCacheError` when not resident)."""
        return self._entry(prefix_id).tokens

    def last_access_s(self, prefix_id: int) -> float:
        """Simulation time of the last lookup of a resident prefix."""
        return self._entry(prefix_id).last_access_s

    def is_pinned(self, prefix_id: int) -> bool:
        e = self._entries.get(prefix_id)
        return e is not None and e.pins > 0

    @property
    def hit_rate(self) -> float:
        """Hits / lookups so far (0 before the first lookup)."""
        return self.stats().hit_rate

    @property
    def token_hit_rate(self) -> float:
        """Hit tokens / looked-up tokens so far."""
        return self.stats().token_hit_rate

    def stats(self) -> PrefixCacheStats:
        """A frozen copy of the counters."""
        return PrefixCacheStats(
            capacity_tokens=self.capacity_tokens, used_tokens=self.used_tokens, entries=len(self._entries),
            lookups=self.lookups, hits=self.hits, lookup_tokens=self.lookup_tokens,
            hit_tokens=self.hit_tokens, insertions=self.insertions, evictions=self.evictions,
            evicted_tokens=self.evicted_tokens, bypasses=self.bypasses, rejections=self.rejections)

    # --- updates -------------------------------------------------------------------------------

    def lookup(self, prefix_id: int, tokens: int, now_s: float = 0.0) -> int:
        """Look a prefix up; return the tokens found resident (``tokens`` on a hit, 0 on a miss).

        A hit makes the prefix the most recently used. A miss inserts it, evicting least recently
        used unpinned entries until it fits; a prefix larger than the capacity is not cached
        (counted in ``bypasses``), nor is one that pinned entries leave no room for
        (``rejections``). A resident prefix id looked up with another length is an error.
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise PrefixCacheError(f"prefix {prefix_id}: tokens must be an integer >= 0, got {tokens!r}")
        if prefix_id < 0:
            raise PrefixCacheError(f"prefix ids are >= 0 (-1 means no shared prefix), got {prefix_id}")
        self.lookups += 1
        self.lookup_tokens += tokens
        entry = self._entries.get(prefix_id)
        if entry is not None:
            if entry.tokens != tokens:
                raise PrefixCacheError(f"prefix {prefix_id} is cached with {entry.tokens} tokens, "
                                       f"looked up with {tokens}: one prefix id has one length")
            self._entries.move_to_end(prefix_id)
            entry.last_access_s = now_s
            self.hits += 1
            self.hit_tokens += tokens
            return tokens
        self._insert(prefix_id, tokens, now_s)
        return 0

    def pin(self, prefix_id: int) -> bool:
        """Protect a resident prefix from eviction (pins nest); False, and no pin, if not resident."""
        entry = self._entries.get(prefix_id)
        if entry is None:
            return False
        entry.pins += 1
        return True

    def unpin(self, prefix_id: int) -> None:
        """Release one pin taken by :meth:`pin` (error if the prefix holds none)."""
        entry = self._entries.get(prefix_id)
        if entry is None or entry.pins == 0:
            raise PrefixCacheError(f"prefix {prefix_id} is not pinned")
        entry.pins -= 1

    def clear(self) -> None:
        """Drop every entry (pinned ones too); counters are kept."""
        self._entries.clear()
        self.used_tokens = 0

    def _entry(self, prefix_id: int) -> _Entry:
        entry = self._entries.get(prefix_id)
        if entry is None:
            raise PrefixCacheError(f"prefix {prefix_id} is not resident")
        return entry

    def _insert(self, prefix_id: int, tokens: int, now_s: float) -> None:
        if tokens > self.capacity_tokens:
            self.bypasses += 1
            return
        need = self.used_tokens + tokens - self.capacity_tokens
        if need > 0:
            victims, freed = [], 0
            for pid, e in self._entries.items():  # least recently used first
                if e.pins:
                    continue
                victims.append(pid)
                freed += e.tokens
                if freed >= need:
                    break
            if freed < need:
                self.rejections += 1
                return
            for pid in victims:
                self.used_tokens -= self._entries.pop(pid).tokens
            self.evictions += len(victims)
            self.evicted_tokens += freed
        self._entries[prefix_id] = _Entry(tokens, now_s)
        self.used_tokens += tokens
        self.insertions += 1
