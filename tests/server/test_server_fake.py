"""The engine server's HTTP protocol over a scripted fake engine: every route, streaming and not,
n > 1, sampling parameters, errors in OpenAI's shape, auth, disconnect-abort and concurrency."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from zaya_server_fakes import sdk
from loopback_server import wait_until
from zaya_server_fakes import REPLY, default_script

from rsa.backends.base import BackendError, split_think
from rsa.backends.zaya1.server_protocol import ThinkSplitter

MESSAGES = [{"role": "user", "content": "What is 40 + 2?"}]
PROMPT = "<|user|>What is 40 + 2?\n<|assistant|><think>"  # the fake's template, thinking on


def sse_events(resp: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# ---- reasoning split ------------------------------------------------------------------------------
@pytest.mark.parametrize("opened", [False, True])
@pytest.mark.parametrize("text", ["<think>\nabc\n\ndef\n</think>\n\nThe answer.\n", "\nthinking, cut short\n\n",
                                  "no thought at all\n", "<think>\nunclosed\n", "<think></think>x", "", "<thi"])
def test_streamed_split_matches_split_think(text: str, opened: bool) -> None:
    expected = split_think(("<think>" if opened else "") + text)
    for size in (1, 2, 3, 7):
        splitter, reasoning, content = ThinkSplitter(opened), "", ""
        for at in range(0, len(text), size):
            r, c = splitter.feed(text[at:at + size])
            reasoning, content = reasoning + r, content + c
        r, c = splitter.feed("", final=True)
        assert (reasoning + r, content + c) == (expected[0] or "", expected[1])


# ---- chat ----------------------------------------------------------------------------------------
def test_chat_splits_reasoning_and_reports_usage(fake) -> None:
    engine, url = fake
    reply = sdk(url).chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, max_tokens=100)
    msg = reply.choices[0].message
    assert (msg.reasoning, msg.content) == ("Let me add.", "The answer is \\boxed{42}.")
    assert msg.reasoning_content == msg.reasoning and msg.role == "assistant"
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
    body = REPLY.removeprefix("<think>")
    assert reply.usage.prompt_tokens == len(PROMPT) and reply.usage.completion_tokens == len(body) + 1  # + EOS
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model == "fake/zaya-tiny" and reply.id.startswith("chatcmpl-")


def test_chat_stream_matches_the_full_reply_and_ends_with_usage(fake) -> None:
    _, url = fake
    chunks = list(sdk(url).chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, max_tokens=100,
                                                   stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == ("Let me add.", "The answer is \\boxed{42}.")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(REPLY) - len("<think>") + 1
    with httpx.stream("POST", url + "/v1/chat/completions", json={"messages": MESSAGES, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp)
    assert events[-1] == "[DONE]" and all("usage" not in json.loads(e) for e in events[:-1])


def test_n_choices_get_their_own_seeds_streaming_or_not(fake) -> None:
    engine, url = fake
    client = sdk(url)
    reply = client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, n=3, seed=7, max_tokens=100)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert [c.message.content.rsplit(" ", 1)[1] for c in reply.choices] == ["7)", "8)", "9)"]
    assert reply.usage.prompt_tokens == len(PROMPT)  # the prompt counts once
    texts = {0: "", 1: "", 2: ""}
    for chunk in client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, n=3, seed=7, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {i: c.message.content for i, c in enumerate(reply.choices)}


def test_sampling_parameters_reach_the_engine(fake_server) -> None:
    engine, url = fake_server(default_sampling={"temperature": 0.6, "top_p": 0.95})
    client = sdk(url)
    client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES)
    client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, temperature=0.0, top_p=0.5, seed=3,
                                   max_completion_tokens=40, max_tokens=7, stop=["boxed"],
                                   extra_body={"top_k": 5, "min_p": 0.1, "stop_token_ids": [7], "ignore_eos": True})
    first, second = engine.params
    assert (first.temperature, first.top_p, first.top_k, first.max_tokens) == (0.6, 0.95, 0, 256 - len(PROMPT))
    assert (second.temperature, second.top_p, second.top_k, second.min_p, second.seed) == (0.0, 0.5, 5, 0.1, 3)
    assert (second.max_tokens, second.stop, second.stop_token_ids, second.ignore_eos) == (40, ("boxed",), (7,), True)


def test_max_tokens_stop_and_template_kwargs(fake) -> None:
    _, url = fake
    client = sdk(url)
    cut = client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert (cut.choices[0].message.reasoning, cut.choices[0].message.content) == ("Let ", None)  # a thought cut short
    stopped = client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, stop=["\\boxed"])
    assert stopped.choices[0].finish_reason == "stop" and stopped.choices[0].message.content == "The answer is "
    plain = client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES,
                                           extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert plain.usage.prompt_tokens == len(PROMPT) - len("<think>")
    assert (plain.choices[0].message.reasoning, plain.choices[0].message.content) == ("Let me add.", "The answer is \\boxed{42}.")
    hidden = client.chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES,
                                            extra_body={"include_reasoning": False, "return_token_ids": True})
    assert getattr(hidden.choices[0].message, "reasoning", None) is None
    assert "".join(map(chr, hidden.choices[0].token_ids)) == REPLY.removeprefix("<think>")
    parts = client.chat.completions.create(model="fake/zaya-tiny", max_tokens=3,
                                           messages=[{"role": "user", "content": [{"type": "text", "text": "What is 40 + 2?"}]}])
    assert parts.usage.prompt_tokens == len(PROMPT)


# ---- completions, tokenize, detokenize, models, health, metrics ----------------------------------
def test_completions_prompts_token_ids_echo_and_stream(fake_server) -> None:
    engine, url = fake_server(script=lambda prompt, params: f"[{prompt}]")
    client = sdk(url)
    one = client.completions.create(model="fake/zaya-tiny", prompt="ab")
    assert one.choices[0].text == "[ab]" and one.usage.prompt_tokens == 3  # BOS + 2
    assert one.object == "text_completion" and one.choices[0].finish_reason == "stop"
    assert engine.params[-1].max_tokens == 16  # the endpoint's default
    many = client.completions.create(model="fake/zaya-tiny", prompt=["x", "yz"], n=2, max_tokens=4, echo=True)
    assert [(c.index, c.text, c.finish_reason) for c in many.choices] == [
        (0, "x[x]", "stop"), (1, "x[x]", "stop"), (2, "yz[yz]", "length"), (3, "yz[yz]", "length")]
    ids = client.completions.create(model="fake/zaya-tiny", prompt=[104, 105], max_tokens=10)
    assert ids.choices[0].text == "[hi]" and ids.usage.prompt_tokens == 2
    stream = client.completions.create(model="fake/zaya-tiny", prompt=[[104], [105]], stream=True,
                                       stream_options={"include_usage": True})
    texts = {0: "", 1: ""}
    chunks = list(stream)
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += c.text
    assert texts == {0: "[h]", 1: "[i]"} and chunks[-1].usage.completion_tokens == 8


def test_tokenize_detokenize_models_health_version(fake_server) -> None:
    engine, url = fake_server(served_model_name="zaya")
    tok = httpx.post(url + "/tokenize", json={"model": "zaya", "prompt": "hi"}).json()
    assert tok == {"count": 3, "max_model_len": 256, "tokens": [1, 104, 105], "token_strs": None}
    assert httpx.post(url + "/tokenize", json={"prompt": "hi", "add_special_tokens": False}).json()["tokens"] == [104, 105]
    chat = httpx.post(url + "/tokenize", json={"model": "zaya", "messages": MESSAGES, "return_token_strs": True}).json()
    assert "".join(chat["token_strs"]) == PROMPT and chat["count"] == len(PROMPT)  # no BOS for messages
    bare = httpx.post(url + "/tokenize", json={"messages": MESSAGES, "add_generation_prompt": False}).json()
    assert bare["count"] == len("<|user|>What is 40 + 2?\n")
    assert httpx.post(url + "/detokenize", json={"model": "zaya", "tokens": [104, 105]}).json() == {"prompt": "hi"}
    models = sdk(url).models.list()
    assert [m.id for m in models.data] == ["zaya"] and models.data[0].max_model_len == 256
    assert models.data[0].root == "fake/zaya-tiny"
    assert httpx.get(url + "/health").status_code == 200 and "version" in httpx.get(url + "/version").json()


def test_metrics_speak_prometheus_with_vllm_names(fake) -> None:
    engine, url = fake
    sdk(url).chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, max_tokens=4)
    text = httpx.get(url + "/metrics").text
    assert "# TYPE vllm:prompt_tokens counter" in text and "# TYPE vllm:num_requests_running gauge" in text
    assert metric(url, "vllm:prompt_tokens_total") == len(PROMPT)
    assert metric(url, "vllm:generation_tokens_total") == 4
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:num_preemptions_total"):
        assert metric(url, name) == 0
    assert 'model_name="fake/zaya-tiny"' in text


# ---- errors and auth ------------------------------------------------------------------------------
def test_context_length_errors_use_vllm_wording(fake) -> None:
    _, url = fake
    with pytest.raises(openai.BadRequestError) as info:
        sdk(url).chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES, max_tokens=250)
    p = len(PROMPT)
    assert info.value.status_code == 400
    assert info.value.body["message"] == (
        f"This model's maximum context length is 256 tokens. However, you requested 250 output tokens and your "
        f"prompt contains at least {p} input tokens, for a total of at least {p + 250} tokens. Please reduce the "
        f"length of the input prompt or the number of requested output tokens.")
    long = httpx.post(url + "/v1/completions", json={"prompt": "x" * 300})
    assert long.status_code == 400 and "maximum context length is 256" in long.json()["error"]["message"]
    no_room = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 300}]})
    assert no_room.status_code == 400 and "has 329 input tokens" in no_room.json()["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"temperature": -1}, "temperature"), ({"n": 0}, "n"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"logprobs": True}, "logprobs"), ({"presence_penalty": 0.5}, "presence_penalty"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages"), ({"stop": ["ok", ""]}, None),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content"),
])
def test_invalid_parameters_are_400_in_openai_shape(fake, body, param) -> None:
    _, url = fake
    resp = httpx.post(url + "/v1/chat/completions", json={"model": "fake/zaya-tiny", "messages": MESSAGES} | body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == 400
    assert error["type"] == "BadRequestError" and (param is None or error["param"].startswith(param))


def test_bad_bodies_unknown_models_and_token_ids(fake) -> None:
    _, url = fake
    assert httpx.post(url + "/v1/chat/completions", content=b"{not json").status_code == 400
    assert httpx.post(url + "/v1/completions", json={"prompt": [0, 2**30]}).status_code == 400
    assert httpx.post(url + "/detokenize", json={"tokens": [2**40]}).status_code == 400
    assert httpx.post(url + "/tokenize", json={"prompt": "a", "messages": MESSAGES}).status_code == 400
    with pytest.raises(openai.NotFoundError) as info:
        sdk(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.body["message"] == "The model `gpt-4o` does not exist." and info.value.body["code"] == 404
    assert httpx.post(url + "/tokenize", json={"model": "nope", "prompt": "a"}).status_code == 404


def test_api_key_guards_the_v1_routes(fake_server) -> None:
    _, url = fake_server(api_key="sekret")
    with pytest.raises(openai.AuthenticationError):
        sdk(url, api_key="wrong").chat.completions.create(model="fake/zaya-tiny", messages=MESSAGES)
    for path in ("/v1/chat/completions", "/v1/completions"):
        resp = httpx.post(url + path, json={"messages": MESSAGES, "prompt": "a"})
        assert resp.status_code == 401 and resp.json()["error"]["code"] == 401
    assert httpx.get(url + "/v1/models").status_code == 401
    assert sdk(url, api_key="sekret").models.list().data[0].id == "fake/zaya-tiny"
    assert httpx.get(url + "/health").status_code == 200  # as vLLM: only /v1 needs the key


def test_an_engine_error_mid_stream_arrives_inside_the_stream(fake_server) -> None:
    def broken(prompt, params):
        raise BackendError("engine step failed: boom")

    _, url = fake_server(script=broken)
    with httpx.stream("POST", url + "/v1/chat/completions", json={"messages": MESSAGES, "stream": True}) as resp:
        assert resp.status_code == 200
        events = sse_events(resp)
    assert json.loads(events[-2])["error"]["message"] == "engine step failed: boom" and events[-1] == "[DONE]"
    resp = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES})
    assert resp.status_code == 500 and resp.json()["error"]["message"] == "engine step failed: boom"


# ---- disconnects and concurrency -----------------------------------------------------------------
def test_a_streaming_client_that_disconnects_aborts_its_requests(fake_server) -> None:
    engine, url = fake_server(script=lambda p, s: "x" * 5000, max_model_len=10_000, token_delay_s=0.005)
    with httpx.stream("POST", url + "/v1/chat/completions",
                      json={"messages": MESSAGES, "n": 2, "stream": True, "max_tokens": 5000}) as resp:
        for n, _ in enumerate(resp.iter_lines()):
            if n > 6:
                break
    assert wait_until(lambda: engine.running == 0 and len(engine.aborted) == 2)
    assert metric(url, "vllm:num_requests_running") == 0 and engine.generation_tokens < 9000


def test_a_waiting_client_that_disconnects_aborts_its_request(fake_server) -> None:
    engine, url = fake_server(script=lambda p, s: "x" * 5000, max_model_len=10_000, token_delay_s=0.005)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 5000}, timeout=httpx.Timeout(5, read=0.3))
    assert wait_until(lambda: engine.running == 0 and len(engine.aborted) == 1)
    assert metric(url, "vllm:num_requests_running") == 0 and engine.generation_tokens < 4500


async def test_fifty_concurrent_requests(fake_server) -> None:
    engine, url = fake_server(script=lambda prompt, params: prompt.split("|>")[1].split("\n")[0][::-1],
                              token_delay_s=0.001)
    client = sdk(url, async_=True)

    async def ask(i: int) -> tuple[str, str]:
        if i % 2:
            reply = await client.chat.completions.create(model="fake/zaya-tiny", messages=[{"role": "user", "content": f"q{i}"}],
                                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            return reply.choices[0].message.content, reply.choices[0].finish_reason
        stream = await client.completions.create(model="fake/zaya-tiny", prompt=f"<|user|>q{i}\n", stream=True)
        text, finish = "", None
        async for chunk in stream:
            text, finish = text + chunk.choices[0].text, chunk.choices[0].finish_reason or finish
        return text, finish

    results = await asyncio.gather(*(ask(i) for i in range(50)))
    await client.close()
    assert results == [(f"q{i}"[::-1], "stop") for i in range(50)]
    assert engine.running == 0 and not engine.aborted


def test_default_script_is_deterministic() -> None:
    from rsa.backends.zaya1.sampling_params import SamplingParams

    assert default_script("x<think>", SamplingParams(seed=1)).endswith("(seed 1)")


async def test_our_openai_backend_shrinks_max_tokens_after_the_context_400(fake) -> None:
    from rsa.backends.base import GenerationRequest
    from rsa.backends.openai import OpenAIBackend

    engine, url = fake
    async with OpenAIBackend(url, max_retries=0) as backend:
        gen = await backend.generate(GenerationRequest(messages=MESSAGES, max_tokens=250))
    assert (gen.reasoning, gen.content, gen.finish_reason) == ("Let me add.", "The answer is \\boxed{42}.", "stop")
    assert engine.params[-1].max_tokens == 256 - len(PROMPT)


def test_serve_binds_to_loopback_and_takes_cli_strings() -> None:
    import inspect

    import torch

    from rsa.backends.zaya1.server import serve
    from rsa.backends.zaya1.server_adapter import engine_options_from_strings

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    opts = engine_options_from_strings({"device": "cpu", "dtype": "auto", "kv_cache_dtype": "bfloat16", "max_num_seqs": 4})
    assert opts == {"device": "cpu", "dtype": torch.float32, "kv_cache_dtype": torch.bfloat16, "max_num_seqs": 4}
    with pytest.raises(ValueError, match="not a torch dtype"):
        engine_options_from_strings({"dtype": "float99"})
