"""Model runner: turns a scheduled batch into one flat forward over the paged cache, then samples.

Builds the flat token ids, positions and the `ForwardContext` (block tables, state slots, chunk
offsets) for every entry of the batch, runs the model once, computes logits only for the entries
that end at their sequence's last token, and samples them. The only host sync is one `.tolist()`
handing the new ids back to the scheduler.
Not covered: CUDA graphs for decode (a later issue; shapes vary with `max_seq_len` today).
"""

from __future__ import annotations

import torch

from .cache import ForwardContext, PagedCache
from .sampler import Sampler
from .scheduler import ScheduledBatch


class ModelRunner:
    def __init__(self, model: torch.nn.Module, cache: PagedCache, sampler: Sampler) -> None:
        self.model, self.cache, self.sampler = model, cache, sampler
        self.device = cache.k.device

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, ForwardContext, torch.Tensor]:
        ids: list[int] = []
        positions: list[int] = []
        last: list[int] = []  # flat row of each sampling entry's last token
        for seq, n, start, sample in zip(batch.seqs, batch.num_tokens, batch.context_lens, batch.samples):
            ids += seq.token_ids[start:start + n]
            positions += range(start, start + n)
            if sample:
                last.append(len(ids) - 1)
        ctx = ForwardContext.build(batch.num_tokens, batch.context_lens, [s.state_slot for s in batch.seqs],
                                   [s.block_table for s in batch.seqs], cache=self.cache, device=self.device)

        def tensor(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        return tensor(ids), tensor(positions), ctx, tensor(last)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        """One forward + sampling step; returns one token per sampling entry, in batch order."""
        ids, positions, ctx, last = self.prepare(batch)
        hidden = self.model(ids, positions, ctx)  # (T, H)
        if last.numel() == 0:
            return []
        logits = self.model.compute_logits(hidden[last])  # (N, V) fp32
        rows = [i for i, s in enumerate(batch.samples) if s]
        params = [batch.seqs[i].params for i in rows]
        keys = [batch.seqs[i].seq_id for i in rows]
        return self.sampler(logits, params, keys).tolist()
