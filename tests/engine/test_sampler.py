"""Sampler: greedy, the cuts, seeded rows independent of the batch, and the draw distribution."""

from __future__ import annotations

import pytest
import torch

from rsa.backends.zaya1 import SamplingParams
from rsa.backends.zaya1.sampler import Sampler


def logits(rows: int = 4, vocab: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("cut", [dict(temperature=0), dict(top_k=1), dict(top_p=1e-6), dict(min_p=1.0)])
def test_cuts_that_leave_one_token_give_argmax(cut):
    x = logits()
    params = [SamplingParams(**cut)] * 4
    assert Sampler(seed=0)(x, params, range(4)).tolist() == x.argmax(-1).tolist()


def test_mixed_batch_keeps_greedy_rows_greedy():
    x = logits(6)
    params = [SamplingParams(temperature=0 if i % 2 else 1.5, top_k=i % 3, top_p=0.9, min_p=0.05) for i in range(6)]
    out = Sampler(seed=0)(x, params, range(6))
    assert out[1::2].tolist() == x[1::2].argmax(-1).tolist()


def test_top_k_and_top_p_only_draw_from_the_kept_set():
    x = logits(1, 32).expand(500, 32).contiguous()
    top3 = set(x[0].topk(3).indices.tolist())
    assert set(Sampler(seed=1)(x, [SamplingParams(top_k=3)] * 500, range(500)).tolist()) <= top3
    probs = x[0].softmax(-1).sort(descending=True)
    keep = int((probs.values.cumsum(0) < 0.5).sum()) + 1
    nucleus = set(probs.indices[:keep].tolist())
    assert set(Sampler(seed=1)(x, [SamplingParams(top_p=0.5)] * 500, range(500)).tolist()) <= nucleus


def test_seeded_rows_do_not_depend_on_the_batch():
    x = logits(5)
    seeded = SamplingParams(seed=42)
    alone = [Sampler(seed=0)(x[2:3], [seeded], [7]).item() for _ in range(2)]
    sampler = Sampler(seed=123)
    mixed = sampler(x, [SamplingParams(), SamplingParams(), seeded, SamplingParams(seed=1), SamplingParams()],
                    [1, 2, 7, 9, 4])
    assert alone[0] == alone[1] == mixed[2].item()
    draws = [Sampler(seed=0)(x[2:3].expand(1, -1), [seeded], [7]).item()]
    s = Sampler()
    seq_a = [s(x[2:3], [seeded], [7]).item() for _ in range(20)]
    s.forget(7)
    seq_b = [s(x[2:3], [seeded], [7]).item() for _ in range(20)]
    assert seq_a == seq_b and seq_a[0] == draws[0] and len(set(seq_a)) > 1


def test_draws_follow_the_softmax():
    x = torch.tensor([[0.0, 1.0, 2.0, -9.0]]).expand(4000, 4).contiguous()
    out = Sampler(seed=3)(x, [SamplingParams(temperature=1.0)] * 4000, range(4000))
    freq = torch.bincount(out, minlength=4).float() / 4000
    torch.testing.assert_close(freq, x[0].softmax(-1), atol=0.03, rtol=0)


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_k=-1), dict(min_p=2),
                                 dict(max_tokens=0), dict(max_tokens=-3), dict(stop=("",)), dict(seed=1.5)])
def test_sampling_params_validation(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_sampling_params_normalises_stop():
    assert SamplingParams(stop="x").stop == ("x",) and SamplingParams(stop=["a", "b"]).stop == ("a", "b")
