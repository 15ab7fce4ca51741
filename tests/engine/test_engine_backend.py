"""`EngineBackend` over a tiny random ZAYA checkpoint with a character-level tokenizer whose chat
template opens `<think>` in the prompt; `rsa.solve` end to end (garbage answers, right counts)."""

from __future__ import annotations

import asyncio
import types

import pytest

import rsa
from rsa.backends import BackendUnavailable, ContextLengthExceeded, EngineBackend, GenerationRequest, InvalidRequest
from rsa.backends.zaya1 import RequestOutput


def request(text: str, **kw) -> GenerationRequest:
    kw.setdefault("temperature", 0.0)
    kw.setdefault("max_tokens", 12)
    return GenerationRequest(messages=({"role": "user", "content": text},), **kw)


@pytest.fixture
async def backend(ckpt):
    b = EngineBackend(ckpt[0], max_num_seqs=8, max_num_batched_tokens=128)
    yield b
    await b.aclose()


def prompt_len(tok, text: str) -> int:
    return len(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False))


async def test_generate_and_attributes(backend, ckpt):
    tok = ckpt[2]
    gen = await backend.generate(request("What is 2 + 2?", max_tokens=12))
    assert backend.max_concurrency == 8 and backend.context_length == 4096
    assert gen.prompt_tokens == prompt_len(tok, "What is 2 + 2?")
    assert gen.completion_tokens <= 12 and gen.latency_s > 0
    text = tok.decode(list(gen.token_ids))
    if "</think>" not in text:  # the template opened <think>: an unclosed block is all reasoning
        assert gen.reasoning == text.strip("\n") and gen.content == ""


async def test_think_split_when_the_prompt_opens_the_block(backend, monkeypatch):
    async def fake(ids, params, request_id=None):
        return RequestOutput(request_id, (1, 2), "\nsome work\n</think>\n\nthe answer", True, "stop", len(ids), 3)

    monkeypatch.setattr(backend.engine, "generate", fake)
    gen = await backend.generate(request("q"))
    assert (gen.reasoning, gen.content, gen.finish_reason, gen.completion_tokens) == ("some work", "the answer",
                                                                                       "stop", 3)


async def test_max_tokens_none_and_context_errors(ckpt):
    n = prompt_len(ckpt[2], "hi")
    async with EngineBackend(ckpt[0], max_num_seqs=4, max_model_len=n + 5) as b:
        gen = await b.generate(request("hi", max_tokens=None))
        assert gen.completion_tokens <= 5 and (gen.finish_reason == "length") == (gen.completion_tokens == 5)
        with pytest.raises(ContextLengthExceeded) as info:
            await b.generate(request("hi", max_tokens=6))
        assert (info.value.max_model_len, info.value.prompt_tokens, info.value.requested_tokens) == (n + 5, n, 6)
        with pytest.raises(ContextLengthExceeded):
            await b.generate(request("a prompt longer than the whole context", max_tokens=None))
        with pytest.raises(InvalidRequest):
            await b.generate(types.SimpleNamespace(messages=(), max_tokens=4))
        assert (await b.generate(request("hi", max_tokens=2))).completion_tokens <= 2  # still serving


async def test_tokenize_round_trip_and_close(ckpt):
    b = EngineBackend(ckpt[0], max_num_seqs=2)
    text = "<think>\n12 + 30 = 42\n</think>\n\n\\boxed{42}"
    ids = await b.tokenize(text)
    assert await b.detokenize(ids) == text and ids[0] == ckpt[2].convert_tokens_to_ids("<think>")
    await b.aclose()
    with pytest.raises(BackendUnavailable):
        await b.generate(request("late"))
    await b.aclose()


def test_rsa_solve_end_to_end(ckpt):
    backend = EngineBackend(ckpt[0], max_num_seqs=8, max_num_batched_tokens=256)
    try:
        result = rsa.solve("What is 1 + 1?", backend=backend, population=4, aggregation_size=2, rounds=1,
                           tail_tokens=8, max_tokens=10, temperature=1.0, seed=0)
    finally:
        asyncio.run(backend.aclose())
    assert len(result.stages) == 2 and all(len(s.candidates) == 4 for s in result.stages)
    cands = [c for s in result.stages for c in s.candidates]
    assert all(c.finish_reason in ("stop", "length") and 1 <= c.completion_tokens <= 10 for c in cands)
    assert all(len(c.parents) == 2 for c in result.stages[1].candidates)
    assert sum(s.completion_tokens for s in result.stages) == sum(c.completion_tokens for c in cands)
