"""The engine server end to end over the real engine (`AsyncLLM`) and a tiny random ZAYA checkpoint
with a character tokenizer whose chat template opens `<think>` in the prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest
from zaya_server_fakes import sdk
from loopback_server import serve, wait_until

from rsa.backends.zaya1.server import create_app

MODEL = "zaya-tiny"
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def url(tiny_ckpt: str) -> Iterator[str]:
    with serve(create_app(tiny_ckpt, served_model_name=MODEL, max_num_seqs=64, seed=0, device="auto", dtype="auto")) as base:
        yield base


def metrics(url: str) -> dict[str, float]:
    rows = [line.split("{", 1)[0:1] + line.rsplit(" ", 1)[1:] for line in httpx.get(url + "/metrics").text.splitlines()
            if line.startswith("vllm:")]
    return {name: float(value) for name, value in rows}


def idle(url: str) -> bool:
    m = metrics(url)
    return m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0


def test_chat_with_n_and_seed_is_reproducible(url: str) -> None:
    client = sdk(url)
    ask = lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, seed=1, temperature=1.0,  # noqa: E731
                                                 max_tokens=8)
    first, again = ask(), ask()
    prompt = httpx.post(url + "/tokenize", json={"model": MODEL, "messages": MESSAGES}).json()
    assert first.usage.prompt_tokens == prompt["count"] and prompt["max_model_len"] == 2048
    assert [c.index for c in first.choices] == [0, 1]
    for a, b in zip(first.choices, again.choices):
        assert (a.message.reasoning, a.message.content, a.finish_reason) == (b.message.reasoning, b.message.content,
                                                                             b.finish_reason)
        assert a.finish_reason in ("stop", "length")
    assert first.usage.completion_tokens <= 16


def test_streamed_chat_completions_and_token_ids_agree(url: str) -> None:
    client = sdk(url)
    full = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=12)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    msg = full.choices[0].message
    assert (streamed, content or None) == (msg.reasoning or "", msg.content)  # the template opened <think>
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    ids = httpx.post(url + "/tokenize", json={"model": MODEL, "messages": MESSAGES}).json()["tokens"]
    raw = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=12,
                                    extra_body={"return_token_ids": True})
    assert raw.choices[0].text.strip("\n") == (msg.reasoning or "") + (msg.content or "")
    token_ids = raw.choices[0].token_ids
    assert httpx.post(url + "/detokenize", json={"model": MODEL, "tokens": token_ids}).json()["prompt"] == raw.choices[0].text


def test_tokenize_detokenize_and_models(url: str) -> None:
    tok = httpx.post(url + "/tokenize", json={"model": MODEL, "messages": MESSAGES}).json()
    text = httpx.post(url + "/detokenize", json={"model": MODEL, "tokens": tok["tokens"]}).json()["prompt"]
    assert text == "<|user|>What is 2 + 2?\n<|assistant|><think>\n" and tok["count"] == len(text) - len("<|user|><|assistant|><think>") + 3
    assert sdk(url).models.list().data[0].max_model_len == 2048


def test_context_length_400_carries_the_numbers(url: str) -> None:
    count = httpx.post(url + "/tokenize", json={"model": MODEL, "messages": MESSAGES}).json()["count"]
    with pytest.raises(openai.BadRequestError) as info:
        sdk(url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2040)
    assert (f"maximum context length is 2048 tokens. However, you requested 2040 output tokens and your prompt "
            f"contains at least {count} input tokens, for a total of at least {count + 2040} tokens") in info.value.message


def test_metrics_count_tokens(url: str) -> None:
    sdk(url).completions.create(model=MODEL, prompt="abc", max_tokens=3, temperature=0)
    m = metrics(url)
    assert m["vllm:prompt_tokens_total"] >= 3 and m["vllm:generation_tokens_total"] >= 1
    assert 0 <= m["vllm:kv_cache_usage_perc"] <= 1 and m["vllm:num_preemptions_total"] == 0 and idle(url)


def test_disconnects_abort_the_engine_requests(url: str) -> None:
    before = metrics(url)["vllm:generation_tokens_total"]
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1900, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        for n, _ in enumerate(resp.iter_lines()):
            if n > 4:
                break
    assert wait_until(lambda: idle(url), 30)
    streamed = metrics(url)["vllm:generation_tokens_total"] - before
    assert 0 < streamed < 1000  # cut short: 1900 tokens take many seconds here
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=body | {"stream": False, "prompt": "a"},
                   timeout=httpx.Timeout(10, read=0.5))
    assert wait_until(lambda: metrics(url)["vllm:generation_tokens_total"] > before + streamed and idle(url), 30)
    assert metrics(url)["vllm:generation_tokens_total"] - before - streamed < 1000


async def test_fifty_concurrent_requests(url: str) -> None:
    client = sdk(url, async_=True)

    async def ask(i: int) -> int:
        if i % 2:
            reply = await client.chat.completions.create(model=MODEL, max_tokens=4, seed=i,
                                                         messages=[{"role": "user", "content": f"q{i}"}])
            return reply.usage.completion_tokens
        stream = await client.completions.create(model=MODEL, prompt=f"q{i}", max_tokens=4, stream=True,
                                                 stream_options={"include_usage": True})
        return [chunk async for chunk in stream][-1].usage.completion_tokens

    counts = await asyncio.gather(*(ask(i) for i in range(50)))
    await client.close()
    assert all(1 <= c <= 4 for c in counts) and idle(url)


@pytest.mark.parametrize("stream", [True, False])
async def test_our_openai_backend_drives_the_server(url: str, stream: bool) -> None:
    from rsa.backends.base import GenerationRequest
    from rsa.backends.openai import OpenAIBackend

    async with OpenAIBackend(url, stream=stream, max_retries=0) as backend:
        gen = await backend.generate(GenerationRequest(messages=MESSAGES, max_tokens=6, temperature=0))
        assert backend.context_length == 2048 and backend.model == MODEL
        assert gen.completion_tokens <= 6 and gen.prompt_tokens > 0 and gen.reasoning  # the template opened <think>
        assert await backend.detokenize(await backend.tokenize("a b")) == "a b"
