"""Triton CCA projection epilogue (twin: cca_ref.cca_epilogue).

Two kernels per call, for any flat varlen batch (prefill chunks and decode tokens alike):

1. `cca_qk_kernel`, one program per (BLOCK_T tokens, conv group = one q or k head): gathers each
   token's causal window of raw [Q0; K0] columns (from `qk`, or from the sequence's conv state where
   the window reaches before the chunk), runs the depthwise conv (t0 taps) and the grouped per-head
   conv (t1 taps, a (D, D) matmul per tap on the tensor cores), adds the q/k mean-mix residual,
   L2-normalises to sqrt(D) (times the key temperature) and applies the partial NeoX RoPE. RoPE needs
   each channel's rotation partner (i +- R2); the kernel computes the partner tile directly with a
   second matmul against the column-permuted weights, so no register shuffles are needed. The
   k-head programs also write that kv head's value (current projection | delayed projection of the
   previous token, or the stored one).
2. `cca_state_kernel`, one program per (sequence, channel block), runs after (stream order) and
   writes the last W raw columns and the last delayed value back to the state slots.

All math is fp32 (fp32 matmuls are exact "ieee", not tf32); outputs are cast to qk.dtype.
Not covered: clamp_temp, t0 + t1 - 2 > 8 state columns.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .triton_utils import INTERPRET, mma, pick_config, pow2


@triton.jit
def _raw_column(qk_ptr, state_ptr, toks, local, slot, keep, ch, row_mask, ch_mask, stride_qk,
                stride_s_slot, stride_s_ch, BACK: tl.constexpr, W: tl.constexpr, HAS_STATE: tl.constexpr):
    """Z[t - BACK] (BLOCK_T, BLOCK_D) fp32 for each token: from qk, or the conv state before the chunk."""
    src = local - BACK
    inside = src >= 0
    z = tl.load(qk_ptr + (toks - BACK)[:, None] * stride_qk + ch[None, :],
                mask=(row_mask & inside)[:, None] & ch_mask[None, :], other=0.0).to(tl.float32)
    if HAS_STATE:
        zs = tl.load(state_ptr + slot[:, None] * stride_s_slot + ch[None, :] * stride_s_ch + (W + src)[:, None],
                     mask=(row_mask & ~inside & keep)[:, None] & ch_mask[None, :], other=0.0).to(tl.float32)
        z = tl.where(inside[:, None], z, zs)
    return z


@triton.jit
def cca_qk_kernel(
    # pointers: inputs
    qk_ptr, v_cur_ptr, v_del_ptr, cos_ptr, sin_ptr,
    dw_w_ptr, dw_b_ptr, g_w_ptr, g_b_ptr, temp_ptr,
    conv_state_ptr, value_state_ptr,
    tok_seq_ptr, cu_ptr, slots_ptr, keep_ptr,
    # pointers: outputs
    q_ptr, k_ptr, v_ptr,
    # sizes
    num_tokens, eps, sqrt_d,
    # strides
    stride_qk, stride_vc, stride_vd, stride_rope,
    stride_s_slot, stride_s_ch, stride_vs_slot,
    # meta-parameters
    HQ: tl.constexpr, KV: tl.constexpr, D: tl.constexpr, R2: tl.constexpr, VD: tl.constexpr,
    T0: tl.constexpr, T1: tl.constexpr,
    HAS_STATE: tl.constexpr, HAS_VSTATE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """qk (T, C) raw [Q0; K0], C = (HQ + KV) * D; v_cur, v_del (T, VD); cos, sin (T, R2) fp32;
    dw_w (C, T0), dw_b (C,), g_w (C, D, T1), g_b (C,), temp (KV,); conv_state (S, C, W);
    value_state (S, VD); tok_seq (T,) sequence of each token; cu (B+1,); slots (B,); keep (B,) int32
    (0 = fresh). Outputs q (T, HQ, D), k, v (T, KV, D) contiguous, in their own dtypes.
    Grid (cdiv(T, BLOCK_T), HQ + KV).
    """
    W: tl.constexpr = T0 + T1 - 2
    GROUP: tl.constexpr = HQ // KV
    pid_t = tl.program_id(0)
    head = tl.program_id(1)
    is_q = head < HQ
    grp = tl.where(is_q, head // GROUP, head - HQ)  # kv group of this head

    # ---- tokens of this block and their sequence bookkeeping -------------------------------
    toks = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = toks < num_tokens
    seq = tl.load(tok_seq_ptr + toks, mask=row_mask, other=0)
    local = toks - tl.load(cu_ptr + seq, mask=row_mask, other=0)
    slot = tl.load(slots_ptr + seq, mask=row_mask, other=0)
    keep = tl.load(keep_ptr + seq, mask=row_mask, other=0) != 0
    toks64 = toks.to(tl.int64)

    cols = tl.arange(0, BLOCK_D)
    ch_mask = cols < D
    ch = head * D + cols  # this head's conv channels
    if R2 > 0:
        partner = tl.where(cols < R2, cols + R2, tl.where(cols < 2 * R2, cols - R2, cols))
    else:
        partner = cols

    # ---- depthwise conv (T0 taps) then grouped conv (T1 taps), direct and partner columns ---
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    acc_p = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    dw_b = tl.load(dw_b_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)
    for p in tl.static_range(T1):
        dw = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32) + dw_b[None, :]
        for a in tl.static_range(T0):
            z = _raw_column(qk_ptr, conv_state_ptr, toks64, local, slot, keep, ch, row_mask, ch_mask,
                            stride_qk, stride_s_slot, stride_s_ch, W - p - a, W, HAS_STATE)
            dw += z * tl.load(dw_w_ptr + ch * T0 + a, mask=ch_mask, other=0.0).to(tl.float32)[None, :]
        # g_w[(head * D + o), i, p] as an (i, o) tile
        w_mask = ch_mask[:, None] & ch_mask[None, :]
        w_base = g_w_ptr + cols[:, None] * T1 + p
        w_t = tl.load(w_base + (head * D + cols)[None, :] * (D * T1), mask=w_mask, other=0.0).to(tl.float32)
        w_tp = tl.load(w_base + (head * D + partner)[None, :] * (D * T1), mask=w_mask, other=0.0).to(tl.float32)
        acc = mma(dw, w_t, acc, UPCAST_DOT, DOT_PRECISION)
        acc_p = mma(dw, w_tp, acc_p, UPCAST_DOT, DOT_PRECISION)

    # ---- q/k mean-mix residual: 0.5 * (mean of the group's raw q heads (just this one for q) + raw k) --
    tile_mask = row_mask[:, None] & ch_mask[None, :]
    q_first = tl.where(is_q, head, grp * GROUP)
    n_q = tl.where(is_q, 1, GROUP)
    row_ptr = qk_ptr + toks64[:, None] * stride_qk
    q_sum = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    q_sum_p = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for r in range(n_q):
        q_sum += tl.load(row_ptr + ((q_first + r) * D + cols)[None, :], mask=tile_mask, other=0.0).to(tl.float32)
        q_sum_p += tl.load(row_ptr + ((q_first + r) * D + partner)[None, :], mask=tile_mask, other=0.0).to(tl.float32)
    k_raw = tl.load(row_ptr + ((HQ + grp) * D + cols)[None, :], mask=tile_mask, other=0.0).to(tl.float32)
    k_raw_p = tl.load(row_ptr + ((HQ + grp) * D + partner)[None, :], mask=tile_mask, other=0.0).to(tl.float32)
    x = acc + tl.load(g_b_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)[None, :] + 0.5 * (q_sum / n_q + k_raw)
    x_p = (acc_p + tl.load(g_b_ptr + head * D + partner, mask=ch_mask, other=0.0).to(tl.float32)[None, :]
           + 0.5 * (q_sum_p / n_q + k_raw_p))

    # ---- L2 norm to sqrt(D), key temperature ----------------------------------------------
    norm = tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), eps)
    temp = tl.where(is_q, 1.0, tl.load(temp_ptr + grp).to(tl.float32))
    scale = (sqrt_d / norm) * temp

    # ---- partial NeoX RoPE: x[i] * cos - x[i + R2] * sin, x[i + R2] * cos + x[i] * sin ---------
    if R2 > 0:
        rot = cols < 2 * R2
        rope_off = toks64[:, None] * stride_rope + (cols % R2)[None, :]
        rope_mask = row_mask[:, None] & rot[None, :]
        cos = tl.load(cos_ptr + rope_off, mask=rope_mask, other=1.0)
        sin = tl.load(sin_ptr + rope_off, mask=rope_mask, other=0.0)
        sign = tl.where(cols < R2, -1.0, 1.0)
        x = x * cos + sign[None, :] * x_p * sin
    y = x * scale[:, None]

    # ---- store q or k; k programs also write their kv head's value ----------------------------
    if is_q:
        tl.store(q_ptr + toks64[:, None] * (HQ * D) + (head * D + cols)[None, :],
                 y.to(q_ptr.dtype.element_ty), mask=tile_mask)
    else:
        tl.store(k_ptr + toks64[:, None] * (KV * D) + (grp * D + cols)[None, :],
                 y.to(k_ptr.dtype.element_ty), mask=tile_mask)
        vcol = grp * D + cols  # column of the (KV * D) value row: [v_cur (VD) | previous v_del (VD)]
        is_cur = vcol < VD
        cur = tl.load(v_cur_ptr + toks64[:, None] * stride_vc + vcol[None, :],
                      mask=tile_mask & is_cur[None, :], other=0.0)
        dcol = vcol - VD
        prev_mask = tile_mask & ~is_cur[None, :]
        prev = tl.load(v_del_ptr + (toks64 - 1)[:, None] * stride_vd + dcol[None, :],
                       mask=prev_mask & (local > 0)[:, None], other=0.0)
        if HAS_VSTATE:
            init = tl.load(value_state_ptr + slot[:, None] * stride_vs_slot + dcol[None, :],
                           mask=prev_mask & ((local == 0) & keep)[:, None], other=0.0)
            prev = tl.where((local > 0)[:, None], prev, init.to(v_del_ptr.dtype.element_ty))
        val = tl.where(is_cur[None, :], cur.to(v_ptr.dtype.element_ty), prev.to(v_ptr.dtype.element_ty))
        tl.store(v_ptr + toks64[:, None] * (KV * D) + vcol[None, :], val, mask=tile_mask)


@triton.jit
def cca_state_kernel(
    # pointers
    qk_ptr, v_del_ptr, conv_state_ptr, value_state_ptr, cu_ptr, slots_ptr, keep_ptr,
    # sizes
    num_channels,
    # strides
    stride_qk, stride_vd, stride_s_slot, stride_s_ch, stride_vs_slot,
    # meta-parameters
    VD: tl.constexpr, W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_VSTATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Carry the state of sequence b: conv_state[slot] (C, W) <- the last W raw columns (older ones from
    the old state when the chunk is shorter than W), value_state[slot] (VD,) <- v_del[last token].
    Must run after cca_qk_kernel (it overwrites what that kernel reads). Grid (B, cdiv(C, BLOCK_C)).
    """
    b = tl.program_id(0)
    pid_c = tl.program_id(1)
    start = tl.load(cu_ptr + b)
    n = tl.load(cu_ptr + b + 1) - start
    if n > 0:
        last = (start + n - 1).to(tl.int64)
        slot = tl.load(slots_ptr + b)
        keep = tl.load(keep_ptr + b)
        chans = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = chans < num_channels
        # ---- last W raw columns; column w is BACK = W - 1 - w tokens before the last one ----------
        if HAS_STATE:
            w = tl.arange(0, BLOCK_W)
            back = W - 1 - w
            src = n - 1 - back
            inside = (src >= 0) & (w < W)
            m = c_mask[:, None] & inside[None, :]
            z = tl.load(qk_ptr + (last - back)[None, :] * stride_qk + chans[:, None], mask=m, other=0.0)
            # (scalar keep broadcast by hand: the interpreter turns vector & scalar bools into ints)
            old_m = c_mask[:, None] & ((src < 0) & (w < W) & ((w * 0 + keep) != 0))[None, :]
            old = tl.load(conv_state_ptr + slot * stride_s_slot + chans[:, None] * stride_s_ch + (W + src)[None, :],
                          mask=old_m, other=0.0)
            new = tl.where(inside[None, :], z.to(conv_state_ptr.dtype.element_ty), old)
            tl.store(conv_state_ptr + slot * stride_s_slot + chans[:, None] * stride_s_ch + w[None, :], new,
                     mask=c_mask[:, None] & (w < W)[None, :])
        # ---- last delayed value projection -----------------------------------------------------
        if HAS_VSTATE:
            if pid_c == 0:
                for s in range(0, VD, BLOCK_C):
                    cols = s + tl.arange(0, BLOCK_C)
                    val = tl.load(v_del_ptr + last * stride_vd + cols, mask=cols < VD, other=0.0)
                    tl.store(value_state_ptr + slot * stride_vs_slot + cols,
                             val.to(value_state_ptr.dtype.element_ty), mask=cols < VD)


def _default_config(d: int, device: torch.device) -> dict:
    return {"BLOCK_T": 16 if device.type != "cuda" else 32, "num_warps": 4 if d <= 64 else 8}


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
    """Same contract as cca_ref.cca_epilogue: returns q (T, Hq, D), k (T, KV, D), v (T, KV, D);
    conv_state (S, C, W) and value_state (S, VD) are updated in place."""
    t, c = qk.shape
    d, t1 = g_weight.shape[1], g_weight.shape[2]
    t0 = dw_weight.shape[-1]
    kv = temp.numel()
    hq = c // d - kv
    w = t0 + t1 - 2
    vd, r2 = v_del.shape[1], cos.shape[-1]
    if w > 8:
        raise ValueError(f"cca_epilogue supports at most 8 conv state columns, got {w}")
    qk, v_cur, v_del = (x if x.stride(-1) == 1 else x.contiguous() for x in (qk, v_cur, v_del))
    cos, sin = cos.contiguous(), sin.contiguous()
    nseq = cu_seqlens.numel() - 1
    q = torch.empty(t, hq, d, dtype=qk.dtype, device=qk.device)
    k = torch.empty(t, kv, d, dtype=qk.dtype, device=qk.device)
    v = torch.empty(t, kv, d, dtype=v_cur.dtype, device=qk.device)
    has_state = conv_state is not None and w > 0
    has_vstate = value_state is not None
    assert (not has_state or conv_state.stride(-1) == 1) and (not has_vstate or value_state.stride(-1) == 1)
    cs = conv_state if has_state else qk  # dummy pointers when absent (never dereferenced)
    vs = value_state if has_vstate else v_del
    keep = (~fresh).to(torch.int32)  # (B,)
    tok_seq = torch.searchsorted(cu_seqlens[1:].to(torch.int32),
                                 torch.arange(t, dtype=torch.int32, device=qk.device), right=True).to(torch.int32)
    cfg = pick_config("cca", qk.device, f"D={d}", t, _default_config(d, qk.device))
    block_d = pow2(d, 16)
    if t:
        cca_qk_kernel[(triton.cdiv(t, cfg["BLOCK_T"]), hq + kv)](
            qk, v_cur, v_del, cos, sin,
            dw_weight.reshape(c, t0).contiguous(), dw_bias, g_weight.contiguous(), g_bias, temp,
            cs, vs, tok_seq, cu_seqlens, state_slots, keep,
            q, k, v,
            t, float(torch.finfo(qk.dtype).eps), math.sqrt(d),
            qk.stride(0), v_cur.stride(0), v_del.stride(0), cos.stride(0),
            cs.stride(0) if has_state else 0, cs.stride(1) if has_state else 0, vs.stride(0) if has_vstate else 0,
            HQ=hq, KV=kv, D=d, R2=r2, VD=vd, T0=t0, T1=t1, HAS_STATE=has_state, HAS_VSTATE=has_vstate,
            BLOCK_T=cfg["BLOCK_T"], BLOCK_D=block_d, UPCAST_DOT=INTERPRET, DOT_PRECISION="ieee",
            num_warps=cfg["num_warps"],
        )
    if (has_state or has_vstate) and t:
        block_c = 256 if qk.device.type == "cuda" else 128
        cca_state_kernel[(nseq, triton.cdiv(c, block_c))](
            qk, v_del, cs, vs, cu_seqlens, state_slots, keep,
            c, qk.stride(0), v_del.stride(0),
            cs.stride(0) if has_state else 0, cs.stride(1) if has_state else 0, vs.stride(0) if has_vstate else 0,
            VD=vd, W=max(w, 1), HAS_STATE=has_state, HAS_VSTATE=has_vstate, BLOCK_C=block_c, BLOCK_W=pow2(w),
        )
    return q, k, v


__all__ = ["cca_epilogue", "cca_qk_kernel", "cca_state_kernel"]
