"""`OpenAIBackend`: Markovian RSA over `vllm serve` or any OpenAI-compatible endpoint.

    backend = OpenAIBackend("http://gpu0:8000/v1")                    # model read from /v1/models
    backend = OpenAIBackend(["http://gpu0:8000", "http://gpu1:8000"])  # replicas
    async with backend:
        gen = await backend.generate(GenerationRequest(messages=[...], affinity="problem-7"))

What it does:
- `/v1/chat/completions` by default: the server applies the chat template and its reasoning
  parser; reasoning is read from `reasoning` or `reasoning_content`, and a `<think>` block left
  inline in the content (no parser on the server) is split here, an unclosed one included.
  `endpoint="completions"` renders the chat template locally with `tokenizer` and sends the text
  to `/v1/completions` (with `add_special_tokens: false`, as the chat endpoint does, since the
  rendered template already holds BOS); a template that opens `<think>` in the prompt is
  accounted for when splitting.
- Streams (SSE, `stream_options.include_usage`) unless `stream=False`: long generations stay
  alive through idle-killing proxies and cancelling the caller's task closes the connection,
  which makes vLLM abort the request.
- `max_tokens=None` is sent as no `max_tokens` at all, so the server uses the context that is
  left after the prompt. `max_tokens` (not `max_completion_tokens`) is sent on both endpoints
  for the widest compatibility; `top_k` only when set; `request_id` as a body field and as the
  `X-Request-Id` header.
- Tails: `tokenize`/`detokenize` use `tokenizer` locally when given, else the server's
  `POST /tokenize` and `POST /detokenize`.
- Failures follow the policy in `_retry.py`: retries with backoff on connection errors,
  timeouts, dropped streams, 408/409/429/5xx (honouring `Retry-After`); 400 and other 4xx are
  never retried blindly. A context-length 400 is parsed and the request is sent once more with
  `max_tokens` shrunk to `max_model_len - prompt_tokens`; if that cannot help,
  `ContextLengthExceeded` carries the numbers.

Errors raised (the tree of `base.py`):

    BackendError                     malformed response or stream, `error` object in a stream
     +-- BackendUnavailable          connection refused/lost after retries, closed backend
     +-- BackendTimeout              connect/read/write timeout after retries
     +-- BackendStatusError(status)  HTTP error status (401/403/404 at once, 408/409/429/5xx
     |    |                          after retries)
     |    +-- RequestRejected        400/413/422 that is not about context length (also an
     |                               InvalidRequest)
     +-- InvalidRequest              chat template cannot render the messages
          +-- ContextLengthExceeded  prompt + max_tokens do not fit, even after shrinking

Not covered: `n > 1`, logprobs, tool calls, the Responses API, load read from `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ._replicas import Replica, ReplicaPool
from ._retry import (
    DEFAULT_TIMEOUT,
    MAX_RETRIES,
    Retry,
    RetryPolicy,
    is_retryable_status,
    parse_context_error,
    parse_retry_after,
    retry_loop,
)
from ._sse import iter_sse
from .base import (
    THINK_OPEN,
    BackendError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    BaseBackend,
    ContextLengthExceeded,
    FinishReason,
    Generation,
    GenerationRequest,
    InvalidRequest,
    split_think,
)

__all__ = ["OpenAIBackend", "ModelInfo", "RequestRejected", "RetryPolicy", "backend_from_url"]

Endpoint = Literal["chat", "completions"]
_PATHS = {"chat": "/chat/completions", "completions": "/completions"}
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "stop"}
_REQUEST_SHAPED = (400, 413, 422)  # statuses that may carry a context-length complaint


class RequestRejected(BackendStatusError, InvalidRequest):
    """A 4xx saying the request itself is wrong; sending it again unchanged cannot succeed."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    max_model_len: int | None = None


class OpenAIBackend(BaseBackend):
    """A backend over one or several OpenAI-compatible servers serving the same model.

    `base_url`: one URL or a list of replicas, with or without `/v1`. `model=None` uses the first
    model of `/v1/models` (read on first use, with `max_model_len` as `context_length`).
    `timeout`: seconds of read silence tolerated (connect stays short), an `httpx.Timeout`, or
    None for no read limit. `max_concurrency` bounds generations in flight on this object;
    `requests_per_second` throttles generation requests (retries included). `tokenizer`: a
    transformers tokenizer or its path/hub name, used for tails and for `endpoint="completions"`.
    `retry_policy` overrides backoff and cool-down timing; `transport` is for tests.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        model: str | None = None,
        api_key: str | None = None,
        endpoint: Endpoint = "chat",
        max_concurrency: int = 64,
        requests_per_second: float | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = MAX_RETRIES,
        tokenizer: Any = None,
        stream: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if endpoint not in _PATHS:
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if endpoint == "completions" and tokenizer is None:
            raise ValueError("endpoint='completions' renders the chat template locally: pass tokenizer=")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be > 0 or None, got {requests_per_second}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.policy = retry_policy or RetryPolicy()
        self._pool = ReplicaPool(urls, self.policy)
        self.endpoint: Endpoint = endpoint
        self.streaming = stream
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self._model = model
        self._api_key = api_key
        self._timeout = _as_timeout(timeout)
        self._transport = transport
        self._tokenizer_spec = tokenizer
        self._tokenizer: Any = None if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
        self._throttler = _throttler(requests_per_second)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._info: ModelInfo | None = None
        self._info_lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    # -- public attributes ---------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        return self._info.id if self._info else self._model

    @property
    def context_length(self) -> int | None:  # type: ignore[override]
        return self._info.max_model_len if self._info else None

    @property
    def base_urls(self) -> list[str]:
        return [r.api for r in self._pool.replicas]

    async def model_info(self) -> ModelInfo:
        """The served model and its context window, read from `/v1/models` once."""
        if self._info is None:
            async with self._info_lock:
                if self._info is None:
                    self._info = await self._discover()
        return self._info

    # -- generation ----------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Generation:
        self._check_open()
        model = (await self.model_info()).id
        prompt = self._render(request) if self.endpoint == "completions" else None
        try:
            return await self._generate(request, model, prompt, request.max_tokens)
        except ContextLengthExceeded as exc:
            first = exc
        # One more try, with max_tokens shrunk to what the context has left, if that can help.
        err = await self._with_prompt_count(first, request, model, prompt)
        fit = _fitting_max_tokens(err, request.max_tokens)
        if fit is None:
            raise err from first
        try:
            return await self._generate(request, model, prompt, fit)
        except ContextLengthExceeded as again:
            raise ContextLengthExceeded(
                f"{again} (already retried with max_tokens shrunk to {fit})",
                max_model_len=again.max_model_len or err.max_model_len,
                prompt_tokens=again.prompt_tokens or err.prompt_tokens,
                requested_tokens=fit,
            ) from again

    async def _generate(
        self, request: GenerationRequest, model: str, prompt: str | None, max_tokens: int | None
    ) -> Generation:
        body = self._body(request, model, prompt, max_tokens)
        headers = {"X-Request-Id": request.request_id} if request.request_id else None
        opens_think = prompt is not None and prompt.rstrip().endswith(THINK_OPEN)

        async def attempt() -> Generation:
            async with self._slots:
                if self._throttler is not None:
                    await self._throttler.acquire()
                replica = self._pool.pick(request.affinity)
                with self._pool.lease(replica):
                    url = replica.api + _PATHS[self.endpoint]
                    start = time.perf_counter()
                    async with self._exchange(replica, "POST", url, json=body, headers=headers) as resp:
                        if self.streaming and not _is_json(resp):
                            raw = await self._read_stream(resp)
                        else:  # asked not to stream, or a proxy answered in one piece anyway
                            raw = self._read_full(await _json_body(resp))
                    return _to_generation(raw, time.perf_counter() - start, opens_think)

        return await retry_loop(attempt, max_retries=self.max_retries, policy=self.policy)

    def _body(
        self, request: GenerationRequest, model: str, prompt: str | None, max_tokens: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        if prompt is None:
            body["messages"] = request.message_dicts()
        else:
            body["prompt"] = prompt
            body["add_special_tokens"] = False
        body["temperature"] = request.temperature
        body["top_p"] = request.top_p
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if request.top_k is not None:
            body["top_k"] = request.top_k
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.request_id:
            body["request_id"] = request.request_id
        body["stream"] = self.streaming
        if self.streaming:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _read_stream(self, resp: httpx.Response) -> _Raw:
        raw = _Raw()
        done = False
        async for event, data in iter_sse(resp.aiter_lines()):
            if done:  # drain after [DONE] so the connection can be reused
                continue
            if data.strip() == "[DONE]":
                done = True
                continue
            obj = _loads(data, "stream chunk")
            if event == "error" or "error" in obj or obj.get("object") == "error":
                raise _stream_error(obj)
            if obj.get("usage"):
                raw.usage = obj["usage"]
            for choice in obj.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                if self.endpoint == "completions":
                    piece, think = choice.get("text"), None
                else:
                    delta = choice.get("delta") or {}
                    piece = delta.get("content")
                    think = delta.get("reasoning") or delta.get("reasoning_content")
                if piece:
                    raw.content.append(piece)
                if think:
                    raw.reasoning.append(think)
                if piece or think:
                    raw.chunks += 1
                if choice.get("finish_reason"):
                    raw.finish = choice["finish_reason"]
        if not done and raw.finish is None:
            raise Retry(BackendUnavailable("stream ended before [DONE] without a finish_reason (connection dropped)"))
        return raw

    def _read_full(self, obj: dict[str, Any]) -> _Raw:
        choices = obj.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise BackendError(f"response has no choices: {json.dumps(obj)[:300]}")
        choice = choices[0]
        raw = _Raw(finish=choice.get("finish_reason"), usage=obj.get("usage"))
        if self.endpoint == "completions":
            raw.content.append(choice.get("text") or "")
        else:
            message = choice.get("message") or {}
            raw.content.append(message.get("content") or "")
            think = message.get("reasoning") or message.get("reasoning_content")
            if think:
                raw.reasoning.append(think)
        return raw

    # -- context-length recovery ---------------------------------------------------------------
    async def _with_prompt_count(
        self, exc: ContextLengthExceeded, request: GenerationRequest, model: str, prompt: str | None
    ) -> ContextLengthExceeded:
        """`exc` with the numbers completed from what we know (model info, a prompt count)."""
        max_len = exc.max_model_len or self.context_length
        prompt_tokens = exc.prompt_tokens
        if prompt_tokens is None and max_len is not None and request.max_tokens is not None:
            prompt_tokens = await self._count_prompt(request, model, prompt)
        return ContextLengthExceeded(
            str(exc),
            max_model_len=max_len,
            prompt_tokens=prompt_tokens,
            requested_tokens=exc.requested_tokens or request.max_tokens,
        )

    async def _count_prompt(self, request: GenerationRequest, model: str, prompt: str | None) -> int | None:
        if prompt is not None:
            return len(await self.tokenize(prompt))
        body = {"model": model, "messages": request.message_dicts(), "add_generation_prompt": True}
        try:
            data = await self._call_json("POST", "/tokenize", body, api=False)
        except BackendStatusError:  # no /tokenize on this server: the numbers stay unknown
            return None
        count = data.get("count")
        if isinstance(count, int):
            return count
        tokens = data.get("tokens")
        return len(tokens) if isinstance(tokens, list) else None

    # -- tails ---------------------------------------------------------------------------------
    async def tokenize(self, text: str) -> list[int]:
        self._check_open()
        tok = self._local_tokenizer()
        if tok is not None:
            return list(tok.encode(text, add_special_tokens=False))
        if not text:
            return []
        model = (await self.model_info()).id
        body = {"model": model, "prompt": text, "add_special_tokens": False}
        tokens = (await self._call_json("POST", "/tokenize", body, api=False)).get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise BackendError(f"/tokenize returned no token list: {tokens!r:.200}")
        return tokens

    async def detokenize(self, ids: list[int]) -> str:
        self._check_open()
        tok = self._local_tokenizer()
        if tok is not None:
            return tok.decode(list(ids), skip_special_tokens=False)
        if not ids:
            return ""
        model = (await self.model_info()).id
        text = (await self._call_json("POST", "/detokenize", {"model": model, "tokens": list(ids)}, api=False)).get("prompt")
        if not isinstance(text, str):
            raise BackendError(f"/detokenize returned no text: {text!r:.200}")
        return text

    def _local_tokenizer(self) -> Any:
        if self._tokenizer is None and self._tokenizer_spec is not None:
            from transformers import AutoTokenizer  # heavy import, only when asked for

            self._tokenizer = AutoTokenizer.from_pretrained(os.fspath(self._tokenizer_spec))
        return self._tokenizer

    def _render(self, request: GenerationRequest) -> str:
        from jinja2 import TemplateError

        try:
            return self._local_tokenizer().apply_chat_template(
                request.message_dicts(), add_generation_prompt=True, tokenize=False
            )
        except (ValueError, TemplateError) as exc:
            raise InvalidRequest(f"the chat template cannot render these messages: {exc}") from exc

    # -- model discovery -----------------------------------------------------------------------
    async def _discover(self) -> ModelInfo:
        if self._model is None:
            return _pick_model(await self._call_json("GET", "/models"), None)
        # The model is known; the context window is a bonus worth one try, not a failure.
        try:
            listing = await self._call_json("GET", "/models", max_retries=0)
        except BackendError:
            return ModelInfo(self._model)
        return _pick_model(listing, self._model)

    # -- HTTP ----------------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        self._check_open()  # a retry racing aclose() must not open a fresh client
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                headers=headers,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=self.max_concurrency + 8),
            )
        return self._client

    async def _call_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, api: bool = True,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            replica = self._pool.pick()
            url = (replica.api if api else replica.root) + path
            async with self._exchange(replica, method, url, json=body) as resp:
                return await _json_body(resp)

        retries = self.max_retries if max_retries is None else max_retries
        return await retry_loop(attempt, max_retries=retries, policy=self.policy)

    @contextlib.asynccontextmanager
    async def _exchange(self, replica: Replica, method: str, url: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """One HTTP exchange, its httpx failures mapped onto the policy (`Retry` or final)."""
        try:
            async with self._http().stream(method, url, **kwargs) as resp:
                self._pool.reachable(replica)
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _status_failure(resp)
                yield resp
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._pool.connect_failed(replica)
            raise Retry(
                BackendUnavailable(f"cannot connect to {replica.root}: {exc!r}"),
                failover=self._pool.has_healthy(),
            ) from exc
        except httpx.TimeoutException as exc:
            raise Retry(BackendTimeout(f"{method} {url} timed out: {exc!r}")) from exc
        except httpx.TransportError as exc:  # connection reset, peer closed mid-body, ...
            raise Retry(BackendUnavailable(f"connection to {replica.root} lost: {exc!r}")) from exc
        except httpx.HTTPError as exc:  # undecodable body and the like: not transient
            raise BackendError(f"{method} {url} failed: {exc!r}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("this OpenAIBackend is closed")

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.base_urls!r}, model={self.model!r}, endpoint={self.endpoint!r})"


def backend_from_url(url_or_urls: str | list[str], **options: Any) -> OpenAIBackend:
    """The backend behind `rsa.solve(problem, backend="http://host:8000/v1")`.

    A list of URLs, or one string of comma-separated URLs, gives replicas. `options` are
    `OpenAIBackend` keyword arguments.
    """
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    split = [u.strip() for item in urls for u in item.split(",") if u.strip()]
    if not split:
        raise ValueError("backend_from_url needs at least one URL")
    return OpenAIBackend(split if len(split) > 1 else split[0], **options)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Raw:
    """What one response said, before it becomes a `Generation`."""

    finish: str | None = None
    usage: dict[str, Any] | None = None
    chunks: int = 0  # chunks that carried text
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)


def _to_generation(raw: _Raw, latency_s: float, opens_think: bool) -> Generation:
    content = "".join(raw.content)
    reasoning: str | None = "".join(raw.reasoning) if raw.reasoning else None
    if reasoning is None:  # no reasoning parser: a think block may be inline
        if opens_think and THINK_OPEN not in content:
            content = THINK_OPEN + content
        reasoning, content = split_think(content)
    finish = _FINISH.get(raw.finish or "stop", "error")
    usage = raw.usage or {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    if not isinstance(completion_tokens, int):
        # No usage (server ignores include_usage): vLLM sends one token per chunk by default,
        # so the chunk count is an estimate, low when the server batches tokens per chunk.
        completion_tokens = raw.chunks
    return Generation(
        content=content,
        reasoning=reasoning,
        finish_reason=finish,
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else 0,
        completion_tokens=completion_tokens,
        latency_s=latency_s,
        error=None if finish != "error" else f"server finish_reason={raw.finish!r}",
    )


def _fitting_max_tokens(err: ContextLengthExceeded, requested: int | None) -> int | None:
    """The max_tokens that fits, if shrinking the request can help at all."""
    if requested is None or err.max_model_len is None or err.prompt_tokens is None:
        return None
    fit = err.max_model_len - err.prompt_tokens
    return fit if 1 <= fit < requested else None


def _pick_model(listing: dict[str, Any], wanted: str | None) -> ModelInfo:
    entries = [m for m in listing.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if wanted is not None:
        entries = [m for m in entries if wanted in (m.get("id"), m.get("root"))] or [{"id": wanted}]
    if not entries:
        raise BackendError(f"/v1/models lists no model: {json.dumps(listing)[:300]}")
    entry = entries[0]
    max_len = entry.get("max_model_len")
    return ModelInfo(wanted or entry["id"], max_len if isinstance(max_len, int) else None)


def _as_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    connect = DEFAULT_TIMEOUT.connect
    if timeout is None:
        return httpx.Timeout(None, connect=connect)
    return httpx.Timeout(timeout, connect=min(connect, timeout))


def _throttler(requests_per_second: float | None) -> Any:
    if requests_per_second is None:
        return None
    from asyncio_throttle import Throttler

    if float(requests_per_second).is_integer():
        return Throttler(rate_limit=int(requests_per_second))
    return Throttler(rate_limit=1, period=1.0 / requests_per_second)  # fractional: even spacing


def _loads(text: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendError(f"malformed {what}: {text[:200]!r}") from exc
    if not isinstance(obj, dict):
        raise BackendError(f"malformed {what}: expected a JSON object, got {text[:200]!r}")
    return obj


def _is_json(resp: httpx.Response) -> bool:
    return resp.headers.get("content-type", "").split(";")[0].strip() == "application/json"


async def _json_body(resp: httpx.Response) -> dict[str, Any]:
    await resp.aread()
    return _loads(resp.text, f"response from {resp.request.url}")


def _error_message(obj: Any) -> str | None:
    """The human message of an OpenAI/vLLM/FastAPI error body."""
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    for key in ("message", "detail"):
        if isinstance(obj.get(key), str):
            return obj[key]
    if obj.get("detail") is not None:
        return json.dumps(obj["detail"])[:1000]
    return None


def _classify(status: int, message: str, retry_after: float | None) -> Exception:
    """The policy for an HTTP error status: a `Retry` to raise, or the final error."""
    if is_retryable_status(status):
        return Retry(BackendStatusError(status, message), retry_after=retry_after)
    if status in _REQUEST_SHAPED:
        numbers = parse_context_error(message)
        if numbers is not None:
            return ContextLengthExceeded(
                message,
                max_model_len=numbers.max_model_len,
                prompt_tokens=numbers.prompt_tokens,
                requested_tokens=numbers.requested_tokens,
            )
        return RequestRejected(status, message)
    return BackendStatusError(status, message)


def _status_failure(resp: httpx.Response) -> Exception:
    try:
        message = _error_message(json.loads(resp.text))
    except json.JSONDecodeError:
        message = None
    message = message or re.sub(r"\s+", " ", resp.text).strip()[:1000] or resp.reason_phrase
    return _classify(resp.status_code, message, parse_retry_after(resp.headers))


def _stream_error(obj: dict[str, Any]) -> Exception:
    """An error reported inside an SSE stream, after the 200 status went out."""
    message = _error_message(obj) or json.dumps(obj)[:1000]
    err = obj.get("error")
    code = err.get("code") if isinstance(err, dict) else obj.get("code")
    if isinstance(code, int) and 400 <= code <= 599:
        return _classify(code, message, None)
    return BackendError(f"error inside the stream: {message}")
