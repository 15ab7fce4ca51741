"""`RSAConfig`: every knob of one Markovian RSA solve, validated.

Field names and defaults follow the project's spec (ZAYA1 report's headline setting: N=16,
K=4, T=2 aggregation rounds, 4K-token tails, temperature 1.0). Build it from keyword
arguments, a dict, JSON or CLI flags; bad values fail with pydantic's precise messages.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .prompts import AGGREGATE_TEMPLATE, REFINE_TEMPLATE, SOLVE_TEMPLATE, check_template

__all__ = ["PRESETS", "RSAConfig", "preset"]


class RSAConfig(BaseModel):
    """Settings of one Markovian RSA solve (see the README's config table)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    population: int = Field(16, ge=1, le=4096, description="N: rollouts per stage")
    aggregation_size: int = Field(4, ge=1, description="K: candidates shown in each aggregation prompt")
    rounds: int = Field(2, ge=0, le=1000, description="T: aggregation rounds after the initial stage")
    tail_tokens: int = Field(4096, ge=1, description="tau: tokens of each candidate carried forward")
    max_tokens: int | None = Field(None, ge=1, description="beta: new tokens per rollout (None: backend's remaining context)")
    temperature: float = Field(1.0, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, description="fixes subsets and per-request seeds; None is random")
    tail_source: Literal["trace", "answer"] = "trace"
    selection: Literal["majority", "random", "aggregate"] = "majority"
    selection_temperature: float = Field(0.3, ge=0.0, le=10.0, description="temperature of the extra call of selection='aggregate'")
    early_stop_share: float | None = Field(None, gt=0.0, le=1.0, description="stop after a stage whose majority share reaches this")
    barrier: bool = Field(False, description="lockstep rounds (every stage waits for the whole previous stage)")
    max_concurrency: int | None = Field(None, ge=1, description="rollouts in flight per backend, shared by all solves on it")
    deadline_s: float | None = Field(None, gt=0.0, description="wall-clock limit; on expiry the best answer so far is returned")
    token_budget: int | None = Field(None, ge=1, description="generated-token limit; on reaching it the best answer so far is returned")
    solve_template: str = SOLVE_TEMPLATE
    aggregate_template: str = AGGREGATE_TEMPLATE
    refine_template: str = REFINE_TEMPLATE

    @model_validator(mode="after")
    def _check(self) -> RSAConfig:
        if self.aggregation_size > self.population:
            raise ValueError(
                f"aggregation_size (K={self.aggregation_size}) must not exceed "
                f"population (N={self.population})"
            )
        check_template("solve_template", self.solve_template, {"problem"})
        check_template("aggregate_template", self.aggregate_template, {"problem", "candidates"})
        check_template("refine_template", self.refine_template, {"problem", "candidates"})
        return self

    @property
    def total_rollouts(self) -> int:
        """N * (T + 1): rollouts of a solve that runs every stage (selection call not counted)."""
        return self.population * (self.rounds + 1)


# Named presets: the report's headline setting, its "extra-high" one, and cheap ones.
PRESETS: dict[str, dict[str, object]] = {
    "zaya1": dict(population=16, aggregation_size=4, rounds=2, tail_tokens=4096, max_tokens=40_000),
    "extra-high": dict(population=32, aggregation_size=4, rounds=8, tail_tokens=4096, max_tokens=32_768),
    "low": dict(population=4, aggregation_size=2, rounds=1),
    "medium": dict(population=8, aggregation_size=4, rounds=2),
    "high": dict(population=16, aggregation_size=4, rounds=2),
}


def preset(name: str) -> dict[str, object]:
    """The fields of a named preset. `nano` is the setting shipped beside the embedded default
    model (ZAYA1-nano), read from its checkpoint directory."""
    if name == "nano":
        import rsa.backends

        return json.loads((rsa.backends.NANO_DIR / "rsa_preset.json").read_text())
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted([*PRESETS, 'nano'])}")
    return dict(PRESETS[name])
