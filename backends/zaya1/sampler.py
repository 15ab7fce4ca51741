"""Batched token sampling with per-row temperature, top-k, top-p, min-p and seeds, without host syncs.

Sampling uses the exponential trick: argmax(p / q) with q ~ Exp(1) draws from p, so no multinomial
(and no `.item()`). Temperature 0 is argmax. Rows with a seed draw their noise from their own
generator (created on first use, dropped with `forget`), so their tokens do not depend on the rest of
the batch; the other rows share the sampler's generator. Which cuts to apply is decided on the host
from the parameters, so a batch without top-k/top-p skips the sort.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from .sampling_params import SamplingParams


class Sampler:
    def __init__(self, device: torch.device | str = "cpu", seed: int | None = None) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device)
        if seed is not None:
            self.generator.manual_seed(seed)
        else:
            self.generator.seed()
        self._seeded: dict[int, torch.Generator] = {}

    def forget(self, key: int) -> None:
        self._seeded.pop(key, None)

    def _generator(self, key: int, seed: int) -> torch.Generator:
        g = self._seeded.get(key)
        if g is None:
            g = self._seeded[key] = torch.Generator(self.device).manual_seed(seed)
        return g

    def __call__(self, logits: torch.Tensor, params: Seq[SamplingParams], keys: Seq[int]) -> torch.Tensor:
        """logits (B, V) fp32, one SamplingParams and one key (sequence id) per row -> (B,) int64 ids."""
        # B rows, V vocabulary
        greedy = logits.argmax(dim=-1)  # (B,)
        if all(p.temperature == 0 for p in params):
            return greedy
        dev, v = logits.device, logits.shape[-1]

        def col(values: list) -> torch.Tensor:  # noqa: ANN001 - floats or ints
            return torch.tensor(values, device=dev)[:, None]  # (B, 1)

        x = logits / col([p.temperature or 1.0 for p in params])  # (B, V)
        use_k = any(p.top_k for p in params)
        use_p = any(p.top_p < 1 for p in params)
        if use_k or use_p:
            xs, order = x.sort(dim=-1, descending=True)  # (B, V) each
            if use_k:
                ranks = torch.arange(v, device=dev)[None]  # (1, V)
                xs = xs.masked_fill(ranks >= col([p.top_k or v for p in params]), float("-inf"))
            if use_p:
                ps = xs.softmax(dim=-1)
                mass_before = ps.cumsum(dim=-1) - ps  # (B, V) mass of strictly more likely tokens
                xs = xs.masked_fill(mass_before >= col([float(p.top_p) for p in params]), float("-inf"))
            x = torch.full_like(x, float("-inf")).scatter_(1, order, xs)
        probs = x.softmax(dim=-1)  # (B, V)
        if any(p.min_p > 0 for p in params):
            floor = probs.amax(dim=-1, keepdim=True) * col([float(p.min_p) for p in params])  # (B, 1)
            probs = probs.masked_fill(probs < floor, 0.0)
        q = torch.empty_like(probs).exponential_(generator=self.generator)  # (B, V)
        for row, (p, key) in enumerate(zip(params, keys)):
            if p.seed is not None and p.temperature > 0:
                q[row].exponential_(generator=self._generator(key, p.seed))
        sampled = (probs / q).argmax(dim=-1)  # (B,)
        is_greedy = torch.tensor([p.temperature == 0 for p in params], device=dev)
        return torch.where(is_greedy, greedy, sampled)
