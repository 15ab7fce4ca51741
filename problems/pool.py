"""A small pool of killable worker processes for untrusted SymPy work.

`concurrent.futures.ProcessPoolExecutor` cannot cancel a running task, and killing one of its
workers breaks the whole executor. So each slot here is its own single-worker executor: a task
that overruns its deadline gets its worker SIGKILLed and the slot rebuilt, while the other
slots carry on. Workers start lazily (forkserver where available, else spawn; never fork,
which is unsafe with threads) and import math-verify in their initializer, so start-up time
never counts against a task's deadline.

Limits: blocking API (callers that must not block run it in a thread); one task per worker at
a time; a worker killed mid-task costs a fresh process start (about a second) for the next
task on that slot.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from . import _worker

__all__ = ["TaskCrashed", "TaskTimeout", "WorkerPool"]

T = TypeVar("T")

_STARTUP_TIMEOUT_S = 120.0  # a cold worker imports SymPy; generous for loaded CI machines


class TaskTimeout(Exception):
    """The task overran its deadline; its worker was killed."""


class TaskCrashed(Exception):
    """The worker process died while running the task (segfault, OOM kill, ...)."""


def _default_context() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class _Slot:
    def __init__(self, context: str, init: Callable[[int | None], None], memory_limit_mb: int | None) -> None:
        self.executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context(context),
            initializer=init,
            initargs=(memory_limit_mb,),
        )
        try:
            # The pid lets us kill exactly this worker later; waiting for it also waits out
            # the initializer, so the first real task starts on a warm process.
            self.pid: int = self.executor.submit(os.getpid).result(timeout=_STARTUP_TIMEOUT_S)
        except BaseException:
            self.executor.shutdown(wait=False, cancel_futures=True)
            raise

    def kill(self) -> None:
        try:
            os.kill(self.pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # no SIGKILL on Windows
        except ProcessLookupError:
            pass
        self.executor.shutdown(wait=False, cancel_futures=True)


class WorkerPool:
    """Up to `max_workers` killable processes; `run(fn, *args, timeout=...)` blocks.

    `init(memory_limit_mb)` runs once in each new worker (default: math-verify's warm-up).
    """

    def __init__(
        self,
        max_workers: int = 1,
        *,
        memory_limit_mb: int | None = 2048,
        context: str | None = None,
        init: Callable[[int | None], None] = _worker.init,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if context is not None and context not in ("spawn", "forkserver"):
            raise ValueError(f"context must be 'spawn' or 'forkserver' (fork is unsafe here), got {context!r}")
        self.max_workers = max_workers
        self.memory_limit_mb = memory_limit_mb
        self.context = context or _default_context()
        self.init = init
        self._idle: list[_Slot] = []
        self._live = 0  # slots started or starting, idle or busy
        self._cond = threading.Condition()
        self._closed = False

    def _acquire(self) -> _Slot:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("WorkerPool is closed")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.max_workers:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            return _Slot(self.context, self.init, self.memory_limit_mb)
        except BaseException:
            self._drop()
            raise

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            if self._closed:
                slot.kill()
                return
            self._idle.append(slot)
            self._cond.notify()

    def _drop(self) -> None:
        with self._cond:
            self._live -= 1
            self._cond.notify()

    def run(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """fn(*args) in a worker; raises TaskTimeout or TaskCrashed instead of hanging."""
        try:
            slot = self._acquire()
        except (BrokenProcessPool, FutureTimeout):
            # The initializer failed or hung; its traceback is on the worker's stderr.
            raise TaskCrashed("worker failed to start") from None
        try:
            future = slot.executor.submit(fn, *args)
            result = future.result(timeout=timeout)
        except FutureTimeout:
            slot.kill()
            self._drop()
            raise TaskTimeout(f"worker exceeded {timeout} s and was killed") from None
        except BrokenProcessPool:
            slot.kill()
            self._drop()
            raise TaskCrashed("worker process died") from None
        except Exception:
            # The task itself raised: the worker is healthy and goes back to the pool.
            self._release(slot)
            raise
        except BaseException:
            # Interrupted while the task may still run: the slot is in an unknown state.
            slot.kill()
            self._drop()
            raise
        self._release(slot)
        return result

    def close(self) -> None:
        """Kill all idle workers now; busy ones are killed when their task returns."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for slot in idle:
            slot.kill()
