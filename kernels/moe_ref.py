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
    out = torch.zeros_like(hidden)  # (T, H)
    order = torch.argsort(expert_ids, stable=True)  # (T,)
    counts = torch.bincount(expert_ids, minlength=num_experts + 1).tolist()
    start = 0
    for e, n in enumerate(counts[:num_experts]):
        if n:
            tok = order[start:start + n]  # (n,)
            g, u = F.linear(hidden[tok], gate_up_proj[e]).chunk(2, dim=-1)  # (n, I) each
            y = F.linear(F.silu(g) * u, down_proj[e])  # (n, H)
            out[tok] = (y.float() * gate[tok, None].float()).to(out.dtype)
        start += n
    return out
