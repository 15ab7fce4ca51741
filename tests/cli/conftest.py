"""The real `rsa` entry point in a subprocess, with the scripted test backends importable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests_cli_helpers, for the test modules

from tests_cli_helpers import cli_cmd, cli_env  # noqa: E402


@pytest.fixture
def rsa_cli():
    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(cli_cmd(*args), env=cli_env(**(env or {})), capture_output=True, text=True,
                              input=input, timeout=120)

    return run
