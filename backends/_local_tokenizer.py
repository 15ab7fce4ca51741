"""Token-exact tails for in-process backends that hold a transformers tokenizer."""

from __future__ import annotations

from typing import Any

from .base import BackendUnavailable


class LocalTokenizerMixin:
    """`tokenize`/`detokenize` with the backend's own tokenizer (no special tokens added, none
    skipped, so `<think>` tags survive in tails) and the closed-backend check they share.
    The class sets `tokenizer`, `_closed` and `_closed_message`."""

    tokenizer: Any
    _closed: bool
    _closed_message: str

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(self._closed_message)

    async def tokenize(self, text: str) -> list[int]:
        self._check_open()
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def detokenize(self, ids: list[int]) -> str:
        self._check_open()
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)
