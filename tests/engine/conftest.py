"""Shared setup for the engine tests: a tiny random ZAYA checkpoint with a character-level tokenizer
(saved by transformers, the oracle), and a MockModel with fixed logits for engine-loop tests.

The checkpoint perturbs every 1-D parameter, the key temperatures and the routers (as the model
parity tests do), so outputs depend on the prompt and greedy decoding does not collapse.
"""

from __future__ import annotations

import types

import pytest
import tiny_zaya
import torch
import transformers

torch.set_num_threads(1)  # tiny ops; the CPU is shared

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")


def char_tokenizer():
    return tiny_zaya.char_tokenizer(TEMPLATE)


def make_hf(vocab: int, seed: int = 0, **overrides) -> transformers.ZayaForCausalLM:
    torch.manual_seed(seed)
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              num_experts=4, router_hidden_size=16, moe_intermediate_size=64, max_position_embeddings=4096)
    cfg = transformers.ZayaConfig(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=3, **(kw | overrides))
    hf = transformers.ZayaForCausalLM(cfg).eval()
    tiny_zaya.perturb(hf, seed)
    return hf


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """(checkpoint dir with tokenizer, fp32 transformers model, tokenizer)."""
    tok = char_tokenizer()
    hf = make_hf(len(tok))
    path = tmp_path_factory.mktemp("zaya_tiny")
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), hf, tok


@torch.inference_mode()
def hf_greedy(hf, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """transformers' greedy generate, one left-padded batch, exactly max_new tokens per prompt."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), 3, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                      eos_token_id=None, pad_token_id=3)
    return out[:, width:].tolist()


class MockModel(torch.nn.Module):
    """Fixed logits: the next token is (last token + 1) % V, with margin 5 over a flat rest."""

    def __init__(self, vocab: int = 50, max_len: int = 256) -> None:
        super().__init__()
        from rsa.backends.zaya1 import Zaya1Config

        self.config = Zaya1Config(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  num_key_value_heads=1, head_dim=4, moe_intermediate_size=8, num_experts=2,
                                  router_hidden_size=4, max_position_embeddings=max_len, eos_token_id=0)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[int] = []  # tokens per forward

    def forward(self, ids, positions, ctx):  # noqa: ANN001
        self.calls.append(ids.numel())
        if getattr(self, "boom", False):
            raise RuntimeError("boom")
        return ids[:, None].float()  # (T, 1): the "hidden state" is the token itself

    def compute_logits(self, hidden):  # noqa: ANN001
        v = self.config.vocab_size
        nxt = (hidden[:, 0].long() + 1) % v
        return torch.nn.functional.one_hot(nxt, v).float() * 5.0


@pytest.fixture(scope="session")
def eh():
    return types.SimpleNamespace(hf_greedy=hf_greedy, MockModel=MockModel, make_hf=make_hf,
                                 char_tokenizer=char_tokenizer, TEMPLATE=TEMPLATE)
