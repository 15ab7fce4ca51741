"""Backend SPEC strings of the `rsa` command line, turned into Backend objects.

| SPEC | backend |
|---|---|
| `engine` | the embedded default model (`rsa.backends.default_backend()`) |
| `engine:PATH` | the embedded engine on a local checkpoint (`rsa.backends.EngineBackend(PATH)`) |
| `http://...`, `https://...` | an OpenAI-compatible server; give the flag again for replicas |
| `hf:PATH` | a transformers model (`rsa.backends.TransformersBackend(PATH)`) |
| `import:MODULE:FACTORY` | `FACTORY()` from an importable module: custom backends, test doubles |

Implementations are imported only when a spec names them, so a missing optional one (or
one not built yet) is a clear `BackendSpecError`, not an ImportError at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from rsa.backends.base import Backend, BackendUnavailable

__all__ = ["BackendSpecError", "build_backend"]

FORMS = "engine, engine:PATH, http(s)://URL (repeatable), hf:PATH or import:MODULE:FACTORY"


class BackendSpecError(ValueError):
    """A backend SPEC that cannot be turned into a backend; the message says why."""


def _lazy_class(name: str, spec: str) -> type:
    import rsa.backends

    try:
        return getattr(rsa.backends, name)
    except (ImportError, AttributeError) as exc:
        raise BackendSpecError(f"backend {spec!r} needs rsa.backends.{name}, which is not available: {exc}") from None


def _from_factory(spec: str) -> object:
    module_name, _, factory_name = spec[len("import:"):].rpartition(":")
    if not module_name or not factory_name:
        raise BackendSpecError(f"backend {spec!r}: expected import:MODULE:FACTORY, e.g. import:my_pkg.backends:make")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendSpecError(f"backend {spec!r}: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise BackendSpecError(f"backend {spec!r}: {module_name} has no callable {factory_name!r}")
    return factory()


def _one(spec: str) -> object:
    if spec == "engine":
        import rsa.backends

        return rsa.backends.default_backend()
    if spec.startswith("engine:"):
        return _lazy_class("EngineBackend", spec)(spec[len("engine:"):])
    if spec.startswith("hf:"):
        return _lazy_class("TransformersBackend", spec)(spec[len("hf:"):])
    if spec.startswith("import:"):
        return _from_factory(spec)
    raise BackendSpecError(f"unknown backend {spec!r}; expected {FORMS}")


def build_backend(specs: Sequence[str]) -> Backend:
    """The backend named by one SPEC, or by several http(s) URLs (replicas of one model).

    Raises BackendSpecError for a bad or unavailable spec; the caller owns (and closes) the
    backend it gets.
    """
    specs = list(specs) or ["engine"]
    urls = [s for s in specs if s.startswith(("http://", "https://"))]
    if urls:
        if len(urls) != len(specs):
            raise BackendSpecError(f"only http(s) URLs can be combined (as replicas), got {specs}")
        try:
            from rsa.backends.openai import backend_from_url
        except ImportError as exc:
            raise BackendSpecError(f"the HTTP backend is not available: {exc}") from None
    elif len(specs) > 1:
        raise BackendSpecError(f"give one backend, or several http(s) URLs for replicas; got {specs}")
    try:
        backend = backend_from_url(urls) if urls else _one(specs[0])
    except BackendSpecError:
        raise
    except (BackendUnavailable, ImportError, ValueError, OSError) as exc:  # constructors rejecting the spec
        raise BackendSpecError(f"backend {' '.join(specs)!r}: {exc}") from None
    missing = [m for m in ("generate", "tokenize", "detokenize", "aclose") if not hasattr(backend, m)]
    if missing:
        raise BackendSpecError(f"backend {specs[0]!r} gave a {type(backend).__name__}, which lacks {missing}")
    return backend  # type: ignore[return-value]
