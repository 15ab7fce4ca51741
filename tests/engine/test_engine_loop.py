"""Engine loop on a MockModel (next token = last + 1 mod V, EOS = 0): stops, chunking, preemption,
the async front (200 concurrent requests, streaming, abort by cancellation) and bad requests."""

from __future__ import annotations

import asyncio

import pytest

from rsa.backends import ContextLengthExceeded, InvalidRequest
from rsa.backends.zaya1 import LLM, AsyncLLM, PagedCache, SamplingParams

GREEDY = dict(temperature=0)


def mock_llm(eh, **kw):
    return LLM(eh.MockModel(), **({"max_num_seqs": 8, "max_num_batched_tokens": 16, "block_size": 4} | kw))


def budget_for(model, blocks: int, slots: int = 8, block_size: int = 4) -> int:
    c = model.config
    return (slots * PagedCache.state_bytes_per_seq(c, model.dummy.dtype)
            + blocks * block_size * c.num_hidden_layers * PagedCache.kv_bytes_per_token(c, model.dummy.dtype))


def test_max_tokens_eos_and_stop_ids(eh):
    llm = mock_llm(eh)
    a, b, c, d = llm.generate([[10], [45], [45], [3, 4]], [
        SamplingParams(max_tokens=5, **GREEDY), SamplingParams(max_tokens=10, **GREEDY),
        SamplingParams(max_tokens=7, ignore_eos=True, **GREEDY), SamplingParams(stop_token_ids=(8,), **GREEDY)])
    assert (a.token_ids, a.finish_reason, a.num_generated_tokens) == ((11, 12, 13, 14, 15), "length", 5)
    assert (b.token_ids, b.finish_reason, b.num_generated_tokens) == ((46, 47, 48, 49), "stop", 5)
    assert (c.token_ids, c.finish_reason) == ((46, 47, 48, 49, 0, 1, 2), "length")
    assert (d.token_ids, d.finish_reason, d.num_prompt_tokens) == ((5, 6, 7), "stop", 2)
    m = llm.metrics()
    assert (m.num_running, m.num_waiting, m.num_finished, m.prompt_tokens_total) == (0, 0, 4, 5)
    assert m.generation_tokens_total == 5 + 5 + 7 + 4 and m.cache_usage == 0


def test_prefill_is_chunked_to_the_token_budget(eh):
    llm = mock_llm(eh)
    (out,) = llm.generate([list(range(1, 41))], SamplingParams(max_tokens=3, **GREEDY))
    assert out.token_ids == (41, 42, 43)
    assert llm.model.calls[:4] == [16, 16, 8, 1] and max(llm.model.calls) <= 16


def test_preemption_by_recompute_keeps_outputs_exact(eh):
    model = eh.MockModel()
    llm = LLM(model, max_num_seqs=8, max_num_batched_tokens=64, block_size=4, memory_budget=budget_for(model, 12))
    assert llm.cache_info()["num_blocks"] == 12
    prompts = [[i, i + 1, i + 2] for i in range(1, 40, 5)]
    outs = llm.generate(prompts, SamplingParams(max_tokens=12, ignore_eos=True, **GREEDY))
    assert llm.metrics().num_preemptions > 0 and sum(o.num_preemptions for o in outs) > 0
    for p, o in zip(prompts, outs):
        assert o.token_ids == tuple((p[-1] + 1 + i) % 50 for i in range(12))
    assert llm.scheduler.blocks.num_free_blocks == 12


def test_cache_info_numbers(eh):
    llm = mock_llm(eh)
    info, c = llm.cache_info(), llm.config
    assert info["kv_bytes_per_token_per_layer"] == 2 * c.num_key_value_heads * c.head_dim * 4
    assert info["state_bytes_per_seq"] == (c.conv_channels * c.conv_state_width + c.value_state_dim) * 4
    assert info["cache_bytes"] == llm.cache.nbytes and info["num_slots"] == 8


def test_bad_requests_get_clear_errors(eh):
    llm = mock_llm(eh)
    with pytest.raises(InvalidRequest, match="empty"):
        llm.add_request([], SamplingParams())
    with pytest.raises(ContextLengthExceeded) as info:
        llm.add_request(list(range(1, 50)) * 5, SamplingParams(max_tokens=20))
    assert (info.value.max_model_len, info.value.prompt_tokens, info.value.requested_tokens) == (256, 245, 20)
    with pytest.raises(InvalidRequest, match="token ids"):
        llm.add_request([1, 99], SamplingParams())
    with pytest.raises(InvalidRequest, match="tokenizer"):
        llm.add_request("text", SamplingParams())
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=-1)
    assert llm.generate([[1]], SamplingParams(max_tokens=2, **GREEDY))[0].token_ids == (2, 3)


async def test_200_concurrent_requests_complete(eh):
    engine = AsyncLLM(eh.MockModel(), max_num_seqs=32, max_num_batched_tokens=64, block_size=4)
    try:
        outs = await asyncio.gather(*(engine.generate([i % 40 + 1], SamplingParams(max_tokens=4, **GREEDY))
                                      for i in range(200)))
        assert [o.token_ids for o in outs] == [tuple(range(i % 40 + 2, i % 40 + 6)) for i in range(200)]
        m = engine.metrics()
        assert m.num_finished == 200 and m.generation_tokens_total == 800 and m.num_running == 0
    finally:
        await engine.aclose()


async def test_stream_yields_each_token_and_cancel_aborts(eh):
    engine = AsyncLLM(eh.MockModel(), max_num_seqs=4, block_size=4)
    try:
        seen = [o.new_token_ids async for o in engine.stream([5], SamplingParams(max_tokens=4, **GREEDY), "s")]
        assert seen == [(6,), (7,), (8,), (9,)]

        async def long_one():
            async for _ in engine.stream([1], SamplingParams(max_tokens=250, ignore_eos=True, **GREEDY), "long"):
                started.set()

        started = asyncio.Event()
        task = asyncio.create_task(long_one())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out = await engine.generate([2], SamplingParams(max_tokens=2, **GREEDY))  # still serving
        assert out.token_ids == (3, 4)
        for _ in range(100):
            if engine.metrics().num_running == 0:
                break
            await asyncio.sleep(0.01)
        m = engine.metrics()
        assert m.num_running == 0 and m.generation_tokens_total < 250
    finally:
        await engine.aclose()


async def test_async_bad_requests_leave_the_engine_serving(eh):
    engine = AsyncLLM(eh.MockModel(), max_num_seqs=4, block_size=4)
    try:
        with pytest.raises(InvalidRequest):
            await engine.generate([], SamplingParams())
        with pytest.raises(ContextLengthExceeded):
            await engine.generate([1] * 300, SamplingParams())
        ok = engine.generate([7], SamplingParams(max_tokens=3, **GREEDY), "dup")
        dup = engine.generate([7], SamplingParams(max_tokens=3, **GREEDY), "dup")
        first, second = await asyncio.gather(ok, dup, return_exceptions=True)
        assert first.token_ids == (8, 9, 10) and isinstance(second, Exception) and "already" in str(second)
        assert engine.is_alive
    finally:
        await engine.aclose()
    assert not engine.is_alive
    with pytest.raises(Exception, match="closed"):
        await engine.generate([1], SamplingParams())


async def test_a_failing_step_fails_the_requests_in_flight_only(eh):
    from rsa.backends import BackendError

    engine = AsyncLLM(eh.MockModel(), max_num_seqs=4, block_size=4)
    try:
        engine.engine.model.boom = True
        with pytest.raises(BackendError, match="boom"):
            await engine.generate([1], SamplingParams(max_tokens=3, **GREEDY))
        engine.engine.model.boom = False
        assert (await engine.generate([1], SamplingParams(max_tokens=3, **GREEDY))).token_ids == (2, 3, 4)
        assert engine.metrics().num_running == 0 and engine.engine.scheduler.blocks.usage == 0
    finally:
        await engine.aclose()


def test_exports():
    import rsa.backends.zaya1 as pkg

    engine_api = {"LLM", "AsyncLLM", "SamplingParams", "RequestOutput", "EngineConfig", "EngineMetrics", "PagedCache"}
    assert engine_api <= set(pkg.__all__) and all(hasattr(pkg, name) for name in pkg.__all__)
    from rsa.backends import EngineBackend

    assert EngineBackend.__module__.endswith("engine_backend")
