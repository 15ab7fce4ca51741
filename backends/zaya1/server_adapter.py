"""What the HTTP server needs from an engine (`EngineAdapter`), its implementation over `AsyncLLM`,
and the two ways the server runs a request's jobs (all to completion, or as one merged stream).

The server never touches the engine itself: it renders and tokenizes prompts, checks a request,
submits it (`generate` for the final output, `stream` for one output per new token) and reads
counters, all through this small surface. Cancelling `generate`, or closing the `stream`
iterator, aborts the request in the engine. Tests plug in a scripted fake with the same methods.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, runtime_checkable

from .engine import EngineMetrics, RequestOutput
from .sampling_params import SamplingParams

__all__ = ["AsyncLLMAdapter", "ClientGone", "EngineAdapter", "Job", "engine_options_from_strings", "job_events",
           "run_jobs"]

_GENERATION_DEFAULTS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                        "max_new_tokens": "max_tokens"}


@runtime_checkable
class EngineAdapter(Protocol):
    model_name: str  # the default served name
    max_model_len: int  # prompt + output tokens one request may hold
    default_sampling: dict[str, Any]  # SamplingParams fields a request leaves unset (generation_config.json)

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def token_strs(self, ids: list[int]) -> list[str]: ...

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                            continue_final_message: bool, **kwargs: Any) -> str: ...

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise `InvalidRequest` (or `ContextLengthExceeded`) for a request that can never run."""

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: Any) -> RequestOutput: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams,
               request_id: Any) -> AsyncIterator[RequestOutput]: ...

    def metrics(self) -> EngineMetrics: ...

    def healthy(self) -> bool: ...

    async def aclose(self) -> None: ...


class Job:
    """One engine request: choice `index` of prompt `ids`, under engine request id `rid`."""

    __slots__ = ("index", "ids", "params", "rid")

    def __init__(self, index: int, ids: list[int], params: SamplingParams, rid: Any) -> None:
        self.index, self.ids, self.params, self.rid = index, ids, params, rid


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def run_jobs(adapter: EngineAdapter, jobs: list[Job], disconnected: Awaitable[None]) -> list[RequestOutput]:
    """Final outputs of every job. All are aborted if `disconnected` completes first (`ClientGone`)
    or one job fails (its error is raised)."""
    tasks = [asyncio.ensure_future(adapter.generate(j.ids, j.params, j.rid)) for j in jobs]
    watch = asyncio.ensure_future(disconnected)
    try:
        pending = set(tasks)
        while pending:
            done, _ = await asyncio.wait(pending | {watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                raise ClientGone
            pending -= done
            for t in done:
                if t.exception() is not None:
                    raise t.exception()
        return [t.result() for t in tasks]
    finally:
        watch.cancel()
        for t in tasks:
            t.cancel()  # cancelling `generate` aborts the request in the engine


async def job_events(adapter: EngineAdapter, jobs: list[Job]) -> AsyncIterator[tuple[Job, Any]]:
    """(job, output or exception) as the jobs' streams yield; closing this aborts every job."""
    queue: asyncio.Queue[tuple[Job, Any]] = asyncio.Queue()

    async def pump(job: Job) -> None:
        try:
            async for out in adapter.stream(job.ids, job.params, job.rid):
                queue.put_nowait((job, out))
        except Exception as exc:  # noqa: BLE001 - reported inside the stream
            queue.put_nowait((job, exc))

    tasks = [asyncio.ensure_future(pump(j)) for j in jobs]
    try:
        left = len(jobs)
        while left:
            job, item = await queue.get()
            left -= isinstance(item, BaseException) or item.finished
            yield job, item
    finally:
        for t in tasks:
            t.cancel()  # the stream's own cleanup aborts the request in the engine


class AsyncLLMAdapter:
    """`EngineAdapter` over `AsyncLLM`. `max_model_len` is the smaller of the engine's context and
    what its K/V cache holds (as vLLM refuses to start when the cache cannot hold one full request)."""

    def __init__(self, engine: Any, model_name: str, path: str | os.PathLike[str] | None = None) -> None:
        if engine.tokenizer is None:
            raise ValueError("the server needs a checkpoint with tokenizer files (the chat template and text prompts)")
        self.engine, self.tokenizer, self.model_name = engine, engine.tokenizer, model_name
        self.max_model_len = min(engine.max_model_len, engine.cache_info()["num_tokens"])
        self.default_sampling = _generation_defaults(path)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], model_name: str | None = None,
                  **engine_options: Any) -> AsyncLLMAdapter:
        from .async_engine import AsyncLLM

        engine = AsyncLLM(os.fspath(path), **engine_options_from_strings(engine_options))
        return cls(engine, model_name or os.fspath(path), path)

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_strs(self, ids: list[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(list(ids)))

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                            continue_final_message: bool, **kwargs: Any) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=continue_final_message, tokenize=False,
                                                  **kwargs)

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        self.engine.engine.validate(prompt_ids, params)  # pure checks, safe off the owner thread

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: Any) -> RequestOutput:
        return await self.engine.generate(prompt_ids, params, request_id)

    def stream(self, prompt_ids: list[int], params: SamplingParams, request_id: Any) -> AsyncIterator[RequestOutput]:
        return self.engine.stream(prompt_ids, params, request_id)

    def metrics(self) -> EngineMetrics:
        return self.engine.metrics()

    def healthy(self) -> bool:
        return self.engine.is_alive

    async def aclose(self) -> None:
        await self.engine.aclose()


def _generation_defaults(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Sampling defaults from the checkpoint's `generation_config.json`, as `vllm serve` applies them."""
    file = os.path.join(path, "generation_config.json") if path is not None else None
    if file is None or not os.path.exists(file):
        return {}
    with open(file, encoding="utf-8") as fh:
        config = json.load(fh)
    return {ours: config[theirs] for theirs, ours in _GENERATION_DEFAULTS.items() if config.get(theirs) is not None}


def engine_options_from_strings(options: dict[str, Any]) -> dict[str, Any]:
    """CLI-friendly values (`device="auto"`, `dtype="bfloat16"`) turned into what `LLM` takes;
    dtype "auto" is bfloat16 on CUDA and float32 elsewhere."""
    import torch

    options = dict(options)
    device = options.get("device", "auto")
    options["device"] = device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    for key in ("dtype", "kv_cache_dtype", "state_dtype"):
        value = options.get(key, "auto" if key == "dtype" else None)
        if value == "auto":
            value = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        if isinstance(value, str):
            if not isinstance(getattr(torch, value, None), torch.dtype):
                raise ValueError(f"{key}={value!r} is not a torch dtype")
            value = getattr(torch, value)
        if value is not None:
            options[key] = value
    return options
