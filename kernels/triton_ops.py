"""The Triton implementations `rsa.kernels.ops` selects with set_backend("triton").

Every op here has the same signature as its plain-PyTorch twin; an op missing here falls back to
the twin. `lm_head` is deliberately absent: it is one dense GEMM, which cuBLAS already runs at the
matmul roofline, so the twin (chunked fp32 matmul) is the implementation on every backend.
"""

from __future__ import annotations

from .attention_triton import attention_decode, attention_prefill, store_kv
from .cca_triton import cca_epilogue
from .moe_triton import moe_experts
from .rmsnorm_triton import merge_rmsnorm, rmsnorm

__all__ = ["attention_decode", "attention_prefill", "cca_epilogue", "merge_rmsnorm", "moe_experts", "rmsnorm",
           "store_kv"]
