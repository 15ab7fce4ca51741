"""The function-calling tool (`rsa.agents`), its LangChain factory, and the example agent loop."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import openai
import pytest
from agents_helpers import make_backend, recorder
from openai.types.chat.chat_completion_message_function_tool_call import ChatCompletionMessageFunctionToolCall, Function

from rsa.agents import (
    SolveMathArgs,
    handle_tool_call,
    handle_tool_call_sync,
    langchain_tool,
    openai_tool,
    tool_config,
)

HAS_LANGCHAIN = importlib.util.find_spec("langchain_core") is not None


def call(arguments, name: str = "solve_math", call_id: str = "call_1") -> dict:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def payload(message: dict) -> dict:
    assert message["role"] == "tool" and message["tool_call_id"] == "call_1"
    data = json.loads(message["content"])
    assert message["content"] == json.dumps(data, separators=(",", ":"), ensure_ascii=False)  # compact
    return data


def test_openai_tool_is_a_strict_function_schema():
    tool = openai_tool()
    fn = tool["function"]
    assert tool["type"] == "function" and fn["name"] == "solve_math" and fn["strict"] is True
    params = fn["parameters"]
    # strict mode: every property required, optional ones nullable, nothing else allowed
    assert params["additionalProperties"] is False
    assert set(params["required"]) == set(params["properties"]) == set(SolveMathArgs.model_fields)
    assert "null" in params["properties"]["effort"]["type"] and None in params["properties"]["effort"]["enum"]
    assert fn["description"] and json.loads(json.dumps(tool)) == tool


def test_tool_config_layers():
    assert tool_config(SolveMathArgs(problem="p")).population == 8  # medium by default
    assert tool_config(SolveMathArgs(problem="p", effort="low")).population == 4
    assert tool_config(SolveMathArgs(problem="p"), config="high").population == 16
    cfg = tool_config(SolveMathArgs(problem="p", effort="low"), config={"max_tokens": 512, "population": 32})
    assert (cfg.population, cfg.max_tokens) == (4, 512)  # an explicit effort wins over the server's N
    cfg = tool_config(SolveMathArgs(problem="p"), config={"max_tokens": 512})
    assert (cfg.population, cfg.rounds, cfg.max_tokens) == (8, 2, 512)  # medium, with the server's cap
    assert tool_config(SolveMathArgs(problem="p"), config={"population": 32}).population == 32
    assert tool_config(SolveMathArgs(problem="p", deadline_seconds=60), max_deadline_s=5).deadline_s == 5
    assert tool_config(SolveMathArgs(problem="p"), max_deadline_s=5).deadline_s == 5
    assert tool_config(SolveMathArgs(problem="p", deadline_seconds=2), max_deadline_s=5).deadline_s == 2


async def test_handle_tool_call_with_an_sdk_tool_call_object():
    backend = make_backend()
    sdk_call = ChatCompletionMessageFunctionToolCall(
        id="call_1", type="function",
        function=Function(name="solve_math", arguments='{"problem": "What is 40 + 2?", "effort": "low", '
                                                      '"deadline_seconds": null}'))
    data = payload(await handle_tool_call(sdk_call, backend=backend))
    assert data["answer"] == "42" and data["stages"] == 2 and data["best_so_far"] is False
    assert data["tokens"] == 8 * 17 and data["generated_tokens"] == 8 * 7
    assert len(backend.requests) == 8


@pytest.mark.parametrize("arguments, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({"effort": "low"}, "problem: Field required"),
    ({"problem": ""}, "problem: String should have at least 1 character"),
    ({"problem": "p", "effort": "extreme"}, "effort: Input should be"),
    ({"problem": "p", "deadline_seconds": -1}, "deadline_seconds: Input should be greater than 0"),
    ({"problem": "p", "budget": 3}, "budget: Extra inputs are not permitted"),
])
async def test_bad_arguments_become_an_error_message(arguments, words):
    backend = make_backend()
    data = payload(await handle_tool_call(call(arguments), backend=backend))
    assert set(data) == {"error"} and words in data["error"]
    assert backend.requests == []


async def test_unknown_tool_and_failed_solve_are_error_messages():
    backend = make_backend()
    assert "unknown tool 'other'" in payload(await handle_tool_call(call({"problem": "p"}, "other"),
                                                                    backend=backend))["error"]
    data = payload(await handle_tool_call(call({"problem": "FAIL", "effort": "low"}), backend=backend))
    assert data["error"].startswith("StageFailedError: every rollout of stage 0 failed")
    assert data["partial"]["answer"] is None


async def test_deadline_returns_the_best_answer_so_far():
    backend = make_backend()
    message = await handle_tool_call(call({"problem": "SLOWLATER What is 40 + 2?", "effort": "low",
                                           "deadline_seconds": 0.3}), backend=backend)
    data = payload(message)
    assert data["best_so_far"] is True and data["stop_reason"] == "deadline" and data["answer"] == "42"
    assert backend.in_flight == 0 and len(recorder(backend).cancelled) == 4


def test_sync_variant_without_a_running_loop():
    data = payload(handle_tool_call_sync(call({"problem": "What is 40 + 2?", "effort": "low"}),
                                         backend=make_backend()))
    assert data["answer"] == "42"


async def test_sync_variant_inside_a_running_loop():
    data = payload(handle_tool_call_sync(call({"problem": "What is 40 + 2?", "effort": "low"}),
                                         backend=make_backend()))
    assert data["answer"] == "42"


@pytest.mark.skipif(HAS_LANGCHAIN, reason="langchain-core is installed: the missing-dependency error cannot occur")
def test_langchain_factory_explains_the_missing_dependency():
    with pytest.raises(ImportError, match="pip install langchain-core"):
        langchain_tool(backend=make_backend())


@pytest.mark.skipif(not HAS_LANGCHAIN, reason="langchain-core is not installed (optional): the LangChain "
                                              "StructuredTool factory is not exercised in this environment")
async def test_langchain_tool():
    tool = langchain_tool(backend=make_backend())
    assert tool.name == "solve_math"
    out = await tool.ainvoke({"type": "tool_call", "id": "call_1", "name": "solve_math",
                              "args": {"problem": "What is 40 + 2?", "effort": "low"}})
    assert json.loads(out.content)["answer"] == "42" and out.artifact.answer == "42"


# -- the example agent loop ----------------------------------------------------------------------
def load_example():
    path = Path(__file__).resolve().parents[2] / "examples" / "agent_loop.py"
    spec = importlib.util.spec_from_file_location("agent_loop_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_agent_loop_calls_the_tool_and_uses_its_answer():
    """A scripted chat model: first turn calls solve_math, second turn answers with the tool's result."""
    seen: list[dict] = []

    def chat(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert body["tools"] == [openai_tool()]
        tool_msgs = [m for m in body["messages"] if m["role"] == "tool"]
        if not tool_msgs:
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "solve_math", "arguments": json.dumps(
                    {"problem": "What is 40 + 2?", "effort": "low", "deadline_seconds": None})}}]}
            finish = "tool_calls"
        else:
            answer = json.loads(tool_msgs[-1]["content"])["answer"]
            message, finish = {"role": "assistant", "content": f"The result is {answer}."}, "stop"
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

    example = load_example()
    http = httpx.AsyncClient(transport=httpx.MockTransport(chat))
    async with openai.AsyncOpenAI(base_url="http://agent.test/v1", api_key="x", http_client=http) as client:
        logs: list[str] = []
        answer = await example.run_agent(client, "m", "Add 40 and 2.", rsa_backend=make_backend(), log=logs.append)
    assert answer == "The result is 42."
    assert len(seen) == 2 and seen[1]["messages"][2]["tool_calls"][0]["id"] == "call_1"
    assert seen[1]["messages"][3]["tool_call_id"] == "call_1"
    assert logs[0].startswith("-> solve_math(")
