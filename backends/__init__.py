"""Backends: the one interface (`Backend`) and its implementations.

Heavy implementations (the embedded engine, the transformers backend) import torch lazily,
on first attribute access, so `import rsa` stays fast and works without the engine extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    Backend,
    BackendError,
    BackendStatusError,
    BackendTimeout,
    BackendUnavailable,
    BaseBackend,
    ChatMessage,
    ContextLengthExceeded,
    FinishReason,
    Generation,
    GenerationRequest,
    InvalidRequest,
    build_trace,
    split_think,
)
from .scripted import ScriptedBackend

# name -> module that defines it, imported on first use
_LAZY = {
    "OpenAIBackend": ".openai",
    "RequestRejected": ".openai",
    "backend_from_url": ".openai",
    "EngineBackend": ".engine_backend",
    "TransformersBackend": ".transformers_backend",
}

__all__ = [
    "Backend",
    "BackendError",
    "BackendStatusError",
    "BackendTimeout",
    "BackendUnavailable",
    "BaseBackend",
    "ChatMessage",
    "ContextLengthExceeded",
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "InvalidRequest",
    "ScriptedBackend",
    "build_trace",
    "default_backend",
    "split_think",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name], __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("rsa.backends"):
                raise AttributeError(f"rsa.backends.{name} is not implemented yet") from exc
            raise
        return getattr(module, name)
    raise AttributeError(f"module 'rsa.backends' has no attribute {name!r}")


def default_backend() -> Backend:
    """The embedded default model's backend (used by `rsa.solve` when no backend is given)."""
    raise BackendUnavailable(
        "no embedded default model is available yet; pass a backend: "
        "rsa.solve(problem, backend='http://host:port/v1') for an OpenAI-compatible server "
        "(vLLM), or a Backend object such as rsa.backends.ScriptedBackend(...)"
    )
