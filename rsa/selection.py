"""Vote tallies and the choice of the final answer.

`tally` clusters a stage's answers by equivalence and counts votes. The majority is the
largest cluster; ties go to the answer seen first in slot order. The share is the majority's
votes over the stage's live candidates (so unanswered rollouts count against confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

from .answers import cluster
from .results import Candidate

__all__ = ["Tally", "tally"]


@dataclass(frozen=True, slots=True)
class Tally:
    votes: dict[str, int]  # representative answer -> votes, first-seen order
    majority: str | None
    share: float


async def tally(candidates: list[Candidate]) -> Tally:
    live = [c for c in candidates if c.live]
    ids = await cluster([c.answer for c in live])
    representative: dict[int, str] = {}
    counts: dict[int, int] = {}
    for cand, cid in zip(live, ids):
        if cid is None or cand.answer is None:
            continue
        representative.setdefault(cid, cand.answer)
        counts[cid] = counts.get(cid, 0) + 1
    votes = {representative[cid]: n for cid, n in counts.items()}
    if not votes:
        return Tally({}, None, 0.0)
    majority = max(votes, key=votes.__getitem__)  # max keeps the first of equal counts
    return Tally(votes, majority, votes[majority] / len(live))
