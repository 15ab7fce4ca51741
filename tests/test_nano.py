"""The shipped ZAYA1-nano checkpoint: files, tokenizer, loading in transformers, and a small
Markovian RSA solve end to end (TransformersBackend until the embedded engine runs it)."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NANO = Path(str(importlib.resources.files("rsa.backends.zaya1") / "nano"))
FILES = ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
         "tokenizer_config.json", "rsa_preset.json", "README.md"]


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(NANO)


def test_checkpoint_files_and_size():
    missing = [f for f in FILES if not (NANO / f).is_file()]
    assert not missing, f"missing from {NANO}: {missing}"
    total = sum(p.stat().st_size for p in NANO.iterdir() if p.is_file())
    assert total < 20 * 2**20, f"checkpoint is {total / 2**20:.1f} MiB"


def test_config_is_a_small_zaya1():
    cfg = json.loads((NANO / "config.json").read_text())
    assert cfg["model_type"] == "zaya" and cfg["architectures"] == ["ZayaForCausalLM"]
    assert cfg["num_experts"] >= 2 and cfg["num_experts_per_tok"] == 1 and cfg["router_hidden_size"] > 0
    model = transformers.ZayaForCausalLM.from_pretrained(NANO)
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n <= 5e6
    names = {k for k, _ in model.named_parameters()}
    assert any("router_mlp" in k for k in names) and any("residual_scale" in k for k in names)


def test_preset_is_a_valid_rsa_config():
    from rsa.config import RSAConfig

    preset = json.loads((NANO / "rsa_preset.json").read_text())
    cfg = RSAConfig(**preset)
    assert cfg.rounds >= 1 and cfg.aggregation_size >= 2 and cfg.max_tokens is not None


def test_tokenizer_specials_template_and_digits(tokenizer):
    for tag in ["<think>", "</think>", "<|user|>", "<|assistant|>", "<|end|>"]:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    assert tokenizer.eos_token == "<|end|>"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 1 + 2?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|assistant|>\n")
    ids = tokenizer.encode("12345 + 67890", add_special_tokens=False)
    assert [tokenizer.decode([i]) for i in ids if tokenizer.decode([i]).isdigit()] == list("1234567890")
    text = "<think>\n0012+0030\n2+0+0=2 c0\n</think>\n\n\\boxed{42}"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_greedy_solve_in_transformers(tokenizer):
    from rsa.problems import extract_answer
    from rsa.prompts import SOLVE_TEMPLATE, render_solve

    model = transformers.ZayaForCausalLM.from_pretrained(NANO).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": render_solve(SOLVE_TEMPLATE, "What is 21 + 34?")}],
                                        add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=120, do_sample=False)
    text = tokenizer.decode(out[0, len(ids):], skip_special_tokens=False)
    assert text.startswith("<think>") and "</think>" in text and "<|end|>" in text
    assert extract_answer(text) == "55", text


async def test_markovian_rsa_solve_end_to_end():
    import rsa
    from rsa.backends import TransformersBackend
    from rsa.prompts import TRUNCATION_MARKER

    preset = json.loads((NANO / "rsa_preset.json").read_text())
    preset.update(population=4, aggregation_size=2, rounds=1, seed=0)
    async with TransformersBackend(NANO, max_batch_size=8, seed=0) as backend:
        result = await rsa.asolve("What is 345 + 78?", backend=backend, **preset)
    assert len(result.stages) == 2
    first = result.stages[0].candidates
    assert all(c.finish_reason == "stop" and c.reasoning is not None for c in first)
    assert all(c.tail_truncated and c.tail_tokens == preset["tail_tokens"] for c in first)
    assert all(c.tail.startswith(TRUNCATION_MARKER) and "\\boxed{" in c.tail for c in first)
    answers = [c.answer for s in result.stages for c in s.candidates]
    assert sum(a is not None for a in answers) >= 6
    assert result.answer is not None


def test_default_solve_runs_nano_on_the_engine():
    """`rsa.solve(problem)` with no backend: ZAYA1-nano on our engine with its shipped preset."""
    import rsa

    result = rsa.solve("What is 345 + 78?", population=4, rounds=1, seed=0)
    preset = json.loads((NANO / "rsa_preset.json").read_text())
    assert result.backend.startswith("zaya1-engine") and result.config.tail_tokens == preset["tail_tokens"]
    assert [len(s.candidates) for s in result.stages] == [4, 4]
    assert all(c.finish_reason == "stop" for s in result.stages for c in s.candidates)
    assert all(c.tail_truncated for c in result.stages[0].candidates)
    assert result.answer is not None and sum(result.votes.values()) >= 2


def test_cli_solve_uses_the_embedded_default():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rsa.cli", "solve", "What is 21 + 34?", "-n", "4", "-t", "1",
                           "--seed", "0", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["config"]["tail_tokens"] == json.loads((NANO / "rsa_preset.json").read_text())["tail_tokens"]
    assert result["answer"] is not None and len(result["stages"]) == 2
