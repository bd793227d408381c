"""Per-connection outgoing queue: ordered; partials may be dropped when a client is slow, nothing else."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Outbox:
    def __init__(self, max_partials: int, max_items: int = 1_000_000) -> None:
        self._items: deque[tuple[dict[str, Any], bool]] = deque()
        self._max_partials = max_partials
        self._max_items = max_items
        self._partials = 0
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped_partials = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def overflowing(self) -> bool:
        """More undroppable replies are waiting than the client may fall behind by."""
        return len(self._items) - self._partials > self._max_items

    def put(self, message: dict[str, Any], droppable: bool = False) -> None:
        if self._closed:
            return
        if droppable:
            if self._partials >= self._max_partials:
                self._drop_oldest_partial()
            self._partials += 1
        self._items.append((message, droppable))
        self._ready.set()

    def _drop_oldest_partial(self) -> None:
        for i, (_, droppable) in enumerate(self._items):
            if droppable:
                del self._items[i]
                self._partials -= 1
                self.dropped_partials += 1
                return

    async def get(self) -> dict[str, Any] | None:
        """Next message, or None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        message, droppable = self._items.popleft()
        if droppable:
            self._partials -= 1
        return message

    def close(self) -> None:
        """No more messages will be put; get() drains what is queued, then returns None."""
        self._closed = True
        self._ready.set()
