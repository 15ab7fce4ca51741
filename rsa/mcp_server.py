"""An MCP server with one tool, `solve_math`: Markovian RSA for agents that speak MCP (`rsa mcp`).

    python -m rsa.mcp_server --backend http://gpu0:8000/v1                  # stdio
    python -m rsa.mcp_server --backend http://gpu0:8000/v1 --transport http --port 8021   # /mcp

`solve_math(problem, effort=None, deadline_seconds=None)` runs one solve (effort: the `low`,
`medium` or `high` preset; without one, the server's config over `medium`, as in
`rsa.agents.tool_config`) and returns a `SolveSummary` as structured content (the tool
publishes its output schema) plus the same JSON as text. While it runs it sends one progress
notification per finished rollout and per finished stage (`progress` counts both, `total` is
their sum for the whole solve) when the client asked for progress. A cancellation
(`notifications/cancelled`, over stdio or HTTP) cancels every rollout. Clients do not always
send one when they time out, so the server enforces its own limit too:
`max_deadline_s` caps every call's deadline, and a solve cut by a deadline or token budget
returns the best answer so far with `best_so_far: true`. A failed solve is a tool error
(`isError`) whose text says why.

Built on the official `mcp` SDK (2.x, `MCPServer`). Not covered: MCP tasks (task-augmented
calls), resources and prompts, auth on the HTTP transport (bind it to loopback or put it behind
an authenticating gateway).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

try:
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import ToolAnnotations
except ImportError as exc:  # an optional extra
    raise ImportError(f"rsa.mcp_server needs the official MCP SDK 2.x: pip install 'markovian-rsa[agents]' "
                      f"('mcp>=2') ({exc})") from exc

from rsa.backends.base import Backend, BackendError

from .agents import DESCRIPTION, TOOL_NAME, Effort, SolveMathArgs, SolveSummary, summarize, tool_config
from .api import stream
from .config import PRESETS, RSAConfig
from .events import CandidateFinished, Done, StageFinished
from .results import RSAError

__all__ = ["build_server", "main", "run_mcp"]

DEFAULT_PORT = 8021
Transport = Literal["stdio", "http"]


def build_server(backend: Backend, *, config: RSAConfig | dict | str | None = None,
                 max_deadline_s: float | None = None, name: str = "markovian-rsa",
                 lifespan: Any = None) -> MCPServer:
    """An `mcp.server.mcpserver.MCPServer` serving `solve_math` on `backend` (yours to close,
    unless `lifespan` closes it). `config` holds the server's defaults (see
    `rsa.agents.tool_config`)."""
    server = MCPServer(name, instructions="Call solve_math for hard, self-contained math problems.",
                       lifespan=lifespan, log_level="WARNING")

    async def solve_math(
        problem: Annotated[str, Field(min_length=1, description="the full, self-contained problem statement")],
        ctx: Context,
        effort: Annotated[Effort | None, Field(description="low | medium | high: more attempts and rounds "
                                                           "cost more; default: the server's (medium)")] = None,
        deadline_seconds: Annotated[float | None, Field(gt=0, description="wall-clock limit in seconds; the "
                                                                          "best answer so far is returned")] = None,
    ) -> SolveSummary:
        args = SolveMathArgs(problem=problem, effort=effort, deadline_seconds=deadline_seconds)
        cfg = tool_config(args, config, max_deadline_s)
        n, stages = cfg.population, cfg.rounds + 1
        total, done = cfg.total_rollouts + stages, 0
        finished = [0] * stages
        result = None
        try:
            async for event in stream(args.problem, backend=backend, config=cfg):
                if isinstance(event, CandidateFinished):
                    finished[event.stage] += 1
                    message = f"stage {event.stage}/{stages - 1}: {finished[event.stage]}/{n} rollouts finished"
                elif isinstance(event, StageFinished):
                    message = (f"stage {event.stage}/{stages - 1} done: majority {event.majority} "
                               f"(share {event.share:.2f}, {event.live} live)")
                elif isinstance(event, Done):
                    result = event.result
                    continue
                else:
                    continue
                done += 1
                await ctx.report_progress(done, total, message)
        except (RSAError, BackendError) as exc:
            partial = getattr(exc, "partial", None)
            extra = f"; partial result: {summarize(partial).model_dump_json()}" if partial is not None else ""
            raise ToolError(f"{type(exc).__name__}: {exc}{extra}") from exc
        assert result is not None, "rsa.stream ends with Done"
        if done < total:  # stopped early: tell the client the work is over
            await ctx.report_progress(total, total, f"stopped: {result.stop_reason}")
        return summarize(result)

    server.add_tool(solve_math, name=TOOL_NAME, title="Solve a math problem with Markovian RSA",
                    description=DESCRIPTION, structured_output=True,
                    annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    return server


def _owned_backend(backend: Backend | str | Sequence[str]) -> tuple[Backend, bool]:
    if not isinstance(backend, (str, list, tuple)):
        return backend, False
    from .backend_spec import build_backend

    return build_backend([backend] if isinstance(backend, str) else list(backend)), True


def run_mcp(backend: Backend | str | Sequence[str], transport: Transport = "stdio", host: str = "127.0.0.1",
            port: int = DEFAULT_PORT, *, config: RSAConfig | dict | str | None = None,
            max_deadline_s: float | None = None, path: str = "/mcp") -> None:
    """Serve `solve_math` until the client (stdio) or the process (http) ends; the body of
    `rsa mcp`. `backend`: a Backend object or backend SPEC string(s) (built here and closed at
    exit; raises `BackendSpecError` when bad). `transport="http"` is streamable HTTP at `path`."""
    if transport not in ("stdio", "http"):
        raise ValueError(f"transport must be 'stdio' or 'http', got {transport!r}")
    rsa_backend, owned = _owned_backend(backend)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            if owned:
                await rsa_backend.aclose()

    server = build_server(rsa_backend, config=config, max_deadline_s=max_deadline_s, lifespan=lifespan)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port, streamable_http_path=path)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m rsa.mcp_server`: the same options as `rsa mcp`."""
    parser = argparse.ArgumentParser(prog="python -m rsa.mcp_server", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", "-b", action="append", metavar="SPEC", required=True,
                        help="backend SPEC (rsa.backend_spec); repeat for http(s) replicas")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--path", default="/mcp", help="URL path of the streamable HTTP endpoint")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="server defaults (effort presets still apply)")
    parser.add_argument("--max-deadline", type=float, metavar="SECONDS", help="cap on every call's deadline")
    opts = parser.parse_args(argv)
    from .backend_spec import BackendSpecError

    try:
        run_mcp(opts.backend, opts.transport, opts.host, opts.port, config=opts.preset,
                max_deadline_s=opts.max_deadline, path=opts.path)
    except BackendSpecError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
