"""Bounded LRU cache of stream heads, so the batched writer can append with an expected version
without reading the store first.

The cache is a hint, never the truth: a stale entry makes the store answer WrongExpectedVersion,
and the writer then reloads the head and repairs the entry (Equinox-style caching by version).
"""
from __future__ import annotations

from collections import OrderedDict


class StreamVersionCache:
    """Least-recently-used map of stream id → last known head version, with hit/miss counters."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._heads: OrderedDict[str, int] = OrderedDict()

    def get(self, stream_id: str) -> int | None:
        head = self._heads.get(stream_id)
        if head is None:
            self.misses += 1
            return None
        self.hits += 1
        self._heads.move_to_end(stream_id)
        return head

    def set(self, stream_id: str, head: int) -> None:
        if head < 0:
            raise ValueError(f"stream {stream_id!r}: a head version cannot be negative ({head})")
        self._heads[stream_id] = head
        self._heads.move_to_end(stream_id)
        if len(self._heads) > self.capacity:
            self._heads.popitem(last=False)

    def invalidate(self, stream_id: str) -> None:
        self._heads.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._heads)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._heads
