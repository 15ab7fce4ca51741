"""Fixtures of the engine-server tests: the HTTP server over a scripted fake engine (most protocol
tests) and over the real engine with a tiny random ZAYA checkpoint (end-to-end tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: helpers are plain modules

from loopback_server import serve  # noqa: E402
from zaya_server_fakes import FakeEngine, save_tiny_checkpoint  # noqa: E402

from rsa.backends.zaya1.server import create_app  # noqa: E402


@pytest.fixture
def fake_server() -> Iterator[Callable[..., tuple[FakeEngine, str]]]:
    """`fake_server(api_key=None, served_model_name=None, **FakeEngine options) -> (engine, base_url)`."""
    with ExitStack() as stack:
        def start(api_key: str | None = None, served_model_name: str | None = None, **options: Any):
            engine = FakeEngine(**options)
            app = create_app(engine, api_key=api_key, served_model_name=served_model_name)
            return engine, stack.enter_context(serve(app))

        yield start


@pytest.fixture
def fake(fake_server) -> tuple[FakeEngine, str]:
    return fake_server()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("zaya_server_ckpt")
    save_tiny_checkpoint(str(path), max_len=2048)
    return str(path)
