"""Shared test setup: make sure `import rsa` is this project, not the python-rsa package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path: shared helpers (loopback_server) live here
sys.path.insert(0, str(Path(__file__).resolve().parent))

# `python -m pytest` puts the working directory on sys.path. At the repository root that makes
# our `kernels/` folder (installed as `rsa.kernels`) shadow the PyPI `kernels` package, which
# transformers (>= 5.25) imports, and `import transformers` then fails. The root goes to the end of
# the path instead: installed packages win, and `rsa` still resolves to the project.
_ROOT = Path(__file__).resolve().parents[1]
_at_root = [p for p in sys.path if Path(p or ".").resolve() == _ROOT]
sys.path[:] = [p for p in sys.path if p not in _at_root] + _at_root


def pytest_configure(config: pytest.Config) -> None:
    import rsa

    if not hasattr(rsa, "solve"):
        raise pytest.UsageError(
            f"`import rsa` resolved to {getattr(rsa, '__file__', '?')}, which is not markovian-rsa "
            "(probably the python-rsa cryptography package of the system Python). Run the tests "
            "from the project's virtual environment: `. .venv/bin/activate` (see README)."
        )
