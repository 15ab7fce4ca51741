"""The whole ZAYA1 model with the Triton kernels forced on equals the model with the twins, on a tiny
random checkpoint (built by tests/backends/zaya1/conftest.py's make_hf): the no-cache forward, and a
cached varlen prefill followed by a decode step through the cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from rsa.backends.zaya1 import ContiguousCache, load_model  # noqa: E402
from rsa.kernels import ops  # noqa: E402

torch.set_num_threads(1)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
# (max, mean) |triton - twins| on fp32 logits of O(1): accumulation order only
TOL = (1e-4, 1e-5)


def _zaya_helpers():
    path = Path(__file__).parents[1] / "backends" / "zaya1" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_zaya1_checkpoints", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    zh = _zaya_helpers()
    cfg = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               num_experts=4, router_hidden_size=16, moe_intermediate_size=48)
    hf = zh.make_hf(seed=3, **cfg)
    path = zh.save(hf, tmp_path_factory.mktemp("tiny"))
    return zh, path, load_model(path, device=DEV)


def _run(model, backend: str) -> list[torch.Tensor]:
    """No-cache logits of 2 x 9 tokens, then a cached prefill of lengths 9 and 4 and one decode step."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 131, (2, 9), generator=g).to(DEV)
    with ops.use_backend(backend):
        out = [model.logits(ids)]
        dtype = model.model.embed_tokens.weight.dtype
        cache = ContiguousCache.for_config(model.config, max_seqs=3, max_len=12, dtype=dtype, device=DEV)
        lens = [9, 4]
        with torch.inference_mode():
            flat = torch.cat([ids[0], ids[1, :4]])
            pos = torch.cat([torch.arange(9), torch.arange(4)]).to(DEV)
            out.append(model.compute_logits(model(flat, pos, cache.context(lens, [0, 0], [2, 0]))))
            pos = torch.tensor(lens, device=DEV)
            out.append(model.compute_logits(model(ids[:, 4], pos, cache.context([1, 1], lens, [2, 0]))))
        return out


STEPS = ("no-cache forward", "cached varlen prefill", "decode step")


def test_model_with_triton_kernels_matches_twins(tiny):
    zh, _, model = tiny
    ref, ours = _run(model, "torch"), _run(model, "triton")
    for what, a, b in zip(STEPS, ours, ref):
        zh.report(a, b, TOL, what)


@pytest.mark.slow
def test_bf16_model_with_triton_kernels_matches_twins(tiny):
    """bf16 weights and K/V; fp32 residual and CCA state. Bound: the transformers-parity bf16 bound."""
    zh, path, _ = tiny
    model = load_model(path, dtype=torch.bfloat16, device=DEV)
    ref, ours = _run(model, "torch"), _run(model, "triton")
    for what, a, b in zip(STEPS, ours, ref):
        zh.report(a, b, zh.TOL[torch.bfloat16], what)
