"""Plain-PyTorch CCA epilogue (the oracle for the fused CCA kernel).

Everything between the q/k/v projections and attention, for a flat varlen batch:
two causal convolutions over the raw packed [Q0; K0] (depthwise, then grouped per head), the q/k
mean-residual mix, L2 q/k norm with the per-kv-head key temperature, partial NeoX RoPE, and the
one-token-delayed value. Per-sequence state (the last W raw [Q0; K0] columns and the last delayed
value projection) is read from and written back to slot-indexed state tensors, so a prefill chunk or
decode step continues exactly where the sequence's previous step stopped.
Math runs in fp32; outputs are cast to the dtype of `qk`. Not covered: `clamp_temp`.
"""

from __future__ import annotations

import math

import torch


def _seq_index(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence id and index within the sequence of every flat token, both (T,) int64."""
    cu = cu_seqlens.long()
    seq = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=cu.device), cu.diff(), output_size=total)
    return seq, torch.arange(total, device=cu.device) - cu[seq]


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX rotation of the first 2 * R2 dims. x (T, N, D) fp32; cos, sin (T, R2)."""
    r2 = cos.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]
    x1, x2 = x[..., :r2], x[..., r2:2 * r2]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, x[..., 2 * r2:]], dim=-1)


def cca_epilogue(
    qk: torch.Tensor,
    v_cur: torch.Tensor,
    v_del: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor,
    g_weight: torch.Tensor,
    g_bias: torch.Tensor,
    temp: torch.Tensor,
    conv_state: torch.Tensor | None,
    value_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    fresh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CCA conv + mix + norm + RoPE + delayed value for T flat tokens of B sequences.

    T tokens, B sequences, Hq query heads, KV kv heads, D head dim, C = (Hq + KV) * D conv channels,
    t0/t1 conv kernels, W = t0 + t1 - 2 state columns, VD = KV * D / 2, R2 = rotary dim / 2, S state slots.
    qk (T, C) raw packed [q_proj(h); k_proj(h)]; v_cur, v_del (T, VD) v_proj_current(h), v_proj_delayed(h);
    cos, sin (T, R2) fp32 RoPE tables at each token's position;
    dw_weight (C, 1, t0), dw_bias (C,), g_weight (C, D, t1), g_bias (C,) conv weights, tap 0 oldest;
    temp (KV,) key temperature; conv_state (S, C, W) and value_state (S, VD) per-slot state, updated in
    place (None: no cache, every sequence must be fresh); cu_seqlens (B+1,) int32; state_slots (B,) int64;
    fresh (B,) bool: the sequence starts here and reads zero state.
    Returns q (T, Hq, D), k (T, KV, D), v (T, KV, D) in qk.dtype.
    """
    t, c = qk.shape
    d, t1 = g_weight.shape[1], g_weight.shape[2]
    t0 = dw_weight.shape[-1]
    kv = temp.numel()
    groups = c // d
    hq = groups - kv
    w = t0 + t1 - 2
    nseq = cu_seqlens.numel() - 1
    seq, local = _seq_index(cu_seqlens, t)  # (T,), (T,)
    keep = ~fresh[:, None, None]

    # ---- gather each token's causal window of raw columns Z[t-W .. t] ---------------------
    if conv_state is None:
        hist = qk.new_zeros(nseq, w, c, dtype=torch.float32)
    else:
        hist = (conv_state[state_slots].float() * keep).transpose(1, 2)  # (B, W, C)
    source = torch.cat([qk.float(), hist.reshape(nseq * w, c)])  # (T + B*W, C)
    taps = torch.arange(w + 1, device=qk.device)  # (W+1,)
    src_local = local[:, None] - w + taps  # (T, W+1)
    flat = torch.arange(t, device=qk.device)[:, None] - w + taps
    idx = torch.where(src_local >= 0, flat, t + seq[:, None] * w + w + src_local)  # (T, W+1)
    window = source.index_select(0, idx.view(-1)).view(t, w + 1, c)  # (T, W+1, C)

    # ---- depthwise then grouped convolution ("valid", one output per token) ----------------
    dw_w = dw_weight[:, 0].float()  # (C, t0)
    dw = window[:, 0:t1] * dw_w[:, 0]  # (T, t1, C), one tap at a time: no unfolded copy
    for j in range(1, t0):
        dw.addcmul_(window[:, j:j + t1], dw_w[:, j])
    dw += dw_bias.float()
    x = dw.view(t, t1, groups, d).permute(2, 0, 1, 3).reshape(groups, t, t1 * d)  # (G, T, t1 * D_in)
    wg = g_weight.float().view(groups, d, d, t1).permute(0, 3, 2, 1).reshape(groups, t1 * d, d)  # (G, t1 * D_in, D_out)
    conv = torch.baddbmm(g_bias.float().view(groups, 1, d), x, wg).transpose(0, 1)  # (T, G, D)

    # ---- q/k mean-residual mix (q heads first, then k heads, as in the conv output) ---------
    q0 = qk[:, :hq * d].float().view(t, kv, hq // kv, d)  # (T, KV, Hq / KV, D)
    k0 = qk[:, hq * d:].float().view(t, kv, 1, d)  # (T, KV, 1, D)
    q_res = (q0 + k0).mul_(0.5)  # (T, KV, Hq / KV, D)
    qk_mix = conv + torch.cat([q_res.view(t, hq, d), q_res.mean(2)], dim=1)  # (T, G, D), k_res = mean of q_res

    # ---- L2 norm to sqrt(D), key temperature (k heads only), RoPE -------------------------
    eps = torch.finfo(qk.dtype).eps
    head_scale = torch.cat([temp.new_ones(hq, dtype=torch.float32), temp.float()])[:, None]  # (G, 1)
    qk_mix = qk_mix * (math.sqrt(d) / qk_mix.norm(dim=-1, keepdim=True).clamp_min(eps)) * head_scale
    qk_mix = _rope(qk_mix, cos, sin)  # (T, G, D)
    q, k = qk_mix[:, :hq].contiguous(), qk_mix[:, hq:].contiguous()  # (T, Hq, D), (T, KV, D)

    # ---- value: [current projection | previous token's delayed projection] ------------------
    if value_state is None:
        init = v_del.new_zeros(nseq, v_del.shape[1])
    else:
        init = value_state[state_slots].to(v_del.dtype) * keep[:, :, 0]  # (B, VD)
    prev = torch.cat([v_del, init])[torch.where(local > 0, torch.arange(t, device=qk.device) - 1, t + seq)]  # (T, VD)
    v = torch.cat([v_cur, prev], dim=-1).view(t, kv, d)  # (T, KV, D)

    # ---- carry state: last W raw columns and the last delayed value of each sequence ---------
    if conv_state is not None or value_state is not None:
        has_tokens = cu_seqlens.diff() > 0  # (B,)
        last = (cu_seqlens[1:].long() - 1)[has_tokens]  # (B',)
        slots = state_slots[has_tokens]
        if conv_state is not None:
            conv_state[slots] = window[last, 1:].transpose(1, 2).to(conv_state.dtype)  # (B', C, W)
        if value_state is not None:
            value_state[slots] = v_del[last].to(value_state.dtype)  # (B', VD)
    return q.to(qk.dtype), k.to(qk.dtype), v
