"""An OpenAI-compatible proxy that answers model `rsa` with Markovian RSA (`rsa serve`).

    serve_proxy("http://gpu0:8000/v1", port=8020)            # or: rsa serve --backend URL
    client = openai.OpenAI(base_url="http://127.0.0.1:8020/v1", api_key="none")
    reply = client.chat.completions.create(model="rsa", messages=[...], extra_body={"rsa": {"preset": "low"}})

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (passthrough only), `GET /v1/models`,
`GET /health`.

Model `rsa` (or `rsa/<upstream model>` to pick one of several upstream models) runs one solve
on the text of the conversation's last user message; earlier turns and system messages are not
shown to the rollouts. Settings come from the request's `rsa` object (any `RSAConfig` field, plus
`preset`), over the server's defaults; top-level `temperature`, `top_p` and `seed` apply to the
rollouts (an `rsa` value wins), and `max_tokens`/`max_completion_tokens` cap each rollout. The
reply's content is the content of the selected rollout (for majority selection, a final-stage
rollout whose answer is the majority answer), `message.reasoning` a short account of the stages
and votes, `usage` the sum over every upstream call, and a top-level `rsa` object the summary of
`rsa.agents.SolveSummary` (answer, share, stages, tokens, `best_so_far` when `rsa.deadline_s`
or `rsa.token_budget` cut the solve short). Streaming sends progress lines as `delta.reasoning`
while the solve runs, then the content, an optional usage chunk and `data: [DONE]`; idle
periods carry SSE comments so gateways keep the connection open. A client that disconnects
cancels the whole solve, streaming or not.

Refused with 400 rather than ignored on model `rsa`: `tools`/`functions`, `n > 1`, `stop`,
`logprobs`, a non-text `response_format`, non-text message parts. Other OpenAI fields (`user`,
`metadata`, penalties, ...) are accepted and have no effect.

Every other model name is forwarded unchanged (tools included, streamed or not) to the upstream
server, which exists only when the backend is an OpenAI-compatible URL; otherwise it is a 404.
Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`; with `api_key` set,
`/v1/*` needs `Authorization: Bearer KEY` (401 otherwise). Upstream auth: `upstream_api_key`
when given, else the caller's Authorization header when the proxy itself has no key.

Not covered: the Responses API, embeddings, `n > 1`, tool calls on model `rsa` (an agent should
call RSA as a tool: `rsa.agents`), multi-turn context for the solve.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rsa.backends.base import Backend

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
except ImportError as exc:  # an optional extra
    raise ImportError(f"rsa.proxy needs FastAPI and uvicorn: pip install 'markovian-rsa[serve]' ({exc})") from exc

from .agents import summarize
from .api import make_config, stream
from .config import PRESETS, RSAConfig
from .events import CandidateFinished, Done, RSAEvent, StageFinished, StageStarted
from .results import Candidate, RSAError, SolveResult

__all__ = ["RSA_MODEL", "create_app", "serve_proxy"]

RSA_MODEL = "rsa"
KEEPALIVE_S = 10.0  # SSE comment after this much silence (idle gateways, disconnect detection)
CONTENT_PIECE = 64  # characters per content delta when streaming the final answer
UPSTREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=None)
MAX_VOTES_SHOWN = 5

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Wire types and errors
# ---------------------------------------------------------------------------------------------
class ChatRequest(BaseModel):
    """The fields of a chat completion request that model `rsa` reads or refuses."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    rsa: dict[str, Any] | None = None


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _validation_error(exc: ValidationError, where: str | None = None) -> APIError:
    """A 400 listing every field error; `where` prefixes the locations (e.g. "rsa")."""
    errors = exc.errors()
    locs = [".".join(([where] if where else []) + [str(p) for p in e["loc"]]) or "body" for e in errors]
    text = "; ".join(f"{loc}: {e['msg']}" for loc, e in zip(locs, errors))
    return APIError(400, text, param=locs[0] if locs else where)


class _ClientGone(Exception):
    """The client disconnected before the answer was ready."""


# ---------------------------------------------------------------------------------------------
# The proxy
# ---------------------------------------------------------------------------------------------
class _Proxy:
    def __init__(self, backend: Backend, owned: bool, *, api_key: str | None, upstream_api_key: str | None,
                 config: RSAConfig | dict | str | None, max_rollouts: int | None) -> None:
        self.backend, self.owned = backend, owned
        self.api_key, self.upstream_api_key = api_key, upstream_api_key
        self.defaults = make_config(config).model_dump(exclude_unset=True)
        self.max_rollouts = max_rollouts
        self.upstream: list[str] = _upstream_urls(backend)
        self._next_upstream = itertools.cycle(self.upstream) if self.upstream else None
        self._http: httpx.AsyncClient | None = None
        self._model_backends: dict[str, Backend] = {}
        self._upstream_ids: set[str] = set()

    # -- plumbing --------------------------------------------------------------------------
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT)
        return self._http

    async def aclose(self) -> None:
        for b in self._model_backends.values():
            await b.aclose()
        self._model_backends.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self.owned:
            await self.backend.aclose()

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    def upstream_headers(self, request: Request) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": request.headers.get("accept", "*/*")}
        if self.upstream_api_key:
            headers["authorization"] = f"Bearer {self.upstream_api_key}"
        elif self.api_key is None and "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        if rid := request.headers.get("x-request-id"):
            headers["x-request-id"] = rid
        return headers

    # -- models ----------------------------------------------------------------------------
    async def upstream_models(self, request: Request) -> list[dict[str, Any]]:
        if not self.upstream:
            return []
        try:
            resp = await self.http().get(self.upstream[0] + "/models", headers=self.upstream_headers(request))
            resp.raise_for_status()
            cards = [c for c in resp.json().get("data", []) if isinstance(c, dict) and "id" in c]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise APIError(502, f"cannot list the upstream models: {exc!r}", type="upstream_error") from exc
        self._upstream_ids = {c["id"] for c in cards}
        return cards

    async def list_models(self, request: Request) -> dict[str, Any]:
        created = int(time.time())
        data: list[dict[str, Any]] = [{"id": RSA_MODEL, "object": "model", "created": created,
                                       "owned_by": "markovian-rsa"}]
        cards = await self.upstream_models(request)
        for card in cards:
            data.append({**card, "id": f"{RSA_MODEL}/{card['id']}", "owned_by": "markovian-rsa",
                         "root": card.get("root", card["id"])})
        return {"object": "list", "data": data + cards}

    async def backend_for(self, model: str, request: Request) -> Backend:
        if model == RSA_MODEL:
            return self.backend
        name = model[len(RSA_MODEL) + 1:]
        if name in self._model_backends:
            return self._model_backends[name]
        if not self.upstream:
            raise _not_found(model, f"only `{RSA_MODEL}` is served: the backend is not an OpenAI-compatible URL")
        if name not in self._upstream_ids:
            await self.upstream_models(request)
        if name not in self._upstream_ids:
            raise _not_found(model, f"the upstream serves {sorted(self._upstream_ids)}")
        from rsa.backends.openai import backend_from_url

        if name not in self._model_backends:
            self._model_backends[name] = backend_from_url(self.upstream, model=name, api_key=self.upstream_api_key)
        return self._model_backends[name]

    # -- model rsa ---------------------------------------------------------------------------
    def config_for(self, req: ChatRequest) -> RSAConfig:
        opts = dict(req.rsa or {})
        preset = opts.pop("preset", None)
        merged = dict(self.defaults)
        if preset is not None:
            if preset not in PRESETS:
                raise APIError(400, f"unknown rsa.preset {preset!r}; known presets: {sorted(PRESETS)}",
                               param="rsa.preset")
            merged.update(PRESETS[preset])
        merged.update({k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p),
                                         ("seed", req.seed)) if v is not None})
        merged.update(opts)
        caps = [c for c in (req.max_tokens, req.max_completion_tokens) if c is not None]
        if caps:
            cap = min(caps)
            merged["max_tokens"] = min(merged.get("max_tokens") or cap, cap)
        try:
            cfg = RSAConfig(**merged)
        except ValidationError as exc:
            raise _validation_error(exc, "rsa") from None
        if self.max_rollouts is not None and cfg.total_rollouts > self.max_rollouts:
            raise APIError(400, f"this solve needs {cfg.total_rollouts} rollouts (population x (rounds + 1)); "
                                f"this server allows at most {self.max_rollouts}", param="rsa")
        return cfg

    async def solve_rsa(self, request: Request, body: dict[str, Any]) -> Response:
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        _refuse_unsupported(req)
        problem = _last_user_text(req.messages)
        cfg = self.config_for(req)
        backend = await self.backend_for(req.model, request)
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(self.sse(req.model, problem, backend, cfg, include_usage),
                                     media_type="text/event-stream", headers={"cache-control": "no-cache"})
        try:
            result = await _unless_disconnected(request, _collect(problem, backend, cfg))
        except _ClientGone:
            return Response(status_code=499)
        except RSAError as exc:
            raise APIError(502, f"the solve failed: {exc}", type="upstream_error", code="rsa_failed") from exc
        return JSONResponse(_completion(req.model, result))

    async def sse(self, model: str, problem: str, backend: Backend, cfg: RSAConfig,
                  include_usage: bool) -> AsyncIterator[str]:
        cid, created = _completion_id(), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [choice], **extra}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        queue: asyncio.Queue[RSAEvent | BaseException] = asyncio.Queue()
        pump = asyncio.ensure_future(_pump(problem, backend, cfg, queue))
        try:
            yield chunk({"role": "assistant", "content": ""})
            yield chunk({"reasoning": _plan_line(cfg)})
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(item, BaseException):
                    message = f"the solve failed: {item}" if isinstance(item, RSAError) else f"internal error: {item!r}"
                    err = APIError(502, message, type="upstream_error", code="rsa_failed")
                    yield f"data: {json.dumps(err.body())}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                if isinstance(item, Done):
                    break
                if line := _progress_line(item):
                    yield chunk({"reasoning": line})
            result = item.result
            yield chunk({"reasoning": _closing_lines(result)})
            cand = _chosen(result)
            content = _answer_content(result, cand)
            for i in range(0, len(content), CONTENT_PIECE):
                yield chunk({"content": content[i:i + CONTENT_PIECE]})
            yield chunk({}, _finish_reason(result, cand), rsa=summarize(result).model_dump())
            if include_usage:
                payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": _usage(result)}
                yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            pump.cancel()  # synchronous: holds even when the surrounding scope is being cancelled

    # -- passthrough -------------------------------------------------------------------------
    async def passthrough(self, request: Request, path: str, raw: bytes, model: str, streaming: bool) -> Response:
        if self._next_upstream is None:
            raise _not_found(model, f"this proxy serves only `{RSA_MODEL}` (its backend is not an "
                                    "OpenAI-compatible URL, so there is no upstream to pass other models to)")
        url = next(self._next_upstream) + path
        client = self.http()
        upstream_req = client.build_request("POST", url, content=raw, headers=self.upstream_headers(request))
        try:
            resp = await _unless_disconnected(request, client.send(upstream_req, stream=True))
        except _ClientGone:
            return Response(status_code=499)
        except httpx.HTTPError as exc:
            raise APIError(502, f"upstream {url} failed: {exc!r}", type="upstream_error") from exc
        media = resp.headers.get("content-type", "application/json")
        if streaming and media.startswith("text/event-stream"):
            return StreamingResponse(_relay(resp), status_code=resp.status_code, media_type=media,
                                     headers={"cache-control": "no-cache"})
        try:
            data = await _unless_disconnected(request, resp.aread())
        except _ClientGone:
            return Response(status_code=499)
        except httpx.HTTPError as exc:
            raise APIError(502, f"upstream {url} failed: {exc!r}", type="upstream_error") from exc
        finally:
            await resp.aclose()
        return Response(data, status_code=resp.status_code, media_type=media)


async def _relay(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for piece in resp.aiter_raw():
            yield piece
    finally:
        await resp.aclose()  # closing the connection makes vLLM abort the request


async def _pump(problem: str, backend: Backend, cfg: RSAConfig, queue: asyncio.Queue) -> None:
    """Copy `rsa.stream` events into `queue`; cancelling this task cancels the solve."""
    try:
        async for event in stream(problem, backend=backend, config=cfg):
            queue.put_nowait(event)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the client inside the stream
        queue.put_nowait(exc)


async def _collect(problem: str, backend: Backend, cfg: RSAConfig) -> SolveResult:
    async for event in stream(problem, backend=backend, config=cfg):
        if isinstance(event, Done):
            return event.result
    raise RuntimeError("rsa.stream ended without a Done event")


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and raising `_ClientGone`) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise _ClientGone
    return task.result()


async def _disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------------------------------------
# Request checks
# ---------------------------------------------------------------------------------------------
def _refuse_unsupported(req: ChatRequest) -> None:
    if req.tools or req.functions:
        raise APIError(400, f"model `{req.model}` does not call tools: `tools` cannot be used with Markovian RSA. "
                            "Give the agent RSA as a tool instead (rsa.agents.openai_tool / the MCP server), or "
                            "send the request to the upstream model name.", param="tools")
    if req.tool_choice not in (None, "none"):
        raise APIError(400, f"model `{req.model}` does not call tools: `tool_choice` must be absent or 'none'",
                       param="tool_choice")
    if req.n is not None and req.n != 1:
        raise APIError(400, f"n={req.n} is not supported by model `{req.model}`: one solve returns one answer; "
                            "send several requests instead", param="n")
    if req.stop:
        raise APIError(400, f"`stop` is not supported by model `{req.model}`", param="stop")
    if req.logprobs or req.top_logprobs:
        raise APIError(400, f"`logprobs` are not supported by model `{req.model}`", param="logprobs")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise APIError(400, f"response_format {req.response_format.get('type')!r} is not supported by model "
                            f"`{req.model}`", param="response_format")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, list):
            kinds = {p.get("type") if isinstance(p, dict) else type(p).__name__ for p in content}
            if kinds - {"text"}:
                raise APIError(400, f"messages[{i}]: only text parts are supported, got {sorted(map(str, kinds))}",
                               param=f"messages[{i}].content")
            content = "\n".join(p.get("text", "") for p in content)
        if not isinstance(content, str) or not content.strip():
            raise APIError(400, f"messages[{i}]: the last user message has no text", param=f"messages[{i}].content")
        return content
    raise APIError(400, "messages: there is no user message to solve", param="messages")


def _not_found(model: str, why: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist: {why}.", param="model", code="model_not_found")


def _upstream_urls(backend: Backend) -> list[str]:
    from rsa.backends.openai import OpenAIBackend

    return list(backend.base_urls) if isinstance(backend, OpenAIBackend) else []


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------
def _completion_id() -> str:
    return f"chatcmpl-rsa-{uuid.uuid4().hex}"


def _usage(result: SolveResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.total_tokens}


def _chosen(result: SolveResult) -> Candidate | None:
    """The rollout whose content is the reply: the selected one when it carries the answer, else a
    rollout of the latest stage that voted for the answer, else the latest live one."""
    if result.selected is not None and result.selected.answer == result.answer:
        return result.selected
    for stage in reversed(result.stages):
        for cand in stage.candidates:
            if cand.live and result.answer is not None and cand.answer == result.answer:
                return cand
    for stage in reversed(result.stages):
        if stage.live:
            return stage.live[0]
    return None


def _answer_content(result: SolveResult, cand: Candidate | None) -> str:
    content = cand.content.strip() if cand is not None else ""
    if not content and result.answer is not None:  # the rollout ran out of tokens inside its thinking
        content = f"The answer is \\boxed{{{result.answer}}}."
    return content


def _finish_reason(result: SolveResult, cand: Candidate | None) -> str:
    if cand is not None and cand.finish_reason in ("stop", "length"):
        return cand.finish_reason
    return "length" if result.stop_reason in ("deadline", "token_budget") else "stop"


def _completion(model: str, result: SolveResult) -> dict[str, Any]:
    cand = _chosen(result)
    message = {"role": "assistant", "content": _answer_content(result, cand),
               "reasoning": _account(result), "tool_calls": []}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(result, cand)}
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": _usage(result), "rsa": summarize(result).model_dump()}


def _votes_text(votes: dict[str, int]) -> str:
    top = sorted(votes.items(), key=lambda kv: -kv[1])[:MAX_VOTES_SHOWN]
    more = len(votes) - len(top)
    return ", ".join(f"{a}: {n}" for a, n in top) + (f", +{more} more" if more > 0 else "") if top else "none"


def _plan_line(cfg: RSAConfig) -> str:
    return (f"Markovian RSA: population {cfg.population}, aggregation size {cfg.aggregation_size}, "
            f"{cfg.rounds} aggregation round(s), {cfg.total_rollouts} rollouts.\n")


def _progress_line(event: RSAEvent) -> str | None:
    if isinstance(event, StageStarted):
        return f"stage {event.stage}: {event.size} rollouts started.\n"
    if isinstance(event, CandidateFinished):
        c = event.candidate
        what = f"answer {c.answer}" if c.answer is not None else ("error" if c.finish_reason == "error" else "no answer")
        return f"stage {c.stage} rollout {c.slot}: {what} ({c.completion_tokens} tokens).\n"
    if isinstance(event, StageFinished):
        return (f"stage {event.stage} done: {event.live} live, votes {_votes_text(event.votes)}; "
                f"majority {event.majority} (share {event.share:.2f}).\n")
    return None


def _closing_lines(result: SolveResult) -> str:
    lines = [f"selected ({result.selection}): {result.answer} (share {result.share:.2f}); "
             f"{result.total_tokens} tokens ({result.completion_tokens} generated) in {result.wall_time_s:.1f} s."]
    if result.stop_reason in ("deadline", "token_budget"):
        lines.append(f"stopped by the {result.stop_reason.replace('_', ' ')}: this is the best answer so far.")
    elif result.stop_reason == "early_stop":
        lines.append("stopped early: the vote share reached the early-stop threshold.")
    return "\n".join(lines) + "\n"


def _account(result: SolveResult) -> str:
    lines = [_plan_line(result.config).rstrip("\n")]
    for stage in result.stages:
        lines.append(f"stage {stage.index}: {len(stage.live)}/{len(stage.candidates)} live, votes "
                     f"{_votes_text(stage.votes)}; majority {stage.majority} (share {stage.share:.2f}).")
    return "\n".join(lines) + "\n" + _closing_lines(result)


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------
def _build_backend(backend: Backend | str | Sequence[str], upstream_api_key: str | None) -> tuple[Backend, bool]:
    """(backend, owned) from a Backend object or backend SPEC string(s) (`rsa.backend_spec`)."""
    if not isinstance(backend, (str, list, tuple)):
        return backend, False
    from .backend_spec import build_backend

    specs = [backend] if isinstance(backend, str) else list(backend)
    if upstream_api_key and specs and all(s.startswith(("http://", "https://")) for s in specs):
        from rsa.backends.openai import backend_from_url

        return backend_from_url(specs, api_key=upstream_api_key), True
    return build_backend(specs), True


def create_app(backend: Backend | str | Sequence[str], *, api_key: str | None = None,
               upstream_api_key: str | None = None, config: RSAConfig | dict | str | None = None,
               max_rollouts: int | None = None) -> FastAPI:
    """The proxy as a FastAPI app. `backend`: a Backend object (yours to close) or backend SPEC
    string(s) (built here, closed at shutdown; raises `BackendSpecError` when bad). `config`:
    server defaults for the solve (an RSAConfig, dict or preset name). `max_rollouts` refuses
    requests whose population x (rounds + 1) exceeds it."""
    rsa_backend, owned = _build_backend(backend, upstream_api_key)
    proxy = _Proxy(rsa_backend, owned, api_key=api_key, upstream_api_key=upstream_api_key, config=config,
                   max_rollouts=max_rollouts)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await proxy.aclose()

    app = FastAPI(title="markovian-rsa proxy", lifespan=lifespan)
    app.state.proxy = proxy

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error").response()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        proxy.check_auth(request)
        return await proxy.list_models(request)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        proxy.check_auth(request)
        raw, body = await _read_body(request)
        model = body["model"]
        if model == RSA_MODEL or model.startswith(RSA_MODEL + "/"):
            return await proxy.solve_rsa(request, body)
        return await proxy.passthrough(request, "/chat/completions", raw, model, bool(body.get("stream")))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        proxy.check_auth(request)
        raw, body = await _read_body(request)
        model = body["model"]
        if model == RSA_MODEL or model.startswith(RSA_MODEL + "/"):
            raise APIError(400, f"model `{model}` is served on /v1/chat/completions only", param="model")
        return await proxy.passthrough(request, "/completions", raw, model, bool(body.get("stream")))

    return app


async def _read_body(request: Request) -> tuple[bytes, dict[str, Any]]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        raise APIError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise APIError(400, "`model` is required (a string)", param="model")
    return raw, body


def serve_proxy(backend: Backend | str | Sequence[str], host: str = "127.0.0.1", port: int = 8020,
                api_key: str | None = None, *, upstream_api_key: str | None = None,
                config: RSAConfig | dict | str | None = None, max_rollouts: int | None = None,
                log_level: str = "info") -> None:
    """Serve the proxy with uvicorn until interrupted (the body of `rsa serve`)."""
    import uvicorn

    app = create_app(backend, api_key=api_key, upstream_api_key=upstream_api_key, config=config,
                     max_rollouts=max_rollouts)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
