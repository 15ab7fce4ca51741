"""Grading: is a predicted answer equal to the gold one? Safe on untrusted model output.

Tiers, cheapest first; the first that decides wins (`GradeResult.grader` says which):

- `"none"`: nothing to compare: no gold, no extractable answer, or an answer longer than
  `max_answer_chars` ("too long"; never parsed, so a 1 MB answer costs nothing).
- `"int"`: gold and prediction both read as integers (`normalize.parse_int`): exact equality,
  no tolerance, as AIME requires (10 vs 1000 and 12345 vs 12346 are wrong).
- `"string"`: equal after the conservative `normalize_answer`.
- `"math_verify"`: HF math-verify in a killable worker process (`pool.WorkerPool`), gold
  first. Its own SIGALRM timeouts are off; ours kills the worker after `timeout` seconds
  ("timeout"), and a worker that dies is replaced ("worker crashed"). When either side is an
  integer, floats must match to 12 decimals instead of math-verify's 6, so `12345.0001` is
  not 12345.

Failures never raise: they come back as `correct=False` with `error` set ("no gold",
"no answer", "too long", "timeout", "unparsable", "memory limit", "worker crashed").
math-verify sees the normalised strings, and its verdicts are cached (LRU) by that pair
(either order, for `equivalent`), so a repeated hang costs one timeout, not one per sample.

`equivalent(a, b)` compares two answers (no extraction) and is symmetric: math-verify must
agree in both directions. Module-level `grade` and `equivalent` return plain bools through a
lazily started default `Grader`; use a `Grader` for the `GradeResult` details, for the async
methods, or for other limits. The sync methods block (a worker may run up to `timeout`); call
the `a*` methods from async code, they never block the event loop. Workers start with
spawn/forkserver, so a script that grades at import time needs the usual
`if __name__ == "__main__":` guard.

Known math-verify limits carried over (pinned by strict-xfail tests): tiny-value false
positives (`1/2004!` vs `1/2006!`); a percentage matches both its number and its fraction
(`50\\%` equals 50 and 0.5, so `3\\%` equals 3); and `e^{i\\pi}` is not simplified to -1.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict

from . import _worker
from .extract import DEFAULT_FALLBACKS, extract_answer
from .normalize import normalize_answer, parse_int
from .pool import TaskCrashed, TaskTimeout, WorkerPool

__all__ = ["GradeResult", "Grader", "default_grader", "equivalent", "grade"]

GraderName = Literal["int", "string", "math_verify", "none"]
_Verdict = tuple[bool, GraderName, Optional[str]]  # (correct, grader, error)

# Above this many characters, extraction runs off the event loop too.
_OFFLOAD_EXTRACT_CHARS = 50_000
_INT_FLOAT_ROUNDING = 12
_DEFAULT_FLOAT_ROUNDING = 6  # math-verify's default


class GradeResult(BaseModel):
    """One grading outcome; `error` says why a grade is False when it is not simply wrong."""

    model_config = ConfigDict(frozen=True)

    correct: bool
    extracted: str | None  # cut to max_answer_chars (plus a length note) when too long
    grader: GraderName
    error: str | None = None


class Grader:
    """Grades answers with the tiers in the module docstring; owns a worker pool and a cache."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_workers: int = 1,
        max_answer_chars: int = 1000,
        cache_size: int = 4096,
        fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
        memory_limit_mb: int | None = 2048,
        context: str | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1, got {max_answer_chars}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        extract_answer("", fallbacks=fallbacks)  # validates the fallback names now, not mid-run
        self.timeout = timeout
        self.max_answer_chars = max_answer_chars
        self.fallbacks = tuple(fallbacks)
        self._pool = WorkerPool(max_workers, memory_limit_mb=memory_limit_mb, context=context)
        # Threads only wait on workers; one spare lets offloaded extraction proceed meanwhile.
        self._threads = ThreadPoolExecutor(max_workers=max_workers + 1, thread_name_prefix="rsa-grader")
        self._cache: OrderedDict[tuple[object, ...], _Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ---- public API ------------------------------------------------------------------

    def grade(self, prediction: str | None, gold: str | int | None, *, extract: bool = True) -> GradeResult:
        """Grade model output (or, with extract=False, a bare answer) against the gold answer."""
        extracted = self._extract(prediction) if extract else prediction
        verdict, gold_n, pred_n = self._precheck(gold, extracted, symmetric=False)
        if verdict is None:
            verdict = self._verify(gold_n, pred_n, False)
        return _result(extracted, verdict, self.max_answer_chars)

    async def agrade(self, prediction: str | None, gold: str | int | None, *, extract: bool = True) -> GradeResult:
        """`grade` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        if not extract:
            extracted = prediction
        elif prediction is not None and len(prediction) > _OFFLOAD_EXTRACT_CHARS:
            extracted = await loop.run_in_executor(self._threads, self._extract, prediction)
        else:
            extracted = self._extract(prediction)
        verdict, gold_n, pred_n = self._precheck(gold, extracted, symmetric=False)
        if verdict is None:
            verdict = await loop.run_in_executor(self._threads, self._verify, gold_n, pred_n, False)
        return _result(extracted, verdict, self.max_answer_chars)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        """Whether two answers (not model output) mean the same thing; symmetric."""
        verdict, a_n, b_n = self._precheck(a, b, symmetric=True)
        if verdict is None:
            verdict = self._verify(a_n, b_n, True)
        return verdict[0]

    async def aequivalent(self, a: str | None, b: str | None) -> bool:
        """`equivalent` without blocking the event loop."""
        verdict, a_n, b_n = self._precheck(a, b, symmetric=True)
        if verdict is None:
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(self._threads, self._verify, a_n, b_n, True)
        return verdict[0]

    def quick_equivalent(self, a: str | None, b: str | None) -> bool | None:
        """Cheap tiers only: True/False when they decide, None when math-verify would be needed."""
        verdict, a_n, b_n = self._precheck(a, b, symmetric=True)
        if verdict is None:
            verdict = self._cached(a_n, b_n, symmetric=True)
        return None if verdict is None else verdict[0]

    def close(self) -> None:
        """Stop the worker processes and threads; the grader is unusable afterwards."""
        self._pool.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- tiers ---------------------------------------------------------------------

    def _extract(self, prediction: str | None) -> str | None:
        return extract_answer(prediction, fallbacks=self.fallbacks)

    def _precheck(
        self, gold: str | int | None, pred: str | None, *, symmetric: bool
    ) -> tuple[_Verdict | None, str, str]:
        """(verdict of the cheap tiers and cache, or None; normalised gold; normalised pred)."""
        if gold is None:
            return (False, "none", "no answer" if symmetric else "no gold"), "", ""
        if pred is None:
            return (False, "none", "no answer"), "", ""
        gold_s, pred_s = str(gold).strip(), str(pred).strip()
        if len(gold_s) > self.max_answer_chars or len(pred_s) > self.max_answer_chars:
            return (False, "none", "too long"), "", ""
        gold_n, pred_n = normalize_answer(gold_s), normalize_answer(pred_s)
        if not pred_n or not gold_n:
            return (False, "none", "no answer" if not pred_n else "no gold"), gold_n, pred_n
        gold_int, pred_int = parse_int(gold_n), parse_int(pred_n)
        if gold_int is not None and pred_int is not None:
            return (gold_int == pred_int, "int", None), gold_n, pred_n
        if gold_n == pred_n:
            return (True, "string", None), gold_n, pred_n
        return self._cached(gold_n, pred_n, symmetric=symmetric), gold_n, pred_n

    @staticmethod
    def _key(gold: str, pred: str, symmetric: bool) -> tuple[bool, str, str]:
        # A symmetric comparison is the same question either way round: one cache entry.
        if symmetric and pred < gold:
            gold, pred = pred, gold
        return (symmetric, gold, pred)

    def _cached(self, gold: str, pred: str, *, symmetric: bool) -> _Verdict | None:
        key = self._key(gold, pred, symmetric)
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
            return verdict

    def _verify(self, gold: str, pred: str, symmetric: bool) -> _Verdict:
        """math-verify tier on normalised answers (blocking, bounded by `timeout`), cached."""
        cached = self._cached(gold, pred, symmetric=symmetric)
        if cached is not None:
            return cached
        key = self._key(gold, pred, symmetric)
        has_int = parse_int(gold) is not None or parse_int(pred) is not None
        rounding = _INT_FLOAT_ROUNDING if has_int else _DEFAULT_FLOAT_ROUNDING
        try:
            equal, error = self._pool.run(_worker.compare, gold, pred, symmetric, rounding, timeout=self.timeout)
        except TaskTimeout:
            equal, error = False, "timeout"
        except TaskCrashed:
            equal, error = False, "worker crashed"
        verdict: _Verdict = (equal, "math_verify", error)
        if self._cache_size:
            with self._lock:
                self._cache[key] = verdict
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return verdict


def _result(extracted: str | None, verdict: _Verdict, limit: int) -> GradeResult:
    correct, grader, error = verdict
    if extracted is not None and len(extracted) > limit:
        # Keep results files small: a runaway answer is recorded by its head and its length.
        extracted = f"{extracted[:limit]}...[{len(extracted) - limit} more chars]"
    return GradeResult(correct=correct, extracted=extracted, grader=grader, error=error)


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """The shared Grader behind `grade` and `equivalent` (default limits), started lazily."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Grader()
            atexit.register(_default.close)
        return _default


def grade(prediction: str | None, gold: str | int | None, *, extract: bool = True) -> bool:
    """Whether `prediction` (model output, or a bare answer) is correct; see `Grader.grade`."""
    return default_grader().grade(prediction, gold, extract=extract).correct


def equivalent(a: str | None, b: str | None) -> bool:
    """Whether two answers are equivalent; see `Grader.equivalent`."""
    return default_grader().equivalent(a, b)
