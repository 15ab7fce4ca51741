"""Shared test setup: make sure `import rsa` is this project, not the python-rsa package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path: shared helpers (loopback_server) live here
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config: pytest.Config) -> None:
    import rsa

    if not hasattr(rsa, "solve"):
        raise pytest.UsageError(
            f"`import rsa` resolved to {getattr(rsa, '__file__', '?')}, which is not markovian-rsa "
            "(probably the python-rsa cryptography package of the system Python). Run the tests "
            "from the project's virtual environment: `. .venv/bin/activate` (see README)."
        )
