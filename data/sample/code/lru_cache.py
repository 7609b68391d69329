"""A small least-recently-used (LRU) cache built on OrderedDict.

The cache holds at most ``capacity`` items. Every read or write marks a key
as most recently used; when the cache is full, inserting a new key evicts
the entry that has gone unused the longest.
"""

from collections import OrderedDict


class LRUCache:
    """Fixed-size mapping that evicts the least recently used entry."""

    def __init__(self, capacity):
        """Create an empty cache that can hold ``capacity`` entries."""
        if capacity <= 0:
            raise ValueError("capacity must be a positive integer")
        self.capacity = capacity
        self._data = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key, default=None):
        """Return the value for ``key`` and mark it as recently used."""
        if key not in self._data:
            self.misses += 1
            return default
        self.hits += 1
        # Moving the key to the end records it as the newest entry.
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key, value):
        """Insert or update ``key``, evicting the oldest entry if needed."""
        if key in self._data:
            self._data.move_to_end(key)
        self._data[key] = value
        if len(self._data) > self.capacity:
            # popitem(last=False) removes the least recently used item.
            evicted, _ = self._data.popitem(last=False)
            return evicted
        return None

    def __contains__(self, key):
        """Membership test that does not change recency."""
        return key in self._data

    def __len__(self):
        return len(self._data)

    def hit_ratio(self):
        """Fraction of lookups that were served from the cache."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def memoize_lru(capacity=128):
    """Decorator that caches a function's results in an LRUCache."""

    def decorator(func):
        cache = LRUCache(capacity)
        sentinel = object()

        def wrapper(*args):
            result = cache.get(args, sentinel)
            if result is sentinel:
                result = func(*args)
                cache.put(args, result)
            return result

        wrapper.cache = cache
        wrapper.__name__ = func.__name__
        wrapper.__doc__ = func.__doc__
        return wrapper

    return decorator


if __name__ == "__main__":
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")          # "a" is now the most recent
    print(cache.put("c", 3))  # evicts "b"
    print("b" in cache, "a" in cache, "c" in cache)

    @memoize_lru(capacity=64)
    def fib(n):
        """Naive Fibonacci made fast by memoization."""
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    print(fib(80), round(fib.cache.hit_ratio(), 3))
