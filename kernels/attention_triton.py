"""Triton causal GQA attention over a flat varlen batch and a paged K/V cache (twin: attention_ref.py).

- `store_kv_kernel`: one program per new token scatters its (KV, D) keys/values into the cache row
  `slot_mapping[t]` (-1: skipped).
- `prefill_attention_kernel`: flash attention (online softmax in base 2, fp32 accumulation), one
  program per (BLOCK_M query tokens, sequence, kv head). The GROUP query heads that share a kv head
  are packed into the rows of one tile (BLOCK_M * GROUP_PAD rows), so each K/V tile is read once for
  the whole group, as in vLLM's unified attention. Keys come from the cache through the block table
  (any block size: the table is looked up per key position) or, without a cache, from k/v directly.
- `decode_attention_kernel` + `decode_reduce_kernel`: flash decoding. One program per (sequence,
  kv head, split of the context); the splits write partial outputs and log-sum-exps in fp32 and a
  second kernel combines them, so a small batch still fills the GPU and a long context streams K/V
  at full bandwidth.
Scores and P @ V run on q's dtype (a cache wider than q is rounded to it), accumulating in fp32.
Not covered: sliding windows, soft-capping, alibi, fp8 caches.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_utils import INTERPRET, dot_precision, mma, pick_config, pow2

@triton.jit
def store_kv_kernel(
    # pointers
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    # sizes
    block_size,
    # strides
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cb, stride_cs, stride_ch,
    # meta-parameters
    KV: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """k, v (T, KV, D); k_cache, v_cache (num_blocks, block_size, KV, D) same strides; slot (T,) int64.
    Grid (T,)."""
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t)
    if slot >= 0:
        h = tl.arange(0, BLOCK_H)
        d = tl.arange(0, BLOCK_D)
        mask = (h < KV)[:, None] & (d < D)[None, :]
        dst = (slot // block_size) * stride_cb + (slot % block_size) * stride_cs + h[:, None] * stride_ch + d[None, :]
        k = tl.load(k_ptr + t * stride_kt + h[:, None] * stride_kh + d[None, :], mask=mask)
        v = tl.load(v_ptr + t * stride_vt + h[:, None] * stride_vh + d[None, :], mask=mask)
        tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _key_rows(bt_ptr, b, pos, kmask, q_start, stride_bt, stride_cb, stride_cs, block_size, HAS_CACHE: tl.constexpr,
              stride_kt):
    """Offsets (BLOCK_N,) of the key rows at positions `pos`: cache rows via the block table, else k rows."""
    if HAS_CACHE:
        blk = tl.load(bt_ptr + b * stride_bt + pos // block_size, mask=kmask, other=0).to(tl.int64)
        return blk * stride_cb + (pos % block_size) * stride_cs
    else:
        return (q_start + pos).to(tl.int64) * stride_kt


@triton.jit
def prefill_attention_kernel(
    # pointers
    q_ptr, k_ptr, v_ptr, out_ptr, cu_ptr, seq_lens_ptr, bt_ptr,
    # sizes
    block_size, scale,
    # strides (key strides are the cache's (block, offset, head) with a cache, k's (token, -, head) without)
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    # meta-parameters
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_CACHE: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """q (T, Hq, D); k, v: cache (num_blocks, block_size, KV, D) or (T, KV, D); out (T, Hq, D);
    cu (B+1,) int32; seq_lens (B,) int32 (ignored without a cache); bt (B, max_blocks) int32.
    Grid (cdiv(max_query_len, BLOCK_M), B, KV)."""
    BLOCK_R: tl.constexpr = BLOCK_M * GROUP_PAD
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    kvh = tl.program_id(2)
    q_start = tl.load(cu_ptr + b)
    n = tl.load(cu_ptr + b + 1) - q_start
    if pid_m * BLOCK_M < n:
        if HAS_CACHE:
            seq_len = tl.load(seq_lens_ptr + b)
        else:
            seq_len = n
        ctx = seq_len - n
        # ---- query tile: BLOCK_M tokens x the GROUP heads of this kv head ----------------------
        rows = tl.arange(0, BLOCK_R)
        tok = pid_m * BLOCK_M + rows // GROUP_PAD
        head = kvh * GROUP + rows % GROUP_PAD
        row_valid = (tok < n) & (rows % GROUP_PAD < GROUP)
        d = tl.arange(0, BLOCK_D)
        d_mask = d < D
        q_off = (q_start + tok).to(tl.int64)[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :]
        q = tl.load(q_ptr + q_off, mask=row_valid[:, None] & d_mask[None, :], other=0.0)
        qpos = ctx + tok
        qk_scale = scale * 1.4426950408889634  # exp(x) = exp2(x * log2 e)

        # ---- online softmax over the visible keys ------------------------------------------
        m_i = tl.full((BLOCK_R,), -1.0e30, dtype=tl.float32)
        l_i = tl.zeros((BLOCK_R,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
        end = tl.minimum(seq_len, ctx + tl.minimum(n, (pid_m + 1) * BLOCK_M))
        for start_n in range(0, end, BLOCK_N):
            pos = start_n + tl.arange(0, BLOCK_N)
            kmask = pos < end
            k_rows = _key_rows(bt_ptr, b, pos, kmask, q_start, stride_bt, stride_kb, stride_ks, block_size,
                               HAS_CACHE, stride_kb)
            v_rows = _key_rows(bt_ptr, b, pos, kmask, q_start, stride_bt, stride_vb, stride_vs, block_size,
                               HAS_CACHE, stride_vb)
            kv_mask = kmask[:, None] & d_mask[None, :]
            k = tl.load(k_ptr + k_rows[:, None] + kvh * stride_kh + d[None, :], mask=kv_mask, other=0.0)
            s = mma(q, tl.trans(k.to(q.dtype)), tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32),
                    UPCAST_DOT, DOT_PRECISION) * qk_scale
            visible = (pos[None, :] <= qpos[:, None]) & kmask[None, :]
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + v_rows[:, None] + kvh * stride_vh + d[None, :], mask=kv_mask, other=0.0)
            acc = mma(p.to(q.dtype), v.to(q.dtype), acc * alpha[:, None], UPCAST_DOT, DOT_PRECISION)
            m_i = m_new

        # ---- normalise and store ----------------------------------------------------------
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        o_off = (q_start + tok).to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :]
        tl.store(out_ptr + o_off, out.to(out_ptr.dtype.element_ty), mask=row_valid[:, None] & d_mask[None, :])


@triton.jit
def decode_attention_kernel(
    # pointers
    q_ptr, k_cache_ptr, v_cache_ptr, part_o_ptr, part_lse_ptr, seq_lens_ptr, bt_ptr,
    # sizes
    block_size, scale, chunk,
    # strides
    stride_qt, stride_qh,
    stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    # meta-parameters
    GROUP: tl.constexpr, D: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """q (B, Hq, D); caches (num_blocks, block_size, KV, D); part_o (B, Hq, NUM_SPLITS, D) fp32;
    part_lse (B, Hq, NUM_SPLITS) fp32 (base 2; -inf for an empty split); seq_lens (B,); bt (B, max_blocks).
    Split s covers key positions [s * chunk, min((s + 1) * chunk, seq_len)). Grid (B, KV, NUM_SPLITS)."""
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + b)
    # ---- the GROUP query heads of this kv head (rows padded to the MMA minimum) --------------
    rows = tl.arange(0, BLOCK_R)
    row_valid = rows < GROUP
    head = kvh * GROUP + rows
    d = tl.arange(0, BLOCK_D)
    d_mask = d < D
    q = tl.load(q_ptr + b.to(tl.int64) * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_valid[:, None] & d_mask[None, :], other=0.0)
    qk_scale = scale * 1.4426950408889634

    # ---- online softmax over this split's keys --------------------------------------------
    m_i = tl.full((BLOCK_R,), -1.0e30, dtype=tl.float32)
    l_i = tl.zeros((BLOCK_R,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    lo = split * chunk
    hi = tl.minimum(seq_len, lo + chunk)
    for start_n in range(lo, hi, BLOCK_N):
        pos = start_n + tl.arange(0, BLOCK_N)
        kmask = pos < hi
        blk = tl.load(bt_ptr + b * stride_bt + pos // block_size, mask=kmask, other=0).to(tl.int64)
        off = pos % block_size
        kv_mask = kmask[:, None] & d_mask[None, :]
        k = tl.load(k_cache_ptr + (blk * stride_kb + off * stride_ks)[:, None] + kvh * stride_kh + d[None, :],
                    mask=kv_mask, other=0.0)
        s = mma(q, tl.trans(k.to(q.dtype)), tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32),
                UPCAST_DOT, DOT_PRECISION) * qk_scale
        s = tl.where(kmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_cache_ptr + (blk * stride_vb + off * stride_vs)[:, None] + kvh * stride_vh + d[None, :],
                    mask=kv_mask, other=0.0)
        acc = mma(p.to(q.dtype), v.to(q.dtype), acc * alpha[:, None], UPCAST_DOT, DOT_PRECISION)
        m_i = m_new

    # ---- partial output and log-sum-exp of this split ---------------------------------------
    nonempty = l_i > 0
    o = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, m_i + tl.log2(tl.where(nonempty, l_i, 1.0)), float("-inf"))
    part = (b * (GROUP * tl.num_programs(1)) + head).to(tl.int64) * NUM_SPLITS + split
    tl.store(part_o_ptr + part[:, None] * D + d[None, :], o, mask=row_valid[:, None] & d_mask[None, :])
    tl.store(part_lse_ptr + part, lse, mask=row_valid)


@triton.jit
def decode_reduce_kernel(
    # pointers
    part_o_ptr, part_lse_ptr, out_ptr,
    # strides
    stride_ot, stride_oh,
    # meta-parameters
    D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Combine the splits: part_o (B, Hq, NUM_SPLITS, D), part_lse (B, Hq, NUM_SPLITS) -> out (B, Hq, D).
    Grid (B, Hq)."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    base = (b * tl.num_programs(1) + h).to(tl.int64) * NUM_SPLITS
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(part_lse_ptr + base + s, mask=s < NUM_SPLITS, other=float("-inf"))
    m = tl.max(lse, axis=0)
    w = tl.exp2(lse - m)
    o = tl.load(part_o_ptr + (base + s)[:, None] * D + d[None, :], mask=(s < NUM_SPLITS)[:, None] & (d < D)[None, :],
                other=0.0)
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(out_ptr + b.to(tl.int64) * stride_ot + h * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < D)


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Same contract as attention_ref.store_kv."""
    t, kv, d = k.shape
    if t == 0:
        return
    assert k_cache.stride() == v_cache.stride() and k.stride(-1) == v.stride(-1) == k_cache.stride(-1) == 1
    store_kv_kernel[(t,)](
        k, v, k_cache, v_cache, slot_mapping, k_cache.shape[1],
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        KV=kv, D=d, BLOCK_H=pow2(kv), BLOCK_D=pow2(d),
    )


def _prefill_config(device: torch.device, d: int) -> dict:
    if device.type != "cuda":
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    return {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4 if d <= 64 else 8, "num_stages": 2}


def attention_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
) -> torch.Tensor:
    """Same contract as attention_ref.attention_prefill -> (T, Hq, D) in q.dtype."""
    t, hq, d = q.shape
    out = torch.empty_like(q)
    if t == 0:
        return out
    has_cache = k_cache is not None
    keys, values = (k_cache, v_cache) if has_cache else (k, v)
    kv = keys.shape[-2]
    group = hq // kv
    # key strides as (block, offset-in-block, head); without a cache a "block" is one token
    ks = (keys.stride(0), keys.stride(1), keys.stride(2)) if has_cache else (keys.stride(0), 0, keys.stride(1))
    vs = (values.stride(0), values.stride(1), values.stride(2)) if has_cache else (values.stride(0), 0, values.stride(1))
    cfg = pick_config("attention_prefill", q.device, f"G={group},D={d}", max_query_len, _prefill_config(q.device, d))
    grid = (triton.cdiv(max_query_len, cfg["BLOCK_M"]), cu_seqlens.numel() - 1, kv)
    prefill_attention_kernel[grid](
        q, keys, values, out, cu_seqlens, seq_lens, block_tables,
        keys.shape[1] if has_cache else 1, scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), *ks, *vs, block_tables.stride(0),
        GROUP=group, GROUP_PAD=pow2(group), D=d, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=pow2(d, 16), HAS_CACHE=has_cache, UPCAST_DOT=INTERPRET, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


def _decode_config(device: torch.device, d: int) -> dict:
    if device.type != "cuda":
        return {"BLOCK_N": 16, "num_warps": 4, "num_stages": 1, "target_programs": 8, "max_splits": 4}
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return {"BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "target_programs": 3 * sms, "max_splits": 32}


def num_splits(batch: int, kv: int, max_seq_len: int, block_n: int, target_programs: int, max_splits: int) -> int:
    """Context splits per (sequence, kv head) so that the launch has about `target_programs` programs."""
    return max(1, min(max_splits, triton.cdiv(target_programs, batch * kv), triton.cdiv(max_seq_len, block_n)))


def attention_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
) -> torch.Tensor:
    """Same contract as attention_ref.attention_decode -> (B, Hq, D) in q.dtype."""
    if k_cache is None:  # no context: each token sees only itself, the prefill kernel's no-cache case
        return attention_prefill(q, k, v, None, None, cu_seqlens, seq_lens, block_tables, 1, 1, scale)
    b, hq, d = q.shape
    out = torch.empty_like(q)
    if b == 0:
        return out
    kv = k_cache.shape[2]
    group = hq // kv
    cfg = pick_config("attention_decode", q.device, f"G={group},D={d}", b, _decode_config(q.device, d))
    splits = num_splits(b, kv, max_seq_len, cfg["BLOCK_N"], cfg["target_programs"], cfg["max_splits"])
    chunk = triton.cdiv(triton.cdiv(max_seq_len, splits), cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    part_o = torch.empty(b, hq, splits, d, dtype=torch.float32, device=q.device)
    part_lse = torch.empty(b, hq, splits, dtype=torch.float32, device=q.device)
    decode_attention_kernel[(b, kv, splits)](
        q, k_cache, v_cache, part_o, part_lse, seq_lens, block_tables,
        k_cache.shape[1], scale, chunk,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        GROUP=group, D=d, NUM_SPLITS=splits, BLOCK_R=pow2(group, 16), BLOCK_N=cfg["BLOCK_N"], BLOCK_D=pow2(d, 16),
        UPCAST_DOT=INTERPRET, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    decode_reduce_kernel[(b, hq)](
        part_o, part_lse, out, out.stride(0), out.stride(1),
        D=d, NUM_SPLITS=splits, BLOCK_S=pow2(splits), BLOCK_D=pow2(d),
    )
    return out


__all__ = ["attention_decode", "attention_prefill", "store_kv"]
