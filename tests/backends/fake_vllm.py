"""A small fake of `vllm serve` for tests: the OpenAI-compatible routes RSA uses, over real HTTP.

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE with
`stream_options.include_usage`, or one JSON body), `POST /tokenize`, `POST /detokenize`,
`GET /v1/models` (with `max_model_len`), `GET /health`. Response and error shapes follow vLLM:
`{"error": {"message", "type", "param", "code"}}`, a reasoning parser that fills `reasoning`
(or the older `reasoning_content`) or none (the `<think>` block stays inline), and the
context-length 400s of several releases.

The "model" is character-level: token ids are code points, the chat template is
`<|role|>content\n` per message followed by `<|assistant|>`, and the reply is `reply(prompt,
body)` (a fixed thought and `\\boxed{42}` by default), cut to `max_tokens` characters.

Faults, applied to generation requests: `faults` is a queue consumed one per request; then
`fault_fn(body, attempt)` may return one (`attempt` counts earlier requests with the same
`request_id`). A `Fault` answers with an HTTP status (with `Retry-After`), waits (`delay_s`)
before answering, drops the connection after `after_chunks` chunks, or reports an error inside
the stream. The server records request bodies and headers, and the ids of requests whose client
disconnected before the end.

Not covered: `n > 1`, logprobs, tool calls, real tokenization.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from loopback_server import serve

FaultKind = Literal["status", "delay", "drop", "stream_error"]
ContextWording = Literal["v1", "older", "max_model_len", "too_large"]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 500
    message: str = "injected fault"
    retry_after: str | None = None
    delay_s: float = 0.0
    after_chunks: int = 3


class _InjectedDrop(Exception):
    """Raised mid-body so uvicorn closes the connection without finishing the response."""


def default_reply(prompt: str, body: dict[str, Any]) -> str:
    return "<think>\nLet me add the numbers carefully.\n</think>\n\nThe answer is \\boxed{42}."


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
    return text + ("<|assistant|>" if add_generation_prompt else "")


class FakeVLLM:
    def __init__(
        self,
        *,
        model: str = "fake/zaya-tiny",
        max_model_len: int = 4096,
        reasoning_field: str | None = "reasoning",
        reply: Callable[[str, dict[str, Any]], str] = default_reply,
        token_delay_s: float = 0.0,
        faults: list[Fault] | None = None,
        fault_fn: Callable[[dict[str, Any], int], Fault | None] | None = None,
        context_wording: ContextWording = "v1",
        send_usage: bool = True,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.reasoning_field = reasoning_field
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.faults: deque[Fault] = deque(faults or [])
        self.fault_fn = fault_fn
        self.context_wording = context_wording
        self.send_usage = send_usage
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []  # generation request bodies, in arrival order
        self.headers: list[dict[str, str]] = []
        self.disconnects: list[str] = []  # ids of generations whose client went away
        self.completed: list[str] = []
        self.active = 0  # streams being sent now
        self.peak_active = 0
        self._attempts: dict[str, int] = {}
        self.app = self._build_app()

    # -- serving ---------------------------------------------------------------------------
    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on a free loopback port in a background thread; yields the base URL (no /v1)."""
        with serve(self.app, lifespan="off") as url:
            yield url

    # -- the app ---------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> Response:
            return Response(status_code=200)

        @app.get("/v1/models")
        async def models(request: Request) -> Any:
            if (bad := self._check_auth(request)) is not None:
                return bad
            card = {"id": self.model, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                    "root": self.model, "parent": None, "max_model_len": self.max_model_len, "permission": []}
            return {"object": "list", "data": [card]}

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Response:
            body = await request.json()
            if (bad := self._check_model(body)) is not None:
                return bad
            if "messages" in body:
                text = render_chat(body["messages"], body.get("add_generation_prompt", True))
            else:
                text = body["prompt"]
            tokens = [ord(c) for c in text]
            return JSONResponse({"count": len(tokens), "max_model_len": self.max_model_len,
                                 "tokens": tokens, "token_strs": None})

        @app.post("/detokenize")
        async def detokenize(request: Request) -> Response:
            body = await request.json()
            if (bad := self._check_model(body)) is not None:
                return bad
            return JSONResponse({"prompt": "".join(chr(t) for t in body["tokens"])})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            return await self._generate(request, chat=True)

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await self._generate(request, chat=False)

        return app

    def _check_auth(self, request: Request) -> Response | None:
        # a route check, not middleware: BaseHTTPMiddleware would hide client disconnects
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return None

    def _check_model(self, body: dict[str, Any]) -> Response | None:
        if body.get("model") not in (None, self.model):
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        return None

    def _next_fault(self, body: dict[str, Any]) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        rid = body.get("request_id")
        attempt = 0
        if rid:
            attempt = self._attempts.get(rid, 0)
            self._attempts[rid] = attempt + 1
        return self.fault_fn(body, attempt) if self.fault_fn else None

    def _context_error(self, prompt_tokens: int, max_tokens: int | None) -> Response | None:
        limit = self.max_model_len
        if max_tokens is None:
            if prompt_tokens < limit:
                return None
            return _error(400, f"This model's maximum context length is {limit} tokens. However, your request "
                               f"has {prompt_tokens} input tokens. Please reduce the length of the input messages.")
        if prompt_tokens + max_tokens <= limit:
            return None
        p, m, total = prompt_tokens, max_tokens, prompt_tokens + max_tokens
        wording = self.context_wording
        if wording == "max_model_len" and m > limit:
            msg = f"max_completion_tokens={m} cannot be greater than max_model_len=max_total_tokens={limit}"
        elif wording == "older":
            msg = (f"This model's maximum context length is {limit} tokens. However, you requested {total} tokens "
                   f"({p} in the messages, {m} in the completion). Please reduce the length of the messages or completion.")
        elif wording == "too_large":
            msg = (f"'max_tokens' or 'max_completion_tokens' is too large: {m}. This model's maximum context length "
                   f"is {limit} tokens and your request has {p} input tokens ({m} > {limit} - {p}).")
        else:
            msg = (f"This model's maximum context length is {limit} tokens. However, you requested {m} output tokens "
                   f"and your prompt contains at least {p} input tokens, for a total of at least {total} tokens. "
                   f"Please reduce the length of the input prompt or the number of requested output tokens. "
                   f"(parameter=input_tokens, value={p})")
        return _error(400, msg)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        if (bad := self._check_auth(request)) is not None:
            return bad
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if (bad := self._check_model(body)) is not None:
            return bad
        if chat and not body.get("messages"):
            return _error(400, "messages: Field required")
        if not chat and not isinstance(body.get("prompt"), str):
            return _error(400, "prompt must be a string")
        rid = body.get("request_id") or uuid.uuid4().hex
        fault = self._next_fault(body)
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return _error(fault.status, fault.message, "InjectedError", headers=headers)
        if fault is not None and fault.kind == "delay":
            if not await self._wait(request, fault.delay_s):
                self.disconnects.append(rid)
                return Response(status_code=499)

        prompt = render_chat(body["messages"]) if chat else body["prompt"]
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if (bad := self._context_error(len(prompt), max_tokens)) is not None:
            return bad
        text = self.reply(prompt, body)
        budget = max_tokens if max_tokens is not None else self.max_model_len - len(prompt)
        finish = "stop"
        for s in body.get("stop") or []:
            if s in text:
                text = text[: text.index(s)]
        if len(text) > budget:
            text, finish = text[:budget], "length"
        pieces = self._pieces(text, chat)
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text), "total_tokens": len(prompt) + len(text)}
        created, cid = int(time.time()), ("chatcmpl-" if chat else "cmpl-") + rid
        if body.get("stream"):
            stream = self._stream(request, rid, cid, created, chat, pieces, finish, usage, body, fault)
            return StreamingResponse(stream, media_type="text/event-stream")
        return await self._full(request, rid, cid, created, chat, pieces, finish, usage, fault)

    def _pieces(self, text: str, chat: bool) -> list[tuple[str, str]]:
        """(field, one-character piece) per token, as the reasoning parser would route them."""
        if not chat or self.reasoning_field is None or "<think>" not in text:
            return [("content", c) for c in text]
        after = text.split("<think>", 1)[1]
        thought, closed, answer = after.partition("</think>")
        out = [(self.reasoning_field, c) for c in thought.strip("\n")]
        if closed:
            out += [("content", c) for c in answer.lstrip("\n")]
        return out

    async def _wait(self, request: Request, seconds: float) -> bool:
        """Sleep, watching the client; False if it disconnected meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if await request.is_disconnected():
                return False
            await asyncio.sleep(min(0.02, max(end - time.monotonic(), 0)))
        return True

    async def _stream(self, request: Request, rid: str, cid: str, created: int, chat: bool,
                      pieces: list[tuple[str, str]], finish: str, usage: dict[str, int],
                      body: dict[str, Any], fault: Fault | None):
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {"id": cid, "object": obj, "created": created, "model": self.model, "choices": choices, **extra}
            return f"data: {json.dumps(payload)}\n\n"

        def choice(field: str | None, piece: str, fin: str | None) -> dict[str, Any]:
            if chat:
                delta = {field: piece} if field else {}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin}
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": fin}

        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        finished = False
        try:
            if chat:
                yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}])
            for i, (field, piece) in enumerate(pieces):
                if fault is not None and fault.kind in ("drop", "stream_error") and i == fault.after_chunks:
                    if fault.kind == "drop":
                        finished = True  # the server's own doing, not a client disconnect
                        raise _InjectedDrop(rid)
                    err = {"message": fault.message, "type": "InternalServerError", "param": None, "code": fault.status}
                    yield f"data: {json.dumps({'error': err})}\n\n"
                    yield "data: [DONE]\n\n"
                    finished = True
                    return
                if self.token_delay_s and not await self._wait(request, self.token_delay_s):
                    return
                last = i == len(pieces) - 1
                yield chunk([choice(field, piece, finish if last else None)])
            if not pieces:
                yield chunk([choice(None, "", finish)])
            if self.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                yield chunk([], usage=usage)
            yield "data: [DONE]\n\n"
            finished = True
            self.completed.append(rid)
        finally:
            self.active -= 1
            if not finished and rid not in self.disconnects:
                self.disconnects.append(rid)

    async def _full(self, request: Request, rid: str, cid: str, created: int, chat: bool,
                    pieces: list[tuple[str, str]], finish: str, usage: dict[str, int], fault: Fault | None) -> Response:
        if self.token_delay_s and not await self._wait(request, self.token_delay_s * len(pieces)):
            self.disconnects.append(rid)
            return Response(status_code=499)
        fields: dict[str, str] = {}
        for field, piece in pieces:
            fields[field] = fields.get(field, "") + piece
        if chat:
            message = {"role": "assistant", "content": fields.get("content")}
            if self.reasoning_field:
                message[self.reasoning_field] = fields.get(self.reasoning_field)
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
        else:
            choice = {"index": 0, "text": fields.get("content", ""), "logprobs": None, "finish_reason": finish,
                      "stop_reason": None}
        payload = {"id": cid, "object": "chat.completion" if chat else "text_completion", "created": created,
                   "model": self.model, "choices": [choice]}
        if self.send_usage:
            payload["usage"] = usage
        data = json.dumps(payload).encode()
        if fault is not None and fault.kind == "drop":
            async def partial() -> Any:
                yield data[: len(data) // 2]
                raise _InjectedDrop(rid)

            return StreamingResponse(partial(), media_type="application/json",
                                     headers={"content-length": str(len(data))})
        self.completed.append(rid)
        return Response(data, media_type="application/json")


def _error(status: int, message: str, kind: str = "BadRequestError", headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def refused_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
