"""Tails: the bounded part of a candidate that the next stage sees.

A tail is the last `tail_tokens` tokens of a text, cut on token ids with the backend's own
tokenizer and decoded back, so the bound holds exactly in the model's tokens. A cut tail starts
with `TRUNCATION_MARKER` on a line of its own; the marker is not counted in `tail_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsa.backends.base import Backend

from .prompts import TRUNCATION_MARKER

__all__ = ["Tail", "make_tail", "tail_text_source"]


@dataclass(frozen=True, slots=True)
class Tail:
    text: str  # marker included when cut
    tokens: int  # tokens of the kept text, marker excluded
    truncated: bool


async def make_tail(backend: Backend, text: str, tail_tokens: int) -> Tail:
    ids = await backend.tokenize(text)
    if len(ids) <= tail_tokens:
        return Tail(text, len(ids), False)
    kept = await backend.detokenize(ids[-tail_tokens:])
    # a cut inside a multi-byte character decodes to U+FFFD at the start; drop it
    kept = kept.lstrip("\ufffd")
    return Tail(f"{TRUNCATION_MARKER}\n{kept}", tail_tokens, True)


def tail_text_source(source: str, *, trace: str, content: str, finished: bool, thought: bool) -> str:
    """The text a tail is cut from: the whole trace, or (PaCoRe-hybrid) the post-think answer
    of a rollout that finished its thinking and answered."""
    if source == "answer" and finished and thought and content.strip():
        return content
    return trace
