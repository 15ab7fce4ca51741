"""Tokenizer, chat template and EOS ids from a checkpoint directory, plus incremental detokenization.

The tokenizer and its chat template come from transformers' `AutoTokenizer` (offline, from the
directory); a directory without tokenizer files gives None and the engine then takes token ids
only. EOS ids are the union of `generation_config.json` and `config.json` `eos_token_id` (an int
or a list). Text is decoded with special tokens kept, so `<think>` / `</think>` stay visible.
"""

from __future__ import annotations

import json
import os
from typing import Any

THINK_OPEN = "<think>"


def load_tokenizer(path: str | os.PathLike[str]) -> Any | None:
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    if not any(os.path.exists(os.path.join(path, n)) for n in names):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(path))


def eos_token_ids(path: str | os.PathLike[str] | None, config_eos: int | list[int] | None) -> set[int]:
    found: set[int] = set()

    def add(value: Any) -> None:
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, int))

    add(config_eos)
    if path is not None and os.path.exists(gen := os.path.join(path, "generation_config.json")):
        with open(gen, encoding="utf-8") as fh:
            add(json.load(fh).get("eos_token_id"))
    return found


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def detokenize_step(tokenizer: Any, ids: list[int], prefix: int, read: int) -> tuple[str, int, int]:
    """New text since `read` (HF/vLLM incremental scheme); returns (text, prefix, read) offsets to keep.
    Text ending in an incomplete byte sequence is held back until the next token completes it."""
    before = decode(tokenizer, ids[prefix:read])
    now = decode(tokenizer, ids[prefix:])
    if len(now) > len(before) and not now.endswith("\ufffd"):
        return now[len(before):], read, len(ids)
    return "", prefix, read


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text for `messages` with the generation prompt appended."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def opens_think(prompt_text: str) -> bool:
    """The template opened a think block in the prompt, so the output holds only `</think>`."""
    return prompt_text.rstrip().endswith(THINK_OPEN)
