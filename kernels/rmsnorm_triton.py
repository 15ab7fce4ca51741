"""Triton RMSNorm and the fused ZAYA residual merge + RMSNorm (twins: rmsnorm_ref.py).

One program per ROWS token rows (1 for wide rows, more for narrow ones such as the router's 256);
each whole row sits in the tile, so the merge, the mean of squares and the scaled output take one
read of each input and one write of each output. Rounding
follows the twin step by step (input rounded to the weight dtype, normalised in fp32, rounded, times
the weight), so fp32 and bf16 results match it to the last ulp or two.
Not covered: rows wider than 65536 elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_utils import pow2


@triton.jit
def _rmsnorm_row(h, w_ptr, cols, mask, n_cols, eps, OUT_DTYPE: tl.constexpr):
    """h (ROWS, BLOCK_N) fp32 rows already rounded to the weight dtype -> weight * rmsnorm(h), OUT_DTYPE."""
    inv = tl.rsqrt(tl.sum(h * h, axis=1) / n_cols + eps)
    y = (h * inv[:, None]).to(OUT_DTYPE).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    return (w[None, :] * y).to(OUT_DTYPE)


@triton.jit
def rmsnorm_kernel(
    # pointers
    x_ptr, w_ptr, out_ptr,
    # sizes
    n_rows, n_cols, eps,
    # strides
    stride_x, stride_out,
    # meta-parameters
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """x (T, N) any float; w (N,); out (T, N) in w's dtype. Grid (cdiv(T, ROWS),)."""
    row = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_N)
    mask = (row < n_rows) & (cols < n_cols)[None, :]
    # ---- load, round to the weight dtype (the transformers input cast) --------------------
    x = tl.load(x_ptr + row * stride_x + cols[None, :], mask=mask, other=0.0)
    h = x.to(w_ptr.dtype.element_ty).to(tl.float32)
    # ---- normalise and scale ----------------------------------------------------------
    y = _rmsnorm_row(h, w_ptr, cols, mask, n_cols, eps, w_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + cols[None, :], y, mask=mask)


@triton.jit
def merge_rmsnorm_kernel(
    # pointers
    branch_ptr, res_ptr, hs_scale_ptr, hs_bias_ptr, res_scale_ptr, res_bias_ptr, w_ptr,
    res_out_ptr, out_ptr,
    # sizes
    n_rows, n_cols, eps,
    # strides
    stride_branch, stride_res, stride_res_out, stride_out,
    # meta-parameters
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """branch (T, H); residual (T, H) fp32; five (H,) vectors; res_out (T, H) fp32, out (T, H) w dtype.
    Grid (cdiv(T, ROWS),)."""
    row = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_N)
    c_mask = cols < n_cols
    mask = (row < n_rows) & c_mask[None, :]
    # ---- learned residual merge, fp32 -------------------------------------------------
    b = tl.load(branch_ptr + row * stride_branch + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    r = tl.load(res_ptr + row * stride_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    hs_s = tl.load(hs_scale_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    hs_b = tl.load(hs_bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    r_s = tl.load(res_scale_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    r_b = tl.load(res_bias_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    merged = (b + hs_b) * hs_s + (r + r_b) * r_s
    tl.store(res_out_ptr + row * stride_res_out + cols[None, :], merged, mask=mask)
    # ---- RMSNorm of the merged stream (rounded to the weight dtype first) -----------------
    h = merged.to(w_ptr.dtype.element_ty).to(tl.float32)
    y = _rmsnorm_row(h, w_ptr, cols, mask, n_cols, eps, w_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + cols[None, :], y, mask=mask)


def _launch(t: int, n: int, device: torch.device) -> tuple[tuple[int], dict]:
    """Grid and meta-parameters: about 4K elements per program on the GPU (1 row at H = 2048 and up,
    16 rows of the 256-wide router), 16 rows per program in the interpreter (fewer, bigger steps)."""
    block_n = pow2(n)
    rows = 16 if device.type != "cuda" else min(16, max(1, 4096 // block_n))
    return (triton.cdiv(t, rows),), {"ROWS": rows, "BLOCK_N": block_n, "num_warps": 4 if block_n <= 2048 else 8}


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Same contract as rmsnorm_ref.rmsnorm: x (T, N) -> (T, N) in weight.dtype."""
    x = _rows(x)
    t, n = x.shape
    out = torch.empty(t, n, dtype=weight.dtype, device=x.device)
    if t:
        grid, meta = _launch(t, n, x.device)
        rmsnorm_kernel[grid](x, weight, out, t, n, eps, x.stride(0), out.stride(0), **meta)
    return out


def merge_rmsnorm(
    branch: torch.Tensor,
    residual: torch.Tensor,
    hidden_states_scale: torch.Tensor,
    hidden_states_bias: torch.Tensor,
    residual_scale: torch.Tensor,
    residual_bias: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as rmsnorm_ref.merge_rmsnorm -> (residual' (T, H) fp32, normed (T, H) weight.dtype)."""
    branch, residual = _rows(branch), _rows(residual)
    t, n = branch.shape
    res_out = torch.empty(t, n, dtype=torch.float32, device=branch.device)
    out = torch.empty(t, n, dtype=weight.dtype, device=branch.device)
    if t:
        grid, meta = _launch(t, n, branch.device)
        merge_rmsnorm_kernel[grid](
            branch, residual, hidden_states_scale, hidden_states_bias, residual_scale, residual_bias, weight,
            res_out, out, t, n, eps,
            branch.stride(0), residual.stride(0), res_out.stride(0), out.stride(0), **meta,
        )
    return res_out, out
