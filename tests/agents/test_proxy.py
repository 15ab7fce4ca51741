"""The OpenAI-compatible RSA proxy, driven by the official `openai` SDK over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import openai
import pytest
from agents_helpers import COMPLETION_TOKENS, PROMPT_TOKENS, make_backend, recorder
from loopback_server import wait_until
from fake_vllm import default_reply, render_chat

from rsa.backends import ScriptedBackend
from rsa.proxy import create_app

SMALL = {"population": 4, "aggregation_size": 2, "rounds": 1, "seed": 7}  # 8 rollouts
QUESTION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 40 + 2?"}]


_CLIENTS: list[openai.OpenAI] = []


def client(url: str, key: str = "none", **kw) -> openai.OpenAI:
    """An SDK client, closed at the end of the test."""
    _CLIENTS.append(openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, **kw))
    return _CLIENTS[-1]


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@pytest.fixture
def proxy(serve_app):
    """(scripted backend, proxy URL) for a proxy over a scripted backend."""
    backend = make_backend()
    return backend, serve_app(create_app(backend))


# -- model rsa -----------------------------------------------------------------------------------
def test_health_and_models(proxy):
    _, url = proxy
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert [m.id for m in client(url).models.list()] == ["rsa"]


def test_plain_completion_answers_with_account_and_usage(proxy):
    backend, url = proxy
    reply = client(url).chat.completions.create(model="rsa", messages=QUESTION, max_tokens=50, temperature=0.5,
                                                extra_body={"rsa": SMALL})
    msg = reply.choices[0].message
    assert msg.content == "Adding them gives \\boxed{42}."
    assert reply.choices[0].finish_reason == "stop"
    account = msg.model_extra["reasoning"]
    assert "stage 0: 4/4 live, votes 41: 1, 42: 3" in account or "42: 3, 41: 1" in account
    assert "stage 1: 4/4 live" in account and "selected (majority): 42" in account
    # usage sums every upstream call; the caller's limits reach every rollout
    assert len(backend.requests) == 8
    assert reply.usage.prompt_tokens == 8 * PROMPT_TOKENS
    assert reply.usage.completion_tokens == 8 * COMPLETION_TOKENS
    assert reply.usage.total_tokens == 8 * (PROMPT_TOKENS + COMPLETION_TOKENS)
    assert {(r.max_tokens, r.temperature) for r in backend.requests} == {(50, 0.5)}
    summary = reply.model_extra["rsa"]
    assert summary["answer"] == "42" and summary["stages"] == 2 and summary["best_so_far"] is False


def test_max_completion_tokens_caps_the_servers_default(serve_app):
    backend = make_backend()
    url = serve_app(create_app(backend, config={**SMALL, "max_tokens": 1000}))
    client(url).chat.completions.create(model="rsa", messages=QUESTION, max_completion_tokens=64)
    assert {r.max_tokens for r in backend.requests} == {64}
    backend.requests.clear()
    client(url).chat.completions.create(model="rsa", messages=QUESTION)
    assert {r.max_tokens for r in backend.requests} == {1000}


def test_streaming_sends_progress_before_the_answer(serve_app):
    """Progress must reach the client while the solve is still running: the last stage is held
    until the test has read stage 0's summary from the stream."""
    gate = threading.Event()
    base = make_backend()

    async def respond(req):
        if req.request_id.split("-")[-2] == "s1":
            while not gate.is_set():
                await asyncio.sleep(0.01)
        return await recorder(base)(req)

    url = serve_app(create_app(ScriptedBackend(respond), config=SMALL))
    reasoning, content, usage, finish, order = [], [], None, None, []
    saw_stage0_while_held = False
    with client(url).chat.completions.create(model="rsa", messages=QUESTION, stream=True,
                                             stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if text := (delta.model_extra or {}).get("reasoning"):
                reasoning.append(text)
                order.append("r")
                if text.startswith("stage 0 done") and not gate.is_set():
                    saw_stage0_while_held = True
                    gate.set()
            if delta.content:
                content.append(delta.content)
                order.append("c")
            finish = chunk.choices[0].finish_reason or finish
    gate.set()
    assert saw_stage0_while_held
    assert "".join(order).rstrip("c") == "".join(order).replace("c", "")  # every reasoning delta precedes content
    text = "".join(reasoning)
    assert text.startswith("Markovian RSA: population 4") and "stage 1: 4 rollouts started" in text
    assert "".join(content) == "Adding them gives \\boxed{42}."
    assert finish == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens) == (8 * PROMPT_TOKENS, 8 * COMPLETION_TOKENS)


# -- caller errors, in OpenAI's error shape ------------------------------------------------------
@pytest.mark.parametrize("extra, param, words", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
     "tools", "does not call tools"),
    ({"n": 2}, "n", "n=2 is not supported"),
    ({"stop": ["\n"]}, "stop", "`stop` is not supported"),
    ({"extra_body": {"rsa": {"population": 0}}}, "rsa.population", "greater than or equal to 1"),
    ({"extra_body": {"rsa": {"populaton": 4}}}, "rsa.populaton", "Extra inputs are not permitted"),
    ({"extra_body": {"rsa": {"preset": "huge"}}}, "rsa.preset", "unknown rsa.preset"),
])
def test_unsupported_requests_are_refused_not_ignored(proxy, extra, param, words):
    backend, url = proxy
    with pytest.raises(openai.BadRequestError) as info:
        client(url).chat.completions.create(model="rsa", messages=QUESTION, **extra)
    err = info.value
    assert err.status_code == 400 and err.param == param and words in err.message
    assert err.type == "invalid_request_error"
    assert backend.requests == []


def test_request_without_user_text_is_a_400(proxy):
    _, url = proxy
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client(url).chat.completions.create(model="rsa", messages=[{"role": "system", "content": "hi"}])


def test_too_many_rollouts_is_a_400(serve_app):
    url = serve_app(create_app(make_backend(), max_rollouts=10))
    with pytest.raises(openai.BadRequestError, match="needs 48 rollouts"):
        client(url).chat.completions.create(model="rsa", messages=QUESTION, extra_body={"rsa": {"preset": "high"}})


def test_other_models_without_an_upstream_are_404(proxy):
    _, url = proxy
    for model in ("gpt-4o", "rsa/some-model"):
        with pytest.raises(openai.NotFoundError) as info:
            client(url).chat.completions.create(model=model, messages=QUESTION)
        assert info.value.code == "model_not_found" and info.value.param == "model"


def test_failed_solve_is_a_502(proxy):
    _, url = proxy
    with pytest.raises(openai.InternalServerError, match="every rollout of stage 0 failed"):
        client(url).chat.completions.create(model="rsa", messages=[{"role": "user", "content": "FAIL"}],
                                            extra_body={"rsa": SMALL})


def test_failed_solve_inside_a_stream_is_an_error_event(proxy):
    _, url = proxy
    with pytest.raises(openai.APIError, match="every rollout of stage 0 failed"):
        for _ in client(url).chat.completions.create(model="rsa", stream=True, extra_body={"rsa": SMALL},
                                                     messages=[{"role": "user", "content": "FAIL"}]):
            pass


def test_api_key(serve_app):
    url = serve_app(create_app(make_backend(), api_key="sekret", config=SMALL))
    with pytest.raises(openai.AuthenticationError) as info:
        client(url, "wrong").models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    assert httpx.post(url + "/v1/chat/completions", json={}).json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/health").status_code == 200  # readiness probes need no key
    reply = client(url, "sekret").chat.completions.create(model="rsa", messages=QUESTION)
    assert "42" in reply.choices[0].message.content


# -- deadlines and budgets -----------------------------------------------------------------------
@pytest.mark.parametrize("limit, reason", [({"deadline_s": 0.5}, "deadline"), ({"token_budget": 20}, "token_budget")])
def test_limits_return_the_best_answer_so_far_marked(proxy, limit, reason):
    backend, url = proxy
    reply = client(url).chat.completions.create(
        model="rsa", messages=[{"role": "user", "content": "SLOWLATER What is 40 + 2?"}],
        extra_body={"rsa": {**SMALL, **limit}})
    assert reply.model_extra["rsa"]["best_so_far"] is True
    assert reply.model_extra["rsa"]["stop_reason"] == reason
    assert reply.model_extra["rsa"]["answer"] == "42"  # stage 0's majority
    assert reply.choices[0].message.content == "Adding them gives \\boxed{42}."
    assert "best answer so far" in reply.choices[0].message.model_extra["reasoning"]
    assert wait_until(lambda: backend.in_flight == 0)  # the held later stage was cancelled


# -- client disconnect cancels the solve ---------------------------------------------------------
def _all_cancelled(backend) -> bool:
    started = len(backend.requests)
    return started > 0 and backend.in_flight == 0 and len(recorder(backend).cancelled) == started


def test_disconnect_cancels_a_non_streaming_solve(proxy):
    backend, url = proxy
    with pytest.raises(openai.APITimeoutError):
        client(url, timeout=1.0).chat.completions.create(model="rsa", extra_body={"rsa": SMALL},
                                                         messages=[{"role": "user", "content": "HANG"}])
    assert wait_until(lambda: _all_cancelled(backend)), (len(backend.requests), recorder(backend).cancelled)


def test_disconnect_cancels_a_streaming_solve(proxy):
    backend, url = proxy
    stream = client(url).chat.completions.create(model="rsa", stream=True, extra_body={"rsa": SMALL},
                                                 messages=[{"role": "user", "content": "HANG"}])
    for chunk in stream:
        if "started" in ((chunk.choices[0].delta.model_extra or {}).get("reasoning") or ""):
            break
    assert wait_until(lambda: len(backend.requests) == 4)
    stream.close()
    assert wait_until(lambda: _all_cancelled(backend)), (len(backend.requests), recorder(backend).cancelled)


# -- passthrough to an upstream ------------------------------------------------------------------
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}]


def test_passthrough_forwards_other_models_unchanged(serve_fake, serve_app):
    fake, upstream = serve_fake()
    url = serve_app(create_app(upstream + "/v1"))
    ids = [m.id for m in client(url).models.list()]
    assert ids == ["rsa", "rsa/fake/zaya-tiny", "fake/zaya-tiny"]
    reply = client(url).chat.completions.create(model="fake/zaya-tiny", messages=QUESTION, tools=TOOLS,
                                                tool_choice="auto", max_tokens=500, extra_body={"top_k": 5})
    sent = fake.requests[-1]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto" and sent["top_k"] == 5
    assert sent["messages"] == QUESTION and sent["max_tokens"] == 500
    assert reply.choices[0].message.content == "The answer is \\boxed{42}."
    parts = [c.choices[0].delta.content or "" for c in client(url).chat.completions.create(
        model="fake/zaya-tiny", messages=QUESTION, stream=True) if c.choices]
    assert "".join(parts) == "The answer is \\boxed{42}."
    assert fake.requests[-1]["stream"] is True
    with pytest.raises(openai.NotFoundError, match="does not exist"):  # the upstream's own error, relayed
        client(url).chat.completions.create(model="nope", messages=QUESTION)


def test_rsa_over_the_upstream_sums_its_usage(serve_fake, serve_app):
    fake, upstream = serve_fake()
    url = serve_app(create_app(upstream, config=SMALL))
    for model in ("rsa", "rsa/fake/zaya-tiny"):
        fake.requests.clear()
        reply = client(url).chat.completions.create(model=model, messages=QUESTION, max_tokens=300)
        assert reply.choices[0].message.content == "The answer is \\boxed{42}."
        bodies = fake.requests
        assert len(bodies) == 8 and {b["max_tokens"] for b in bodies} == {300}
        assert reply.usage.prompt_tokens == sum(len(render_chat(b["messages"])) for b in bodies)
        assert reply.usage.completion_tokens == 8 * len(default_reply("", {}))


def test_passthrough_auth_uses_the_upstream_key(serve_fake, serve_app):
    fake, upstream = serve_fake(api_key="up-key")
    url = serve_app(create_app(upstream, api_key="front-key", upstream_api_key="up-key", config=SMALL))
    reply = client(url, "front-key").chat.completions.create(model="fake/zaya-tiny", messages=QUESTION)
    assert "42" in reply.choices[0].message.content
    assert fake.headers[-1]["authorization"] == "Bearer up-key"
    reply = client(url, "front-key").chat.completions.create(model="rsa", messages=QUESTION)
    assert fake.headers[-1]["authorization"] == "Bearer up-key"


def test_passthrough_disconnect_reaches_the_upstream(serve_fake, serve_app):
    fake, upstream = serve_fake(token_delay_s=0.05)
    url = serve_app(create_app(upstream))
    stream = client(url).chat.completions.create(model="fake/zaya-tiny", messages=QUESTION, stream=True)
    next(iter(stream))
    stream.close()
    assert wait_until(lambda: len(fake.disconnects) == 1), fake.disconnects
    assert fake.completed == []
    with pytest.raises(openai.APITimeoutError):
        client(url, timeout=0.5).chat.completions.create(model="fake/zaya-tiny", messages=QUESTION)
    assert wait_until(lambda: len(fake.disconnects) == 2), fake.disconnects


def test_completions_endpoint_passes_through(serve_fake, serve_app):
    fake, upstream = serve_fake()
    url = serve_app(create_app(upstream))
    out = client(url).completions.create(model="fake/zaya-tiny", prompt="2+2=", max_tokens=10)
    assert out.choices[0].text and json.loads(json.dumps(fake.requests[-1]))["prompt"] == "2+2="
    with pytest.raises(openai.BadRequestError, match="chat/completions only"):
        client(url).completions.create(model="rsa", prompt="2+2=")
