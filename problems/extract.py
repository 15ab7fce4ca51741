"""Final-answer extraction from model output: the last `\\boxed{...}`, then optional fallbacks.

`extract_answer(text, fallbacks=DEFAULT_FALLBACKS)` returns the answer string (stripped, not
otherwise normalised) or None. Steps, in order:

1. The last `\\boxed` or `\\fbox` in the text decides. Its argument is brace-matched, so nested
   braces (`\\boxed{\\frac{1}{2}}`) and escaped braces (`\\boxed{\\{1,2\\}}`) work; a space
   before the brace (`\\boxed {5}`) and the brace-less TeX form (`\\boxed 5`) are accepted.
   Several boxes (`\\boxed{3}` ... `\\boxed{5}`) give the last one, "5".
2. If that last box is empty (`\\boxed{}`, `\\boxed{ }`) the answer is None, and no fallback runs:
   the model committed to an empty answer.
3. If there is no box, or the last one never closes (output cut off mid-answer), the named
   fallbacks run in the order given; the first that finds something wins:
   - `"answer_phrase"`: text after the last "answer is", "answer:" or "answer =" (any case,
     markdown bold allowed) up to the end of the line or sentence; a `$...$` span in it wins.
   - `"bare"`: the whole text, when it looks like an answer by itself: one line of at most
     100 characters, balanced braces, no `\\boxed`, and either one token or no word of two or
     more letters outside LaTeX commands and `\\text{}` ("42", "\\frac{1}{2}", "x = 5",
     "(1, 2]", "Monday"; not "It is 42", whose last number the next fallback finds).
   - `"last_number"`: the last integer, decimal or simple fraction in the text ("1,000",
     "-3", "2.5", "3/4"); a minus sign counts only when it does not follow a word or digit.
   `fallbacks=()` gives strict boxed-only extraction.

Limits: no understanding of prose ("the answer is not 5, it is 6" gives "not 5, it is 6"),
no multiple-choice letter logic, and no `\\boxed` inside code blocks special-casing. Runs in
time linear in the text, so a 1 MB output is cheap to scan (the grader's length guard then
rejects a huge extracted answer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["DEFAULT_FALLBACKS", "FALLBACKS", "extract_answer", "last_boxed"]

FALLBACKS = ("answer_phrase", "bare", "last_number")
DEFAULT_FALLBACKS: tuple[str, ...] = FALLBACKS

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_PHRASE = re.compile(r"\banswer\b\s*(?:\*\*|__)?\s*(?:is\b\s*:?|:|=)", re.I)
_MATH_SPAN = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_LATEX_WORDS = re.compile(r"\\text\w*\s*\{[^{}]*\}|\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")

# Sentinel for "the last box is present but empty", distinct from "no usable box".
_EMPTY = ""


def _match_braces(text: str, start: int) -> int | None:
    """Index just past the brace group opening at text[start] == "{", or None if unbalanced."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed`/`\\fbox` ("" if empty), or None if absent or unbalanced."""
    last = None
    for last in _BOX.finditer(text):
        pass
    if last is None:
        return None
    i = last.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        end = _match_braces(text, i)
        return None if end is None else text[i + 1 : end - 1].strip()
    # Brace-less TeX form: \boxed 5 takes one token.
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0).rstrip(".,;") if m else None


def _clean(s: str) -> str | None:
    s = s.strip().strip("*_").strip()
    if s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    s = s.rstrip(".").rstrip()
    return s or None


def _answer_phrase(text: str) -> str | None:
    last = None
    for last in _PHRASE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() :].lstrip(" \t*_:")
    line = rest.split("\n", 1)[0]
    math = _MATH_SPAN.search(line)
    if math:
        return _clean(math.group(1) or math.group(2))
    end = _SENTENCE_END.search(line)
    return _clean(line[: end.start()] if end else line)


def _bare(text: str) -> str | None:
    s = text.strip()
    if not s or "\n" in s or len(s) > 100 or _BOX.search(s):
        return None
    if _match_braces("{" + s + "}", 0) != len(s) + 2:  # unbalanced: a fragment, not an answer
        return None
    if any(ch.isspace() for ch in s) and _WORD.search(_LATEX_WORDS.sub(" ", s)):
        return None
    return _clean(s)


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return None if last is None else last.group(0)


_FALLBACK_FUNCS = {"answer_phrase": _answer_phrase, "bare": _bare, "last_number": _last_number}


def extract_answer(text: str | None, *, fallbacks: Sequence[str] = DEFAULT_FALLBACKS) -> str | None:
    """The final answer in `text`, or None; see the module docstring for the exact rules."""
    unknown = [name for name in fallbacks if name not in _FALLBACK_FUNCS]
    if unknown:
        raise ValueError(f"unknown answer fallback(s) {unknown}; known: {list(FALLBACKS)}")
    if text is None:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed if boxed != _EMPTY else None
    for name in fallbacks:
        found = _FALLBACK_FUNCS[name](text)
        if found:
            return found
    return None
