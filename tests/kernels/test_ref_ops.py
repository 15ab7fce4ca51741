"""The plain-PyTorch kernel twins against transformers' ZAYA modules or an independent reference,
and the dispatch hook. These are the oracles a Triton kernel is later compared with."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers.models.zaya import modeling_zaya as hfz

from rsa.kernels import cpu_ops, ops
from rsa.kernels import attention_ref, cca_ref, moe_ref, rmsnorm_ref

torch.set_num_threads(1)
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def randn(*shape, gen, dtype=torch.float32):
    return (torch.randn(*shape, generator=gen) / 10).to(dtype)


def check(ours, ref, tol, what):
    diff = (ours.float() - ref.float()).abs()
    torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=0,
                               msg=lambda m: f"{what}: max {diff.max():.3e} mean {diff.mean():.3e}\n{m}")


@pytest.fixture(autouse=True)
def torch_backend():
    with ops.use_backend("torch"):
        yield


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t", [1, 33])
def test_rmsnorm_follows_transformers_input_cast(dtype, t):
    """Spec 2.1: transformers rounds the fp32 residual to the model dtype before the norm, vLLM
    normalises the fp32 residual. We follow transformers, bit for bit."""
    g = torch.Generator().manual_seed(0)
    residual, weight = torch.randn(t, 64, generator=g) * 3, (1 + randn(64, gen=g)).to(dtype)
    norm = hfz.ZayaRMSNorm(64, eps=1e-5).to(dtype)
    norm.weight.data.copy_(weight)
    with torch.no_grad():
        ref = norm(residual.to(dtype))
    ours = ops.rmsnorm(residual, weight, 1e-5)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    if dtype == torch.bfloat16 and t > 1:
        vllm = (weight.float() * residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
        assert not torch.equal(ours, vllm)  # the choice is observable


def test_merge_rmsnorm_matches_transformers_residual_scaling():
    g = torch.Generator().manual_seed(1)
    scale = hfz.ZayaResidualScaling(48)
    with torch.no_grad():
        for p in scale.parameters():
            p.add_(randn(48, gen=g))
    norm = hfz.ZayaRMSNorm(48, eps=1e-5)
    norm.weight.data.add_(randn(48, gen=g))
    branch, residual = randn(33, 48, gen=g), torch.randn(33, 48, generator=g)
    with torch.no_grad():
        ref_r = scale(branch, residual)
        ref_h = norm(ref_r)
    r, h = ops.merge_rmsnorm(branch, residual, scale.hidden_states_scale, scale.hidden_states_bias,
                             scale.residual_scale, scale.residual_bias, norm.weight, 1e-5)
    assert r.dtype == torch.float32
    check(r, ref_r, 1e-6, "residual")
    check(h, ref_h, 1e-5, "normed")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t, e", [(1, 3), (33, 5), (70, 8)])
def test_moe_experts_matches_transformers_experts_with_skip(dtype, t, e):
    g = torch.Generator().manual_seed(t + e)
    cfg = transformers.ZayaConfig(hidden_size=48, moe_intermediate_size=40, num_experts=e)
    experts = hfz.ZayaExperts(cfg).to(dtype)
    with torch.no_grad():
        experts.gate_up_proj.copy_(randn(e, 80, 48, gen=g, dtype=dtype))
        experts.down_proj.copy_(randn(e, 48, 40, gen=g, dtype=dtype))
    hidden = torch.randn(t, 48, generator=g).to(dtype)
    ids = torch.randint(0, e + 1, (t,), generator=g)  # e = skip slot
    gate = torch.rand(t, generator=g)
    # transformers' router remaps the skip slot to expert 0 with weight 0
    skip = ids == e
    with torch.no_grad():
        ref = experts(hidden, ids.masked_fill(skip, 0)[:, None], gate.masked_fill(skip, 0).to(dtype)[:, None])
    ours = ops.moe_experts(hidden, ids, gate, experts.gate_up_proj, experts.down_proj)
    assert ours.dtype == dtype and not ours[skip].any()
    check(ours, ref, TOL[dtype], "moe")


def _sdpa_reference(q, keys, values, n_new):
    """q (n, Hq, D) are the last n_new positions of a causal sequence over keys/values (S, KV, D)."""
    s, kv = keys.shape[0], keys.shape[1]
    rep = q.shape[1] // kv
    mask = torch.ones(n_new, s, dtype=torch.bool).tril(s - n_new)
    heads_first = [x.transpose(0, 1).float() for x in (q, keys.repeat_interleave(rep, 1), values.repeat_interleave(rep, 1))]
    out = F.scaled_dot_product_attention(*heads_first, attn_mask=mask)
    return out.transpose(0, 1)


@pytest.mark.parametrize("hq, kv, d", [(4, 2, 16), (6, 3, 24), (8, 1, 8)])
def test_attention_prefill_and_decode_over_a_paged_cache(hq, kv, d):
    """Shuffled 4-token blocks, context + new tokens per sequence, a -1 slot that must not be stored."""
    g = torch.Generator().manual_seed(hq * 100 + d)
    block, num_blocks = 4, 32
    ctx_lens, new_lens = [0, 5, 11, 3], [7, 1, 6, 1]
    perm = torch.randperm(num_blocks, generator=g).tolist()
    tables, used = [], 0
    for c, n in zip(ctx_lens, new_lens):
        need = -(-(c + n) // block)
        tables.append(perm[used:used + need] + [0] * (5 - need))
        used += need
    k_cache, v_cache = randn(num_blocks, block, kv, d, gen=g), randn(num_blocks, block, kv, d, gen=g)
    full_k = [randn(c + n, kv, d, gen=g) for c, n in zip(ctx_lens, new_lens)]
    full_v = [randn(c + n, kv, d, gen=g) for c, n in zip(ctx_lens, new_lens)]
    for b, c in enumerate(ctx_lens):  # the context is already cached
        for p in range(c):
            k_cache[tables[b][p // block], p % block] = full_k[b][p]
            v_cache[tables[b][p // block], p % block] = full_v[b][p]
    slot = [tables[b][p // block] * block + p % block for b, (c, n) in enumerate(zip(ctx_lens, new_lens))
            for p in range(c, c + n)]
    k = torch.cat([fk[c:] for fk, c in zip(full_k, ctx_lens)])
    v = torch.cat([fv[c:] for fv, c in zip(full_v, ctx_lens)])
    q = randn(k.shape[0], hq, d, gen=g) * 30
    junk = k_cache.clone()
    ops.store_kv(torch.cat([k, k[:1] + 1]), torch.cat([v, v[:1]]), k_cache, v_cache,
                 torch.tensor(slot + [-1]))
    assert torch.equal(k_cache.view(-1, kv, d)[torch.tensor(slot)], k)
    untouched = torch.ones(num_blocks * block, dtype=torch.bool)
    untouched[torch.tensor(slot)] = False
    assert torch.equal(k_cache.view(-1, kv, d)[untouched], junk.view(-1, kv, d)[untouched])

    cu = torch.tensor([0] + torch.tensor(new_lens).cumsum(0).tolist(), dtype=torch.int32)
    seq_lens = torch.tensor([c + n for c, n in zip(ctx_lens, new_lens)], dtype=torch.int32)
    bt = torch.tensor(tables, dtype=torch.int32)
    args = (cu, seq_lens, bt, max(new_lens), int(seq_lens.max()), d ** -0.5)
    out = ops.attention_prefill(q, k, v, k_cache, v_cache, *args)
    ref = torch.cat([_sdpa_reference(q[cu[b]:cu[b + 1]], full_k[b], full_v[b], new_lens[b]) for b in range(4)])
    check(out, ref, 1e-5, "prefill over cache")

    dec = [1, 3]  # the sequences with one new token: decode path on the same cache
    dcu = torch.arange(3, dtype=torch.int32)
    dq = torch.stack([q[cu[b]] for b in dec])
    dout = ops.attention_decode(dq, None, None, k_cache, v_cache, dcu, seq_lens[dec], bt[dec], 1,
                                int(seq_lens[dec].max()), d ** -0.5)
    check(dout, torch.stack([out[cu[b]] for b in dec]), 1e-6, "decode vs prefill")

    fresh_out = ops.attention_prefill(q[:7], k[:7], v[:7], None, None, cu[:2], seq_lens[:1], bt[:1], 7, 7, d ** -0.5)
    check(fresh_out, out[:7], 1e-6, "no-cache prefill")


def _hf_cca(cfg, proj, qknorm, h, positions):
    """transformers' CCA projection + QK norm + partial RoPE for one sequence h (1, T, H)."""
    rope = hfz.ZayaRotaryEmbedding(cfg)
    q, k, v = proj(h, None)
    q, k = qknorm(q, k)
    cos, sin = rope(h, positions[None], "hybrid")
    q, k = hfz.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return q.transpose(1, 2)[0], k.transpose(1, 2)[0], v[0]


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("hq, kv, d, t0, t1", [(4, 2, 16, 2, 2), (6, 3, 24, 3, 2), (8, 2, 8, 1, 3)])
def test_cca_epilogue_matches_transformers_whole_and_chunked(hq, kv, d, t0, t1, backend):
    """The twin and the C++ kernel (backend "cpu") against transformers' CCA."""
    if backend == "cpu":
        if cpu_ops.load() is None:
            pytest.skip("no C++ compiler: the CPU kernels cannot build")
        ops.set_backend("cpu")  # the autouse fixture restores the previous backend
    g = torch.Generator().manual_seed(hq + d + t0)
    torch.manual_seed(hq + d + t0)
    cfg = transformers.ZayaConfig(hidden_size=40, num_attention_heads=hq, num_key_value_heads=kv, head_dim=d,
                                  cca_time0=t0, cca_time1=t1,
                                  rope_parameters={"hybrid": {"rope_type": "default", "rope_theta": 100.0,
                                                              "partial_rotary_factor": 0.5}})
    proj, qknorm = hfz.ZayaCCAProjection(cfg, 0), hfz.ZayaQKNorm(cfg)
    with torch.no_grad():
        for p in (*proj.parameters(), qknorm.temp):
            p.add_(randn(*p.shape, gen=g) * 5)
    h = torch.randn(1, 33, 40, generator=g)
    positions = torch.arange(33)
    with torch.no_grad():
        ref_q, ref_k, ref_v = _hf_cca(cfg, proj, qknorm, h, positions)
        qk = torch.cat([proj.q_proj(h[0]), proj.k_proj(h[0])], -1)
        vc, vd = proj.v_proj_current(h[0]), proj.v_proj_delayed(h[0])
    inv = 1.0 / (100.0 ** (torch.arange(0, d // 2, 2, dtype=torch.float32) / (d // 2)))
    freqs = positions.float()[:, None] * inv
    weights = (proj.conv_qk_depthwise.weight, proj.conv_qk_depthwise.bias, proj.conv_qk_grouped.weight,
               proj.conv_qk_grouped.bias, qknorm.temp)
    w = t0 + t1 - 2
    conv_state, value_state = torch.randn(3, qk.shape[1], w), torch.randn(3, vd.shape[1])  # stale junk in slot 1

    def run(s, e, fresh):
        return ops.cca_epilogue(qk[s:e], vc[s:e], vd[s:e], freqs[s:e].cos(), freqs[s:e].sin(), *weights,
                                conv_state, value_state, torch.tensor([0, e - s], dtype=torch.int32),
                                torch.tensor([1]), torch.tensor([fresh]))

    whole = ops.cca_epilogue(qk, vc, vd, freqs.cos(), freqs.sin(), *weights, None, None,
                             torch.tensor([0, 33], dtype=torch.int32), torch.tensor([0]), torch.tensor([True]))
    bounds = [0, 1, 8, 9, 33]
    chunks = [run(s, e, s == 0) for s, e in zip(bounds, bounds[1:])]
    for i, (name, ref) in enumerate((("q", ref_q), ("k", ref_k), ("v", ref_v))):
        check(whole[i], ref, 2e-5, f"{name} whole")
        check(torch.cat([c[i] for c in chunks]), ref, 2e-5, f"{name} chunked")


def test_set_backend_validates_and_falls_back_per_op(monkeypatch):
    assert ops.get_backend() == "torch" and ops.cca_epilogue is cca_ref.cca_epilogue
    with pytest.raises(ValueError, match="one of 'torch', 'cpu', 'triton'"):
        ops.set_backend("cuda")
    fake = types.ModuleType("fake_triton_ops")
    fake.rmsnorm = lambda x, weight, eps: "triton rmsnorm"
    monkeypatch.setitem(sys.modules, "fake_triton_ops", fake)
    monkeypatch.setattr(ops, "TRITON_MODULE", "fake_triton_ops")
    monkeypatch.setattr(ops.importlib.util, "find_spec", lambda name: object())
    ops.set_backend("triton")
    assert ops.get_backend() == "triton" and ops.rmsnorm(None, None, 0) == "triton rmsnorm"
    assert ops.moe_experts is moe_ref.moe_experts and ops.attention_decode is attention_ref.attention_decode
    ops.set_backend("torch")
    assert ops.rmsnorm is rmsnorm_ref.rmsnorm


def test_use_backend_restores_the_previous_backend_even_on_error():
    assert ops.get_backend() == "torch"
    with pytest.raises(RuntimeError, match="inside"):
        with ops.use_backend("cpu" if ops._cpu_module() is not None else "torch"):
            assert ops.get_backend() in ("cpu", "torch")
            raise RuntimeError("inside")
    assert ops.get_backend() == "torch" and ops.cca_epilogue is cca_ref.cca_epilogue
    with pytest.raises(ValueError, match="one of"), ops.use_backend("cuda"):
        pass
    assert ops.get_backend() == "torch"


def test_triton_backend_unavailable_without_kernels():
    if ops._triton_module() is not None:
        pytest.skip("Triton kernels exist: covered by their own tests")
    with pytest.raises(ValueError, match="unavailable"):
        ops.set_backend("triton")
    assert ops.get_backend() == "torch"


def test_import_rsa_kernels_imports_neither_torch_nor_triton():
    code = ("import sys, rsa.kernels; assert 'triton' not in sys.modules and 'torch' not in sys.modules; "
            "rsa.kernels.set_backend('torch'); assert rsa.kernels.get_backend() == 'torch'; "
            "assert 'triton' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
