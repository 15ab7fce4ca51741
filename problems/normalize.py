"""String normalisation of short final answers, and the integer reading used by the fast path.

`normalize_answer` is deliberately conservative: the grader treats equal normalised strings
as a match without asking SymPy, so a rule belongs here only if it can never make two
different answers equal. It strips math delimiters, spacing macros, `\\left`/`\\right`,
`\\dfrac`/`\\tfrac`, a whole-answer `\\text{...}`/`\\boxed{...}` wrapper and a final full stop.
Anything smarter (units, percentages, `\\frac12`) is math-verify's job.

`parse_int` reads an answer as an exact integer, the way competition graders do for AIME:
surrounding `$`/`\\$`, a leading `+`, leading zeros, thousands separators (`1,000`, `1{,}000`,
`1\\,000`) and a zero fraction (`42.0`) are accepted. `1,234` is read as 1234, never as the
pair (1, 234). Everything else (`4.5`, `1e3`, `5 cm`, `x = 5`) is not an integer here.

Reference normalisers this follows in spirit: Hendrycks MATH `strip_string` and Minerva
`normalize_final_answer` (see lm-eval `tasks/hendrycks_math/utils.py`, `tasks/minerva_math`).
"""

from __future__ import annotations

import re

__all__ = ["normalize_answer", "parse_int"]

_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])")
_WRAPPERS = re.compile(r"^\\(?:text|textbf|textrm|mathrm|mathbf|mbox|boxed)\s*\{(.*)\}$", re.S)
# A space survives only between two word characters ("\pi r", "2 x"), where it separates tokens.
_SPACES = re.compile(r"\s+")
# Thin spaces (\,) have already become plain spaces by the time this runs.
_INT = re.compile(r"^[+-]?(\d+|\d{1,3}(?:(?:,|\{,\}| )\d{3})+)(?:\.0+)?$")
_MAX_INT_CHARS = 1000  # int() refuses > 4300 digits; answers that long are not integers we grade


def _balanced(s: str) -> bool:
    depth = 0
    escaped = False
    for ch in s:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _strip_delimiters(s: str) -> str:
    changed = True
    while changed:
        changed = False
        for left, right in _DELIMS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
                break
    return s


def _squeeze_spaces(s: str) -> str:
    parts = _SPACES.split(s)
    out = parts[0]
    for part in parts[1:]:
        if out and part and (out[-1].isalnum() and part[0].isalnum()):
            out += " "
        out += part
    return out


def normalize_answer(answer: str) -> str:
    """Canonical string form of a short answer (see the module docstring for the rules)."""
    s = answer.strip()
    for _ in range(4):  # wrappers can nest: $\boxed{\text{5}}$
        before = s
        s = _strip_delimiters(s)
        s = _SPACING.sub(" ", s).strip()
        s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
        m = _WRAPPERS.match(s)
        # Only unwrap when the braces really enclose the whole answer: \text{a}+\text{b} stays.
        if m and _balanced(m.group(1)):
            s = m.group(1).strip()
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        if s == before:
            break
    return _squeeze_spaces(s)


def parse_int(answer: str) -> int | None:
    """The answer as an exact integer, or None if it is not written as one."""
    if len(answer) > _MAX_INT_CHARS:
        return None
    s = normalize_answer(answer)
    if s.startswith("\\$"):
        s = s[2:].lstrip()
    s = s.strip("$ ")
    m = _INT.match(s)
    if m is None:
        return None
    digits = re.sub(r"[^\d]", "", m.group(1))
    return -int(digits) if s.startswith("-") else int(digits)
