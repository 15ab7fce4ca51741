"""Code that runs inside grader worker processes: math-verify parsing and comparison.

Only `pool.py` starts these processes (spawn or forkserver, never fork). Each worker caps its
own address space when asked, so a runaway SymPy computation dies with MemoryError instead of
eating the machine, and math-verify's SIGALRM timeouts stay off: the parent enforces the time
limit by killing the whole worker.
"""

from __future__ import annotations

import functools
import logging
from typing import Any


def init(memory_limit_mb: int | None) -> None:
    """Process initializer: heavy imports up front, quiet logs, then the memory cap."""
    # math-verify warns once per process that its own timeouts are off; that is on purpose here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    import math_verify  # noqa: F401

    if memory_limit_mb is not None:
        # Capped after the imports, so the limit guards comparisons, not start-up.
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass  # not POSIX, or the hard limit is lower already: keep what the OS gives


@functools.lru_cache(maxsize=2048)
def _parse(answer: str) -> list[Any]:
    from math_verify import parse

    # \boxed{} makes math-verify take the whole string as one answer instead of hunting in it.
    return parse("\\boxed{" + answer + "}", parsing_timeout=None)  # type: ignore[arg-type]


def compare(gold: str, pred: str, symmetric: bool, float_rounding: int) -> tuple[bool, str | None]:
    """(equal, error) for two answer strings; gold first, as math-verify requires."""
    from math_verify import verify

    try:
        parsed_gold = _parse(gold)
        parsed_pred = _parse(pred)
        if not parsed_gold or not parsed_pred:
            return False, "unparsable"
        kwargs: dict[str, Any] = {"float_rounding": float_rounding, "timeout_seconds": None}
        equal = verify(parsed_gold, parsed_pred, **kwargs)
        if equal and symmetric:
            equal = verify(parsed_pred, parsed_gold, **kwargs)
        return bool(equal), None
    except MemoryError:
        return False, "memory limit"
    except RecursionError:
        return False, "unparsable"
