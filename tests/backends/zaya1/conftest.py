"""Tiny random ZAYA checkpoints written by transformers (the oracle), shared by the zaya1 tests.

Fresh transformers models have norms at 1, residual scales at 1/0, key temperatures at 0 (uniform
attention), near-uniform routers and balancing biases at 0/-1, so parity on them cannot catch bugs
in those parts. `make_checkpoint` perturbs every 1-D parameter and the balancing biases, sets the key
temperatures to 0.5..1.5, sharpens the routers so the chosen expert varies by token, and scales the
(tied) embedding so logits are O(1) and an absolute tolerance of 1e-4 is tight.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from tiny_zaya import perturb

torch.set_num_threads(1)  # tiny ops; avoids oversubscribing the shared cores

VOCAB = 131
# 1-3 layers; 4/2, 8/2, 6/3 query/kv heads; head_dim 16-64; 3-8 experts; router width 16-64
CONFIGS = {
    "L2-q4kv2-d16-e4-r16": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=16, num_experts=4, router_hidden_size=16, moe_intermediate_size=64),
    "L3-q8kv2-d32-e8-r32-theta1e4": dict(
        num_hidden_layers=3, hidden_size=96, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
        num_experts=8, router_hidden_size=32, moe_intermediate_size=48,
        rope_parameters={"hybrid": {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5}}),
    "L1-q6kv3-d64-e3-r64-conv3x2": dict(num_hidden_layers=1, hidden_size=128, num_attention_heads=6,
                                        num_key_value_heads=3, head_dim=64, num_experts=3, router_hidden_size=64,
                                        moe_intermediate_size=80, cca_time0=3, cca_time1=2),
}
# (max, mean) of |ours - transformers| on logits, per dtype (same dtype on both sides). Measured over
# 4 seeds x 3 configs: fp32 max 2e-6; bf16 max 1.3e-2..4.7e-2 (logits up to ~8: 1-1.5 bf16 ulp), mean 2-4e-3.
TOL = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (6e-2, 6e-3)}


def make_hf(seed: int = 0, skip_bias: float | None = None, **overrides) -> transformers.ZayaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.ZayaConfig(vocab_size=VOCAB, bos_token_id=2, eos_token_id=1, pad_token_id=0, **overrides)
    hf = transformers.ZayaForCausalLM(cfg).eval()
    perturb(hf, seed, skip_bias)
    return hf


def save(hf: transformers.ZayaForCausalLM, path, **kw) -> str:
    hf.save_pretrained(path, **kw)
    return str(path)


def report(ours: torch.Tensor, ref: torch.Tensor, tol: float | tuple[float, float], what: str = "logits") -> None:
    """assert_close with atol = max bound, rtol=0, plus the mean bound; failures print max and mean |diff|."""
    max_tol, mean_tol = tol if isinstance(tol, tuple) else (tol, tol)
    diff = (ours.float() - ref.float()).abs()
    stats = f"{what}: max |diff| {diff.max().item():.3e}, mean {diff.mean().item():.3e} (bounds {max_tol}, {mean_tol})"
    torch.testing.assert_close(ours.float(), ref.float(), atol=max_tol, rtol=0, msg=lambda m: f"{stats}\n{m}")
    assert diff.mean().item() <= mean_tol, stats


@pytest.fixture(scope="session", params=list(CONFIGS))
def tiny(request, tmp_path_factory):
    """(checkpoint dir, fp32 transformers model) for each tiny config."""
    hf = make_hf(seed=len(request.param), **CONFIGS[request.param])
    return save(hf, tmp_path_factory.mktemp(request.param)), hf


def record_routing(model) -> list[torch.Tensor]:
    """Attach hooks that append each Router call's expert ids (index E = skip) to the returned list."""
    seen: list[torch.Tensor] = []
    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(lambda mod, args, out: seen.append(out[0].clone()))
    return seen


@pytest.fixture(scope="session")
def zh():
    """The helpers above, for test modules (importlib import mode cannot import conftest by name)."""
    import types

    return types.SimpleNamespace(CONFIGS=CONFIGS, TOL=TOL, VOCAB=VOCAB, make_hf=make_hf, save=save,
                                 report=report, record_routing=record_routing)
