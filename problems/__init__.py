"""Math problems: loading, answer extraction, grading, metrics, synthetic sets.

    from rsa.problems import load_problems, extract_answer, Grader

    problems = load_problems("examples/data/sample.jsonl")   # or "synthetic:arith:200"
    with Grader(timeout=5) as grader:
        result = grader.grade(model_output, problems[0].answer)   # GradeResult

Modules, one job each: `data` (Problem, field aliases), `loaders` (file formats), `extract`
(final-answer extraction), `normalize` (string forms), `grading` (tiered grader), `pool`
(killable worker processes), `clustering` (answer groups for voting), `metrics`, `synthetic`.
"""

from __future__ import annotations

from . import synthetic
from .clustering import cluster_answers, cluster_answers_sync
from .data import Problem, ProblemLoadError
from .extract import DEFAULT_FALLBACKS, extract_answer
from .grading import GradeResult, Grader, default_grader, equivalent, grade
from .loaders import load_problems
from .metrics import (
    agrade_records,
    maj_at_k,
    majority_correct,
    mean_accuracy,
    mean_pass_at_k,
    pass_at_k,
    stage_curves,
    summary,
)
from .normalize import normalize_answer, parse_int

__all__ = [
    "DEFAULT_FALLBACKS",
    "GradeResult",
    "Grader",
    "Problem",
    "ProblemLoadError",
    "agrade_records",
    "cluster_answers",
    "cluster_answers_sync",
    "default_grader",
    "equivalent",
    "extract_answer",
    "grade",
    "load_problems",
    "maj_at_k",
    "majority_correct",
    "mean_accuracy",
    "mean_pass_at_k",
    "normalize_answer",
    "parse_int",
    "pass_at_k",
    "stage_curves",
    "summary",
    "synthetic",
]
