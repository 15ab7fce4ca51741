"""Fixtures of the agent tests: apps served by uvicorn on loopback, scripted backends, and the
fake vLLM server of the backend tests as an upstream."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
# --import-mode=importlib puts no test folder on sys.path: the helpers and the fake vLLM are plain modules.
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "backends"))

from loopback_server import serve  # noqa: E402
from fake_vllm import FakeVLLM  # noqa: E402


@pytest.fixture
def serve_app() -> Iterator[Callable[..., str]]:
    """`serve_app(app) -> base_url`; every server stops at the end of the test."""
    with ExitStack() as stack:
        yield lambda app, **kw: stack.enter_context(serve(app, **kw))


@pytest.fixture
def serve_fake() -> Iterator[Callable[..., tuple[FakeVLLM, str]]]:
    """`serve_fake(**FakeVLLM kwargs) -> (server, base_url)`: the fake vLLM upstream."""
    with ExitStack() as stack:

        def start(**kwargs: Any) -> tuple[FakeVLLM, str]:
            fake = FakeVLLM(**kwargs)
            return fake, stack.enter_context(fake.serve())

        yield start
