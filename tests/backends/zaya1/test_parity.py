"""Parity of the embedded ZAYA1 model with transformers' ZayaForCausalLM (the oracle), per tiny config.

Covers the full no-cache forward, token-by-token decode through the cache, flat varlen prefill,
mixed prefill + decode steps, chunked prefill continuing from stored CCA state, slot reuse, greedy
generation, bf16, and the skip slot. Where the spec and transformers differ we follow transformers:
skip-slot tokens get MoE output 0 (test_skip_slot_...); norms round their fp32 input to the model
dtype first (tests/kernels/test_ref_ops.py::test_rmsnorm_follows_transformers_input_cast).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from rsa.backends.zaya1 import ContiguousCache, ForwardContext, load_model

FP32 = torch.float32


def tokens(vocab: int, seed: int, *lengths: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g) for n in lengths]


def hf_alone(hf, seq: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(seq[None]).logits[0].float()


@torch.inference_mode()
def run_step(model, cache, items) -> list[torch.Tensor]:
    """items: (seq, start, n, slot); one forward over seq[start:start+n] of every item -> per-item logits."""
    ids = torch.cat([s[a:a + n] for s, a, n, _ in items])
    positions = torch.cat([torch.arange(a, a + n) for _, a, n, _ in items]).to(ids.device)
    ctx = cache.context([n for *_, n, _ in items], [a for _, a, _, _ in items], [slot for *_, slot in items])
    logits = model.compute_logits(model(ids, positions, ctx))
    return list(logits.split([n for *_, n, _ in items]))


def test_full_logits_match_transformers(tiny, zh):
    path, hf = tiny
    model = load_model(path)
    routing = zh.record_routing(model)
    ids = torch.stack(tokens(zh.VOCAB, 1, 33, 33))
    ours = model.logits(ids)
    with torch.no_grad():
        ref = hf(ids).logits
    assert ours.dtype == FP32 and ours.shape == (2, 33, zh.VOCAB)
    zh.report(ours, ref, zh.TOL[FP32])
    assert all(r.unique().numel() > 1 for r in routing), "routing is constant: the test would not exercise it"


def test_decode_through_cache_matches_full_forward(tiny, zh):
    path, hf = tiny
    model = load_model(path)
    seqs = tokens(zh.VOCAB, 2, 25, 25)
    cache = ContiguousCache.for_config(model.config, max_seqs=3, max_len=25)
    steps = [run_step(model, cache, [(seqs[0], i, 1, 2), (seqs[1], i, 1, 0)]) for i in range(25)]
    decoded = torch.stack([torch.cat([s[b] for s in steps]) for b in range(2)])  # (2, 25, V)
    zh.report(decoded, model.logits(torch.stack(seqs)), 1e-5, "decode vs our full forward")
    zh.report(decoded, torch.stack([hf_alone(hf, s) for s in seqs]), zh.TOL[FP32], "decode vs transformers")


def test_varlen_prefill_matches_each_sequence_alone(tiny, zh):
    path, hf = tiny
    model = load_model(path)
    seqs = tokens(zh.VOCAB, 3, 7, 1, 19, 33)
    lens = [len(s) for s in seqs]
    ids, positions = torch.cat(seqs), torch.cat([torch.arange(n) for n in lens])
    with torch.inference_mode():
        flat = model.compute_logits(model(ids, positions, ForwardContext.build(lens, [0] * 4, [0, 1, 2, 3])))
    cache = ContiguousCache.for_config(model.config, max_seqs=4, max_len=40)
    cached = torch.cat(run_step(model, cache, [(s, 0, len(s), slot) for s, slot in zip(seqs, (3, 0, 2, 1))]))
    ref = torch.cat([hf_alone(hf, s) for s in seqs])
    zh.report(flat, ref, zh.TOL[FP32], "varlen prefill, no cache")
    zh.report(cached, ref, zh.TOL[FP32], "varlen prefill into the cache")


def test_mixed_and_chunked_steps_match_each_sequence_alone(tiny, zh):
    """Prefill chunks continue from stored conv/value state, decode tokens share steps with prefill
    chunks, and a sequence starting fresh in a reused slot sees none of its predecessor's state."""
    path, hf = tiny
    model = load_model(path)
    a, b, c, d = tokens(zh.VOCAB, 4, 19, 7, 2, 12)
    cache = ContiguousCache.for_config(model.config, max_seqs=3, max_len=24)
    out: dict[str, list[torch.Tensor]] = {"a": [], "b": [], "c": [], "d": []}
    schedule = [
        [("a", a, 0, 5, 2), ("b", b, 0, 3, 0)],
        [("a", a, 5, 1, 2), ("b", b, 3, 4, 0), ("c", c, 0, 1, 1)],  # decode + chunk + new prompt
        [("c", c, 1, 1, 1), ("a", a, 6, 1, 2)],  # pure decode step
        [("a", a, 7, 12, 2), ("d", d, 0, 4, 1)],  # d reuses c's slot 1
        [("d", d, 4, 1, 1)],
        [("d", d, 5, 7, 1)],
    ]
    for step in schedule:
        logits = run_step(model, cache, [item[1:] for item in step])
        for (name, *_), lg in zip(step, logits):
            out[name].append(lg)
    for name, seq in zip("abcd", (a, b, c, d)):
        zh.report(torch.cat(out[name]), hf_alone(hf, seq), zh.TOL[FP32], f"sequence {name}")


def test_greedy_continuation_matches_generate(tiny, zh):
    path, hf = tiny
    model = load_model(path)
    prompts = tokens(zh.VOCAB, 5, 6, 11)
    new = 48
    cache = ContiguousCache.for_config(model.config, max_seqs=2, max_len=11 + new)
    logits = run_step(model, cache, [(p, 0, len(p), i) for i, p in enumerate(prompts)])
    nxt = torch.stack([lg[-1] for lg in logits]).argmax(-1)  # (2,)
    generated = [nxt]
    for i in range(new - 1):
        seqs = [torch.cat([p, torch.stack(generated)[:, b]]) for b, p in enumerate(prompts)]
        logits = run_step(model, cache, [(s, len(p) + i, 1, b) for b, (s, p) in enumerate(zip(seqs, prompts))])
        generated.append(torch.cat(logits).argmax(-1))
    ours = torch.stack(generated, dim=1)  # (2, new)
    for b, p in enumerate(prompts):
        ref = hf.generate(p[None], do_sample=False, max_new_tokens=new, eos_token_id=None, pad_token_id=0)
        assert ours[b].tolist() == ref[0, len(p):].tolist(), f"prompt {b}: greedy continuation differs"


def test_bf16_logits_match_transformers_bf16(tiny, zh):
    path, _ = tiny
    hf = transformers.ZayaForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    model = load_model(path, dtype=torch.bfloat16)
    assert model.model.layers[0].self_attn.o_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[0].mlp.gate.balancing_biases.dtype == FP32
    ids = torch.stack(tokens(zh.VOCAB, 6, 33, 33))
    with torch.no_grad():
        ref = hf(ids).logits
    zh.report(model.logits(ids), ref, zh.TOL[torch.bfloat16], "bf16 logits")


def test_skip_slot_gives_zero_moe_output_like_transformers(zh, tmp_path):
    """Spec 2.4: current transformers/vLLM zero the MoE output of a token routed to the skip slot;
    legacy HF code and SGLang passed g * h through. We follow transformers (the oracle)."""
    cfg = zh.CONFIGS["L2-q4kv2-d16-e4-r16"]
    hf = zh.make_hf(seed=11, skip_bias=0.0, **cfg)
    model = load_model(zh.save(hf, tmp_path / "skip"))
    routing = zh.record_routing(model)
    ids = torch.stack(tokens(zh.VOCAB, 7, 33, 33))
    ours = model.logits(ids)
    with torch.no_grad():
        ref = hf(ids).logits
    skip = cfg["num_experts"]
    skipped = sum(int((r == skip).sum()) for r in routing)
    assert 0 < skipped < sum(r.numel() for r in routing), f"{skipped} skip selections: test needs some, not all"
    zh.report(ours, ref, zh.TOL[FP32], "logits with skip-slot routing")


def test_forward_context_rejects_bad_metadata():
    cache = ContiguousCache(num_layers=1, max_seqs=2, max_len=8, num_kv_heads=2, head_dim=4, conv_channels=16,
                            conv_width=2, value_dim=4)
    with pytest.raises(ValueError, match="holds 8 tokens"):
        cache.context([5], [4], [0])
    with pytest.raises(ValueError, match="distinct"):
        cache.context([1, 1], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="fresh"):
        ForwardContext.build([1], [3], [0])
    with pytest.raises(ValueError, match="query_lens"):
        ForwardContext.build([0], [0], [0])
    assert cache.nbytes == sum(t.numel() * 4 for t in (cache.k, cache.v, cache.conv, cache.value))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny, zh):
    """Device path: meta -> to_empty on CUDA, metadata and cache on the GPU, the selected kernel backend."""
    path, _ = tiny
    cpu, gpu = load_model(path), load_model(path, device="cuda")
    seqs = tokens(zh.VOCAB, 8, 9, 4)
    cache = ContiguousCache.for_config(gpu.config, max_seqs=2, max_len=10, device="cuda")
    cuda_seqs = [s.cuda() for s in seqs]
    prefill = run_step(gpu, cache, [(s, 0, len(s) - 1, b) for b, s in enumerate(cuda_seqs)])
    decode = run_step(gpu, cache, [(s, len(s) - 1, 1, b) for b, s in enumerate(cuda_seqs)])
    for b, s in enumerate(seqs):
        ours = torch.cat([prefill[b], decode[b]]).cpu()
        zh.report(ours, cpu.logits(s[None])[0], zh.TOL[FP32], f"CUDA sequence {b}")
