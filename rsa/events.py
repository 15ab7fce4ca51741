"""Typed progress events of a solve, yielded by `rsa.stream` (progress bars, agents, servers).

Order guarantees: for each stage, `StageStarted` comes before any of its `CandidateFinished`,
which all come before its `StageFinished`; `Done` is always last. Without a round barrier the
events of neighbouring stages interleave.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel

from .results import Candidate, SolveResult

__all__ = ["CandidateFinished", "Done", "RSAEvent", "StageFinished", "StageStarted"]


class StageStarted(BaseModel):
    kind: Literal["stage_started"] = "stage_started"
    stage: int
    size: int  # rollouts planned in this stage


class CandidateFinished(BaseModel):
    kind: Literal["candidate_finished"] = "candidate_finished"
    stage: int
    slot: int
    candidate: Candidate
    completion_tokens_so_far: int  # generated tokens of the whole solve up to now


class StageFinished(BaseModel):
    kind: Literal["stage_finished"] = "stage_finished"
    stage: int
    votes: dict[str, int]
    majority: str | None
    share: float
    live: int
    prompt_tokens: int
    completion_tokens: int


class Done(BaseModel):
    kind: Literal["done"] = "done"
    result: SolveResult


RSAEvent = Union[StageStarted, CandidateFinished, StageFinished, Done]
