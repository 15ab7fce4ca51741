"""`TransformersBackend` on a tiny random ZAYA model and a character-level tokenizer built here."""

from __future__ import annotations

import asyncio
import types

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rsa.backends import (  # noqa: E402
    BackendUnavailable,
    ContextLengthExceeded,
    GenerationRequest,
    InvalidRequest,
    TransformersBackend,
)

SPECIALS = ["<pad>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<think>", "</think>"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(SPECIALS + ["<unk>"] + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|end|>", pad_token="<pad>",
                                  additional_special_tokens=SPECIALS[2:])
    tok.chat_template = TEMPLATE
    return tok


def tiny_zaya(tokenizer, eos: int | None = None):
    torch.manual_seed(0)
    cfg = transformers.ZayaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, moe_intermediate_size=64, num_experts=4, router_hidden_size=16,
        max_position_embeddings=1024, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    model = transformers.ZayaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial norms, scales and attention so outputs depend on the prompt
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        model.model.embed_tokens.weight.mul_(5.0)
        for layer in model.model.layers:
            layer.self_attn.qk_norm.temp.fill_(1.0)
        model.model.embed_tokens.weight[1].zero_()  # end-of-turn never wins: greedy runs to max_tokens
    model.generation_config.eos_token_id = 1 if eos is None else eos
    return model


@pytest.fixture
async def backend(tokenizer):
    b = TransformersBackend(tiny_zaya(tokenizer), tokenizer=tokenizer, max_batch_size=8)
    yield b
    await b.aclose()


def request(text: str, **kw) -> GenerationRequest:
    kw.setdefault("temperature", 0.0)
    kw.setdefault("max_tokens", 12)
    return GenerationRequest(messages=({"role": "user", "content": text},), **kw)


async def test_generate_greedy_until_max_tokens(backend, tokenizer):
    gen = await backend.generate(request("What is 2 + 2?"))
    assert gen.finish_reason == "length"
    assert gen.completion_tokens == 12 and len(gen.token_ids) == 12
    assert gen.reasoning is None and gen.content == tokenizer.decode(list(gen.token_ids))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
    assert gen.prompt_tokens == len(prompt)
    assert gen.latency_s > 0


async def test_concurrent_requests_are_batched_and_match_one_at_a_time(backend):
    prompts = ["a", "What is 12 * 34?", "hello there, a much longer prompt than the others", "7", "xyz" * 5]
    alone = [await backend.generate(request(p)) for p in prompts]
    calls = []
    inner = backend.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return inner(*args, **kwargs)

    backend.model.generate = counting
    together = await asyncio.gather(*(backend.generate(request(p)) for p in prompts))
    assert [g.content for g in together] == [g.content for g in alone]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert len(calls) < len(prompts) and sum(calls) == len(prompts)


async def test_per_row_max_tokens_in_one_batch(backend):
    short, long = await asyncio.gather(backend.generate(request("q", max_tokens=3)),
                                       backend.generate(request("q", max_tokens=9)))
    assert (short.completion_tokens, long.completion_tokens) == (3, 9)
    assert long.token_ids[:3] == short.token_ids


async def test_eos_stops_with_reason_stop(tokenizer):
    first = None
    async with TransformersBackend(tiny_zaya(tokenizer), tokenizer=tokenizer) as b:
        first = (await b.generate(request("stop here"))).token_ids[0]
    async with TransformersBackend(tiny_zaya(tokenizer, eos=first), tokenizer=tokenizer) as b:
        gen = await b.generate(request("stop here"))
    assert gen.finish_reason == "stop" and gen.content == "" and gen.completion_tokens == 1


async def test_stop_strings_cut_the_text(backend):
    full = await backend.generate(request("cut me"))
    stop = full.content[4:6]
    cut = await backend.generate(request("cut me", stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.content == full.content[: full.content.find(stop)]


async def test_max_tokens_none_uses_the_rest_of_the_context(tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
    async with TransformersBackend(tiny_zaya(tokenizer), tokenizer=tokenizer, context_length=len(prompt) + 5) as b:
        gen = await b.generate(request("hi", max_tokens=None))
        assert (gen.completion_tokens, gen.finish_reason) == (5, "length")
        with pytest.raises(ContextLengthExceeded) as info:
            await b.generate(request("hi", max_tokens=6))
        assert info.value.max_model_len == len(prompt) + 5 and info.value.requested_tokens == 6
        with pytest.raises(ContextLengthExceeded):
            await b.generate(request("a prompt longer than the whole context", max_tokens=None))


async def test_seeded_sampling_is_reproducible(backend):
    reqs = [request("sample", temperature=1.0, seed=s, max_tokens=20) for s in (1, 1, 2)]
    a, b, c = await asyncio.gather(*(backend.generate(r) for r in reqs))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


async def test_invalid_requests(backend):
    with pytest.raises(ValueError):
        GenerationRequest(messages=())
    with pytest.raises(InvalidRequest):
        await backend.generate(types.SimpleNamespace(messages=(), max_tokens=4))


async def test_think_block_is_split(backend, tokenizer):
    ids = tokenizer.encode("<think>\nwork\n</think>\n\nanswer", add_special_tokens=False) + [1, 0, 0]
    job = types.SimpleNamespace(request=request("x"), prompt_ids=[5, 6], limit=40, submitted=0.0)
    gen = backend._finish(job, ids)
    assert (gen.reasoning, gen.content, gen.finish_reason) == ("work", "answer", "stop")
    assert gen.completion_tokens == len(ids) - 2


async def test_tokenize_round_trip_and_special_tokens(backend, tokenizer):
    text = "<think>\n12 + 30 = 42\n</think>\n\n\\boxed{42}"
    ids = await backend.tokenize(text)
    assert await backend.detokenize(ids) == text
    assert ids[0] == tokenizer.convert_tokens_to_ids("<think>")
    assert ids.count(tokenizer.convert_tokens_to_ids("</think>")) == 1


async def test_closed_backend_is_unavailable(tokenizer):
    b = TransformersBackend(tiny_zaya(tokenizer), tokenizer=tokenizer)
    await b.aclose()
    with pytest.raises(BackendUnavailable):
        await b.generate(request("late"))
    with pytest.raises(BackendUnavailable):
        await b.tokenize("late")
    await b.aclose()  # idempotent


async def test_drives_a_markovian_rsa_solve(backend):
    import rsa

    result = await rsa.asolve("What is 1 + 1?", backend=backend, population=3, aggregation_size=2, rounds=1,
                              tail_tokens=8, max_tokens=10, temperature=1.0, seed=0)
    assert len(result.stages) == 2
    cands = [c for s in result.stages for c in s.candidates]
    assert all(c.finish_reason in ("stop", "length") and c.completion_tokens >= 1 for c in cands), [(c.finish_reason, c.error, c.completion_tokens) for c in cands]
    for c in result.stages[0].candidates:  # tails are cut on this tokenizer's ids
        assert c.tail_truncated == (len(await backend.tokenize(c.trace)) > 8)
        assert c.tail_tokens == min(8, len(await backend.tokenize(c.trace)))
