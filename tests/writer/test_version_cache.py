"""StreamVersionCache: bounded LRU of stream heads with hit/miss counters."""
import pytest

from gateway.history.version_cache import StreamVersionCache


def test_get_counts_hits_and_misses() -> None:
    cache = StreamVersionCache(4)
    assert cache.get("Meter:1:2026") is None
    cache.set("Meter:1:2026", 6)
    assert cache.get("Meter:1:2026") == 6
    assert (cache.hits, cache.misses) == (1, 1)


def test_least_recently_used_entry_is_evicted_at_capacity() -> None:
    cache = StreamVersionCache(2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # "a" is now more recent than "b"
    cache.set("c", 3)
    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert cache.get("c") == 3
    assert len(cache) == 2


def test_set_overwrites_and_refreshes_recency() -> None:
    cache = StreamVersionCache(2)
    cache.set("a", 1)
    cache.set("b", 1)
    cache.set("a", 7)
    cache.set("c", 1)
    assert "b" not in cache
    assert cache.get("a") == 7


def test_invalidate_forgets_a_stream_and_tolerates_unknown_ones() -> None:
    cache = StreamVersionCache(2)
    cache.set("a", 3)
    cache.invalidate("a")
    cache.invalidate("never-seen")
    assert cache.get("a") is None


def test_bad_capacity_and_negative_head_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        StreamVersionCache(0)
    with pytest.raises(ValueError, match="negative"):
        StreamVersionCache(1).set("a", -1)
