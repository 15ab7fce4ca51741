"""The engine on a tiny random ZAYA checkpoint against transformers' greedy `generate` (the oracle):
all at once, staggered, under a cache small enough to preempt; seeded sampling; stop strings; streaming."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rsa.backends.zaya1 import LLM, AsyncLLM, SamplingParams

LENGTHS = (1, 5, 17, 33, 60, 97)
NEW = 16
GREEDY = SamplingParams(temperature=0, max_tokens=NEW, ignore_eos=True)


@pytest.fixture(scope="module")
def prompts(ckpt):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(9, len(ckpt[2]), (n,), generator=g).tolist() for n in LENGTHS]


@pytest.fixture(scope="module")
def reference(ckpt, prompts, eh):
    return eh.hf_greedy(ckpt[1], prompts, NEW)


def engine(ckpt, **kw) -> LLM:
    return LLM(ckpt[0], **({"max_num_seqs": 8, "max_num_batched_tokens": 32} | kw))


def test_greedy_batch_matches_transformers(ckpt, prompts, reference):
    llm = engine(ckpt)
    outs = llm.generate(prompts, GREEDY)
    assert [list(o.token_ids) for o in outs] == reference
    assert all(o.finish_reason == "length" and o.num_generated_tokens == NEW for o in outs)


def test_staggered_arrivals_match_transformers(ckpt, prompts, reference):
    llm = engine(ckpt, max_num_batched_tokens=24)
    done = {}
    for i, p in enumerate(prompts):
        llm.add_request(p, GREEDY, request_id=i)
        for _ in range(3 * i):
            done.update({o.request_id: o for o in llm.step() if o.finished})
    while llm.has_unfinished():
        done.update({o.request_id: o for o in llm.step() if o.finished})
    assert [list(done[i].token_ids) for i in range(len(prompts))] == reference


def test_preemption_under_a_small_cache_matches_transformers(ckpt, prompts, reference):
    probe = engine(ckpt).cache_info()
    budget = 8 * probe["state_bytes_per_seq"] + 14 * 16 * probe["kv_bytes_per_token"]
    llm = engine(ckpt, memory_budget=budget)
    assert llm.cache_info()["num_blocks"] == 14
    outs = llm.generate(prompts, GREEDY)
    assert llm.metrics().num_preemptions > 0
    assert [list(o.token_ids) for o in outs] == reference


def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(ckpt, prompts):
    llm = engine(ckpt)
    seeded = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=NEW, seed=7, ignore_eos=True)
    alone = llm.generate([prompts[2]], seeded)[0].token_ids
    batch = llm.generate(prompts, [SamplingParams(temperature=1.0, max_tokens=NEW, ignore_eos=True)] * 2 + [seeded]
                         + [SamplingParams(temperature=0.8, seed=s, max_tokens=NEW, ignore_eos=True) for s in (1, 2, 3)])
    other = llm.generate([prompts[2]], SamplingParams(temperature=1.0, top_p=0.95, max_tokens=NEW, seed=8,
                                                       ignore_eos=True))[0].token_ids
    assert batch[2].token_ids == alone and other != alone


def test_stop_strings_and_text(ckpt):
    llm = engine(ckpt)
    tok = ckpt[2]
    prompt = "What is 2 + 2?"
    full = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0]
    assert full.text == tok.decode(list(full.token_ids)) and len(full.text) >= 10
    stop = full.text[6:8]
    cut = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop=(stop, "\x00")))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.find(stop)]
    assert cut.token_ids == full.token_ids[:len(cut.token_ids)] and len(cut.token_ids) < 30


async def test_stream_text_adds_up(ckpt):
    engine_ = AsyncLLM(ckpt[0], max_num_seqs=4)
    try:
        params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
        parts = [o async for o in engine_.stream("hello", params)]
        final = await engine_.generate("hello", params)
        assert "".join(p.new_text for p in parts) == final.text and parts[-1].finished
        assert sum(len(p.new_token_ids) for p in parts) == 20 and parts[-1].token_ids == final.token_ids
        both = await asyncio.gather(*(engine_.generate("hello", params) for _ in range(3)))
        assert all(b.token_ids == final.token_ids for b in both)
    finally:
        await engine_.aclose()
