"""The public entry points: `solve`, `asolve` and `stream`.

With no backend, the embedded default model (ZAYA1-nano on our engine) is used, and with no
config its shipped preset (`config="nano"`); keyword overrides still apply on top.

    result = rsa.solve("What is 12 * 34?", backend="http://localhost:8000/v1", population=8)
    result = await rsa.asolve(problem, backend=my_backend, config=RSAConfig(rounds=3))
    async for event in rsa.stream(problem, backend=my_backend): ...

`backend` is a Backend object, an `http(s)://` URL or a list of them (remote OpenAI/vLLM
endpoints), or None for the embedded default model. A backend built here from a URL is closed
when the solve ends; a Backend object you pass stays open (you own it).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from rsa.backends.base import Backend

from .config import RSAConfig, preset
from .controller import run_markovian_rsa
from .events import Done, RSAEvent
from .results import SolveResult

__all__ = ["asolve", "make_config", "resolve_backend", "run_blocking", "solve", "stream"]

BackendSpec = Backend | str | list[str] | None
T = TypeVar("T")


def make_config(config: RSAConfig | dict[str, Any] | str | None = None, **overrides: Any) -> RSAConfig:
    """An `RSAConfig` from a config object, a dict, a preset name, or None (defaults), with
    keyword overrides applied on top (validated together)."""
    if isinstance(config, str):
        base: dict[str, Any] = preset(config)
    elif isinstance(config, RSAConfig):
        base = config.model_dump(exclude_unset=True)
    elif isinstance(config, dict):
        base = dict(config)
    elif config is None:
        base = {}
    else:
        raise TypeError(f"config must be RSAConfig, dict, preset name or None, not {type(config).__name__}")
    return RSAConfig(**{**base, **overrides})


def _problem_fields(problem: Any) -> tuple[str, str]:
    """(text, id) of a problem given as a string or an `rsa.problems.Problem`."""
    if isinstance(problem, str):
        text, pid = problem, None
    elif hasattr(problem, "problem") and hasattr(problem, "id"):
        text, pid = problem.problem, str(problem.id)
    else:
        raise TypeError(f"problem must be a string or rsa.problems.Problem, not {type(problem).__name__}")
    if not text.strip():
        raise ValueError("problem text is empty")
    if pid is None:
        pid = "p-" + hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    return text, pid


def resolve_backend(backend: BackendSpec) -> tuple[Backend, bool]:
    """(backend, owned): build one from a spec; `owned` means the caller must close it."""
    if backend is None:
        from rsa.backends import default_backend

        return default_backend(), True
    if isinstance(backend, (str, list)):
        urls = [backend] if isinstance(backend, str) else backend
        bad = [u for u in urls if not (isinstance(u, str) and u.startswith(("http://", "https://")))]
        if bad or not urls:
            raise ValueError(
                f"backend strings must be http(s):// URLs of OpenAI-compatible servers, got {bad or urls!r}; "
                "pass a Backend object (e.g. rsa.backends.ScriptedBackend) for anything else")
        from rsa.backends.openai import backend_from_url

        return backend_from_url(backend), True
    missing = [m for m in ("generate", "tokenize", "detokenize", "aclose") if not hasattr(backend, m)]
    if missing:
        raise TypeError(f"{type(backend).__name__} is not a Backend: it lacks {missing}")
    return backend, False


async def asolve(problem: Any, *, backend: BackendSpec = None, config: RSAConfig | dict | str | None = None,
                 on_event: Callable[[RSAEvent], None] | None = None, **overrides: Any) -> SolveResult:
    """Solve one problem with Markovian RSA. Raises `rsa.StageFailedError` (with the partial
    result) when every rollout of a stage failed. Cancelling it cancels every rollout.
    `on_event` is called (synchronously, on the event loop) with each progress event."""
    if backend is None and config is None:  # the embedded default model comes with its own setting
        config = "nano"
    cfg = make_config(config, **overrides)
    text, pid = _problem_fields(problem)
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    client, owned = resolve_backend(backend)
    try:
        return await run_markovian_rsa(text, pid, client, cfg, seed=seed, emit=on_event)
    finally:
        if owned:
            await client.aclose()


def solve(problem: Any, *, backend: BackendSpec = None, config: RSAConfig | dict | str | None = None,
          **overrides: Any) -> SolveResult:
    """Blocking `asolve`. Inside a running event loop (a notebook) it runs on a helper thread
    with its own loop, so pass a backend that is not bound to your loop, or use `asolve`."""
    return run_blocking(asolve(problem, backend=backend, config=config, **overrides))


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code: `asyncio.run` here, or on a helper thread
    with its own loop when this thread already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=runner, name="rsa-blocking")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


async def stream(problem: Any, *, backend: BackendSpec = None, config: RSAConfig | dict | str | None = None,
                 **overrides: Any) -> AsyncIterator[RSAEvent]:
    """Solve while yielding typed events; the last one is `Done(result=...)`. Leaving the
    loop early (break, aclose, cancellation) cancels the solve."""
    queue: asyncio.Queue[RSAEvent | BaseException] = asyncio.Queue()
    task = asyncio.ensure_future(asolve(problem, backend=backend, config=config, on_event=queue.put_nowait,
                                        **overrides))
    task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or queue.put_nowait(t.exception()))
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Done):
                return
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
