"""One concurrency limit per backend object, shared by every solve that uses it.

Many concurrent solves on one backend then queue their rollouts in one line instead of each
flooding the server. The line is ordered by a priority the caller gives (lower first, FIFO
among equals): the controller passes (solve start time, stage), so the oldest solve finishes
first and frees its place for the next problem. The limit only grows: a solve asks for at
least its own need, so the default never throttles a single solve below its population.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref

__all__ = ["DEFAULT_MAX_CONCURRENCY", "SharedLimiter", "limiter_for"]

DEFAULT_MAX_CONCURRENCY = 64


class SharedLimiter:
    """A counting limiter with a priority queue, whose capacity can be raised while in use."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiters: list[tuple[tuple, int, asyncio.Future[None]]] = []  # a heap
        self._order = itertools.count()

    def raise_to(self, capacity: int) -> None:
        if capacity > self.capacity:
            self.capacity = capacity
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.capacity:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    async def acquire(self, priority: tuple = ()) -> None:
        if self.in_use < self.capacity and not self._waiters:
            self.in_use += 1
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled
                self.release()
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def slot(self, priority: tuple = ()) -> _Slot:
        """`async with limiter.slot(priority):` holds one unit of capacity."""
        return _Slot(self, priority)


class _Slot:
    def __init__(self, limiter: SharedLimiter, priority: tuple) -> None:
        self.limiter, self.priority = limiter, priority

    async def __aenter__(self) -> None:
        await self.limiter.acquire(self.priority)

    async def __aexit__(self, *exc: object) -> None:
        self.limiter.release()


# backend -> {event loop -> limiter}; futures belong to one loop, so limiters do too
_LIMITERS: weakref.WeakKeyDictionary[object, weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()


def limiter_for(backend: object, need: int) -> SharedLimiter:
    loop = asyncio.get_running_loop()
    try:
        per_loop = _LIMITERS.setdefault(backend, weakref.WeakKeyDictionary())
    except TypeError:  # not weak-referenceable: a private limiter for this solve
        return SharedLimiter(need)
    limiter = per_loop.get(loop)
    if limiter is None:
        limiter = per_loop[loop] = SharedLimiter(need)
    limiter.raise_to(need)
    return limiter
