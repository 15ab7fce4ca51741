"""Result types of a solve: `Candidate` (one rollout), `Stage`, `SolveResult`.

All are pydantic models and round-trip through JSON (`SolveResult.model_validate_json(
result.model_dump_json())` gives an equal object), so batch runs can store and reload them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .config import RSAConfig

__all__ = ["Candidate", "RSAError", "SolveResult", "Stage", "StageFailedError"]


class Candidate(BaseModel):
    """One rollout. `parents` are the slots of the previous stage shown in its prompt."""

    model_config = ConfigDict(extra="forbid")

    stage: int
    slot: int
    parents: list[int] = Field(default_factory=list)
    content: str = ""
    reasoning: str | None = None
    tail: str | None = None  # what the next stage is shown (marker included when cut)
    tail_tokens: int = 0  # tokens of the tail text, marker excluded
    tail_truncated: bool = False
    answer: str | None = None
    finish_reason: str = "pending"  # pending | stop | length | error | cancelled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    started_s: float | None = None  # seconds since the solve began
    finished_s: float | None = None
    error: str | None = None

    @property
    def live(self) -> bool:
        """Usable as a parent: it finished without error."""
        return self.finish_reason in ("stop", "length")

    @property
    def trace(self) -> str:
        from rsa.backends.base import build_trace

        return build_trace(self.content, self.reasoning)


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    candidates: list[Candidate] = Field(default_factory=list)
    votes: dict[str, int] = Field(default_factory=dict)  # answer -> count, first-seen order
    majority: str | None = None
    share: float = 0.0  # majority votes / live candidates
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def live(self) -> list[Candidate]:
        return [c for c in self.candidates if c.live]

    @property
    def answers(self) -> list[str | None]:
        return [c.answer for c in self.candidates]


class SolveResult(BaseModel):
    """Everything a solve produced. `answer` is the selected final answer (None if none)."""

    model_config = ConfigDict(extra="forbid")

    problem: str
    problem_id: str
    answer: str | None = None
    votes: dict[str, int] = Field(default_factory=dict)
    share: float = 0.0
    selection: str = "majority"
    selected: Candidate | None = None  # the extra call of selection="aggregate", or the chosen one
    stages: list[Stage] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time_s: float = 0.0
    config: RSAConfig
    seed: int
    backend: str = ""
    stopped_early: bool = False
    stop_reason: str | None = None  # early_stop | deadline | token_budget | error
    tokens_saved: int = 0  # estimated generated tokens not spent because of an early stop

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class RSAError(RuntimeError):
    """A solve could not finish. `partial` holds what was computed before the failure."""

    def __init__(self, message: str, partial: SolveResult | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class StageFailedError(RSAError):
    """Every rollout of a stage failed, so the next stage has no parents."""
