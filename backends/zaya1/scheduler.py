"""Continuous-batching scheduler with chunked prefill and preemption by recompute (torch-free).

Each step packs, under a budget of `max_num_batched_tokens`:
  1. the running sequences, decodes (one token each) first, then unfinished prefills, in admission
     order, each taking as many of its uncomputed tokens as the budget leaves (a chunk);
  2. waiting sequences in FIFO order (no skipping the head), while a state slot, the sequence cap
     and blocks for the chunk are available. Nothing is admitted in a step that preempted.
When a running sequence needs a block and none is free, the most recently admitted sequence not yet
scheduled this step is preempted: its blocks and state slot are freed and it goes back to the front
of the waiting queue with prompt + generated tokens, to be re-prefilled (which rebuilds its CCA state).
Sampled tokens come back through `postprocess`, which applies the token-level stops (EOS, stop
token ids, max_tokens, the context limit); stop strings are the engine's, via `finish`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledBatch:
    """One step: each entry runs tokens [num_computed, num_computed + n) of its sequence."""

    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    context_lens: list[int] = field(default_factory=list)
    samples: list[bool] = field(default_factory=list)  # the entry reaches the sequence's end: sample

    def add(self, seq: Sequence, n: int) -> None:
        self.seqs.append(seq)
        self.num_tokens.append(n)
        self.context_lens.append(seq.num_computed)
        self.samples.append(seq.num_computed + n == len(seq))

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


class Scheduler:
    def __init__(self, blocks: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int, eos_token_ids: Iterable[int] = ()) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(f"max_num_seqs and max_num_batched_tokens must be >= 1, "
                             f"got {max_num_seqs}, {max_num_batched_tokens}")
        self.blocks = blocks
        self.max_num_seqs = min(max_num_seqs, blocks.num_slots)
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.by_request: dict[Any, Sequence] = {}
        self.num_preemptions = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    # ---- queue -----------------------------------------------------------------------------
    def check(self, num_prompt_tokens: int, max_tokens: int) -> str | None:
        """Why a request of this size can never run, or None when it fits."""
        total = num_prompt_tokens + max_tokens
        if total > self.max_model_len:
            return f"prompt ({num_prompt_tokens}) + max_tokens ({max_tokens}) exceeds the context of {self.max_model_len}"
        if self.blocks.blocks_for(total) > self.blocks.num_blocks:
            return (f"prompt + max_tokens = {total} tokens needs more K/V blocks than the cache holds "
                    f"({self.blocks.num_blocks} x {self.blocks.block_size} tokens)")
        return None

    def add(self, seq: Sequence) -> None:
        if seq.request_id in self.by_request:
            raise ValueError(f"request id {seq.request_id!r} is already in the engine")
        if (why := self.check(seq.num_prompt_tokens, seq.params.max_tokens)) is not None:
            raise ValueError(why)
        self.by_request[seq.request_id] = seq
        self.waiting.append(seq)
        self.prompt_tokens_total += seq.num_prompt_tokens

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        if seq.is_finished:
            return
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
        self.blocks.release(seq)
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.by_request.pop(seq.request_id, None)

    def abort(self, request_id: Any) -> Sequence | None:
        seq = self.by_request.get(request_id)
        if seq is not None:
            self.finish(seq, "abort")
        return seq

    # ---- one step --------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget, taken, preempted = self.max_num_batched_tokens, set(), False
        for seq in sorted(self.running, key=lambda s: s.num_uncomputed > 1):  # stable: decodes first
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            n = min(seq.num_uncomputed, budget)
            while not self.blocks.can_grow(seq, seq.num_computed + n):
                victim = next((s for s in reversed(self.running) if s is not seq and s.seq_id not in taken), seq)
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                self.blocks.grow(seq, seq.num_computed + n)
                batch.add(seq, n)
                taken.add(seq.seq_id)
                budget -= n
        while (not preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs
               and self.blocks.free_slots):
            seq = self.waiting[0]
            n = min(seq.num_uncomputed, budget)
            if not self.blocks.can_grow(seq, n):
                break
            self.waiting.popleft()
            self.blocks.take_slot(seq)
            self.blocks.grow(seq, n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.add(seq, n)
            budget -= n
        return batch

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.release(seq)
        self.running.remove(seq)
        seq.num_computed = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def postprocess(self, batch: ScheduledBatch, tokens: list[int]) -> list[Sequence]:
        """Record a finished step: `tokens` holds one sampled id per entry with `samples` set, in order.
        Returns the sequences that received a token (finished ones included)."""
        got: list[Sequence] = []
        it = iter(tokens)
        for seq, n, sample in zip(batch.seqs, batch.num_tokens, batch.samples):
            token = next(it) if sample else None
            if seq.is_finished:  # aborted while the step ran
                continue
            seq.num_computed += n
            if token is None:
                continue
            self.generation_tokens_total += 1
            got.append(seq)
            p = seq.params
            if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
                seq.stop_token = token
                self.finish(seq, "stop")
                continue
            seq.append(token)
            if seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
                self.finish(seq, "length")
        return got
