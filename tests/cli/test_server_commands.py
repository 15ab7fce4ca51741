"""`rsa serve` and `rsa mcp` through the real entry point, each in its own process."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import time

import httpx
import pytest

from tests_cli_helpers import cli_cmd, cli_env

BACKEND = "import:tests_cli_helpers:make_backend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rsa_serve_answers_chat_completions():
    port = free_port()
    proc = subprocess.Popen(cli_cmd("serve", "--backend", BACKEND, "--port", str(port), "--api-key", "k",
                                    "-n", "4", "-k", "2", "-t", "1", "--log-level", "warning"),
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine can take long to import everything
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not answer /health within 120 s")
            time.sleep(0.1)
        body = {"model": "rsa", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
        denied = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
        assert denied.status_code == 401
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"},
                           timeout=60)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert data["rsa"]["stages"] == 2  # -t 1: stage 0 and one aggregation round
        assert data["usage"]["completion_tokens"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_rsa_mcp_stdio_lists_the_tool():
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    inited = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    proc = subprocess.Popen(cli_cmd("mcp", "--backend", BACKEND), env=cli_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # keep stdin open until the reply: at end of input the server may stop before answering
        proc.stdin.write("\n".join(json.dumps(m) for m in (init, inited, listing)) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"mcp server exited: {proc.stderr.read()}")
            reply = json.loads(line)  # stdout is pure protocol
            if reply.get("id") == 2:
                break
        else:
            pytest.fail("no tools/list reply within 120 s")
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=20)
    assert [t["name"] for t in reply["result"]["tools"]] == ["solve_math"]
