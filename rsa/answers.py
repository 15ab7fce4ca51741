"""Answer extraction and equivalence for voting, behind two functions.

The controller only calls `extract` and `cluster`; both delegate to `rsa.problems`, which
owns the extraction rules and the (timeout-guarded) math-verify equivalence.
"""

from __future__ import annotations

try:
    from rsa.problems import cluster_answers, extract_answer
except ImportError:  # TEMP until rsa.problems lands
    import re

    def extract_answer(text):
        m = re.findall(r"\\boxed\{([^{}]*)\}", text)
        return m[-1].strip() if m else None

    async def cluster_answers(answers):
        seen = {}
        return [None if a is None else seen.setdefault(a, len(seen)) for a in answers]

__all__ = ["cluster", "extract"]


def extract(text: str) -> str | None:
    """The final answer of a rollout: the last `\\boxed{}` (see `rsa.problems.extract_answer`)."""
    return extract_answer(text)


async def cluster(answers: list[str | None]) -> list[int | None]:
    """Cluster ids such that mathematically equivalent answers share one (None stays None)."""
    return await cluster_answers(answers)
