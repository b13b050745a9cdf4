"""The key order of an ``ordered_set``: a sorted list split into bounded blocks.

One flat sorted list makes every insert in the middle move the whole tail (a
million keys: ~8 MB of pointers per insert). Here keys live in sorted blocks of at
most ``2 * LOAD`` keys, with the last key of each block in ``maxes``: an insert or a
delete bisects ``maxes``, then one block (the idea of ``sortedcontainers.SortedList``,
reduced to what a table needs). Appending past the end, the common case (sequence
numbers, timestamps), stays O(1).

Keys must be mutually comparable; a key that is not (see ``Table.apply``) is kept
aside in ``odd``: iterated last, never returned by ``next_after``/``prev_before``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from typing import Any

LOAD = 512


class SortedKeys:
    """Sorted, duplicate-free keys in blocks (see the module docstring)."""

    __slots__ = ("blocks", "maxes", "n", "odd")

    def __init__(self, keys: Iterable[Any] = ()) -> None:
        self.blocks: list[list[Any]] = []
        self.maxes: list[Any] = []
        self.n = 0
        self.odd: list[Any] = []
        self.reset(sorted(keys))

    def reset(self, ordered: list[Any]) -> None:
        """Replace the content by ``ordered`` (already sorted, no duplicates)."""
        self.blocks = [ordered[i:i + LOAD] for i in range(0, len(ordered), LOAD)]
        self.maxes = [b[-1] for b in self.blocks]
        self.n = len(ordered)
        self.odd = []

    def __len__(self) -> int:
        return self.n + len(self.odd)

    def __bool__(self) -> bool:
        return self.n > 0 or bool(self.odd)

    def __iter__(self) -> Iterator[Any]:
        for b in self.blocks:
            yield from b
        yield from self.odd

    def first(self) -> Any:
        return self.blocks[0][0] if self.blocks else None

    def last(self) -> Any:
        return self.blocks[-1][-1] if self.blocks else None

    def add(self, key: Any) -> None:
        """Insert a key that is not present. ``TypeError`` if it does not compare with
        the keys present (nothing changes then)."""
        maxes = self.maxes
        if not maxes:
            self.blocks.append([key])
            maxes.append(key)
            self.n = 1
            return
        if maxes[-1] < key:  # the common case: past the end
            block = self.blocks[-1]
            block.append(key)
            maxes[-1] = key
            i = len(maxes) - 1
        else:
            i = bisect_left(maxes, key)
            block = self.blocks[i]
            insort(block, key)
            maxes[i] = block[-1]
        self.n += 1
        if len(block) > 2 * LOAD:
            half = block[LOAD:]
            del block[LOAD:]
            maxes[i] = block[-1]
            self.blocks.insert(i + 1, half)
            maxes.insert(i + 1, half[-1])

    def add_odd(self, key: Any) -> None:
        self.odd.append(key)

    def discard(self, key: Any) -> None:
        """Remove ``key`` if present."""
        odd = self.odd
        if odd:
            for j, k in enumerate(odd):
                if k is key or k == key:
                    del odd[j]
                    return
        maxes = self.maxes
        try:
            i = bisect_left(maxes, key)
        except TypeError:
            return
        if i == len(maxes):
            return
        block = self.blocks[i]
        j = bisect_left(block, key)
        if j < len(block) and block[j] == key:
            del block[j]
            self.n -= 1
            if not block:
                del self.blocks[i]
                del maxes[i]
            else:
                maxes[i] = block[-1]

    def next_after(self, key: Any) -> Any:
        """The smallest key > ``key``, or None."""
        maxes = self.maxes
        i = bisect_right(maxes, key)
        if i == len(maxes):
            return None
        block = self.blocks[i]
        return block[bisect_right(block, key)]

    def prev_before(self, key: Any) -> Any:
        """The largest key < ``key``, or None."""
        maxes = self.maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return maxes[-1] if maxes else None
        block = self.blocks[i]
        j = bisect_left(block, key)
        if j > 0:
            return block[j - 1]
        return self.blocks[i - 1][-1] if i > 0 else None

    def clear(self) -> None:
        self.reset([])
