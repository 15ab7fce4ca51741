"""Test plumbing shared by every folder: serve an ASGI app on loopback in a thread (a real
uvicorn server on a free port), and wait on conditions another thread or process makes true."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def serve(app: Any, *, health: str | None = "/health", lifespan: str = "on", start_s: float = 30.0) -> Iterator[str]:
    """Serve `app` on a free 127.0.0.1 port in a daemon thread; yields the base URL. Waits until
    the server started (and `health` answers 200, unless None); stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http="h11", lifespan=lifespan, log_level="critical", access_log=False,
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + start_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test server for {app!r} did not start")
            time.sleep(0.01)
        if health:
            assert httpx.get(url + health, timeout=5).status_code == 200
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_until(predicate: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Poll `predicate` every 10 ms; True as soon as it holds, False if it never does in time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
