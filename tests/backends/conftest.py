"""Fixtures for backend tests: the fake vLLM server (`fake_vllm.py`) served on loopback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib puts no test folder on sys.path; the fake server is a plain module here.
sys.path.insert(0, str(Path(__file__).parent))

from fake_vllm import FakeVLLM  # noqa: E402


@pytest.fixture
def serve_fake() -> Iterator[Callable[..., tuple[FakeVLLM, str]]]:
    """`serve_fake(**FakeVLLM kwargs) -> (server, base_url)`; every server stops at test end."""
    with ExitStack() as stack:

        def start(**kwargs: Any) -> tuple[FakeVLLM, str]:
            fake = FakeVLLM(**kwargs)
            return fake, stack.enter_context(fake.serve())

        yield start


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A character-level transformers tokenizer saved to disk; its chat template opens `<think>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<think>", "</think>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>", "<think>", "</think>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("char_tokenizer")
    tok.save_pretrained(path)
    return path
