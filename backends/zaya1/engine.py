"""`LLM`: the offline ZAYA1 engine (paged CCA cache, continuous batching, chunked prefill, sampling).

    llm = LLM("path/to/checkpoint", max_num_seqs=64, memory_budget=2 << 30)
    outs = llm.generate(["2 + 2 =", [5, 17, 9]], SamplingParams(temperature=0, max_tokens=32))

The engine is synchronous and single-threaded: `add_request`, `step` and `abort` must be called from
one thread (`AsyncLLM` owns that thread for async callers). Each `step` schedules one batch, runs the
model once and returns a `RequestOutput` for every request that received a token.
The cache is sized from `memory_budget` bytes: one constant CCA state row per sequence slot
(`max_num_seqs`), the rest K/V blocks of `block_size` tokens (`cache_info()` gives the numbers).
Not covered: prefix caching (unsafe with CCA state), speculative decoding, beam search, logprobs.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

from ..base import ContextLengthExceeded, InvalidRequest
from .block_manager import BlockManager
from .cache import PagedCache
from .runner import ModelRunner
from .sampler import Sampler
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence
from .tokenizer import decode, detokenize_step, eos_token_ids, load_tokenizer
from .weights import load_model

log = logging.getLogger("rsa.engine")
_CPU_DEFAULT_BUDGET = 1 << 30
_GPU_FREE_FRACTION = 0.9


@dataclass(slots=True, frozen=True)
class EngineConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    memory_budget: int | None = None  # bytes for the cache; None: 90% of free GPU memory, or up to 1 GiB on CPU
    block_size: int = 16
    max_model_len: int | None = None  # None: the checkpoint's max_position_embeddings
    kv_cache_dtype: torch.dtype | None = None  # None: the model dtype
    state_dtype: torch.dtype = torch.float32  # CCA conv / delayed-value state ("mamba cache dtype")
    seed: int | None = None  # of the generator unseeded requests share

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ValueError(f"memory_budget must be a positive number of bytes, got {self.memory_budget!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len!r}")


@dataclass(slots=True, frozen=True)
class RequestOutput:
    """A request's state after a step: cumulative `token_ids` / `text` and what this step added."""

    request_id: Any
    token_ids: tuple[int, ...]  # generated tokens, without a final EOS / stop token id
    text: str  # so far (final once `finished`); cut before a matched stop string
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort" once finished
    num_prompt_tokens: int
    num_generated_tokens: int  # sampled tokens, a final EOS / stop token included
    num_preemptions: int = 0
    new_token_ids: tuple[int, ...] = ()
    new_text: str = ""


@dataclass(slots=True, frozen=True)
class EngineMetrics:
    num_running: int
    num_waiting: int
    prompt_tokens_total: int
    generation_tokens_total: int
    cache_usage: float  # fraction of K/V blocks in use
    num_preemptions: int
    num_finished: int
    num_steps: int


class LLM:
    def __init__(self, model: str | os.PathLike[str] | torch.nn.Module, *, tokenizer: Any = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", **options: Any) -> None:
        self.options = EngineConfig(**options)
        path = None
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            model = load_model(path, dtype=dtype, device=device)
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
        self.model, self.tokenizer, self.config = model, tokenizer, model.config
        device = next(model.parameters()).device
        model_dtype = next(model.parameters()).dtype
        o = self.options
        limit = self.config.max_position_embeddings
        self.max_model_len = min(o.max_model_len or limit, limit)
        self.eos_token_ids = eos_token_ids(path, self.config.eos_token_id)
        kv_dtype = o.kv_cache_dtype or model_dtype
        budget = o.memory_budget or self._default_budget(device, kv_dtype)
        self.cache = PagedCache.for_budget(self.config, budget, o.block_size, o.max_num_seqs, dtype=kv_dtype,
                                           state_dtype=o.state_dtype, device=device)
        blocks = BlockManager(self.cache.num_blocks, o.block_size, o.max_num_seqs)
        self.scheduler = Scheduler(blocks, max_num_seqs=o.max_num_seqs, max_num_batched_tokens=o.max_num_batched_tokens,
                                   max_model_len=self.max_model_len, eos_token_ids=self.eos_token_ids)
        self.runner = ModelRunner(model, self.cache, Sampler(device, o.seed))
        self._ids = itertools.count()
        self._stream: set[int] = set()  # seq ids whose text is detokenized as they go
        self.num_finished = self.num_steps = 0
        info = self.cache_info()
        log.info("ZAYA1 engine: %d K/V blocks x %d tokens (%d tokens), %d B/token/layer, %d B state/sequence, "
                 "%.1f MiB cache", info["num_blocks"], info["block_size"], info["num_tokens"],
                 info["kv_bytes_per_token_per_layer"], info["state_bytes_per_seq"], info["cache_bytes"] / 2**20)

    def _default_budget(self, device: torch.device, kv_dtype: torch.dtype) -> int:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0] * _GPU_FREE_FRACTION)
        o, c = self.options, self.config
        per_seq = (PagedCache.state_bytes_per_seq(c, o.state_dtype) + -(-self.max_model_len // o.block_size)
                   * o.block_size * PagedCache.kv_bytes_per_token(c, kv_dtype) * c.num_hidden_layers)
        return min(_CPU_DEFAULT_BUDGET, per_seq * o.max_num_seqs)

    # ---- introspection --------------------------------------------------------------------
    def cache_info(self) -> dict[str, int]:
        c, cache = self.config, self.cache
        per_token = PagedCache.kv_bytes_per_token(c, cache.k.dtype)
        return dict(num_blocks=cache.num_blocks, block_size=cache.block_size, num_slots=cache.num_slots,
                    num_tokens=cache.num_blocks * cache.block_size, kv_bytes_per_token_per_layer=per_token,
                    kv_bytes_per_token=per_token * c.num_hidden_layers,
                    state_bytes_per_seq=PagedCache.state_bytes_per_seq(c, cache.conv.dtype), cache_bytes=cache.nbytes)

    def metrics(self) -> EngineMetrics:
        s = self.scheduler
        return EngineMetrics(len(s.running), len(s.waiting), s.prompt_tokens_total, s.generation_tokens_total,
                             s.blocks.usage, s.num_preemptions, self.num_finished, self.num_steps)

    # ---- requests -------------------------------------------------------------------------
    def encode(self, prompt: str | Seq[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequest("this engine has no tokenizer: pass token ids")
            return list(self.tokenizer.encode(prompt))
        return [int(t) for t in prompt]

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise InvalidRequest / ContextLengthExceeded for a request that can never run (thread-safe)."""
        if not isinstance(params, SamplingParams):
            raise InvalidRequest(f"sampling params must be SamplingParams, got {type(params).__name__}")
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty")
        if min(prompt_ids) < 0 or max(prompt_ids) >= self.config.vocab_size:
            raise InvalidRequest(f"prompt token ids must be in [0, {self.config.vocab_size})")
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop strings need a tokenizer")
        if (why := self.scheduler.check(len(prompt_ids), params.max_tokens)) is not None:
            raise ContextLengthExceeded(why, max_model_len=self.max_model_len, prompt_tokens=len(prompt_ids),
                                        requested_tokens=params.max_tokens)

    def add_request(self, prompt: str | Seq[int], params: SamplingParams | None = None, request_id: Any = None,
                    *, stream: bool = False) -> Any:
        """Queue one request; returns its id. `stream`: detokenize as tokens arrive (for `new_text`)."""
        params = params if params is not None else SamplingParams()
        ids = self.encode(prompt)
        self.validate(ids, params)
        seq = Sequence(ids, params, next(self._ids) if request_id is None else request_id, time.perf_counter())
        self.scheduler.add(seq)
        if stream or params.stop:
            self._stream.add(seq.seq_id)
            seq.user = 0  # text characters handed out so far
        return seq.request_id

    def abort(self, request_id: Any) -> RequestOutput | None:
        seq = self.scheduler.abort(request_id)
        return None if seq is None else self._finished(seq, ())

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # ---- one step -------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        if not batch:
            if self.scheduler.has_work():
                raise RuntimeError("scheduler made no progress with requests queued (cache too small?)")
            return []
        tokens = self.runner.run(batch)
        self.num_steps += 1
        outputs = []
        for seq in self.scheduler.postprocess(batch, tokens):
            new_ids = () if seq.stop_token is not None else (seq.token_ids[-1],)
            if seq.seq_id in self._stream:
                outputs.append(self._advance_text(seq, new_ids))
            elif seq.is_finished:
                outputs.append(self._finished(seq, new_ids))
            else:
                outputs.append(self._output(seq, new_ids, ""))
        return outputs

    def _advance_text(self, seq: Sequence, new_ids: tuple[int, ...]) -> RequestOutput:
        if self.tokenizer is not None:
            piece, *seq.detok = detokenize_step(self.tokenizer, seq.output_ids, *seq.detok)
            before = len(seq.text)
            seq.text += piece
            stops = seq.params.stop
            if stops and not seq.is_finished:
                window = max(0, before - max(map(len, stops)) + 1)
                hits = [at for s in stops if (at := seq.text.find(s, window)) != -1]
                if hits:
                    seq.text = seq.text[:min(hits)]
                    self.scheduler.finish(seq, "stop")
        if seq.is_finished:
            return self._finished(seq, new_ids)
        hold = max(map(len, seq.params.stop), default=1) - 1  # a stop string may still complete
        end = max(seq.user, len(seq.text) - hold)
        new_text, seq.user = seq.text[seq.user:end], end
        return self._output(seq, new_ids, new_text)

    def _finished(self, seq: Sequence, new_ids: tuple[int, ...]) -> RequestOutput:
        self.num_finished += 1
        self.runner.sampler.forget(seq.seq_id)
        streamed = seq.seq_id in self._stream
        self._stream.discard(seq.seq_id)
        cut = seq.finish_reason == "stop" and seq.stop_token is None
        if self.tokenizer is not None and not cut:
            seq.text = decode(self.tokenizer, seq.output_ids)
        return self._output(seq, new_ids, seq.text[seq.user:] if streamed else seq.text)

    def _output(self, seq: Sequence, new_ids: tuple[int, ...], new_text: str) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id, token_ids=tuple(seq.output_ids), text=seq.text, finished=seq.is_finished,
            finish_reason=seq.finish_reason, num_prompt_tokens=seq.num_prompt_tokens,
            num_generated_tokens=seq.num_output_tokens + (seq.stop_token is not None),
            num_preemptions=seq.num_preemptions, new_token_ids=new_ids, new_text=new_text)

    # ---- offline --------------------------------------------------------------------------
    def generate(self, prompts: str | Seq[int] | Seq[str | Seq[int]],
                 sampling_params: SamplingParams | Seq[SamplingParams] | None = None) -> list[RequestOutput]:
        """Run every prompt to completion; one final output per prompt, in order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        params = sampling_params if sampling_params is not None else SamplingParams()
        params = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts")
        ids = [self.encode(p) for p in prompts]
        for i, p in zip(ids, params):
            self.validate(i, p)
        rids = [self.add_request(i, p, ("offline", next(self._ids))) for i, p in zip(ids, params)]
        pending, done = set(rids), {}
        while pending:
            for out in self.step():
                if out.finished and out.request_id in pending:
                    pending.discard(out.request_id)
                    done[out.request_id] = out
        return [done[r] for r in rids]
