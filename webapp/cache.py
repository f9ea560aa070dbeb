"""Small in-process caches: serialised API responses bounded in age and in bytes, and known keys.

Used for the house daily-kWh API: its rows change only when the nightly batch writes,
so an answer up to DAILY_CACHE_TTL_S old is as good as a fresh one. Each server
process has its own cache; nothing is shared or persisted.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

KNOWN_KEYS_MAX = 100_000


class ResponseCache:
    """Least recently used entries of bytes, each valid for ttl_s seconds; ttl_s <= 0 disables it."""

    def __init__(self, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = float(ttl_s)
        self.max_bytes = int(max_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_bytes > 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> bytes | None:
        """The cached body, or None when absent or older than ttl_s."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
            if found is None or found[0] <= now:
                if found is not None:
                    self._drop(key)
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: Hashable, body: bytes) -> None:
        """Keep body for ttl_s; the least recently used entries leave to stay within max_bytes."""
        if not self.enabled or len(body) > self.max_bytes:
            return
        expires = self._clock() + self.ttl_s
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (expires, body)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        _expires, body = self._entries.pop(key)
        self._bytes -= len(body)


class KnownKeys:
    """Keys seen to exist (house ids), each remembered for ttl_s seconds, at most max_entries of them
    (the oldest leave first); ttl_s <= 0 remembers none."""

    def __init__(self, ttl_s: float, max_entries: int = KNOWN_KEYS_MAX, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            expires = self._expiry.get(key)
            if expires is not None and expires <= self._clock():
                del self._expiry[key]
                return False
            return expires is not None

    def add(self, key: Hashable) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        with self._lock:
            self._expiry.pop(key, None)
            self._expiry[key] = self._clock() + self.ttl_s
            while len(self._expiry) > self.max_entries:
                self._expiry.popitem(last=False)
