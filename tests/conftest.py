"""Shared test setup: make sure `import rsa` is this project, not the python-rsa package."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    import rsa

    if not hasattr(rsa, "solve"):
        raise pytest.UsageError(
            f"`import rsa` resolved to {getattr(rsa, '__file__', '?')}, which is not markovian-rsa "
            "(probably the python-rsa cryptography package of the system Python). Run the tests "
            "from the project's virtual environment: `. .venv/bin/activate` (see README)."
        )
