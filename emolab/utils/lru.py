"""A least-recently-used map bounded by the bytes of its values.

Used by the decode-once cache (:class:`~emolab.data.cache.FrameCache`, frames and
audio per process).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["ByteLRU"]

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Keys to values, least recently used first out once the values' bytes exceed ``max_bytes``.

    Args:
        max_bytes: the bound; 0 (or less) keeps nothing.
        size: bytes of a value. Must be picklable (a module-level function)
            for the map to be.

    A value larger than the bound is not kept. A pickled map arrives empty,
    with its bound (each process fills its own).
    """

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self.max_bytes = int(max_bytes)
        self.size = size
        self._items: OrderedDict[str, V] = OrderedDict()
        self.used_bytes = 0

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes, "size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"], state["size"])

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        """Keys, least recently used first."""
        return iter(self._items)

    def get(self, key: str) -> V | None:
        """The value (now the most recently used), or ``None``."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        """Keep ``value`` as the most recently used, evicting the least recently used beyond the bound."""
        size = self.size(value)
        if self.max_bytes <= 0 or size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.used_bytes -= self.size(old)
        self._items[key] = value
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.used_bytes -= self.size(evicted)

    def clear(self) -> None:
        self._items.clear()
        self.used_bytes = 0
