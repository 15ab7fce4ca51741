"""`OpenAIBackend` over real HTTP against the fake vLLM server (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from fake_vllm import Fault, default_reply, refused_url, render_chat

from rsa.backends import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    GenerationRequest,
    OpenAIBackend,
)
from rsa.backends._retry import RetryPolicy
from rsa.backends.openai import backend_from_url

FAST = RetryPolicy(backoff_initial=0.005, backoff_max=0.02)
MESSAGES = [{"role": "user", "content": "What is 40 + 2?"}]
PROMPT_TOKENS = len(render_chat(MESSAGES))  # the fake model is character-level


def request(**kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=kw.pop("messages", MESSAGES), **kw)


async def wait_for(predicate, seconds: float = 10.0) -> bool:
    """Poll until `predicate()` holds (events cross threads); False if it never does."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


# -- the happy path ----------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("reasoning_field", ["reasoning", "reasoning_content", None])
async def test_chat_round_trip(serve_fake, stream, reasoning_field):
    fake, url = serve_fake(reasoning_field=reasoning_field)
    async with OpenAIBackend(url, stream=stream, retry_policy=FAST) as backend:
        gen = await backend.generate(request(request_id="r1", seed=3))
        cut = await backend.generate(request(max_tokens=12))
        assert (backend.model, backend.context_length) == (fake.model, fake.max_model_len)
    assert (gen.reasoning, gen.content, gen.finish_reason) == (
        "Let me add the numbers carefully.", "The answer is \\boxed{42}.", "stop")
    assert gen.trace == default_reply("", {})
    assert (gen.prompt_tokens, gen.completion_tokens) == (PROMPT_TOKENS, len(default_reply("", {})))
    # 12 characters: "<think>\nLet " -> an unclosed thought, whichever side split it
    assert (cut.reasoning, cut.content, cut.finish_reason, cut.completion_tokens) == ("Let ", "", "length", 12)
    assert fake.requests[0]["request_id"] == "r1" and fake.headers[0]["x-request-id"] == "r1"
    assert "max_tokens" not in fake.requests[0]  # None: the server's remaining context


async def test_tokenize_and_detokenize_via_server_routes(serve_fake):
    fake, url = serve_fake()
    async with backend_from_url(url + "/v1") as backend:
        ids = await backend.tokenize("tail: ∑ 42")
        assert ids == [ord(c) for c in "tail: ∑ 42"]
        assert await backend.detokenize(ids[-2:]) == "42"
    assert fake.requests == []  # no generation was needed


async def test_completions_endpoint_with_a_local_tokenizer(serve_fake, char_tokenizer_dir):
    # the local template ends its generation prompt with "<think>\n", so the model starts mid-thought
    fake, url = serve_fake(reply=lambda prompt, body: "forty plus two\n</think>\n\n\\boxed{42}")
    async with OpenAIBackend(url, endpoint="completions", tokenizer=char_tokenizer_dir, retry_policy=FAST) as backend:
        gen = await backend.generate(request())
        cut = await backend.generate(request(max_tokens=5))
        assert await backend.detokenize(await backend.tokenize(gen.trace)) == gen.trace
    assert fake.requests[0]["prompt"] == "<|user|>What is 40 + 2?\n<|assistant|><think>\n"
    assert (gen.reasoning, gen.content) == ("forty plus two", "\\boxed{42}")
    assert (cut.reasoning, cut.content, cut.finish_reason) == ("forty", "", "length")


async def test_api_key(serve_fake):
    fake, url = serve_fake(api_key="secret")
    async with OpenAIBackend(url, retry_policy=FAST, model=fake.model) as backend:
        with pytest.raises(BackendStatusError) as info:
            await backend.generate(request())
    assert info.value.status == 401 and fake.requests == []
    async with OpenAIBackend(url, api_key="secret", retry_policy=FAST) as backend:
        assert (await backend.generate(request())).finish_reason == "stop"


async def test_the_fake_server_speaks_what_the_openai_sdk_parses(serve_fake):
    openai = pytest.importorskip("openai")
    fake, url = serve_fake()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    try:
        (model,) = [m.id async for m in client.models.list()]
        stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                                      stream_options={"include_usage": True})
        content, reasoning, finish, usage = "", "", None, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                content += choice.delta.content or ""
                reasoning += (choice.delta.model_extra or {}).get("reasoning") or ""
                finish = choice.finish_reason or finish
        full = await client.chat.completions.create(model=model, messages=MESSAGES)
    finally:
        await client.close()
    assert (reasoning, content, finish) == ("Let me add the numbers carefully.", "The answer is \\boxed{42}.", "stop")
    assert usage.prompt_tokens == PROMPT_TOKENS
    assert full.choices[0].message.content == content


# -- faults ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
async def test_transient_faults_are_recovered(serve_fake, stream):
    faults = [Fault("status", 500), Fault("status", 429, retry_after="0"), Fault("drop", after_chunks=4),
              Fault("status", 503, retry_after="0.01"), Fault("stream_error", 500) if stream else Fault("status", 502)]
    fake, url = serve_fake(faults=faults)
    async with OpenAIBackend(url, stream=stream, max_retries=len(faults), retry_policy=FAST) as backend:
        gen = await backend.generate(request())
    assert gen.content == "The answer is \\boxed{42}." and len(fake.requests) == len(faults) + 1


async def test_a_400_is_not_retried_over_http(serve_fake):
    fake, url = serve_fake(faults=[Fault("status", 400, message="top_k must be -1 or at least 1")])
    async with OpenAIBackend(url, max_retries=4, retry_policy=FAST) as backend:
        with pytest.raises(BackendStatusError, match="top_k") as info:
            await backend.generate(request(top_k=3))
    assert info.value.status == 400 and len(fake.requests) == 1


@pytest.mark.parametrize("wording", ["v1", "older", "too_large", "max_model_len"])
async def test_context_length_400_shrinks_max_tokens_once(serve_fake, wording):
    fake, url = serve_fake(max_model_len=200, context_wording=wording)
    async with OpenAIBackend(url, max_retries=0, retry_policy=FAST) as backend:
        gen = await backend.generate(request(max_tokens=500))
    assert [r["max_tokens"] for r in fake.requests] == [500, 200 - PROMPT_TOKENS]
    assert gen.finish_reason == "stop"


async def test_a_slow_server_times_out_and_sees_the_disconnect(serve_fake):
    fake, url = serve_fake(faults=[Fault("delay", delay_s=30)])
    async with OpenAIBackend(url, timeout=0.3, max_retries=0, retry_policy=FAST) as backend:
        with pytest.raises(BackendTimeout):
            await backend.generate(request(request_id="slow"))
    assert await wait_for(lambda: "slow" in fake.disconnects)


@pytest.mark.parametrize("stream", [True, False])
async def test_cancelling_the_caller_closes_the_connection(serve_fake, stream):
    fake, url = serve_fake(token_delay_s=0.05)  # ~4 s for the whole reply
    async with OpenAIBackend(url, stream=stream, retry_policy=FAST) as backend:
        task = asyncio.create_task(backend.generate(request(request_id="doomed")))
        assert await wait_for(lambda: len(fake.requests) == 1)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_for(lambda: "doomed" in fake.disconnects)
        assert "doomed" not in fake.completed
        # the backend stays usable: the slot and the in-flight count were released
        fake.token_delay_s = 0.0
        assert (await backend.generate(request())).finish_reason == "stop"


async def test_twenty_problems_under_thirty_percent_transient_failures(serve_fake):
    kinds = [Fault("status", 500), Fault("status", 503), Fault("status", 429, retry_after="0"),
             Fault("drop", after_chunks=2), Fault("stream_error", 500)]

    def flaky(body: dict[str, Any], attempt: int) -> Fault | None:
        rng = random.Random(f"{body['request_id']}:{attempt}")
        return rng.choice(kinds) if rng.random() < 0.3 else None

    def failing_attempts(rid: str) -> int:  # how many attempts in a row the server will spoil
        n = 0
        while random.Random(f"{rid}:{n}").random() < 0.3:
            n += 1
        return n

    fake, url = serve_fake(fault_fn=flaky, reply=lambda p, b: "<think>\nok\n</think>\n\n\\boxed{4}")
    ids = [f"{run}-p{p}-s{s}" for run in ("a", "b") for p in range(20) for s in range(4)]
    assert any(failing_attempts(r) >= 2 for r in ids[80:])  # the second run has unrecoverable requests

    async def run(backend: OpenAIBackend, rids: list[str]) -> list[Any]:
        reqs = [request(request_id=r, affinity=r.rsplit("-", 1)[0], seed=i) for i, r in enumerate(rids)]
        return await asyncio.gather(*[backend.generate(q) for q in reqs], return_exceptions=True)

    # enough retries: every request the policy can recover is recovered, none is lost or doubled
    async with OpenAIBackend(url, max_retries=8, max_concurrency=16, requests_per_second=5000,
                             retry_policy=FAST) as backend:
        results = await run(backend, ids[:80])
    assert all(not isinstance(g, BaseException) and g.content == "\\boxed{4}" for g in results), results
    assert sorted(fake.completed) == sorted(ids[:80])
    assert fake.peak_active <= 16

    # one retry: exactly the requests spoilt twice in a row fail, as errors, and the rest succeed
    async with OpenAIBackend(url, max_retries=1, retry_policy=FAST) as backend:
        results = await run(backend, ids[80:])
    failed = {r for r, g in zip(ids[80:], results) if isinstance(g, BackendError)}
    assert failed == {r for r in ids[80:] if failing_attempts(r) >= 2}
    assert all(not isinstance(g, BaseException) for r, g in zip(ids[80:], results) if r not in failed)


# -- replicas ----------------------------------------------------------------------------------------
async def test_failover_from_a_dead_replica_is_immediate_and_free(serve_fake):
    fake, live = serve_fake()
    dead = refused_url()
    async with OpenAIBackend([dead, live], max_retries=0, retry_policy=FAST) as backend:
        reqs = [request(request_id=f"p{p}-s{s}", affinity=f"p{p}") for p in range(5) for s in range(4)]
        results = await asyncio.gather(*[backend.generate(q) for q in reqs])
        again = await backend.generate(request(request_id="p0-late", affinity="p0"))
    assert all(g.finish_reason == "stop" for g in [*results, again])
    assert sorted(r["request_id"] for r in fake.requests) == sorted([q.request_id for q in reqs] + ["p0-late"])


async def test_affinity_keeps_a_problem_on_one_replica_and_spreads_problems(serve_fake):
    (fake_a, url_a), (fake_b, url_b) = serve_fake(), serve_fake()
    async with OpenAIBackend([url_a, url_b], retry_policy=FAST) as backend:
        reqs = [request(request_id=f"p{p}-s{s}", affinity=f"p{p}") for p in range(6) for s in range(4)]
        await asyncio.gather(*[backend.generate(q) for q in reqs])
    where = {}
    for name, fake in (("a", fake_a), ("b", fake_b)):
        for body in fake.requests:
            where.setdefault(body["request_id"].split("-")[0], set()).add(name)
    assert len(where) == 6 and all(len(s) == 1 for s in where.values())
    assert fake_a.requests and fake_b.requests
