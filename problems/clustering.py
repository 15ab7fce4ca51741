"""Group equivalent answers, for majority voting over a population of candidates.

Greedy and order-dependent on purpose: each answer is compared with one representative (the
first member) of every cluster formed so far and joins the earliest cluster that the cheap
tiers match, else the earliest that math-verify finds equivalent, else opens a new one. Cluster indices follow first-occurrence order; None answers get
None. Equivalence from SymPy is not always transitive, so another order could group a few
edge cases differently; the representative rule keeps the result deterministic for a given
order.

Cost: cheap tiers (integer, normalised string, cache) are tried against every representative
first; only when none matches do math-verify comparisons run, concurrently, for that answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .grading import Grader, default_grader

__all__ = ["cluster_answers", "cluster_answers_sync"]


async def cluster_answers(answers: Sequence[str | None], *, grader: Grader | None = None) -> list[int | None]:
    """Cluster index per answer (equivalent answers share one); None stays None."""
    grader = grader or default_grader()
    reps: list[str] = []
    out: list[int | None] = []
    for answer in answers:
        if answer is None:
            out.append(None)
            continue
        quick = [grader.quick_equivalent(rep, answer) for rep in reps]
        index = next((i for i, q in enumerate(quick) if q), None)
        if index is None:
            pending = [i for i, q in enumerate(quick) if q is None]
            verdicts = await asyncio.gather(*(grader.aequivalent(reps[i], answer) for i in pending))
            index = next((i for i, ok in zip(pending, verdicts) if ok), None)
        if index is None:
            reps.append(answer)
            index = len(reps) - 1
        out.append(index)
    return out


def cluster_answers_sync(answers: Sequence[str | None], *, grader: Grader | None = None) -> list[int | None]:
    """Blocking twin of `cluster_answers` for scripts and metrics; same rules and result."""
    grader = grader or default_grader()
    reps: list[str] = []
    out: list[int | None] = []
    for answer in answers:
        if answer is None:
            out.append(None)
            continue
        index = next((i for i, rep in enumerate(reps) if grader.quick_equivalent(rep, answer)), None)
        if index is None:
            index = next((i for i, rep in enumerate(reps) if grader.equivalent(rep, answer)), None)
        if index is None:
            reps.append(answer)
            index = len(reps) - 1
        out.append(index)
    return out
