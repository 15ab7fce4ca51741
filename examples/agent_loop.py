"""An agent that hands hard math steps to Markovian RSA through function calling.

The agent model (any OpenAI-compatible server: vLLM with `--enable-auto-tool-choice
--tool-call-parser ...`, OpenAI, or the `rsa serve` proxy passing a model through) sees one
tool, `solve_math`. When it calls it, the call runs Markovian RSA on `--rsa-backend` and the
compact JSON result goes back as the tool message; the loop ends when the model answers
without calling a tool (or after `--max-turns`).

    python examples/agent_loop.py --base-url http://localhost:8000/v1 --model Qwen/Qwen3-8B \\
        --rsa-backend http://localhost:8000/v1 \\
        "I have 2^10 * 3^5 marbles. How many ways can I split them into equal bags (one bag allowed)?"

Requires `pip install openai`. The RSA backend defaults to the agent's own server.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI

from rsa.agents import handle_tool_call, openai_tool

SYSTEM = (
    "You are a careful assistant. For any self-contained math sub-problem that needs real "
    "computation or proof, call the solve_math tool instead of guessing, then use its answer. "
    "Its result has a vote share: treat a share below 0.5 as uncertain."
)


async def run_agent(client: AsyncOpenAI, model: str, question: str, *, rsa_backend: Any,
                    effort_config: Any = None, max_turns: int = 6,
                    log: Callable[[str], None] = print) -> str:
    """Chat until the model answers without a tool call; returns that answer."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    for _ in range(max_turns):
        reply = await client.chat.completions.create(model=model, messages=messages, tools=[openai_tool()])
        msg = reply.choices[0].message
        if not msg.tool_calls:
            return msg.content or ""
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            log(f"-> {call.function.name}({call.function.arguments})")
            result = await handle_tool_call(call, backend=rsa_backend, config=effort_config)
            log(f"<- {result['content']}")
            messages.append(result)
    raise RuntimeError(f"no final answer after {max_turns} turns")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL of the agent model")
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--rsa-backend", help="http(s) URL RSA solves on (default: --base-url)")
    parser.add_argument("--max-turns", type=int, default=6)
    opts = parser.parse_args()

    async def go() -> str:
        async with AsyncOpenAI(base_url=opts.base_url, api_key=opts.api_key, timeout=3600) as client:
            return await run_agent(client, opts.model, opts.question, rsa_backend=opts.rsa_backend or opts.base_url,
                                   max_turns=opts.max_turns)

    print(asyncio.run(go()))


if __name__ == "__main__":
    main()
