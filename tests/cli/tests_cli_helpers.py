"""Helpers of the CLI tests: scripted backends, reached from the real CLI as
`--backend import:tests_cli_helpers:FACTORY`, and the subprocess plumbing.

The responder reads "What is EXPR?" from the prompt and answers by a rule that depends on the
stage (from the request id `PID-s{stage}-{slot}`), so every accuracy in a summary can be
computed in advance with `expected`:

- stage 0: slot 0 answers right, every other slot answers `truth + 1` (mean 1/N, majority
  wrong for N >= 3, pass@N right);
- stage t >= 1: every slot answers right when the true value is even, `truth + 1` when odd.

A problem whose text contains FAIL makes every request fail with HTTP 500. The latency of
each request is `CLI_TEST_LATENCY` seconds (env, default 0).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from rsa.backends import BackendStatusError, GenerationRequest, ScriptedBackend

HERE = Path(__file__).resolve().parent
BACKEND = ["--backend", "import:tests_cli_helpers:make_backend"]
_EXPR = re.compile(r"What is ([0-9+\-* ]+)\?")


def truth(text: str) -> int:
    return int(eval(_EXPR.search(text).group(1), {"__builtins__": {}}))  # digits and + - * only


def answer_for(text: str, stage: int, slot: int) -> int:
    value = truth(text)
    if stage == 0:
        return value if slot == 0 else value + 1
    return value if value % 2 == 0 else value + 1


def expected(gold: str, text: str, population: int, rounds: int) -> dict:
    """Expected correctness of one problem: final answer and per-stage (mean, majority, pass@N)."""
    value = truth(text)
    right = lambda v: str(v) == gold  # noqa: E731
    stage0 = [right(answer_for(text, 0, s)) for s in range(population)]
    stages = [(sum(stage0) / population, right(value + 1) if population >= 3 else stage0[0], any(stage0))]
    later = right(answer_for(text, 1, 0))
    stages += [(float(later), later, later)] * rounds
    final = later if rounds else stages[0][1]
    return {"correct": final, "stages": stages}


def respond(req: GenerationRequest) -> str:
    text = req.messages[-1].content
    if "FAIL" in text:
        raise BackendStatusError(500, "scripted failure")
    _, stage, slot = req.request_id.rsplit("-", 2)
    value = answer_for(text, int(stage[1:]), int(slot))
    return f"<think>\nlet me compute this step by step carefully\n</think>\n\nThe answer is \\boxed{{{value}}}."


def make_backend() -> ScriptedBackend:
    return ScriptedBackend(respond, latency=float(os.environ.get("CLI_TEST_LATENCY", "0")))


def not_a_backend() -> object:
    return object()


# -- running the CLI ---------------------------------------------------------------------------
def cli_env(**extra: str) -> dict[str, str]:
    paths = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rsa.cli", *args]


def read_lines(path: Path) -> list[dict]:
    """Every line of a results file, each of which must parse."""
    return [json.loads(line) for line in path.read_text().splitlines()]
