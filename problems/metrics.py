"""Accuracy metrics over sampled answers: mean@n with stderr, pass@k, maj@k, per-stage curves.

Inputs are plain nested lists so the helpers are cheap to test and need no grader:
`correct[p][i]` is whether sample i of problem p is right, `clusters[p][i]` its answer cluster
(from `cluster_answers`; None for no answer). Problems may have different sample counts.

- `mean_accuracy`: per-problem fraction correct, averaged over problems (pass@1 averaged over
  n samples, lighteval's `math_pass@1:n_samples`); the standard error is the sample standard
  deviation of the per-problem fractions over sqrt(#problems), None for a single problem.
- `pass_at_k`: the unbiased estimator 1 - C(n-c, k) / C(n, k) of the Codex paper, in the
  stable product form 1 - prod_{i=n-c+1..n} (1 - k/i); exactly 1 when n - c < k.
- `majority_correct` / `maj_at_k`: vote over the first k samples; None answers do not vote; a
  tie goes to the tied cluster that appears first; the winner is graded by its first sample
  (equivalent answers are graded alike, up to SymPy's non-transitive corner cases). No vote
  at all counts as wrong.
- `stage_curves`: per aggregation stage, mean accuracy, majority-vote accuracy and pass@N over
  the stage's population, averaged over records (see its docstring for the input shape).

Limits: no bootstrap intervals, no per-run (evalchemy-style) standard error; callers with
several runs per problem can pass each run as its own record.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from .clustering import cluster_answers, cluster_answers_sync
from .grading import Grader, default_grader

__all__ = [
    "agrade_records",
    "maj_at_k",
    "majority_correct",
    "mean_accuracy",
    "mean_pass_at_k",
    "pass_at_k",
    "stage_curves",
    "summary",
]

Matrix = Sequence[Sequence[bool]]
ClusterMatrix = Sequence[Sequence[Optional[int]]]


def _check_matrix(correct: Matrix) -> None:
    if len(correct) == 0:
        raise ValueError("no problems: the correctness matrix is empty")
    for p, row in enumerate(correct):
        if len(row) == 0:
            raise ValueError(f"problem {p} has no samples")


def mean_accuracy(correct: Matrix) -> tuple[float, float | None]:
    """(mean over problems of the fraction of correct samples, its standard error)."""
    _check_matrix(correct)
    fractions = [sum(map(bool, row)) / len(row) for row in correct]
    mean = sum(fractions) / len(fractions)
    if len(fractions) < 2:
        return mean, None
    var = sum((f - mean) ** 2 for f in fractions) / (len(fractions) - 1)
    return mean, math.sqrt(var / len(fractions))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(correct: Matrix, k: int) -> float:
    """pass@k averaged over problems; every problem needs at least k samples."""
    _check_matrix(correct)
    for p, row in enumerate(correct):
        if len(row) < k:
            raise ValueError(f"problem {p} has {len(row)} samples, fewer than k={k}")
    return sum(pass_at_k(len(row), sum(map(bool, row)), k) for row in correct) / len(correct)


def majority_correct(clusters: Sequence[int | None], correct: Sequence[bool], k: int | None = None) -> bool:
    """Whether the majority answer among the first k samples (all if None) is correct."""
    if len(clusters) != len(correct):
        raise ValueError(f"clusters has {len(clusters)} entries but correct has {len(correct)}")
    k = len(clusters) if k is None else k
    if not 1 <= k <= len(clusters):
        raise ValueError(f"need 1 <= k <= {len(clusters)} samples, got k={k}")
    votes: dict[int, int] = {}
    first: dict[int, int] = {}
    for i in range(k):
        cid = clusters[i]
        if cid is not None:
            votes[cid] = votes.get(cid, 0) + 1
            first.setdefault(cid, i)
    if not votes:
        return False
    winner = max(votes, key=lambda cid: (votes[cid], -first[cid]))
    return bool(correct[first[winner]])


def maj_at_k(clusters: ClusterMatrix, correct: Matrix, k: int | None = None) -> float:
    """Majority-vote accuracy over problems, voting over the first k samples of each."""
    _check_matrix(correct)
    if len(clusters) != len(correct):
        raise ValueError(f"clusters covers {len(clusters)} problems but correct covers {len(correct)}")
    return sum(majority_correct(cl, co, k) for cl, co in zip(clusters, correct)) / len(correct)


def summary(correct: Matrix, *, clusters: ClusterMatrix | None = None, ks: Sequence[int] | None = None) -> dict[str, Any]:
    """Plain dict: problems, samples, accuracy ± stderr, pass@k and (given clusters) maj@k.

    `ks` defaults to the powers of two up to the smallest sample count, plus that count.
    """
    _check_matrix(correct)
    n_min = min(len(row) for row in correct)
    if ks is None:
        ks = sorted({2**j for j in range(n_min.bit_length()) if 2**j <= n_min} | {n_min})
    mean, stderr = mean_accuracy(correct)
    out: dict[str, Any] = {
        "problems": len(correct),
        "samples": sum(len(row) for row in correct),
        "accuracy": mean,
        "accuracy_stderr": stderr,
    }
    for k in ks:
        out[f"pass@{k}"] = mean_pass_at_k(correct, k)
    if clusters is not None:
        for k in ks:
            out[f"maj@{k}"] = maj_at_k(clusters, correct, k)
    return out


# ---- per-stage curves -------------------------------------------------------------------


class StageRecord(BaseModel):
    """One problem (or run): gold answer and, per stage, the population's extracted answers."""

    model_config = ConfigDict(coerce_numbers_to_str=True, extra="allow")

    gold: str | None = None
    stages: list[list[str | None]]


def _validate_records(records: Sequence[Any]) -> list[StageRecord]:
    out = []
    for r, record in enumerate(records):
        try:
            out.append(StageRecord.model_validate(record))
        except ValidationError as e:
            raise ValueError(f"records[{r}] is not {{'gold': str|None, 'stages': [[answer|None, ...], ...]}}: {e}") from None
    return out


def _check_shape(name: str, matrix: Sequence[Sequence[Sequence[Any]]], recs: list[StageRecord]) -> None:
    if len(matrix) != len(recs):
        raise ValueError(f"{name} covers {len(matrix)} records but there are {len(recs)}")
    for r, rec in enumerate(recs):
        if len(matrix[r]) != len(rec.stages):
            raise ValueError(f"{name}[{r}] has {len(matrix[r])} stages but records[{r}] has {len(rec.stages)}")
        for s, stage in enumerate(rec.stages):
            if len(matrix[r][s]) != len(stage):
                raise ValueError(f"{name}[{r}][{s}] has {len(matrix[r][s])} entries but the stage has {len(stage)}")


async def agrade_records(
    records: Sequence[Any], *, grader: Grader | None = None
) -> tuple[list[list[list[bool]]], list[list[list[int | None]]]]:
    """(correct, clusters) matrices for `stage_curves`, graded without blocking the event loop.

    Answers are compared as given (no extraction). Records without a gold answer get
    all-False rows; `stage_curves` skips those records anyway.
    """
    grader = grader or default_grader()
    recs = _validate_records(records)

    async def grade_stage(gold: str | None, answers: list[str | None]) -> list[bool]:
        if gold is None:
            return [False] * len(answers)
        results = await asyncio.gather(*(grader.agrade(a, gold, extract=False) for a in answers))
        return [res.correct for res in results]

    # Plain loops: Python 3.10 rejects await inside nested comprehensions.
    correct: list[list[list[bool]]] = []
    clusters: list[list[list[int | None]]] = []
    for rec in recs:
        correct.append(list(await asyncio.gather(*(grade_stage(rec.gold, st) for st in rec.stages))))
        clusters.append(list(await asyncio.gather(*(cluster_answers(st, grader=grader) for st in rec.stages))))
    return correct, clusters


def _grade_stage_sync(grader: Grader, gold: str | None, answers: list[str | None]) -> list[bool]:
    if gold is None:
        return [False] * len(answers)
    return [grader.grade(a, gold, extract=False).correct for a in answers]


def stage_curves(
    records: Sequence[Any],
    *,
    grader: Grader | None = None,
    correct: Sequence[Sequence[Sequence[bool]]] | None = None,
    clusters: Sequence[Sequence[Sequence[int | None]]] | None = None,
) -> list[dict[str, Any]]:
    """Per-stage accuracy curves over records `{"gold": str|None, "stages": [[answer|None, ...], ...]}`.

    Returns one dict per stage index: `stage`, `problems` (records counted), `mean_accuracy`,
    `majority_accuracy`, `pass_at_n` (the last three None when no record counts). A record
    counts for a stage when it has a gold answer and that stage has a non-empty population.
    Answers are compared as given (no extraction). Missing `correct` or `clusters` matrices
    are computed with `grader` (blocking; from async code, compute them with `agrade_records`
    and pass them in).
    """
    recs = _validate_records(records)
    if correct is None or clusters is None:
        grader = grader or default_grader()
    if correct is None:
        assert grader is not None
        correct = [[_grade_stage_sync(grader, rec.gold, st) for st in rec.stages] for rec in recs]
    if clusters is None:
        assert grader is not None
        clusters = [[cluster_answers_sync(st, grader=grader) for st in rec.stages] for rec in recs]
    _check_shape("correct", correct, recs)
    _check_shape("clusters", clusters, recs)

    n_stages = max((len(rec.stages) for rec in recs), default=0)
    curves = []
    for s in range(n_stages):
        rows = [r for r, rec in enumerate(recs) if rec.gold is not None and s < len(rec.stages) and rec.stages[s]]
        mean = maj = pass_n = 0.0
        for r in rows:
            co = correct[r][s]
            mean += sum(map(bool, co)) / len(co)
            maj += majority_correct(clusters[r][s], co)
            pass_n += any(co)
        n = len(rows)
        curves.append(
            {
                "stage": s,
                "problems": n,
                "mean_accuracy": mean / n if n else None,
                "majority_accuracy": maj / n if n else None,
                "pass_at_n": pass_n / n if n else None,
            }
        )
    return curves
