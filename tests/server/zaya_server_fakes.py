"""Test plumbing for the engine server: a scripted fake engine adapter, a tiny real ZAYA checkpoint,
and uvicorn on a loopback port in a thread.

`FakeEngine` speaks the server's `EngineAdapter` surface with character tokens (id = code point,
BOS 1, EOS 2) and "generates" `script(prompt_text, params)` one character per token, honouring
max_tokens, stop strings and stop_token_ids as the engine does (text cut before a stop string,
held back while a stop may still complete). It records aborted request ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai

from rsa.backends.base import InvalidRequest
from rsa.backends.zaya1.engine import EngineMetrics, RequestOutput
from rsa.backends.zaya1.sampling_params import SamplingParams

BOS, EOS = 1, 2
REPLY = "<think>\nLet me add.\n</think>\n\nThe answer is \\boxed{42}."


def default_script(prompt: str, params: SamplingParams) -> str:
    # the fake's template opens <think> in the prompt (enable_thinking), so the reply starts inside it
    body = REPLY.removeprefix("<think>") if prompt.endswith("<think>") else REPLY
    return body if params.seed is None else body + f" (seed {params.seed})"


class FakeEngine:
    def __init__(self, script: Callable[[str, SamplingParams], str] = default_script, *, max_model_len: int = 256,
                 token_delay_s: float = 0.0, default_sampling: dict[str, Any] | None = None) -> None:
        self.model_name, self.max_model_len = "fake/zaya-tiny", max_model_len
        self.script, self.token_delay_s = script, token_delay_s
        self.default_sampling = default_sampling or {}
        self.running = self.prompt_tokens = self.generation_tokens = 0
        self.params: list[SamplingParams] = []
        self.aborted: list[Any] = []
        self.closed = False

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        return ([BOS] if add_special_tokens else []) + [ord(c) for c in text]

    def detokenize(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if i > EOS)

    def token_strs(self, ids: list[int]) -> list[str]:
        return [chr(i) for i in ids]

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                            continue_final_message: bool, enable_thinking: bool = True, **kwargs: Any) -> str:
        if any(m["role"] not in ("system", "user", "assistant") for m in messages):
            raise ValueError("unknown role")
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        if continue_final_message:
            text = text.removesuffix("\n")
        return text + ("<|assistant|>" + ("<think>" if enable_thinking else "") if add_generation_prompt else "")

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if min(prompt_ids) < 0 or max(prompt_ids) >= 0x110000:
            raise InvalidRequest("prompt token ids must be in [0, 1114112)")

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: Any) -> RequestOutput:
        async for out in self.stream(prompt_ids, params, request_id):
            pass
        return out

    async def stream(self, prompt_ids: list[int], params: SamplingParams, request_id: Any) -> AsyncIterator[RequestOutput]:
        self.params.append(params)
        self.running += 1
        self.prompt_tokens += len(prompt_ids)
        reply, ids, text, sent, finished = self.script(self.detokenize(prompt_ids), params), [], "", 0, False
        hold = max(map(len, params.stop), default=1) - 1
        try:
            for k in range(params.max_tokens):
                await asyncio.sleep(self.token_delay_s)
                self.generation_tokens += 1
                tok = ord(reply[k]) if k < len(reply) else EOS
                reason = "stop" if tok in params.stop_token_ids or (tok == EOS and not params.ignore_eos) else None
                appended = reason is None
                if appended:
                    ids.append(tok)
                    text += chr(tok)
                    hits = [at for s in params.stop if (at := text.find(s)) != -1]
                    if hits:
                        text, reason = text[:min(hits)], "stop"
                if reason is None and k + 1 == params.max_tokens:
                    reason = "length"
                finished = reason is not None
                end = len(text) if finished else max(sent, len(text) - hold)
                yield RequestOutput(request_id, tuple(ids), text, finished, reason, len(prompt_ids), k + 1,
                                    new_token_ids=(tok,) if appended else (),
                                    new_text=text[sent:end])
                sent = end
                if finished:
                    return
        finally:
            self.running -= 1
            if not finished:
                self.aborted.append(request_id)

    def metrics(self) -> EngineMetrics:
        return EngineMetrics(self.running, 0, self.prompt_tokens, self.generation_tokens, 0.0, 0, 0, 0)

    def healthy(self) -> bool:
        return not self.closed

    async def aclose(self) -> None:
        self.closed = True


# ---- a tiny real checkpoint ---------------------------------------------------------------------
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% if enable_thinking is not defined or enable_thinking %}"
            "<think>\n{% endif %}{% endif %}")


def save_tiny_checkpoint(path: str, max_len: int = 192) -> None:
    """A random 2-layer ZAYA with a character tokenizer and a chat template that opens `<think>`."""
    import torch
    import transformers
    from tiny_zaya import char_tokenizer, perturb

    tok = char_tokenizer(TEMPLATE)
    torch.manual_seed(0)
    cfg = transformers.ZayaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, num_experts=4, router_hidden_size=16,
                                  moe_intermediate_size=64, max_position_embeddings=max_len, bos_token_id=1,
                                  eos_token_id=2, pad_token_id=3)
    hf = transformers.ZayaForCausalLM(cfg).eval()
    perturb(hf, seed=0)  # break the symmetry of a fresh model so outputs depend on the prompt
    hf.save_pretrained(path)
    tok.save_pretrained(path)


# ---- serving: the shared loopback helpers --------------------------------------------------


def sdk(url: str, api_key: str = "none", async_: bool = False) -> Any:
    cls = openai.AsyncOpenAI if async_ else openai.OpenAI
    return cls(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=60)
