"""The one dispatch point for the ZAYA1 engine's kernel ops.

The model calls `ops.<name>(...)` and never branches on the implementation. The backend is chosen
once, at import: "triton" when CUDA and the Triton kernels are available; otherwise "cpu" (C++ CPU
kernels in `cpu_ops`, compiled on first use) when a C++ compiler is there; otherwise "torch" (the
plain-PyTorch twins in `*_ref.py`). `set_backend("torch" | "cpu" | "triton")` is the one override
hook (tests, benchmarks). A backend module may implement a subset; missing ops fall back to the twin.

Ops (shapes in each twin's docstring; T flat tokens, B sequences, H hidden, Hq/KV heads, D head dim):
    cca_epilogue(qk, v_cur, v_del, cos, sin, dw_weight, dw_bias, g_weight, g_bias, temp,
                 conv_state, value_state, cu_seqlens, state_slots, fresh) -> (q, k, v)   [cca_ref]
    store_kv(k, v, k_cache, v_cache, slot_mapping) -> None                             [attention_ref]
    attention_prefill(q, k, v, k_cache, v_cache, cu_seqlens, seq_lens, block_tables,
                      max_query_len, max_seq_len, scale) -> o (T, Hq, D)               [attention_ref]
    attention_decode(same arguments, one query per sequence) -> o (B, Hq, D)           [attention_ref]
    moe_experts(hidden, expert_ids, gate, gate_up_proj, down_proj) -> (T, H)            [moe_ref]
    rmsnorm(x, weight, eps) -> (T, N)                                                   [rmsnorm_ref]
    merge_rmsnorm(branch, residual, hs_scale, hs_bias, res_scale, res_bias, weight, eps)
                  -> (residual fp32, normed)                                            [rmsnorm_ref]
    lm_head(hidden, weight) -> logits (N, V) fp32                                       [logits_ref]
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from types import ModuleType

import torch

from . import attention_ref, cca_ref, logits_ref, moe_ref, rmsnorm_ref

OP_NAMES = ("cca_epilogue", "store_kv", "attention_prefill", "attention_decode", "moe_experts",
            "rmsnorm", "merge_rmsnorm", "lm_head")
_TWINS: dict[str, ModuleType] = {
    "cca_epilogue": cca_ref, "store_kv": attention_ref, "attention_prefill": attention_ref,
    "attention_decode": attention_ref, "moe_experts": moe_ref, "rmsnorm": rmsnorm_ref,
    "merge_rmsnorm": rmsnorm_ref, "lm_head": logits_ref,
}
# module holding the Triton implementations; imported only when selected
TRITON_MODULE = "rsa.kernels.triton_ops"
BACKENDS = ("torch", "cpu", "triton")

# rebound by set_backend; the twins until then
cca_epilogue = cca_ref.cca_epilogue
store_kv = attention_ref.store_kv
attention_prefill = attention_ref.attention_prefill
attention_decode = attention_ref.attention_decode
moe_experts = moe_ref.moe_experts
rmsnorm = rmsnorm_ref.rmsnorm
merge_rmsnorm = rmsnorm_ref.merge_rmsnorm
lm_head = logits_ref.lm_head
_backend = "torch"


def _triton_module() -> ModuleType | None:
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        return importlib.import_module(TRITON_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == TRITON_MODULE:
            return None
        raise


def _cpu_module() -> ModuleType | None:
    from . import cpu_ops

    return cpu_ops if cpu_ops.load() is not None else None


def set_backend(name: str) -> None:
    """Select the implementation of every op: "torch" (the twins), "cpu" (C++ CPU kernels) or "triton"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    impl = {"torch": lambda: None, "cpu": _cpu_module, "triton": _triton_module}[name]()
    if name == "triton" and impl is None:
        raise ValueError(f"kernel backend 'triton' is unavailable (needs triton and {TRITON_MODULE})")
    if name == "cpu" and impl is None:
        raise ValueError("kernel backend 'cpu' is unavailable (its C++ kernels did not build; see the log)")
    for op in OP_NAMES:
        globals()[op] = getattr(impl, op, None) or getattr(_TWINS[op], op)
    _backend = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """`with use_backend("torch"): ...` runs the block on that backend and restores the previous
    one afterwards, also when the block raises. Not thread-safe: the backend is process-wide."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def default_backend() -> str:
    """"triton" with CUDA and Triton, else "cpu" when its kernels build, else "torch"."""
    if torch.cuda.is_available() and _triton_module() is not None:
        return "triton"
    return "cpu" if _cpu_module() is not None else "torch"


set_backend(default_backend())
