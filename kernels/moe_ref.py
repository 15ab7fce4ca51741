"""Plain-PyTorch top-1 SwiGLU expert MLPs with a skip slot (the oracle for the MoE kernel).

Tokens are sorted by expert and each expert runs one dense GEMM pair over its tokens, as in
transformers' ZayaExperts. `expert_ids == E` is the ZAYA skip ("MoD") slot: its output is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def moe_experts(
    hidden: torch.Tensor,
    expert_ids: torch.Tensor,
    gate: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """out[t] = gate[t] * down_proj[e] @ (silu(g) * u), with [g; u] = gate_up_proj[e] @ hidden[t], e = expert_ids[t].

    T tokens, E experts, H hidden, I expert FFN.
    hidden (T, H); expert_ids (T,) int in [0, E], E = skip (output 0); gate (T,) routing weight;
    gate_up_proj (E, 2I, H), rows [0, I) gate and [I, 2I) up; down_proj (E, H, I).
    Returns (T, H) in hidden.dtype; expert matmuls run in hidden.dtype, the gate product in fp32.
    """
    num_experts = gate_up_proj.shape[0]
    order = torch.argsort(expert_ids, stable=True)  # (T,) token ids grouped by expert, skip slot last
    counts = torch.bincount(expert_ids, minlength=num_experts + 1).tolist()  # (E + 1,) one host sync
    x = hidden.index_select(0, order)  # (T, H) rows of expert e are one contiguous slice
    w = gate.index_select(0, order).float()[:, None]  # (T, 1)
    y = torch.zeros_like(hidden)  # (T, H) in sorted order; skip rows stay 0
    start = 0
    for e, n in enumerate(counts[:num_experts]):
        if n:
            rows = slice(start, start + n)
            g, u = F.linear(x[rows], gate_up_proj[e]).chunk(2, dim=-1)  # (n, I) each
            y[rows] = (F.linear(F.silu(g).mul_(u), down_proj[e]).float() * w[rows]).to(y.dtype)  # (n, H)
        start += n
    return torch.empty_like(hidden).index_copy_(0, order, y)  # (T, H) back in token order
