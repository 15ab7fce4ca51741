"""Triton top-1 SwiGLU experts with a skip slot (twin: moe_ref.moe_experts), in the vLLM fused-MoE style.

Tokens are grouped by expert and each expert's run is padded to a multiple of BLOCK_M
(`align_block_size`, plain torch, sync-free: no host round trip, so it can sit in a CUDA graph).
Every BLOCK_M-row block then belongs to one expert; blocks past the last expert (and the skip slot
E) are marked E and exit at once, so experts with zero tokens cost nothing and T = 1 is one block.
Two grouped GEMM kernels (L2-friendly GROUP_M program order, fp32 accumulation):

1. `moe_gate_up_kernel`: [g; u] = W_gu[e] @ h for a (BLOCK_M tokens, BLOCK_N of I) tile, both halves
   from one read of the token rows, then silu(g) * u written to the (T, I) intermediate.
2. `moe_down_kernel`: y = W_dn[e] @ act, times the router probability, scattered to the token's row.

Roundings follow the twin (GEMM outputs, silu and the product rounded to the activation dtype).
Tuned tiles live in configs/moe.json (keyed by device, E, H, I and token-count bucket).
Not covered: top-k > 1, quantised weights, expert parallelism.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_utils import INTERPRET, dot_precision, mma, pick_config


@triton.jit
def _tile_ids(pid, num_blocks_m, num_blocks_n, GROUP_M: tl.constexpr):
    """Grouped (swizzled) program order: GROUP_M row blocks share each column block while it is in L2."""
    in_group = GROUP_M * num_blocks_n
    first_m = (pid // in_group) * GROUP_M
    size_m = tl.minimum(num_blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    return pid_m, pid_n


@triton.jit
def moe_gate_up_kernel(
    # pointers
    h_ptr, w_ptr, act_ptr, sorted_ids_ptr, block_expert_ptr,
    # sizes
    num_tokens, num_blocks_m, hidden, inter,
    # strides
    stride_ht, stride_we, stride_wn, stride_at,
    # meta-parameters
    NUM_EXPERTS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """h (T, H); w = gate_up_proj (E, 2I, H), rows [0, I) gate, [I, 2I) up; act (T, I) silu(g) * u;
    sorted_ids (num_blocks_m * BLOCK_M,) token per padded row (T = padding);
    block_expert (num_blocks_m,) expert per row block (E = nothing to do).
    Grid (num_blocks_m * cdiv(I, BLOCK_N),)."""
    pid_m, pid_n = _tile_ids(tl.program_id(0), num_blocks_m, tl.cdiv(inter, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < NUM_EXPERTS:
        # ---- the block's tokens and this tile's columns of I --------------------------------
        tok = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
        t_mask = tok < num_tokens
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < inter
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = h_ptr + tok.to(tl.int64)[:, None] * stride_ht + offs_k[None, :]
        w_ptrs = w_ptr + e.to(tl.int64) * stride_we + offs_n[None, :] * stride_wn + offs_k[:, None]  # (K, N) gate
        up_shift = inter * stride_wn
        # ---- both GEMMs over H, sharing the token tile -----------------------------------------
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, hidden, BLOCK_K):
            k_mask = offs_k < hidden - k0
            a = tl.load(a_ptrs, mask=t_mask[:, None] & k_mask[None, :], other=0.0)
            w_mask = k_mask[:, None] & n_mask[None, :]
            wg = tl.load(w_ptrs, mask=w_mask, other=0.0)
            wu = tl.load(w_ptrs + up_shift, mask=w_mask, other=0.0)
            acc_g = mma(a, wg, acc_g, UPCAST_DOT, DOT_PRECISION)
            acc_u = mma(a, wu, acc_u, UPCAST_DOT, DOT_PRECISION)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        # ---- silu(g) * u, rounded like the twin ---------------------------------------------
        dt = act_ptr.dtype.element_ty
        g = acc_g.to(dt).to(tl.float32)
        u = acc_u.to(dt).to(tl.float32)
        act = (g * tl.sigmoid(g)).to(dt).to(tl.float32) * u
        tl.store(act_ptr + tok.to(tl.int64)[:, None] * stride_at + offs_n[None, :], act.to(dt),
                 mask=t_mask[:, None] & n_mask[None, :])


@triton.jit
def moe_down_kernel(
    # pointers
    act_ptr, w_ptr, gate_ptr, out_ptr, sorted_ids_ptr, block_expert_ptr,
    # sizes
    num_tokens, num_blocks_m, hidden, inter,
    # strides
    stride_at, stride_we, stride_wn, stride_ot,
    # meta-parameters
    NUM_EXPERTS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """act (T, I); w = down_proj (E, H, I); gate (T,) router probability; out (T, H), rows of routed
    tokens written (skip tokens keep the caller's zeros). Grid (num_blocks_m * cdiv(H, BLOCK_N),)."""
    pid_m, pid_n = _tile_ids(tl.program_id(0), num_blocks_m, tl.cdiv(hidden, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < NUM_EXPERTS:
        tok = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
        t_mask = tok < num_tokens
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hidden
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = act_ptr + tok.to(tl.int64)[:, None] * stride_at + offs_k[None, :]
        w_ptrs = w_ptr + e.to(tl.int64) * stride_we + offs_n[None, :] * stride_wn + offs_k[:, None]  # (K, N)
        # ---- GEMM over I --------------------------------------------------------------------
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, inter, BLOCK_K):
            k_mask = offs_k < inter - k0
            a = tl.load(a_ptrs, mask=t_mask[:, None] & k_mask[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            acc = mma(a, w, acc, UPCAST_DOT, DOT_PRECISION)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        # ---- scale by the router probability (fp32) and scatter to the token rows ---------------
        dt = out_ptr.dtype.element_ty
        gate = tl.load(gate_ptr + tok, mask=t_mask, other=0.0).to(tl.float32)
        y = acc.to(dt).to(tl.float32) * gate[:, None]
        tl.store(out_ptr + tok.to(tl.int64)[:, None] * stride_ot + offs_n[None, :], y.to(dt),
                 mask=t_mask[:, None] & n_mask[None, :])


def align_block_size(expert_ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group tokens by expert, each expert's run padded to a multiple of block_m (sync-free torch).

    T tokens, E experts, NB = cdiv(T + min(E, T) * (block_m - 1), block_m) row blocks (an upper bound).
    expert_ids (T,) in [0, E] (E = skip) -> sorted_ids (NB * block_m,) int32 token of each padded row
    (T = padding), block_expert (NB,) int32 expert of each row block (E = past the end, nothing to do).
    """
    t, dev = expert_ids.numel(), expert_ids.device
    ids = expert_ids.long()
    nb = triton.cdiv(t + min(num_experts, t) * (block_m - 1), block_m)
    counts = torch.zeros(num_experts + 1, dtype=torch.long, device=dev).scatter_add_(0, ids, torch.ones_like(ids))
    padded = (counts + block_m - 1) // block_m * block_m  # (E+1,)
    padded[num_experts] = 0
    ends = padded.cumsum(0)  # (E+1,)
    order = torch.argsort(ids, stable=True)  # (T,) tokens by expert, skip tokens last
    sorted_e = ids[order]  # (T,)
    rank = torch.arange(t, device=dev) - (counts.cumsum(0) - counts)[sorted_e]  # (T,) index within its expert
    dest = torch.where(sorted_e < num_experts, ends[sorted_e] - padded[sorted_e] + rank, nb * block_m)  # (T,)
    sorted_ids = torch.full((nb * block_m + 1,), t, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))  # skip tokens land in the dropped last row
    starts = torch.arange(nb, device=dev) * block_m  # (NB,)
    block_expert = torch.searchsorted(ends[:num_experts].contiguous(), starts, right=True).to(torch.int32)  # (NB,)
    return sorted_ids[:-1], block_expert


def _default_config(device: torch.device, t: int) -> dict:
    if device.type != "cuda":
        return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4, "num_warps": 4, "num_stages": 1}
    if t <= 64:  # decode: a few tokens per expert, weight-streaming bound
        return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1, "num_warps": 4, "num_stages": 4}
    return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}


def moe_experts(
    hidden: torch.Tensor,
    expert_ids: torch.Tensor,
    gate: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """Same contract as moe_ref.moe_experts: (T, H) in hidden.dtype, skip tokens (id E) give 0."""
    # T tokens, E experts, H hidden, I expert FFN
    t, h = hidden.shape
    e, i = gate_up_proj.shape[0], down_proj.shape[2]
    out = torch.zeros_like(hidden)  # (T, H)
    if t == 0:
        return out
    hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
    gate_up_proj, down_proj = gate_up_proj.contiguous(), down_proj.contiguous()
    cfg = pick_config("moe", hidden.device, f"E={e},H={h},I={i}", t, _default_config(hidden.device, t))
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    sorted_ids, block_expert = align_block_size(expert_ids, e, bm)  # (NB * BM,), (NB,)
    nb = block_expert.numel()
    act = torch.empty(t, i, dtype=hidden.dtype, device=hidden.device)  # (T, I)
    meta = dict(NUM_EXPERTS=e, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"], UPCAST_DOT=INTERPRET,
                DOT_PRECISION=dot_precision(hidden.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    moe_gate_up_kernel[(nb * triton.cdiv(i, bn),)](
        hidden, gate_up_proj, act, sorted_ids, block_expert,
        t, nb, h, i,
        hidden.stride(0), gate_up_proj.stride(0), gate_up_proj.stride(1), act.stride(0), **meta,
    )
    moe_down_kernel[(nb * triton.cdiv(h, bn),)](
        act, down_proj, gate, out, sorted_ids, block_expert,
        t, nb, h, i,
        act.stride(0), down_proj.stride(0), down_proj.stride(1), out.stride(0), **meta,
    )
    return out


__all__ = ["align_block_size", "moe_experts"]
