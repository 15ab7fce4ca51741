"""The three prompt templates of Markovian RSA and how candidates are laid into them.

Templates are `str.format` strings. `solve` takes `{problem}`; `aggregate` (K >= 2) and `refine`
(K = 1) take `{problem}` and `{candidates}`, where `{candidates}` is the numbered candidate blocks
built by `format_candidates`. All three can be overridden through `RSAConfig`.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

__all__ = [
    "AGGREGATE_TEMPLATE",
    "REFINE_TEMPLATE",
    "SOLVE_TEMPLATE",
    "TRUNCATION_MARKER",
    "check_template",
    "format_candidates",
    "render_aggregate",
    "render_solve",
]

TRUNCATION_MARKER = "[... earlier reasoning omitted ...]"

SOLVE_TEMPLATE = (
    "{problem}\n\n"
    "Reason step by step, then give your final answer within \\boxed{{}}."
)

AGGREGATE_TEMPLATE = (
    "Problem:\n{problem}\n\n"
    "Below are several candidate solutions to this problem. Each is the final part of a "
    "reasoning trace and may be truncated at its start; some may be wrong.\n\n"
    "{candidates}\n\n"
    "Check the candidates carefully. Keep what is correct, fix what is wrong, and combine the "
    "best ideas into one complete solution. If every candidate is wrong, solve the problem "
    "another way. Reason step by step, then give your final answer within \\boxed{{}}."
)

REFINE_TEMPLATE = (
    "Problem:\n{problem}\n\n"
    "Below is a candidate solution to this problem. It is the final part of a reasoning trace, "
    "may be truncated at its start, and may be wrong.\n\n"
    "{candidates}\n\n"
    "Check it carefully and correct any mistake; if the approach is wrong, solve the problem "
    "another way. Reason step by step, then give your final answer within \\boxed{{}}."
)

_CANDIDATE_BLOCK = "--- Candidate {index} ---\n{tail}\n--- End of candidate {index} ---"


def check_template(name: str, template: str, required: set[str]) -> None:
    """Reject a template with unknown or missing `{fields}`, naming them."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid format string: {exc}") from None
    unknown = fields - required
    missing = required - fields
    if unknown:
        raise ValueError(f"{name} has unknown fields {sorted(unknown)}; allowed: {sorted(required)}")
    if missing:
        raise ValueError(f"{name} must contain {sorted('{' + m + '}' for m in missing)}")


def render_solve(template: str, problem: str) -> str:
    return template.format(problem=problem)


def format_candidates(tails: Sequence[str]) -> str:
    return "\n\n".join(_CANDIDATE_BLOCK.format(index=i + 1, tail=t) for i, t in enumerate(tails))


def render_aggregate(aggregate_template: str, refine_template: str, problem: str, tails: Sequence[str]) -> str:
    """The aggregation prompt for these tails: `refine` for one tail, `aggregate` for more."""
    if not tails:
        raise ValueError("an aggregation prompt needs at least one candidate")
    template = refine_template if len(tails) == 1 else aggregate_template
    return template.format(problem=problem, candidates=format_candidates(tails))
