"""Parity of every Triton kernel with its plain-PyTorch twin (the oracle), on CUDA or, without one,
under TRITON_INTERPRET=1 on CPU (see conftest.py).

Awkward small shapes: T = 1, 33, 257; cache block sizes that do not divide the context; 4 and 16
experts with empty experts, skip tokens and T = 1; head_dim 16/32 by default, 128 marked slow.
Note: Triton 3.9's interpreter cannot multiply bf16 tiles (it multiplies the bit patterns), so
in interpreter mode the kernels upcast dot operands to fp32; bf16 cases there check the kernels'
roundings and dtypes, not bf16 tensor-core numerics (benchmarks/kernels_gpu.py does that on CUDA).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from rsa.kernels import attention_ref, cca_ref, moe_ref, ops, rmsnorm_ref  # noqa: E402
from rsa.kernels import attention_triton, cca_triton, moe_triton, rmsnorm_triton  # noqa: E402

torch.set_num_threads(1)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
F32, BF16 = torch.float32, torch.bfloat16
# (atol, rtol) per output dtype. fp32: accumulation order only. bf16: outputs of O(1) magnitude
# (normalised q/k, RMSNorm) differ from the twin by 1-2 bf16 ulps (2^-7 relative) where an fp32
# intermediate lands next to a rounding boundary; attention/MoE outputs are O(0.1..1).
TOL = {F32: (2e-5, 1e-5), BF16: (2e-2, 1.6e-2)}


def randn(*shape, gen, dtype=F32):
    return (torch.randn(*shape, generator=gen) / 10).to(dtype).to(DEV)


def check(ours, ref, what, dtype=None):
    atol, rtol = TOL[dtype or ref.dtype]
    assert ours.dtype == ref.dtype and ours.shape == ref.shape, f"{what}: {ours.dtype}{tuple(ours.shape)}"
    diff = (ours.float() - ref.float()).abs()
    torch.testing.assert_close(ours.float(), ref.float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: max {diff.max():.3e} mean {diff.mean():.3e}\n{m}")


# ---- RMSNorm and the fused residual merge ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("t, n", [(1, 48), (33, 80), pytest.param(257, 64, marks=pytest.mark.slow)])
def test_rmsnorm_and_merge(t, n, dtype):
    g = torch.Generator().manual_seed(t + n)
    x = torch.randn(t, n, generator=g).mul(3).to(DEV)
    w = 1 + randn(n, gen=g, dtype=dtype)
    check(rmsnorm_triton.rmsnorm(x, w, 1e-5), rmsnorm_ref.rmsnorm(x, w, 1e-5), "rmsnorm")
    branch = randn(t, n, gen=g, dtype=dtype)
    vecs = [1 + randn(n, gen=g, dtype=dtype) for _ in range(4)]
    ours = rmsnorm_triton.merge_rmsnorm(branch, x, *vecs, w, 1e-5)
    ref = rmsnorm_ref.merge_rmsnorm(branch, x, *vecs, w, 1e-5)
    check(ours[0], ref[0], "merged residual")
    check(ours[1], ref[1], "merged normed")


# ---- CCA epilogue ------------------------------------------------------------------------------------

def _cca_case(hq, kv, d, t0, t1, lens, fresh, dtype, seed, with_state=True):
    g = torch.Generator().manual_seed(seed)
    c, w, vd, r2 = (hq + kv) * d, t0 + t1 - 2, kv * d // 2, d // 4
    t, nseq, slots = sum(lens), len(lens), len(lens) + 2
    ang = torch.rand(t, r2, generator=g) * 6
    args = [randn(t, c, gen=g, dtype=dtype), randn(t, vd, gen=g, dtype=dtype), randn(t, vd, gen=g, dtype=dtype),
            ang.cos().to(DEV), ang.sin().to(DEV),
            randn(c, 1, t0, gen=g, dtype=dtype) * 5, randn(c, gen=g, dtype=dtype),
            randn(c, d, t1, gen=g, dtype=dtype) * 5, randn(c, gen=g, dtype=dtype),
            (0.5 + torch.rand(kv, generator=g)).to(dtype).to(DEV)]
    state = (torch.randn(slots, c, w, generator=g).to(DEV), torch.randn(slots, vd, generator=g).to(DEV))
    meta = (torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV),
            torch.randperm(slots, generator=g)[:nseq].to(DEV), torch.tensor(fresh, device=DEV))
    return args, state if with_state else (None, None), meta


def _cca_parity(case, dtype):
    args, state, meta = case
    outs = []
    for impl in (cca_ref, cca_triton):
        st = [s.clone() if s is not None else None for s in state]
        outs.append((*impl.cca_epilogue(*args, *st, *meta), *st))
    for name, ours, ref in zip(("q", "k", "v", "conv_state", "value_state"), outs[1], outs[0]):
        if ref is not None:
            check(ours, ref, name, dtype if name in "qkv" else F32)


# (hq, kv, d, t0, t1, sequence lengths, fresh): decode-like, a zero-length sequence, chunks shorter than
# the conv window continuing from state, a 3x2 conv, GQA 4:1 and 3:1
CCA_CASES = {
    "T1-decode": (4, 1, 16, 2, 2, [1], [False]),
    "T33-mixed": (4, 2, 16, 2, 2, [1, 20, 0, 1, 11], [True, False, True, False, True]),
    "conv3x2-q6kv3-d32": (6, 3, 32, 3, 2, [2, 1, 9], [False, False, True]),
}


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("case", list(CCA_CASES))
def test_cca_epilogue(case, dtype):
    _cca_parity(_cca_case(*CCA_CASES[case], dtype, seed=len(case)), dtype)


def test_cca_epilogue_without_cache_state():
    _cca_parity(_cca_case(4, 2, 16, 2, 2, [5, 28], [True, True], F32, seed=3, with_state=False), F32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_cca_epilogue_zaya_head_dim_257_tokens(dtype):
    _cca_parity(_cca_case(8, 2, 128, 2, 2, [1, 200, 56], [False, True, False], dtype, seed=4), dtype)


# ---- K/V store and attention over a paged cache --------------------------------------------------------

def _paged(hq, kv, d, block, ctx_lens, new_lens, dtype, seed):
    """Shuffled blocks holding each sequence's context; this step's k, v stored by the Triton store_kv
    (checked against the twin's); returns (q, k, v, k_cache, v_cache, metadata)."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-(c + n) // block) for c, n in zip(ctx_lens, new_lens)]
    num_blocks = sum(need) + 3
    perm, tables, used = torch.randperm(num_blocks, generator=g).tolist(), [], 0
    for nb in need:
        tables.append(perm[used:used + nb] + [0] * (max(need) - nb))
        used += nb
    k_cache, v_cache = randn(num_blocks, block, kv, d, gen=g, dtype=dtype), randn(num_blocks, block, kv, d, gen=g, dtype=dtype)
    t = sum(new_lens)
    q, k, v = randn(t, hq, d, gen=g, dtype=dtype) * 30, randn(t, kv, d, gen=g, dtype=dtype), randn(t, kv, d, gen=g, dtype=dtype)
    slots = [tables[b][p // block] * block + p % block
             for b, (c, n) in enumerate(zip(ctx_lens, new_lens)) for p in range(c, c + n)]
    slot_mapping = torch.tensor(slots, device=DEV)
    slot_mapping[t // 2] = -1  # a token whose K/V must not be stored
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    attention_ref.store_kv(k, v, ref_k, ref_v, slot_mapping)
    attention_triton.store_kv(k, v, k_cache, v_cache, slot_mapping)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v), "store_kv"
    cu = torch.tensor([0, *torch.tensor(new_lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    seq_lens = torch.tensor([c + n for c, n in zip(ctx_lens, new_lens)], dtype=torch.int32, device=DEV)
    meta = (cu, seq_lens, torch.tensor(tables, dtype=torch.int32, device=DEV), max(new_lens), int(seq_lens.max()),
            d ** -0.5)
    return q, k, v, k_cache, v_cache, meta


# (hq, kv, d, block size, context lengths, new tokens): blocks of 3/5/7 never divide the lengths
PREFILL_CASES = {
    "q4kv2-d16-bs5": (4, 2, 16, 5, [0, 5, 11, 3], [7, 1, 6, 1]),
    "q4kv1-d32-bs3-T33": (4, 1, 32, 3, [0, 40], [20, 13]),
    "q6kv3-d16-bs4": (6, 3, 16, 4, [2, 0], [9, 1]),
}
DECODE_CASES = {
    "q4kv2-d16-bs5": (4, 2, 16, 5, [0, 4, 37, 70], [1, 1, 1, 1]),
    "q8kv2-d32-bs7-B1": (8, 2, 32, 7, [50], [1]),
    "q6kv3-d16-bs3": (6, 3, 16, 3, [9, 1], [1, 1]),
}


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("case", list(PREFILL_CASES))
def test_attention_prefill(case, dtype):
    q, k, v, kc, vc, meta = _paged(*PREFILL_CASES[case], dtype, seed=len(case))
    check(attention_triton.attention_prefill(q, k, v, kc, vc, *meta),
          attention_ref.attention_prefill(q, k, v, kc, vc, *meta), "prefill over the cache")
    n = PREFILL_CASES[case][5][0]  # first sequence alone, no cache: keys are k, v themselves
    fresh = (meta[0][:2], meta[0][1:2], meta[2][:1], n, n, meta[5])
    check(attention_triton.attention_prefill(q[:n], k[:n], v[:n], None, None, *fresh),
          attention_ref.attention_prefill(q[:n], k[:n], v[:n], None, None, *fresh), "prefill without cache")


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_attention_decode(case, dtype):
    q, k, v, kc, vc, meta = _paged(*DECODE_CASES[case], dtype, seed=len(case))
    check(attention_triton.attention_decode(q, k, v, kc, vc, *meta),
          attention_ref.attention_decode(q, k, v, kc, vc, *meta), "decode over the cache")
    check(attention_triton.attention_decode(q, k, v, None, None, *meta),
          attention_ref.attention_decode(q, k, v, None, None, *meta), "decode without cache")


def test_decode_splits_cover_the_context():
    """More splits than a short sequence has keys: empty splits must not disturb the combine."""
    assert attention_triton.num_splits(2, 2, 70, 16, 64, 8) == 5
    q, k, v, kc, vc, meta = _paged(4, 2, 16, 5, [2, 69], [1, 1], F32, seed=9)
    check(attention_triton.attention_decode(q, k, v, kc, vc, *meta),
          attention_ref.attention_decode(q, k, v, kc, vc, *meta), "decode with empty splits")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_attention_zaya_shapes_257_tokens(dtype):
    q, k, v, kc, vc, meta = _paged(8, 2, 128, 7, [0, 30, 3], [1, 200, 56], dtype, seed=5)
    check(attention_triton.attention_prefill(q, k, v, kc, vc, *meta),
          attention_ref.attention_prefill(q, k, v, kc, vc, *meta), "prefill d128")
    q, k, v, kc, vc, meta = _paged(8, 2, 128, 16, [300, 5, 77], [1, 1, 1], dtype, seed=6)
    check(attention_triton.attention_decode(q, k, v, kc, vc, *meta),
          attention_ref.attention_decode(q, k, v, kc, vc, *meta), "decode d128")


# ---- top-1 MoE experts ------------------------------------------------------------------------------

# (T, E, H, I, routing): "random" includes the skip slot E; "one" sends even tokens to one expert and
# the rest to skip (all other experts empty); "skip" skips every token
MOE_CASES = {
    "T1-E4": (1, 4, 48, 40, "random"),
    "T33-E4": (33, 4, 48, 40, "random"),
    "T33-E16-one-expert": (33, 16, 48, 40, "one"),
    "T5-E4-all-skip": (5, 4, 48, 40, "skip"),
    "T257-E16": (257, 16, 64, 48, "random"),
}


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("case", list(MOE_CASES))
def test_moe_experts(case, dtype):
    t, e, h, i, routing = MOE_CASES[case]
    if dtype == BF16 and t > 100:
        pytest.skip("bf16 at T=33 covers the roundings; keeps the interpreter run short")
    g = torch.Generator().manual_seed(t + e)
    hidden = randn(t, h, gen=g, dtype=dtype) * 10
    gate_up, down = randn(e, 2 * i, h, gen=g, dtype=dtype), randn(e, h, i, gen=g, dtype=dtype)
    ids = torch.randint(0, e + 1, (t,), generator=g)
    ids = {"random": ids, "one": torch.where(torch.arange(t) % 2 == 0, 3, e), "skip": torch.full((t,), e)}[routing]
    gate = torch.rand(t, generator=g).to(DEV)
    ours = moe_triton.moe_experts(hidden, ids.to(DEV), gate, gate_up, down)
    check(ours, moe_ref.moe_experts(hidden, ids.to(DEV), gate, gate_up, down), "moe")
    assert not ours[ids.to(DEV) == e].any(), "skip tokens must give 0"


def test_align_block_size_groups_tokens_by_expert():
    ids = torch.tensor([2, 0, 4, 2, 2, 0, 4])  # E = 4: tokens 2 and 6 skip; experts 1 and 3 empty
    sorted_ids, block_expert = moe_triton.align_block_size(ids, 4, 2)
    assert block_expert.tolist() == [0, 2, 2, 4, 4, 4]  # 3 blocks used of the upper bound cdiv(7 + 4, 2)
    assert sorted_ids.tolist() == [1, 5, 0, 3, 4, 7] + [7] * 6  # 7 = T marks padding


# ---- dispatch -----------------------------------------------------------------------------------------

def test_set_backend_triton_selects_the_kernels():
    with ops.use_backend("triton"):
        assert ops.cca_epilogue is cca_triton.cca_epilogue and ops.moe_experts is moe_triton.moe_experts
        assert ops.attention_decode is attention_triton.attention_decode
        assert ops.merge_rmsnorm is rmsnorm_triton.merge_rmsnorm
        assert ops.lm_head.__module__.endswith("logits_ref")  # cuBLAS GEMM: the twin on every backend


def test_pick_config_uses_the_largest_bucket_at_or_below_m(monkeypatch):
    from rsa.kernels import triton_utils

    table = {"cpu": {"E=4": {"1": {"BLOCK_M": 16}, "64": {"BLOCK_M": 64}}}}
    monkeypatch.setattr(triton_utils, "_table", lambda kernel: table)
    default = {"BLOCK_M": 32, "num_warps": 4}
    cpu = torch.device("cpu")
    assert triton_utils.pick_config("moe", cpu, "E=4", 63, default) == {"BLOCK_M": 16, "num_warps": 4}
    assert triton_utils.pick_config("moe", cpu, "E=4", 4096, default)["BLOCK_M"] == 64
    assert triton_utils.pick_config("moe", cpu, "E=8", 4096, default) == default
