"""An OpenAI/vLLM-compatible HTTP server for the embedded engine (`rsa engine serve`).

    serve("path/to/ZAYA1-8B", port=8010, device="cuda", dtype="bfloat16", max_num_seqs=256)
    client = openai.OpenAI(base_url="http://127.0.0.1:8010/v1", api_key="none")

The API surface of `vllm serve MODEL --reasoning-parser qwen3`: `POST /v1/chat/completions`,
`POST /v1/completions` (a prompt string, token ids, or a list of either), `POST /tokenize`,
`POST /detokenize`, `GET /v1/models` (with `max_model_len`), `GET /health`, `GET /version` and
`GET /metrics` (Prometheus text, vLLM's metric names). Chat renders the checkpoint's chat template
(`chat_template_kwargs` go to it) and splits `<think>...</think>` into `message.reasoning` (also
sent as the older `reasoning_content`); a template that opens `<think>` in the prompt puts the
output inside the thought, and a thought cut short by `max_tokens` is all reasoning. `n` samples
run as n engine requests (choice i with `seed + i`). Unset sampling fields take the checkpoint's
`generation_config.json` values, then OpenAI's defaults; chat without `max_tokens` /
`max_completion_tokens` may use the rest of the context, completions default to 16 tokens.
Streaming is SSE (`data: {chunk}`, `data: [DONE]`, a usage chunk with
`stream_options.include_usage`); an error after the stream started is sent as a `data:` chunk
holding an `error` object. Errors use OpenAI's shape `{"error": {"message", "type", "param",
"code"}}`: 400 for invalid parameters and for prompt + max_tokens beyond the context (vLLM's
wording, with the numbers), 401 on `/v1/*` without the API key when one is set (vLLM guards
only `/v1`), 404 for an unknown model. A client that disconnects aborts its requests in the engine.

Not covered: logprobs, penalties, `best_of`, `suffix`, tool calls, structured output,
`stop_reason` (always null: the engine does not say which stop matched), embeddings.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from ..base import InvalidRequest
from .sampling_params import SamplingParams
from .server_adapter import AsyncLLMAdapter, ClientGone, EngineAdapter, Job, job_events, run_jobs
from .server_protocol import (APIError, ChatRequest, CompletionRequest, DetokenizeRequest, ThinkSplitter,
                              TokenizeRequest, api_error, context_error, message_dicts, prometheus_text, prompt_ids,
                              sse_response, token_ids, usage, validation_error)
from .tokenizer import opens_think

__all__ = ["create_app", "serve"]


class _Server:
    def __init__(self, adapter: EngineAdapter, api_key: str | None, name: str) -> None:
        self.adapter, self.api_key, self.name = adapter, api_key, name

    # ---- checks ---------------------------------------------------------------------------
    def check_auth(self, request: Request) -> None:
        if self.api_key and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {self.api_key}"):
            raise APIError(401, "Unauthorized: a valid API key is required (Authorization: Bearer KEY)")

    async def body(self, request: Request, model: type[BaseModel]) -> Any:
        try:
            req = model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise validation_error(exc) from None
        if req.model is not None and req.model != self.name:
            raise APIError(404, f"The model `{req.model}` does not exist.", param="model")
        if (field := getattr(req, "unsupported", lambda: None)()) is not None:
            raise APIError(400, f"`{field}` is not supported by this server", param=field)
        return req

    def render(self, req: ChatRequest | TokenizeRequest) -> str:
        messages = message_dicts(req.messages)
        try:
            generation = req.add_generation_prompt and not req.continue_final_message
            return self.adapter.apply_chat_template(messages, generation, req.continue_final_message,
                                                    **(req.chat_template_kwargs or {}))
        except Exception as exc:  # noqa: BLE001 - a template that rejects these messages or kwargs
            raise APIError(400, f"chat template failed: {type(exc).__name__}: {exc}", param="messages") from None

    def jobs(self, req: Any, prompts: list[list[int]], max_tokens: int | None) -> list[Job]:
        """n jobs per prompt (choice `prompt * n + i`, seed `seed + i`), all checked before any is submitted."""
        limit, defaults, jobs, key = self.adapter.max_model_len, self.adapter.default_sampling, [], uuid.uuid4().hex

        def pick(name: str, off: Any) -> Any:
            return getattr(req, name) if getattr(req, name) is not None else defaults.get(name, off)

        for p, ids in enumerate(prompts):
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            if len(ids) + (max_tokens or 1) > limit:
                raise context_error(limit, len(ids), max_tokens)
            n_tokens = max_tokens or min(limit - len(ids), defaults.get("max_tokens") or limit)
            for i in range(req.n):
                try:
                    params = SamplingParams(
                        temperature=pick("temperature", 1.0), top_p=pick("top_p", 1.0), top_k=max(pick("top_k", 0), 0),
                        min_p=pick("min_p", 0.0), max_tokens=n_tokens, seed=None if req.seed is None else req.seed + i,
                        stop=req.stops, stop_token_ids=tuple(req.stop_token_ids or ()), ignore_eos=req.ignore_eos)
                    self.adapter.validate(ids, params)
                except (ValueError, InvalidRequest) as exc:
                    raise APIError(400, str(exc)) from None
                jobs.append(Job(p * req.n + i, ids, params, (key, p * req.n + i)))
        return jobs

    async def run_all(self, request: Request, jobs: list[Job]) -> list[Any]:
        try:
            return await run_jobs(self.adapter, jobs, _disconnect(request))
        except (ClientGone, APIError):
            raise
        except Exception as exc:  # noqa: BLE001 - the engine's error, in OpenAI's shape
            raise api_error(exc) from None

    async def chunks(self, req: Any, jobs: list[Job], prompts: list[list[int]], head: dict[str, Any],
                     piece: Callable[[Job, Any], dict[str, Any] | None]) -> AsyncIterator[dict[str, Any]]:
        """Stream chunks: `piece(job, output)` gives a choice's new part (None: nothing to send yet)."""
        extra, outs = ({"usage": None} if req.include_usage else {}), []
        async with contextlib.aclosing(job_events(self.adapter, jobs)) as events:
            async for job, out in events:
                if isinstance(out, BaseException):
                    yield api_error(out).body()
                    return
                if (choice := piece(job, out)) is not None:
                    choice |= {"logprobs": None, "finish_reason": out.finish_reason} | token_ids(req, out.new_token_ids)
                    yield head | {"choices": [choice | ({"stop_reason": None} if out.finished else {})]} | extra
                if out.finished:
                    outs.append(out)
        if req.include_usage:
            yield head | {"choices": [], "usage": usage(prompts, outs)}

    # ---- endpoints ------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        req: ChatRequest = await self.body(request, ChatRequest)
        prompt = self.render(req)
        ids = self.adapter.tokenize(prompt, False)
        jobs = self.jobs(req, [ids], req.max_completion_tokens or req.max_tokens)
        opened = opens_think(prompt)
        head = {"id": f"chatcmpl-{req.request_id or uuid.uuid4().hex}", "created": int(time.time()), "model": self.name}

        def parts(splitter: ThinkSplitter, text: str, final: bool) -> dict[str, Any]:
            reasoning, content = splitter.feed(text, final)
            show = bool(reasoning) and req.include_reasoning
            return ({"content": content} if content else {}) | (
                {"reasoning": reasoning, "reasoning_content": reasoning} if show else {})

        if req.stream:
            head |= {"object": "chat.completion.chunk"}
            splitters = {j.index: ThinkSplitter(opened) for j in jobs}
            first = [head | {"choices": [{"index": j.index, "delta": {"role": "assistant", "content": ""},
                                          "logprobs": None, "finish_reason": None}]}
                     | ({"usage": None} if req.include_usage else {}) | prompt_ids(req, ids) for j in jobs]

            def piece(job: Job, out: Any) -> dict[str, Any] | None:
                delta = parts(splitters[job.index], out.new_text, out.finished)
                return {"index": job.index, "delta": delta} if delta or out.finished else None

            return sse_response(first, self.chunks(req, jobs, [ids], head, piece))
        choices = []
        for job, out in zip(jobs, await self.run_all(request, jobs)):
            message = {"role": "assistant", "content": "", "tool_calls": []}
            message |= parts(ThinkSplitter(opened), out.text, True)
            if message["content"] == "" and "reasoning" in message:
                message["content"] = None  # as vLLM's reasoning parsers leave it
            choices.append({"index": job.index, "message": message, "logprobs": None,
                            "finish_reason": out.finish_reason, "stop_reason": None, "_out": out}
                           | token_ids(req, out.token_ids))
        outs = [c.pop("_out") for c in choices]
        return JSONResponse(head | {"object": "chat.completion", "choices": choices, "usage": usage([ids], outs)}
                            | prompt_ids(req, ids))

    async def completions(self, request: Request) -> Response:
        req: CompletionRequest = await self.body(request, CompletionRequest)
        p = req.prompt
        many = isinstance(p, list) and bool(p) and not isinstance(p[0], int)
        prompts = [x if isinstance(x, list) else self.adapter.tokenize(x, req.add_special_tokens)
                   for x in (p if many else [p])]
        jobs = self.jobs(req, prompts, req.max_tokens)
        echo = {j.index: self.adapter.detokenize(j.ids) if req.echo else "" for j in jobs}
        head = {"id": f"cmpl-{req.request_id or uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": self.name}
        if req.stream:
            def piece(job: Job, out: Any) -> dict[str, Any] | None:
                text, echo[job.index] = echo[job.index] + out.new_text, ""
                return {"index": job.index, "text": text} if text or out.finished else None

            return sse_response([], self.chunks(req, jobs, prompts, head, piece))
        outs = await self.run_all(request, jobs)
        choices = [{"index": j.index, "text": echo[j.index] + o.text, "logprobs": None,
                    "finish_reason": o.finish_reason, "stop_reason": None}
                   | token_ids(req, o.token_ids) | prompt_ids(req, j.ids)
                   for j, o in zip(jobs, outs)]
        return JSONResponse(head | {"choices": choices, "usage": usage(prompts, outs)})

    async def tokenize(self, request: Request) -> dict[str, Any]:
        req: TokenizeRequest = await self.body(request, TokenizeRequest)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "give exactly one of `prompt` and `messages`")
        if req.messages is not None:
            ids = self.adapter.tokenize(self.render(req), bool(req.add_special_tokens))
        else:
            ids = self.adapter.tokenize(req.prompt, req.add_special_tokens is not False)
        strs = self.adapter.token_strs(ids) if req.return_token_strs else None
        return {"count": len(ids), "max_model_len": self.adapter.max_model_len, "tokens": ids, "token_strs": strs}

    async def detokenize(self, request: Request) -> dict[str, Any]:
        req: DetokenizeRequest = await self.body(request, DetokenizeRequest)
        try:
            return {"prompt": self.adapter.detokenize(req.tokens)}
        except Exception as exc:  # noqa: BLE001 - ids outside the vocabulary
            raise APIError(400, f"cannot detokenize: {type(exc).__name__}: {exc}", param="tokens") from None


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":  # the body is read: next comes the disconnect
        pass


def create_app(engine_or_model_path: Any, *, api_key: str | None = None, served_model_name: str | None = None,
               **engine_options: Any) -> FastAPI:
    """The server as a FastAPI app. `engine_or_model_path`: a checkpoint directory (the engine is built
    here with `engine_options`, see `serve`, and closed at shutdown), an `AsyncLLM` or an
    `EngineAdapter` (both yours to close). `served_model_name`: the name clients send (default: the path)."""
    from .async_engine import AsyncLLM

    owned = isinstance(engine_or_model_path, (str, os.PathLike))
    if owned:
        adapter = AsyncLLMAdapter.from_path(engine_or_model_path, served_model_name, **engine_options)
    elif isinstance(engine_or_model_path, AsyncLLM):
        adapter = AsyncLLMAdapter(engine_or_model_path, served_model_name or "zaya1")
    else:
        adapter = engine_or_model_path
    server = _Server(adapter, api_key, served_model_name or adapter.model_name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                await adapter.aclose()

    app = FastAPI(title="markovian-rsa ZAYA1 engine", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(APIError)
    @app.exception_handler(ClientGone)
    @app.exception_handler(RequestValidationError)
    @app.exception_handler(Exception)
    async def error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientGone):
            return Response(status_code=499)  # nobody reads it
        return api_error(APIError(400, str(exc)) if isinstance(exc, RequestValidationError) else exc).response()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if adapter.healthy() else 503)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": _version()}

    @app.get("/metrics")
    async def metrics() -> Response:
        text = prometheus_text(adapter.metrics(), server.name)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.check_auth(request)
        card = {"id": server.name, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                "root": adapter.model_name, "parent": None, "max_model_len": adapter.max_model_len, "permission": []}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        server.check_auth(request)
        return await server.chat(request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        server.check_auth(request)
        return await server.completions(request)

    app.post("/tokenize")(server.tokenize)
    app.post("/detokenize")(server.detokenize)
    return app


def serve(model_path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8010, api_key: str | None = None,
          *, served_model_name: str | None = None, log_level: str = "info", **engine_options: Any) -> None:
    """Serve a checkpoint until interrupted (the body of `rsa engine serve`). `engine_options` go to the
    engine, strings allowed: device ("auto"), dtype ("auto": bfloat16 on CUDA, else float32),
    max_num_seqs, max_num_batched_tokens, memory_budget (bytes), block_size, max_model_len,
    kv_cache_dtype, seed."""
    import uvicorn

    app = create_app(model_path, api_key=api_key, served_model_name=served_model_name, **engine_options)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("markovian-rsa")
    except PackageNotFoundError:
        return "unknown"
