"""`OpenAIBackend` against scripted servers (httpx MockTransport): wire format and failure policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rsa.backends import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    ContextLengthExceeded,
    GenerationRequest,
    InvalidRequest,
    OpenAIBackend,
)
from rsa.backends._retry import RetryPolicy
from rsa.backends.openai import RequestRejected, backend_from_url

FAST = RetryPolicy(backoff_initial=0.001, backoff_max=0.002)
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "root": "m", "max_model_len": 4096}]}
REQ = GenerationRequest(messages=[{"role": "user", "content": "2+2?"}], max_tokens=100)

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A mock server: `/v1/models` answers MODELS, every other request takes the next reply."""

    def __init__(self, *replies: Reply, models: dict[str, Any] | None = MODELS, repeat_last: bool = False) -> None:
        self.replies = list(replies)
        self.models = models
        self.repeat_last = repeat_last
        self.calls: list[httpx.Request] = []

    @property
    def generations(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.calls if r.url.path.endswith("completions")]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            if self.models is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json=self.models)
        self.calls.append(request)
        reply = self.replies[0] if self.repeat_last and len(self.replies) == 1 else self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply(request) if callable(reply) else reply

    def backend(self, **kwargs: Any) -> OpenAIBackend:
        kwargs.setdefault("retry_policy", FAST)
        return OpenAIBackend("http://mock:8000/v1", transport=httpx.MockTransport(self), **kwargs)


def chunk(content: str | None = None, *, reasoning: str | None = None, field: str = "reasoning",
          finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta[field] = reasoning
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage(p: int = 7, c: int = 5) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}}


def sse(*events: dict[str, Any], done: bool = True) -> httpx.Response:
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + ("data: [DONE]\n\n" if done else "")
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


def full(content: str | None, *, reasoning: str | None = None, field: str = "reasoning", finish: str = "stop",
         with_usage: bool = True) -> httpx.Response:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[field] = reasoning
    body: dict[str, Any] = {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if with_usage:
        body["usage"] = {"prompt_tokens": 7, "completion_tokens": 5}
    return httpx.Response(200, json=body)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "X", "code": status}}, headers=headers)


OK = sse(chunk("4", finish="stop"), usage())


# -- request mapping -------------------------------------------------------------------------------
async def test_streaming_request_body_and_headers():
    script = Script(OK)
    req = GenerationRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                            max_tokens=64, temperature=0.6, top_p=0.95, top_k=20, seed=7, stop=("###",),
                            request_id="prob3-s1-slot2")
    async with script.backend(api_key="sk-test") as backend:
        gen = await backend.generate(req)
    assert gen.content == "4" and gen.finish_reason == "stop"
    (call,) = script.calls
    assert call.url == "http://mock:8000/v1/chat/completions"
    assert call.headers["authorization"] == "Bearer sk-test"
    assert call.headers["x-request-id"] == "prob3-s1-slot2"
    assert json.loads(call.content) == {
        "model": "m", "messages": req.message_dicts(), "temperature": 0.6, "top_p": 0.95, "max_tokens": 64,
        "top_k": 20, "seed": 7, "stop": ["###"], "request_id": "prob3-s1-slot2", "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_unset_options_are_omitted_and_max_tokens_none_leaves_the_budget_to_the_server():
    script = Script(full("4"))
    async with script.backend(stream=False) as backend:
        await backend.generate(GenerationRequest(messages=[{"role": "user", "content": "hi"}]))
    (body,) = script.generations
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0,
                    "top_p": 1.0, "stream": False}
    assert "x-request-id" not in script.calls[0].headers and "authorization" not in script.calls[0].headers


# -- response parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_streamed_reasoning_is_read_from_either_field(field):
    script = Script(sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                        chunk(reasoning="Two ", field=field), chunk(reasoning="plus two.", field=field),
                        chunk("The answer"), chunk(" is 4.", finish="stop"), usage(11, 9)))
    async with script.backend() as backend:
        gen = await backend.generate(REQ)
    assert (gen.reasoning, gen.content, gen.finish_reason) == ("Two plus two.", "The answer is 4.", "stop")
    assert (gen.prompt_tokens, gen.completion_tokens) == (11, 9)
    assert gen.trace == "<think>\nTwo plus two.\n</think>\n\nThe answer is 4."
    assert gen.latency_s > 0


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_non_streamed_reasoning_is_read_from_either_field(field):
    script = Script(full("4", reasoning="Two plus two.", field=field))
    async with script.backend(stream=False) as backend:
        gen = await backend.generate(REQ)
    assert (gen.reasoning, gen.content, gen.prompt_tokens, gen.completion_tokens) == ("Two plus two.", "4", 7, 5)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("text, finish, reasoning, content", [
    ("<think>\nadd them\n</think>\n\n\\boxed{4}", "stop", "add them", "\\boxed{4}"),
    ("<think>\nadd them, carefully, then", "length", "add them, carefully, then", ""),
    ("add them\n</think>\n\n\\boxed{4}", "stop", "add them", "\\boxed{4}"),  # template opened <think>
    ("\\boxed{4}", "stop", None, "\\boxed{4}"),
])
async def test_inline_think_is_split_when_the_server_has_no_reasoning_parser(stream, text, finish, reasoning, content):
    if stream:
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        reply = sse(*[chunk(p) for p in pieces[:-1]], chunk(pieces[-1], finish=finish), usage())
    else:
        reply = full(text, finish=finish)
    async with Script(reply).backend(stream=stream) as backend:
        gen = await backend.generate(REQ)
    assert (gen.reasoning, gen.content, gen.finish_reason) == (reasoning, content, finish)


async def test_reasoning_cut_by_length_with_a_parser_keeps_the_partial_thought():
    script = Script(sse(chunk(reasoning="still thinking"), chunk(reasoning=" about it", finish="length"), usage()))
    async with script.backend() as backend:
        gen = await backend.generate(REQ)
    assert (gen.reasoning, gen.content, gen.finish_reason) == ("still thinking about it", "", "length")


@pytest.mark.parametrize("raw, mapped", [("abort", "error"), ("tool_calls", "stop"), ("weird", "error")])
async def test_finish_reasons_are_mapped(raw, mapped):
    async with Script(sse(chunk("x", finish=raw), usage())).backend() as backend:
        gen = await backend.generate(REQ)
    assert gen.finish_reason == mapped
    assert (gen.error is not None) == (mapped == "error")


async def test_missing_stream_usage_counts_chunks_as_an_estimate():
    script = Script(sse(chunk(reasoning="a"), chunk(reasoning="b"), chunk("c"), chunk("d", finish="stop")))
    async with script.backend() as backend:
        gen = await backend.generate(REQ)
    assert (gen.completion_tokens, gen.prompt_tokens) == (4, 0)


async def test_a_finished_stream_without_done_is_accepted():
    async with Script(sse(chunk("4", finish="stop"), usage(), done=False)).backend() as backend:
        gen = await backend.generate(REQ)
    assert gen.content == "4"


async def test_malformed_chunks_and_empty_choices_are_backend_errors():
    bad = httpx.Response(200, content=b"data: {not json\n\n", headers={"content-type": "text/event-stream"})
    script = Script(bad)
    async with script.backend() as backend:
        with pytest.raises(BackendError, match="malformed"):
            await backend.generate(REQ)
    assert len(script.calls) == 1
    async with Script(httpx.Response(200, json={"choices": []})).backend(stream=False) as backend:
        with pytest.raises(BackendError, match="no choices"):
            await backend.generate(REQ)


# -- failure policy ----------------------------------------------------------------------------------
async def test_500_is_retried_then_succeeds():
    script = Script(error(500, "boom"), error(502, "bad gateway"), OK)
    async with script.backend() as backend:
        gen = await backend.generate(REQ)
    assert gen.content == "4" and len(script.calls) == 3


async def test_5xx_past_the_retries_is_a_status_error():
    script = Script(error(503, "overloaded"), repeat_last=True)
    async with script.backend(max_retries=2) as backend:
        with pytest.raises(BackendStatusError) as info:
            await backend.generate(REQ)
    assert info.value.status == 503 and len(script.calls) == 3


@pytest.mark.parametrize("status", [408, 409, 429])
async def test_transient_4xx_with_retry_after_is_retried(status):
    script = Script(error(status, "slow down", headers={"Retry-After": "0.01"}), OK)
    async with script.backend() as backend:
        assert (await backend.generate(REQ)).content == "4"
    assert len(script.calls) == 2


async def test_a_plain_400_is_never_retried():
    script = Script(error(400, "temperature must be non-negative"), OK)
    async with script.backend(max_retries=5) as backend:
        with pytest.raises(RequestRejected) as info:
            await backend.generate(REQ)
    assert isinstance(info.value, InvalidRequest) and isinstance(info.value, BackendStatusError)
    assert info.value.status == 400 and "temperature" in info.value.message
    assert len(script.calls) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_auth_and_not_found_fail_at_once(status):
    script = Script(httpx.Response(status, json={"error": "Unauthorized"}), OK)
    async with script.backend(max_retries=5) as backend:
        with pytest.raises(BackendStatusError) as info:
            await backend.generate(REQ)
    assert info.value.status == status and not isinstance(info.value, InvalidRequest)
    assert len(script.calls) == 1


async def test_connection_errors_are_retried_then_unavailable():
    script = Script(httpx.ConnectError("refused"), repeat_last=True)
    async with script.backend(max_retries=3) as backend:
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            await backend.generate(REQ)
    assert len(script.calls) == 4


async def test_timeouts_are_retried_then_backend_timeout():
    script = Script(httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"), repeat_last=False)
    async with script.backend(max_retries=1) as backend:
        with pytest.raises(BackendTimeout):
            await backend.generate(REQ)
    assert len(script.calls) == 2


class _BrokenStream(httpx.AsyncByteStream):
    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self):
        yield self.head
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def test_a_mid_stream_disconnect_is_retried():
    broken = httpx.Response(200, stream=_BrokenStream(f"data: {json.dumps(chunk('par'))}\n\n".encode()),
                            headers={"content-type": "text/event-stream"})
    script = Script(broken, OK)
    async with script.backend() as backend:
        gen = await backend.generate(REQ)
    assert gen.content == "4" and len(script.calls) == 2


async def test_a_stream_that_ends_without_done_or_finish_is_a_dropped_connection():
    script = Script(sse(chunk("par"), done=False), sse(chunk("tial"), done=False), sse(chunk("ly"), done=False))
    async with script.backend(max_retries=2) as backend:
        with pytest.raises(BackendUnavailable, match="dropped"):
            await backend.generate(REQ)
    assert len(script.calls) == 3


async def test_errors_inside_the_stream():
    err500 = sse(chunk("a"), {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}})
    script = Script(err500, OK)
    async with script.backend() as backend:
        assert (await backend.generate(REQ)).content == "4"  # 5xx in the stream: retried
    assert len(script.calls) == 2

    for body in ({"error": {"message": "bad logits processor", "code": 400}},  # request-shaped: not retried
                 {"object": "error", "message": "something odd"}):  # no status: not retried
        script = Script(sse(chunk("a"), body), OK)
        async with script.backend() as backend:
            with pytest.raises(BackendError, match="bad logits|something odd"):
                await backend.generate(REQ)
        assert len(script.calls) == 1


# -- context length ----------------------------------------------------------------------------------
CONTEXT_400 = {
    "v1": "This model's maximum context length is 4096 tokens. However, you requested 5000 output tokens and "
          "your prompt contains at least 1000 input tokens, for a total of at least 6000 tokens. Please reduce "
          "the length of the input prompt or the number of requested output tokens. (parameter=input_tokens, value=1000)",
    "older": "This model's maximum context length is 4096 tokens. However, you requested 6000 tokens (1000 in the "
             "messages, 5000 in the completion). Please reduce the length of the messages or completion.",
    "too_large": "'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum context length "
                 "is 4096 tokens and your request has 1000 input tokens (5000 > 4096 - 1000).",
    "max_model_len": "max_completion_tokens=5000 cannot be greater than max_model_len=max_total_tokens=4096",
}


def _tokenize_count(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    assert body["messages"] == REQ.message_dicts() and body["add_generation_prompt"] is True
    return httpx.Response(200, json={"count": 1000, "max_model_len": 4096, "tokens": [1] * 1000})


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("wording", list(CONTEXT_400))
async def test_a_context_400_is_retried_once_with_max_tokens_shrunk_to_fit(wording, stream):
    replies: list[Reply] = [error(400, CONTEXT_400[wording])]
    if wording == "max_model_len":  # no prompt size in the message: it is counted via /tokenize
        replies.append(_tokenize_count)
    replies.append(OK if stream else full("4"))
    script = Script(*replies)
    async with script.backend(stream=stream, max_retries=0) as backend:
        gen = await backend.generate(REQ.replace(max_tokens=5000))
    assert gen.content == "4"
    first, second = script.generations
    assert first["max_tokens"] == 5000
    assert second["max_tokens"] == 4096 - 1000
    assert {k: v for k, v in first.items() if k != "max_tokens"} == {k: v for k, v in second.items() if k != "max_tokens"}


async def test_a_context_400_after_shrinking_fails_clearly_with_the_numbers():
    script = Script(error(400, CONTEXT_400["v1"]), error(400, CONTEXT_400["v1"].replace("5000 output", "3096 output")), OK)
    async with script.backend() as backend:
        with pytest.raises(ContextLengthExceeded) as info:
            await backend.generate(REQ.replace(max_tokens=5000))
    assert (info.value.max_model_len, info.value.prompt_tokens, info.value.requested_tokens) == (4096, 1000, 3096)
    assert len(script.generations) == 2


async def test_a_prompt_that_alone_overflows_is_not_retried():
    msg = "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens."
    for max_tokens in (None, 100):
        script = Script(error(400, msg), OK)
        async with script.backend() as backend:
            with pytest.raises(ContextLengthExceeded) as info:
                await backend.generate(REQ.replace(max_tokens=max_tokens))
        assert (info.value.max_model_len, info.value.prompt_tokens) == (4096, 5000)
        assert len(script.generations) == 1


async def test_unknown_prompt_size_without_a_tokenize_route_fails_clearly():
    script = Script(error(400, CONTEXT_400["max_model_len"]), httpx.Response(404, json={"detail": "Not Found"}), OK)
    async with script.backend() as backend:
        with pytest.raises(ContextLengthExceeded) as info:
            await backend.generate(REQ.replace(max_tokens=5000))
    assert (info.value.max_model_len, info.value.prompt_tokens, info.value.requested_tokens) == (4096, None, 5000)
    assert len(script.generations) == 1


# -- models, tokenizer, construction -----------------------------------------------------------------
async def test_a_stream_request_answered_in_one_json_body_is_still_read():
    async with Script(full("4", reasoning="2+2")).backend(stream=True) as backend:
        gen = await backend.generate(REQ)
    assert (gen.reasoning, gen.content, gen.completion_tokens) == ("2+2", "4", 5)


async def test_model_and_context_length_are_discovered_once():
    script = Script(lambda r: sse(chunk("4", finish="stop"), usage()), repeat_last=True)
    models_calls = 0
    inner = script.__call__

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal models_calls
        models_calls += request.url.path == "/v1/models"
        return await inner(request)

    backend = OpenAIBackend("http://mock:8000", transport=httpx.MockTransport(counting), retry_policy=FAST)
    assert backend.model is None and backend.context_length is None
    async with backend:
        gens = await asyncio.gather(*[backend.generate(REQ) for _ in range(8)])
    assert all(g.content == "4" for g in gens)
    assert models_calls == 1
    assert (backend.model, backend.context_length) == ("m", 4096)
    assert all(json.loads(c.content)["model"] == "m" for c in script.calls)


async def test_a_given_model_works_without_a_models_route():
    script = Script(OK, models=None)
    async with script.backend(model="served-name") as backend:
        assert (await backend.generate(REQ)).content == "4"
        assert (backend.model, backend.context_length) == ("served-name", None)
    assert script.generations[0]["model"] == "served-name"


async def test_tokenize_and_detokenize_through_the_server():
    def tokenize(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/tokenize"  # server root, not /v1
        assert json.loads(request.content) == {"model": "m", "prompt": "abc", "add_special_tokens": False}
        return httpx.Response(200, json={"count": 3, "tokens": [97, 98, 99]})

    def detokenize(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/detokenize"
        assert json.loads(request.content) == {"model": "m", "tokens": [98, 99]}
        return httpx.Response(200, json={"prompt": "bc"})

    script = Script(tokenize, error(503, "warming up"), detokenize)
    async with script.backend() as backend:
        assert await backend.tokenize("abc") == [97, 98, 99]
        assert await backend.detokenize([98, 99]) == "bc"
        assert await backend.tokenize("") == [] and await backend.detokenize([]) == ""
    assert len(script.calls) == 3


async def test_local_tokenizer_serves_tails_without_the_server(char_tokenizer_dir):
    script = Script()
    async with script.backend(tokenizer=str(char_tokenizer_dir)) as backend:
        ids = await backend.tokenize("tail <think>x</think> end")
        assert await backend.detokenize(ids) == "tail <think>x</think> end"
        assert len(await backend.tokenize("abc")) == 3
    assert script.calls == []


async def test_completions_endpoint_renders_the_template_locally(char_tokenizer_dir):
    script = Script(sse({"choices": [{"index": 0, "text": "two and two"}]},
                        {"choices": [{"index": 0, "text": "\n</think>\n\n4", "finish_reason": "stop"}]}, usage()),
                    sse({"choices": [{"index": 0, "text": "still going", "finish_reason": "length"}]}, usage()))
    async with script.backend(endpoint="completions", tokenizer=char_tokenizer_dir) as backend:
        gen = await backend.generate(REQ)
        cut = await backend.generate(REQ)
    assert script.calls[0].url.path == "/v1/completions"
    body = script.generations[0]
    assert body["prompt"] == "<|user|>2+2?\n<|assistant|><think>\n"
    assert body["add_special_tokens"] is False and "messages" not in body
    assert (gen.reasoning, gen.content) == ("two and two", "4")
    assert (cut.reasoning, cut.content, cut.finish_reason) == ("still going", "", "length")


def test_construction_checks_and_backend_from_url():
    with pytest.raises(ValueError, match="tokenizer"):
        OpenAIBackend("http://h", endpoint="completions")
    with pytest.raises(ValueError):
        OpenAIBackend("http://h", endpoint="responses")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OpenAIBackend("http://h", max_concurrency=0)
    one = backend_from_url("http://h:8000/v1", max_concurrency=8, stream=False)
    assert one.base_urls == ["http://h:8000/v1"] and one.max_concurrency == 8 and one.streaming is False
    assert backend_from_url("http://a:1, http://b:2/v1").base_urls == ["http://a:1/v1", "http://b:2/v1"]
    assert backend_from_url(["http://a:1", "http://b:2"]).base_urls == ["http://a:1/v1", "http://b:2/v1"]
    with pytest.raises(ValueError):
        backend_from_url([])


def test_exports():
    import rsa.backends
    from rsa.backends import openai as module

    assert rsa.backends.OpenAIBackend is module.OpenAIBackend
    assert "OpenAIBackend" in rsa.backends.__all__
    assert all(hasattr(module, name) for name in module.__all__)


async def test_a_closed_backend_refuses_work():
    backend = Script(OK).backend()
    async with backend:
        pass
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.generate(REQ)
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.tokenize("abc")
