"""The one batcher: groups images of one processed size into forward passes of ``--batch-size``.

Every front end (``convert``'s local engine, the Ray actors, ``animecli bench``) forms its
batches here, so a batch size means the same thing everywhere. A batch holds images of one size
only (the engines stack them into one tensor). Items are released in bounded time: a folder of
mixed sizes would otherwise keep an image of a rare size (and every later report row, emitted
in arrival order) waiting for a partner until the end of the run.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SizeBatcher(Generic[T]):
    """Groups items by a key (the processed ``(height, width)``) into batches of ``batch_size``.

    :meth:`add` returns the batches to run now, in order:

    - the key's group once it is full;
    - else, once ``2 × batch_size`` items wait in all, the largest group (bounds memory);
    - then the group whose first item arrived ``2 × batch_size`` arrivals ago or more, run
      smaller (bounds how long a record waits).

    :meth:`drain` returns what is left, oldest group first. With ``batch_size`` 1 every item is
    its own batch at once.

    Args:
        batch_size: the most items per batch (values below 1 count as 1).
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = max(1, batch_size)
        # key -> [(arrival, item)]; dicts keep insertion order, which drain() relies on.
        self._pending: dict[Hashable, list[tuple[int, T]]] = {}
        self._waiting = 0

    def __len__(self) -> int:
        """Items waiting for a partner."""
        return self._waiting

    def _take(self, key: Hashable) -> list[T]:
        group = self._pending.pop(key)
        self._waiting -= len(group)
        return [item for _, item in group]

    def add(self, key: Hashable, item: T, arrival: int) -> list[list[T]]:
        """Queue ``item`` (its ``arrival`` number counts every file the caller has seen, so that
        files that never reach the engine still age the waiting ones); return the batches due."""
        self._pending.setdefault(key, []).append((arrival, item))
        self._waiting += 1
        due: list[list[T]] = []
        n = self.batch_size
        if len(self._pending[key]) >= n:
            due.append(self._take(key))
        elif self._waiting >= 2 * n:
            due.append(self._take(max(self._pending, key=lambda k: len(self._pending[k]))))
        if self._pending:
            oldest = min(self._pending, key=lambda k: self._pending[k][0][0])
            if arrival - self._pending[oldest][0][0] >= 2 * n:
                due.append(self._take(oldest))
        return due

    def drain(self) -> list[list[T]]:
        """Every waiting group, in the order the groups were started."""
        return [self._take(key) for key in list(self._pending)]
