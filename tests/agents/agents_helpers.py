"""Scripted backends of the agent tests, reachable from a subprocess as
`--backend import:agents_helpers:make_backend`.

The responder reads the stage and slot from the request id (`PID-s{stage}-{slot}`) and answers
`\\boxed{42}`, except stage 0 slot 0, which answers 41 (so votes are not unanimous). Every
generation reports 10 prompt and 7 completion tokens, so usage sums are known in advance. The
problem text picks a behaviour:

- `HANG`: every rollout waits forever (until cancelled);
- `SLOWLATER`: stage 0 answers at once, later stages wait forever;
- `FAIL`: every rollout fails with HTTP 500.

When the env variable `RSA_AGENT_TEST_LOG` names a file, every rollout appends `start ID`,
and `cancelled ID` if it is cancelled, so a test can watch a server in another process.
"""

from __future__ import annotations

import asyncio
import os

from rsa.backends import BackendStatusError, Generation, GenerationRequest, ScriptedBackend

PROMPT_TOKENS, COMPLETION_TOKENS = 10, 7


def stage_slot(req: GenerationRequest) -> tuple[int, int]:
    _, stage, slot = req.request_id.rsplit("-", 2)
    return int(stage[1:]), int(slot)


def _log(line: str) -> None:
    path = os.environ.get("RSA_AGENT_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class Recorder:
    """The responder; counts cancelled rollouts in `cancelled`."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def __call__(self, req: GenerationRequest) -> Generation:
        text = req.messages[-1].content
        stage, slot = stage_slot(req)
        _log(f"start {req.request_id}")
        try:
            if "FAIL" in text:
                raise BackendStatusError(500, "scripted failure")
            if "HANG" in text or ("SLOWLATER" in text and stage > 0):
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(req.request_id)
            _log(f"cancelled {req.request_id}")
            raise
        value = 41 if (stage, slot) == (0, 0) else 42
        return Generation(content=f"Adding them gives \\boxed{{{value}}}.", reasoning="40 + 2 is 42",
                          prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)


def make_backend() -> ScriptedBackend:
    return ScriptedBackend(Recorder())


def recorder(backend: ScriptedBackend) -> Recorder:
    return backend._respond  # type: ignore[return-value]
