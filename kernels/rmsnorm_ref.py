"""Plain-PyTorch RMSNorm and the fused ZAYA residual merge + RMSNorm (the oracle for kernels).

Norm semantics follow transformers' ZayaRMSNorm, including its input cast: the (fp32) input is
first rounded to the weight dtype, normalised in fp32, rounded back, then scaled by the weight
(no "1 + w"). vLLM normalises the fp32 residual directly; we follow the transformers oracle.
"""

from __future__ import annotations

import torch


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = weight * rmsnorm(x.to(weight.dtype)).

    x (T, N) any float dtype; weight (N,); returns (T, N) in weight.dtype.
    """
    h = x.to(weight.dtype).float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(weight.dtype)


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
    """ZAYA learned residual merge, then RMSNorm of the merged stream.

    residual' = (branch + hidden_states_bias) * hidden_states_scale + (residual + residual_bias) * residual_scale
    computed in fp32 (as vLLM does; transformers does the branch half in the activation dtype).

    branch (T, H) activation dtype; residual (T, H) fp32; the four merge vectors and weight (H,).
    Returns (residual' (T, H) fp32, rmsnorm(residual', weight) (T, H) weight.dtype).
    """
    merged = (branch.float() + hidden_states_bias.float()) * hidden_states_scale.float()
    merged = merged + (residual.float() + residual_bias.float()) * residual_scale.float()
    return merged, rmsnorm(merged, weight, eps)
