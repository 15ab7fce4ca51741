"""The MCP server through the official `mcp` SDK client: stdio (a real subprocess running
`python -m rsa.mcp_server --backend import:agents_helpers:make_backend`) and streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from agents_helpers import make_backend, recorder
from loopback_server import serve
from mcp import Client, StdioServerParameters

from rsa.mcp_server import build_server

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.timeout(120)


def stdio_params(log: Path | None = None, *extra: str) -> StdioServerParameters:
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    if log is not None:
        env["RSA_AGENT_TEST_LOG"] = str(log)
    return StdioServerParameters(command=sys.executable, env=env, cwd=str(HERE),
                                 args=["-m", "rsa.mcp_server", "--backend", "import:agents_helpers:make_backend",
                                       *extra])


async def poll(predicate, seconds: float = 20.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def log_lines(log: Path, kind: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(kind)] if log.exists() else []


async def test_stdio_lists_and_calls_with_progress_and_structured_result():
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with Client(stdio_params()) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == ["solve_math"]
        tool = tools[0]
        assert tool.input_schema["required"] == ["problem"]
        assert set(tool.input_schema["properties"]) == {"problem", "effort", "deadline_seconds"}
        assert {"answer", "share", "stages", "tokens", "best_so_far"} <= set(tool.output_schema["properties"])

        result = await client.call_tool("solve_math", {"problem": "What is 40 + 2?", "effort": "low"},
                                        progress_callback=on_progress)
        assert not result.is_error
        data = result.structured_content
        assert data["answer"] == "42" and data["stages"] == 2 and data["best_so_far"] is False
        assert data["tokens"] == 8 * 17 and data["generated_tokens"] == 8 * 7  # low: N=4, T=1
        assert '"answer":"42"' in result.content[0].text.replace(" ", "")
        # one notification per rollout and per stage: 8 + 2, increasing, out of 10
        assert await poll(lambda: len(progress) == 10), progress
        assert [p[0] for p in progress] == list(range(1, 11)) and {p[1] for p in progress} == {10}
        assert any(m.startswith("stage 0/1 done: majority 42") for _, _, m in progress)

        # deadline: stage 0 answers, the aggregation stage hangs; the best answer so far comes back
        result = await client.call_tool("solve_math", {"problem": "SLOWLATER What is 40 + 2?", "effort": "low",
                                                       "deadline_seconds": 0.5})
        data = result.structured_content
        assert data["best_so_far"] is True and data["stop_reason"] == "deadline" and data["answer"] == "42"

        bad = await client.call_tool("solve_math", {"problem": "x", "effort": "extreme"})
        assert bad.is_error and "effort" in bad.content[0].text
        failed = await client.call_tool("solve_math", {"problem": "FAIL", "effort": "low"})
        assert failed.is_error and "every rollout of stage 0 failed" in failed.content[0].text


async def test_stdio_cancellation_cancels_every_rollout(tmp_path):
    log = tmp_path / "rollouts.log"
    async with Client(stdio_params(log)) as client:
        call = asyncio.create_task(client.call_tool("solve_math", {"problem": "HANG", "effort": "low"}))
        assert await poll(lambda: len(log_lines(log, "start")) == 4), log_lines(log, "start")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await poll(lambda: len(log_lines(log, "cancelled")) == 4), log.read_text()
        # the server is still serving
        assert [t.name for t in (await client.list_tools()).tools] == ["solve_math"]


async def test_server_deadline_cap_in_process():
    """`max_deadline_s` bounds a caller's deadline (clients do not always send cancellations)."""
    async with Client(build_server(make_backend(), max_deadline_s=0.5)) as client:
        result = await client.call_tool("solve_math", {"problem": "SLOWLATER What is 40 + 2?", "effort": "low",
                                                       "deadline_seconds": 3600})
    assert result.structured_content["best_so_far"] is True
    assert result.structured_content["stop_reason"] == "deadline"


async def test_streamable_http():
    backend = make_backend()
    server = build_server(backend, config="low")
    with serve(server.streamable_http_app(), health="") as url:
        async with Client(url + "/mcp") as client:
            progress = []

            async def on_progress(value, total, message):
                progress.append(value)

            result = await client.call_tool("solve_math", {"problem": "What is 40 + 2?"}, progress_callback=on_progress)
            assert result.structured_content["answer"] == "42"
            assert len(backend.requests) == 8 and recorder(backend).cancelled == []
            assert progress and progress[-1] == 10

            backend.requests.clear()
            call = asyncio.create_task(client.call_tool("solve_math", {"problem": "HANG"}))
            assert await poll(lambda: len(backend.requests) == 4)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await poll(lambda: len(recorder(backend).cancelled) == 4 and backend.in_flight == 0)
