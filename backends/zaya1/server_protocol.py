"""Wire types of the engine's HTTP server (`server.py`): pydantic request bodies, OpenAI-shaped errors
(with vLLM's context-length wording), usage, Prometheus text and the reasoning splitter for chat.

Request models accept and ignore fields they do not know (OpenAI clients send many); the fields
below are validated, and a few that would silently change the answer if ignored are refused.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..base import THINK_CLOSE, THINK_OPEN, BackendError, BackendUnavailable, InvalidRequest

_PHRASES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 500: "InternalServerError",
            503: "ServiceUnavailableError"}


class APIError(Exception):
    """An error answered in OpenAI's shape (`type` / `code` as vLLM fills them)."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict[str, Any]:
        kind = _PHRASES.get(self.status, "Error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def api_error(exc: BaseException) -> APIError:
    """The HTTP answer to an exception from the engine or the request checks."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, (InvalidRequest, ValueError)):
        return APIError(400, str(exc))
    if isinstance(exc, BackendUnavailable):
        return APIError(503, str(exc))
    return APIError(500, str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}")


def context_error(limit: int, prompt: int, requested: int | None) -> APIError:
    """vLLM's 400 for a prompt (+ requested output) that does not fit in `limit` tokens."""
    if requested is None:
        return APIError(400, f"This model's maximum context length is {limit} tokens. However, your request has "
                             f"{prompt} input tokens. Please reduce the length of the input messages.",
                        param="input_tokens")
    return APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested {requested} "
                         f"output tokens and your prompt contains at least {prompt} input tokens, for a total of at "
                         f"least {prompt + requested} tokens. Please reduce the length of the input prompt or the "
                         f"number of requested output tokens.", param="input_tokens")


def validation_error(exc: ValidationError) -> APIError:
    errors = exc.errors()
    locs = [".".join(str(p) for p in e["loc"]) or "body" for e in errors]
    text = "; ".join(f"{loc}: {e['msg']}" for loc, e in zip(locs, errors))
    return APIError(400, text, param=locs[0] if locs else None)


class _Sampling(BaseModel):
    """Fields shared by chat and completions requests."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # -1 and 0: off
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    request_id: str | None = None
    # refused when set to anything that would change the answer (no support in the engine)
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    best_of: int | None = None

    def unsupported(self) -> str | None:
        bad = [name for name, off in (("logprobs", (None, False, 0)), ("presence_penalty", (None, 0)),
                                      ("frequency_penalty", (None, 0)), ("repetition_penalty", (None, 1)),
                                      ("min_tokens", (None, 0)), ("best_of", (None, 1)))
               if getattr(self, name) not in off]
        return bad[0] if bad else None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    include_reasoning: bool = True
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        if self.tools:
            return "tools"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format"
        return super().unsupported()


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # vLLM's default on this endpoint
    echo: bool = False
    add_special_tokens: bool = True
    suffix: str | None = None

    def unsupported(self) -> str | None:
        return "suffix" if self.suffix else super().unsupported()


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    tokens: list[int]


def usage(prompts: list[list[int]], outs: list[Any]) -> dict[str, Any]:
    """Each prompt counts once however many choices it has; completions count a final EOS, as vLLM does."""
    prompt, completion = sum(map(len, prompts)), sum(o.num_generated_tokens for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": None}


def token_ids(req: Any, ids: Any) -> dict[str, Any]:
    return {"token_ids": list(ids)} if getattr(req, "return_token_ids", False) else {}


def prompt_ids(req: Any, ids: list[int]) -> dict[str, Any]:
    return {"prompt_token_ids": list(ids)} if getattr(req, "return_token_ids", False) else {}


def sse_response(first: list[dict[str, Any]], chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for chunk in first:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


_METRICS = (  # (name, kind, help, EngineMetrics field)
    ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", "num_running"),
    ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", "num_waiting"),
    ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", "cache_usage"),
    ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", "prompt_tokens_total"),
    ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", "generation_tokens_total"),
    ("vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.", "num_preemptions"),
)


def prometheus_text(metrics: Any, model_name: str) -> str:
    """vLLM's metric names in the Prometheus text format (counter families named without `_total`)."""
    label = '{model_name="%s"}' % model_name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    lines = []
    for name, kind, help_text, field in _METRICS:
        family = name.removesuffix("_total") if kind == "counter" else name
        value = float(getattr(metrics, field))
        lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {kind}", f"{name}{label} {value}"]
    return "\n".join(lines) + "\n"


def message_dicts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for the chat template: text parts joined, `reasoning` also under `reasoning_content`."""
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        if not isinstance(m.get("role"), str):
            raise APIError(400, f"messages[{i}].role must be a string", param=f"messages.{i}.role")
        content = m.get("content")
        if isinstance(content, list):
            if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
                raise APIError(400, f"messages[{i}]: only text content parts are supported",
                               param=f"messages.{i}.content")
            m["content"] = "".join(str(p.get("text", "")) for p in content)
        elif content is None:
            m["content"] = ""
        elif not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string or a list of text parts",
                           param=f"messages.{i}.content")
        for a, b in (("reasoning", "reasoning_content"), ("reasoning_content", "reasoning")):
            if m.get(a) is not None and m.get(b) is None:
                m[b] = m[a]
        out.append(m)
    return out


class ThinkSplitter:
    """Split streamed text into (reasoning, content) deltas as `split_think` splits the whole text.

    `opened`: the prompt ended in `<think>`, so the output starts inside the thought. Otherwise a
    leading `<think>` opens it; text that does not start with one is all content. Partial tags and
    newlines that `split_think` would strip are held back until the next piece decides them.
    """

    def __init__(self, opened: bool) -> None:
        self.mode = "reasoning" if opened else "start"
        self.pending = ""
        self.lead = True  # strip leading newlines of the current field

    def feed(self, piece: str, final: bool = False) -> tuple[str, str]:
        self.pending += piece
        reasoning = content = ""
        if self.mode == "start":
            head = self.pending.lstrip()
            if head.startswith(THINK_OPEN):
                self.mode, self.pending = "reasoning", head[len(THINK_OPEN):]
            elif final or not THINK_OPEN.startswith(head):
                self.mode, self.lead = "content", False  # no thought: the text is content as it is
        if self.mode == "reasoning":
            at = self.pending.find(THINK_CLOSE)
            if at != -1:
                reasoning = self._strip(self.pending[:at]).rstrip("\n")
                self.mode, self.pending, self.lead = "content", self.pending[at + len(THINK_CLOSE):], True
            else:
                keep = 0 if final else _partial_suffix(self.pending, THINK_CLOSE)
                ready = self.pending[:len(self.pending) - keep].rstrip("\n")  # trailing newlines may end the thought
                reasoning = self._strip(ready)
                self.pending = "" if final else self.pending[len(ready):]
        if self.mode == "content":
            content, self.pending = self._strip(self.pending), ""
        return reasoning, content

    def _strip(self, text: str) -> str:
        if self.lead:
            text = text.lstrip("\n")
            self.lead = not text
        return text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
