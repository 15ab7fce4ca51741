"""Markovian RSA as a tool for agents: the `solve_math` function-calling tool.

    tools = [rsa.agents.openai_tool()]
    reply = client.chat.completions.create(model=..., messages=messages, tools=tools)
    for call in reply.choices[0].message.tool_calls or []:
        messages.append(await rsa.agents.handle_tool_call(call, backend="http://gpu0:8000/v1"))

The tool takes `problem`, an optional `effort` (the `low`/`medium`/`high` presets) and an
optional `deadline_seconds`; it answers with a compact JSON summary (`SolveSummary`): the
answer, its vote share, stages, tokens, and `best_so_far` when a deadline or token budget cut
the solve short. Bad arguments and failed solves come back as a tool message holding
`{"error": ...}`, so the agent can read them and carry on; cancellation propagates.

`langchain_tool()` wraps the same tool as a LangChain `StructuredTool` (needs langchain-core,
imported only when called). The MCP server (`rsa.mcp_server`) and the proxy reuse
`SolveMathArgs`, `tool_config` and `summarize`.

Not covered: the Responses API tool shape (`{"type": "function", "name": ...}`), parallel
tool calls in one helper (call `handle_tool_call` once per call, e.g. with `asyncio.gather`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rsa.backends.base import BackendError

from .api import BackendSpec, asolve, make_config, run_blocking
from .config import PRESETS, RSAConfig
from .results import RSAError, SolveResult

__all__ = [
    "DESCRIPTION",
    "SolveMathArgs",
    "SolveSummary",
    "TOOL_NAME",
    "handle_tool_call",
    "handle_tool_call_sync",
    "langchain_tool",
    "openai_tool",
    "parse_arguments",
    "summarize",
    "tool_config",
]

TOOL_NAME = "solve_math"
DESCRIPTION = (
    "Solve a hard math problem with Markovian RSA: many parallel reasoning attempts, recursively "
    "aggregated, then a majority vote. Slow and token-hungry: call it only for a self-contained "
    "math step you cannot do reliably yourself. Returns JSON with the final answer, the share of "
    "attempts that agree (a confidence), stages run and tokens used; best_so_far=true means a "
    "deadline or budget cut it short."
)
Effort = Literal["low", "medium", "high"]
DEFAULT_EFFORT: Effort = "medium"
MAX_VOTES_SHOWN = 5  # agents pay context for every vote listed


class SolveMathArgs(BaseModel):
    """Arguments of `solve_math` as an agent sends them."""

    model_config = ConfigDict(extra="forbid")

    problem: str = Field(min_length=1, description="the full, self-contained problem statement")
    effort: Effort | None = Field(None, description="low | medium | high: more attempts and rounds cost more; "
                                   "null: the server's default (medium unless configured)")
    deadline_seconds: float | None = Field(None, gt=0, description="wall-clock limit; the best answer so far is returned")


class SolveSummary(BaseModel):
    """What the tool returns: small enough for an agent's context."""

    answer: str | None = Field(description="the final answer (null: no attempt produced one)")
    share: float = Field(description="fraction of the last stage's attempts that agree with the answer")
    votes: dict[str, int] = Field(description="the most common answers of the last stage and their counts")
    stages: int = Field(description="generation stages run (1 initial + aggregation rounds)")
    tokens: int = Field(description="prompt plus generated tokens of every model call")
    generated_tokens: int = Field(description="generated tokens of every model call")
    best_so_far: bool = Field(description="true when a deadline or token budget stopped the solve early")
    stop_reason: str | None = Field(description="early_stop | deadline | token_budget, or null")
    wall_time_s: float


def summarize(result: SolveResult) -> SolveSummary:
    top = sorted(result.votes.items(), key=lambda kv: -kv[1])[:MAX_VOTES_SHOWN]  # stable: first-seen on ties
    return SolveSummary(
        answer=result.answer, share=round(result.share, 4), votes=dict(top), stages=len(result.stages),
        tokens=result.total_tokens, generated_tokens=result.completion_tokens,
        best_so_far=result.stop_reason in ("deadline", "token_budget"), stop_reason=result.stop_reason,
        wall_time_s=round(result.wall_time_s, 3),
    )


def tool_config(args: SolveMathArgs, config: RSAConfig | dict | str | None = None,
                max_deadline_s: float | None = None) -> RSAConfig:
    """The config of one tool call. An explicit `effort` preset overrides the server's `config`
    (an RSAConfig, dict or preset name); without one, the server's fields override the `medium`
    preset. The deadline is the caller's (else the server's), capped at `max_deadline_s`."""
    server = make_config(config).model_dump(exclude_unset=True) if config is not None else {}
    if args.effort is not None:
        merged = {**server, **PRESETS[args.effort]}
    else:
        merged = {**PRESETS[DEFAULT_EFFORT], **server}
    deadlines = [d for d in (args.deadline_seconds or merged.get("deadline_s"), max_deadline_s) if d is not None]
    merged["deadline_s"] = min(deadlines) if deadlines else None
    return RSAConfig(**merged)


def openai_tool() -> dict[str, Any]:
    """The Chat Completions tool entry (strict mode: every property listed, optional ones nullable)."""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {
                    "problem": {"type": "string", "description": "the full, self-contained problem statement"},
                    "effort": {"type": ["string", "null"], "enum": ["low", "medium", "high", None],
                               "description": "more attempts and rounds cost more; null: the server's default"},
                    "deadline_seconds": {"type": ["number", "null"],
                                         "description": "wall-clock limit in seconds; null for none"},
                },
                "required": ["problem", "effort", "deadline_seconds"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }


def parse_arguments(arguments: str | Mapping[str, Any] | None) -> SolveMathArgs:
    """`SolveMathArgs` from a tool call's arguments (a JSON string or a dict); ValueError if bad."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, Mapping):
        raise ValueError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    try:
        return SolveMathArgs.model_validate(dict(arguments))
    except ValidationError as exc:
        raise ValueError(_validation_text(exc)) from None


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())


def _call_parts(call: Any) -> tuple[str, str | None, Any]:
    """(id, function name, arguments) of an OpenAI SDK tool call object or its dict form."""
    if isinstance(call, Mapping):
        fn = call.get("function") or {}
        call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
    else:
        fn = getattr(call, "function", None)
        call_id, name, arguments = getattr(call, "id", None), getattr(fn, "name", None), getattr(fn, "arguments", None)
    if not isinstance(call_id, str):
        raise TypeError(f"a tool call needs a string 'id', got {type(call).__name__} without one")
    return call_id, name, arguments


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _tool_message(call_id: str, payload: dict[str, Any]) -> dict[str, str]:
    return {"role": "tool", "tool_call_id": call_id, "content": _compact(payload)}


async def handle_tool_call(call: Any, *, backend: BackendSpec = None, config: RSAConfig | dict | str | None = None,
                           max_deadline_s: float | None = None) -> dict[str, str]:
    """Run one `solve_math` tool call and return the `{"role": "tool", ...}` message to append.

    `call` is an OpenAI SDK tool call or a dict of the same shape. `backend` is what `asolve`
    takes (a Backend, an http(s) URL, ...). `config` holds server-side defaults (see
    `tool_config`); `max_deadline_s` caps the caller's deadline.
    """
    call_id, name, arguments = _call_parts(call)
    if name != TOOL_NAME:
        return _tool_message(call_id, {"error": f"unknown tool {name!r}; this handler serves {TOOL_NAME!r}"})
    try:
        args = parse_arguments(arguments)
    except ValueError as exc:
        return _tool_message(call_id, {"error": f"bad arguments: {exc}"})
    try:
        result = await asolve(args.problem, backend=backend, config=tool_config(args, config, max_deadline_s))
    except (RSAError, BackendError) as exc:
        payload: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        if getattr(exc, "partial", None) is not None:
            payload["partial"] = summarize(exc.partial).model_dump()
        return _tool_message(call_id, payload)
    return _tool_message(call_id, summarize(result).model_dump())


def handle_tool_call_sync(call: Any, **options: Any) -> dict[str, str]:
    """Blocking `handle_tool_call` (on a helper thread when an event loop is already running)."""
    return run_blocking(handle_tool_call(call, **options))


def langchain_tool(*, backend: BackendSpec = None, config: RSAConfig | dict | str | None = None,
                   max_deadline_s: float | None = None) -> Any:
    """`solve_math` as a LangChain `StructuredTool` (content: the JSON summary; artifact: the
    full `SolveResult`). Needs `pip install langchain-core`."""
    try:
        from langchain_core.tools import StructuredTool, ToolException
    except ImportError as exc:
        raise ImportError(
            "rsa.agents.langchain_tool needs langchain-core, which is not installed: "
            "pip install langchain-core") from exc

    async def solve_math(problem: str, effort: Effort | None = None,
                         deadline_seconds: float | None = None) -> tuple[str, SolveResult]:
        args = SolveMathArgs(problem=problem, effort=effort, deadline_seconds=deadline_seconds)
        try:
            result = await asolve(args.problem, backend=backend, config=tool_config(args, config, max_deadline_s))
        except (RSAError, BackendError) as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        return summarize(result).model_dump_json(), result

    def solve_math_sync(**kwargs: Any) -> tuple[str, SolveResult]:
        return run_blocking(solve_math(**kwargs))

    return StructuredTool.from_function(
        func=solve_math_sync, coroutine=solve_math, name=TOOL_NAME, description=DESCRIPTION,
        args_schema=SolveMathArgs, response_format="content_and_artifact", handle_tool_error=True,
    )
