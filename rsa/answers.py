"""Answer extraction and equivalence for voting, behind two functions.

The controller only calls `extract` and `cluster`; both delegate to `rsa.problems`, which
owns the extraction rules and the (timeout-guarded) math-verify equivalence.
"""

from __future__ import annotations

from rsa.problems import cluster_answers, extract_answer

__all__ = ["cluster", "extract"]


# A rollout cut by max_tokens is full of intermediate numbers: no "last number" guess for votes.
VOTE_FALLBACKS = ("answer_phrase",)


def extract(text: str) -> str | None:
    """The final answer of a rollout: the last `\\boxed{}`, else an "answer is ..." phrase."""
    return extract_answer(text, fallbacks=VOTE_FALLBACKS)


async def cluster(answers: list[str | None]) -> list[int | None]:
    """Cluster ids such that mathematically equivalent answers share one (None stays None)."""
    return await cluster_answers(answers)
