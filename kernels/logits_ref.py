"""Plain-PyTorch fp32 LM head (ZAYA's `zaya_high_prec`): logits = h @ W^T with fp32 output.

The vocabulary is processed in chunks so a bf16 embedding is never copied whole to fp32.
"""

from __future__ import annotations

import torch

VOCAB_CHUNK = 16384


def lm_head(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """hidden (N, H) any float dtype; weight (V, H) (the tied embedding); returns (N, V) fp32."""
    h = hidden.float()
    if weight.dtype == torch.float32:
        return h @ weight.t()
    out = torch.empty(h.shape[0], weight.shape[0], dtype=torch.float32, device=h.device)  # (N, V)
    for start in range(0, weight.shape[0], VOCAB_CHUNK):
        out[:, start:start + VOCAB_CHUNK] = h @ weight[start:start + VOCAB_CHUNK].float().t()
    return out
