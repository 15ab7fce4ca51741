"""Tiny random ZAYA checkpoints for tests, shared by every folder: a character-level tokenizer
with chat special tokens, and the perturbation that makes a fresh transformers ZAYA a useful test
model (fresh ones have norms at 1, key temperatures at 0, near-uniform routers, balancing biases at
0/-1, so parity on them cannot catch bugs in those parts and greedy decoding collapses)."""

from __future__ import annotations

import torch
import transformers

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<think>", "</think>"]


def char_tokenizer(chat_template: str) -> transformers.PreTrainedTokenizerFast:
    """One token per printable ASCII character and newline, after SPECIALS (<unk> 0, <s> 1, </s> 2,
    <pad> 3, then the chat and think tags as single tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + chars)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                               eos_token="</s>", pad_token="<pad>", additional_special_tokens=SPECIALS[4:])
    tok.chat_template = chat_template
    return tok


@torch.no_grad()
def perturb(hf: transformers.ZayaForCausalLM, seed: int, skip_bias: float | None = None) -> None:
    """In place, from a generator seeded `seed + 1`: noise on every 1-D parameter, the (tied) embedding
    scaled so logits are O(1), key temperatures in 0.5..1.5, routers sharpened so the chosen expert
    varies by token, balancing biases perturbed (the skip slot's set to `skip_bias` when given)."""
    cfg = hf.config
    g = torch.Generator().manual_seed(seed + 1)
    for _, p in hf.named_parameters():
        if p.ndim == 1:
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    hf.model.embed_tokens.weight.mul_(5.0)
    for layer in hf.model.layers:
        layer.self_attn.qk_norm.temp.copy_(0.5 + torch.rand(cfg.num_key_value_heads, generator=g))
        router = layer.mlp.gate
        mlp, width = router.router_mlp, cfg.router_hidden_size
        for lin, gain in ((mlp.fc1, 2.0), (mlp.fc2, 2.0), (mlp.out_proj, 3.0)):  # O(1) router logits
            lin.weight.copy_(gain * width**-0.5 * torch.randn(lin.weight.shape, generator=g))
        router.balancing_biases.add_(0.05 * torch.randn(cfg.num_experts + 1, generator=g))
        if skip_bias is not None:
            router.balancing_biases[-1] = skip_bias
