"""Backends: the one interface (`Backend`) and its implementations.

Heavy implementations (the embedded engine, the transformers backend) import torch lazily,
on first attribute access, so `import rsa` stays fast and works without the engine extra.
"""

from __future__ import annotations

import importlib
from pathlib import Path
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
    "NANO_DIR",
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


# the shipped default model and its RSA preset (package data; reading it needs no torch)
NANO_DIR = Path(__file__).resolve().parent / "zaya1" / "nano"


def default_backend() -> Backend:
    """The embedded default: ZAYA1-nano on our engine (used when no backend is given)."""
    try:
        from .engine_backend import EngineBackend
    except ImportError as exc:
        raise BackendUnavailable(
            f"the embedded default model needs the engine extra ({exc}); install it with "
            "pip install 'markovian-rsa[engine]', or pass a backend: backend='http://host:port/v1' "
            "for an OpenAI-compatible server (vLLM), or a Backend object such as rsa.backends.ScriptedBackend(...)"
        ) from None
    if not (NANO_DIR / "config.json").exists():
        raise BackendUnavailable(f"the shipped default model is missing from {NANO_DIR}; reinstall markovian-rsa")
    return EngineBackend(str(NANO_DIR))
