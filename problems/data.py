"""The `Problem` record and the mapping from the many dataset layouts users bring onto it.

Field aliases (first present wins; the rest of the record goes to `metadata`):

- problem: `problem`, `question`, `Problem`, `prompt` (a chat list takes the last user
  message's content; content given as OpenAI parts keeps the text parts).
- answer: `answer`, `Answer`, `expected_answer`, `ground_truth`, else verl's nested
  `reward_model.ground_truth`. Optional. Ints become "42", integral floats "42" too, other
  floats their shortest repr ("0.5"); strings are stripped; None, NaN and "" mean no answer.
- id: `id`, `ID`, `problem_idx`, `unique_id`. Ints become strings. When missing, the id is
  `p-` plus the first 12 hex digits of the SHA-256 of the problem text (stable across runs
  and machines); a repeated text gets `-2`, `-3`, ... in order of appearance.

Every error is a `ProblemLoadError` whose message starts with the source, the location
("line 3" for JSONL/CSV, "record 3" for JSON/Parquet/datasets, 1-based) and the field.
Limits: no schema inference beyond these aliases; booleans and lists are not answers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ANSWER_FIELDS",
    "ID_FIELDS",
    "PROBLEM_FIELDS",
    "Problem",
    "ProblemLoadError",
    "from_records",
    "synthetic_id",
]

PROBLEM_FIELDS = ("problem", "question", "Problem", "prompt")
ANSWER_FIELDS = ("answer", "Answer", "expected_answer", "ground_truth")
ID_FIELDS = ("id", "ID", "problem_idx", "unique_id")


class Problem(BaseModel):
    """One math problem; `answer` is the gold answer as a string, None when unknown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    problem: str = Field(min_length=1)
    answer: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ProblemLoadError(ValueError):
    """Bad problem data; `source`, `location` and `field` say exactly where."""

    def __init__(self, source: str, message: str, *, location: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.location = location
        self.field = field
        where = ": ".join(p for p in (source, location, f"field {field!r}" if field else None) if p)
        super().__init__(f"{where}: {message}")


def _first(record: Mapping[str, Any], names: Iterable[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in record:
            return name, record[name]
    return None, None


def _chat_content(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts
                content = "\n".join(
                    part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"
                )
            return content if isinstance(content, str) else None
    return None


def _answer_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a boolean is not an answer")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise TypeError(f"{value} is not an answer")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value.strip() or None
    raise TypeError(f"expected a string or number, got {type(value).__name__}")


def _id_str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def synthetic_id(problem: str) -> str:
    """The id given to a problem without one: stable across runs, processes and machines."""
    return "p-" + hashlib.sha256(problem.encode("utf-8")).hexdigest()[:12]


def _record_to_fields(
    record: Any, source: str, location: str
) -> tuple[str | None, str | None, str, str | None, dict[str, Any]]:
    """(id field name, id, problem text, answer, metadata) of one raw record."""
    if not isinstance(record, Mapping):
        raise ProblemLoadError(source, f"expected an object, got {type(record).__name__}", location=location)
    p_name, p_value = _first(record, PROBLEM_FIELDS)
    if p_name is None:
        raise ProblemLoadError(
            source, f"missing; expected one of {', '.join(PROBLEM_FIELDS)}", location=location, field="problem"
        )
    if isinstance(p_value, list):
        p_value = _chat_content(p_value)
        if p_value is None:
            raise ProblemLoadError(source, "chat list has no user message with text content", location=location, field=p_name)
    if not isinstance(p_value, str) or not p_value.strip():
        raise ProblemLoadError(source, "must be a non-empty string", location=location, field=p_name)

    a_name, a_value = _first(record, ANSWER_FIELDS)
    used = {p_name}
    if a_name is None and isinstance(record.get("reward_model"), Mapping) and "ground_truth" in record["reward_model"]:
        a_name, a_value = "reward_model.ground_truth", record["reward_model"]["ground_truth"]
    elif a_name is not None:
        used.add(a_name)
    try:
        answer = _answer_str(a_value)
    except TypeError as e:
        raise ProblemLoadError(source, str(e), location=location, field=a_name) from None

    i_name, i_value = _first(record, ID_FIELDS)
    if i_name is not None:
        used.add(i_name)
    metadata = {k: v for k, v in record.items() if k not in used}
    return i_name, _id_str(i_value), p_value.strip(), answer, metadata


def from_records(records: Iterable[tuple[str, Any]], *, source: str) -> list[Problem]:
    """Problems from (location, record) pairs; checks aliases, types and duplicate ids."""
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for location, record in records:
        id_field, pid, text, answer, metadata = _record_to_fields(record, source, location)
        if pid is None:
            base = pid = synthetic_id(text)
            k = 1
            while pid in seen:  # the same text twice: number the copies in order
                k += 1
                pid = f"{base}-{k}"
        elif pid in seen:
            raise ProblemLoadError(
                source, f"duplicate id {pid!r} (first at {seen[pid]})", location=location, field=id_field
            )
        seen[pid] = location
        problems.append(Problem(id=pid, problem=text, answer=answer, metadata=metadata))
    if not problems:
        raise ProblemLoadError(source, "no problems found (empty input)")
    return problems
