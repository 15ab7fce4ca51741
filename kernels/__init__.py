"""Triton kernels for the ZAYA1 engine (CCA and MoE), each beside its plain-PyTorch twin.

`rsa.kernels.ops` is the one dispatch point the model calls. This package imports neither torch
nor triton at import time; `set_backend` / `get_backend` / `use_backend` load the dispatch module on
first use.
"""

from __future__ import annotations


def set_backend(name: str) -> None:
    """Choose the implementation of every kernel op: "torch" (plain-PyTorch twins), "cpu" (C++ CPU
    kernels) or "triton"."""
    from . import ops

    ops.set_backend(name)


def use_backend(name: str):  # noqa: ANN201 (a context manager)
    """`with use_backend("torch"): ...`: that backend inside the block, the previous one after."""
    from . import ops

    return ops.use_backend(name)


def get_backend() -> str:
    from . import ops

    return ops.get_backend()


__all__ = ["get_backend", "set_backend", "use_backend"]
