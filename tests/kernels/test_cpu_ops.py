"""The C++ CPU kernels (`rsa.kernels.cpu_ops`) against their PyTorch twins, the build and the
fallbacks. Needs a C++ compiler, which CI has (gcc); without one the kernel tests skip and the
fallback test still runs."""

from __future__ import annotations

import logging

import pytest
import torch

from rsa.kernels import attention_ref, cca_ref, cpu_ops, moe_ref, ops, rmsnorm_ref

needs_kernels = pytest.mark.skipif(cpu_ops.load() is None, reason="no C++ compiler: the CPU kernels cannot build")


def _with_threads(n: int, fn):
    """fn() with torch (and so the kernels) at n threads; the previous count is restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


def _paged(b: int, hq: int, kv: int, d: int, bs: int, lens: list[int], dtype, seed: int = 0):
    """Random q and a shuffled block pool holding `lens[i]` keys for sequence i."""
    g = torch.Generator().manual_seed(seed)
    max_blocks = -(-max(lens) // bs) + 1  # one spare column: tables wider than needed, as in the engine
    num_blocks = b * max_blocks + 3
    k_cache = torch.randn(num_blocks, bs, kv, d, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, bs, kv, d, generator=g).to(dtype)
    tables = torch.randperm(num_blocks, generator=g)[:b * max_blocks].view(b, max_blocks).to(torch.int32)
    q = torch.randn(b, hq, d, generator=g)
    return q, k_cache, v_cache, torch.tensor(lens, dtype=torch.int32), tables


@needs_kernels
@pytest.mark.parametrize("hq,kv,d", [(8, 2, 32), (4, 4, 64), (6, 2, 48), (16, 1, 128), (4, 2, 8)])
@pytest.mark.parametrize("bs", [16, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_kernel_matches_the_twin(hq, kv, d, bs, dtype):
    """Compile-time shapes (G 1/2/4/8, D 32/64/128) and the runtime path (G 3, D 48; D 8), block sizes
    that do and do not divide the lengths, lengths from 1 key to several blocks."""
    lens = [1, 5, 16, 17, 40, 3, 33, 80]
    q, k_cache, v_cache, seq_lens, tables = _paged(len(lens), hq, kv, d, bs, lens, dtype)
    ours = cpu_ops._decode_rows(q, k_cache, v_cache, seq_lens, tables, d ** -0.5)
    ref = attention_ref._decode_rows(q, k_cache, v_cache, seq_lens, tables, d ** -0.5)
    assert ours.dtype == torch.float32 and ours.shape == (len(lens), hq, d)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)


@needs_kernels
def test_decode_kernel_uses_threads_without_changing_results():
    lens = list(range(1, 65))
    q, k_cache, v_cache, seq_lens, tables = _paged(64, 8, 2, 32, 16, lens, torch.float32, seed=1)
    one, two = (_with_threads(n, lambda: cpu_ops._decode_rows(q, k_cache, v_cache, seq_lens, tables, 0.2))
                for n in (1, 2))
    assert torch.equal(one, two)  # each (sequence, head) is one task: the sum order does not change


@needs_kernels
def test_mixed_prefill_routes_decode_entries_through_the_kernel():
    """A mixed step (chunks and single-token decodes) equals the twin's attention_prefill."""
    g = torch.Generator().manual_seed(2)
    hq, kv, d, bs = 4, 2, 32, 4
    n_new, totals = [3, 1, 5, 1], [7, 9, 5, 2]  # queries per sequence, keys visible to its last query
    max_blocks = 4
    k_cache = torch.randn(20, bs, kv, d, generator=g)
    v_cache = torch.randn(20, bs, kv, d, generator=g)
    tables = torch.randperm(20, generator=g)[:16].view(4, max_blocks).to(torch.int32)
    t = sum(n_new)
    q = torch.randn(t, hq, d, generator=g)
    k, v = torch.randn(t, kv, d, generator=g), torch.randn(t, kv, d, generator=g)
    cu = torch.tensor([0, 3, 4, 9, 10], dtype=torch.int32)
    args = (q, k, v, k_cache, v_cache, cu, torch.tensor(totals, dtype=torch.int32), tables, 5, 9, d ** -0.5)
    torch.testing.assert_close(cpu_ops.attention_prefill(*args), attention_ref.attention_prefill(*args),
                               atol=2e-5, rtol=1e-5)


def _prefill_step(hq: int, kv: int, d: int, bs: int, n_new: list[int], totals: list[int], dtype, seed: int = 0):
    """A varlen step: sequence i has n_new[i] queries, the last of which sees totals[i] cached keys
    (blocks shuffled in the pool). Returns attention_prefill's arguments."""
    g = torch.Generator().manual_seed(seed)
    max_blocks = -(-max(totals) // bs) + 1
    num_blocks = len(totals) * max_blocks + 2
    k_cache = torch.randn(num_blocks, bs, kv, d, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, bs, kv, d, generator=g).to(dtype)
    tables = torch.randperm(num_blocks, generator=g)[:len(totals) * max_blocks].view(len(totals), max_blocks)
    t = sum(n_new)
    q = torch.randn(t, hq, d, generator=g)
    k, v = torch.randn(t, kv, d, generator=g), torch.randn(t, kv, d, generator=g)  # unused with a cache
    cu = torch.tensor([0, *torch.tensor(n_new).cumsum(0).tolist()], dtype=torch.int32)
    return (q, k, v, k_cache, v_cache, cu, torch.tensor(totals, dtype=torch.int32), tables.to(torch.int32),
            max(n_new), max(totals), d ** -0.5)


@needs_kernels
@pytest.mark.parametrize("hq,kv,d", [(8, 2, 32), (4, 4, 64), (6, 2, 40), (16, 1, 128), (2, 2, 8)])
@pytest.mark.parametrize("bs", [16, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_kernel_matches_the_twin(hq, kv, d, bs, dtype):
    """Fresh prompts (n = total), chunks that continue a cached context (n < total), decode entries
    (n = 1), an empty entry, odd row counts, query blocks that split a long chunk (G 1: 64 rows per
    item), the compile-time and runtime head dims (D 40: D / 8 = 5), block sizes that do and do not
    divide the lengths."""
    n_new, totals = [7, 1, 0, 33, 150, 1, 13], [7, 40, 5, 33, 170, 1, 29]
    args = _prefill_step(hq, kv, d, bs, n_new, totals, dtype)
    ours = cpu_ops.attention_prefill(*args)
    ref = attention_ref.attention_prefill(*args)
    assert ours.dtype == torch.float32 and ours.shape == (sum(n_new), hq, d)
    torch.testing.assert_close(ours, ref, atol=3e-5, rtol=1e-5)


@needs_kernels
def test_prefill_kernel_results_do_not_depend_on_threads():
    args = _prefill_step(8, 2, 32, 16, [64, 200, 1, 90], [64, 260, 30, 90], torch.float32, seed=3)
    one, two = (_with_threads(n, lambda: cpu_ops.attention_prefill(*args)) for n in (1, 2))
    assert torch.equal(one, two)  # each (sequence, head, query block) is one task


@needs_kernels
def test_prefill_kernel_bad_indices_are_errors_not_crashes():
    q, k, v, k_cache, v_cache, cu, totals, tables, mq, ms, scale = _prefill_step(4, 2, 32, 4, [3, 5], [6, 5],
                                                                                 torch.float32)
    with pytest.raises(ValueError, match="seq_lens must lie in query count"):  # 5 queries cannot see 4 keys
        cpu_ops.attention_prefill(q, k, v, k_cache, v_cache, cu, torch.tensor([6, 4], dtype=torch.int32), tables,
                                  mq, ms, scale)
    with pytest.raises(ValueError, match="cu_seqlens must rise from 0 to 8"):
        cpu_ops.attention_prefill(q, k, v, k_cache, v_cache, torch.tensor([0, 3, 9], dtype=torch.int32), totals,
                                  tables, mq, ms, scale)
    tables[0, 0] = -1
    with pytest.raises(ValueError, match="block_tables reference blocks outside"):
        cpu_ops.attention_prefill(q, k, v, k_cache, v_cache, cu, totals, tables, mq, ms, scale)


@needs_kernels
def test_unsupported_shapes_fall_back_to_the_twin():
    """Head dim 20 is not a multiple of 8: the twin runs and the result is still right."""
    q, k_cache, v_cache, seq_lens, tables = _paged(3, 4, 2, 20, 4, [2, 9, 4], torch.float32)
    torch.testing.assert_close(cpu_ops._decode_rows(q, k_cache, v_cache, seq_lens, tables, 0.3),
                               attention_ref._decode_rows(q, k_cache, v_cache, seq_lens, tables, 0.3))


@needs_kernels
def test_bad_indices_are_errors_not_crashes():
    q, k_cache, v_cache, seq_lens, tables = _paged(2, 4, 2, 32, 4, [3, 6], torch.float32)
    with pytest.raises(ValueError, match="seq_lens must lie in 1..12"):
        cpu_ops._decode_rows(q, k_cache, v_cache, torch.tensor([0, 6], dtype=torch.int32), tables, 1.0)
    tables[1, 1] = k_cache.shape[0]  # one past the last block
    with pytest.raises(ValueError, match="block_tables reference blocks outside"):
        cpu_ops._decode_rows(q, k_cache, v_cache, seq_lens, tables, 1.0)


@needs_kernels
def test_cpu_backend_is_the_default_here_and_selects_the_kernels():
    assert ops.default_backend() == "cpu"
    with ops.use_backend("cpu"):
        assert ops.attention_decode is cpu_ops.attention_decode
        assert ops.attention_prefill is cpu_ops.attention_prefill
        assert ops.cca_epilogue is cpu_ops.cca_epilogue and ops.moe_experts is cpu_ops.moe_experts
        assert ops.rmsnorm is cpu_ops.rmsnorm and ops.merge_rmsnorm is cpu_ops.merge_rmsnorm
        assert ops.store_kv is cpu_ops.store_kv
        assert ops.lm_head.__module__.endswith("logits_ref")  # no C++ version: the twin


def test_a_failed_build_leaves_the_twins_and_says_why(tmp_path, monkeypatch, caplog):
    """A compiler that fails: load() is None, the reason is logged, "cpu" cannot be selected."""
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\necho 'fatal: this compiler is broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("RSA_KERNEL_CACHE", str(tmp_path / "cache"))
    cpu_ops.load.cache_clear()
    previous = ops.get_backend()
    try:
        with caplog.at_level(logging.WARNING, logger="rsa.kernels.cpu_ops"):
            assert cpu_ops.load() is None
        assert "this compiler is broken" in caplog.text
        with pytest.raises(ValueError, match="'cpu' is unavailable"):
            ops.set_backend("cpu")
        assert ops.default_backend() == "torch"
        assert ops.get_backend() == previous
    finally:
        cpu_ops.load.cache_clear()  # the next caller builds (or finds) the real library again


@needs_kernels
@pytest.mark.parametrize("hq,kv,d,t0,t1", [(4, 2, 32, 2, 2), (8, 2, 16, 3, 2), (2, 1, 8, 1, 3)])
def test_cca_kernel_matches_the_twin_on_a_varlen_batch_with_state(hq, kv, d, t0, t1):
    """Three sequences in one flat batch: a fresh prefill over a stale slot, a continued chunk shorter
    than the state window, and a decode token; then an empty sequence. Outputs and both updated
    states equal the twin's."""
    g = torch.Generator().manual_seed(hq * d + t0)
    c, w, vd = (hq + kv) * d, t0 + t1 - 2, kv * d // 2
    lens = [5, 1 if w > 1 else 2, 1, 0]
    t = sum(lens)
    qk, v_cur, v_del = (torch.randn(t, n, generator=g) * 3 for n in (c, vd, vd))
    angles = torch.rand(t, d // 4, generator=g) * 6
    weights = (torch.randn(c, 1, t0, generator=g), torch.randn(c, generator=g), torch.randn(c, d, t1, generator=g) / d,
               torch.randn(c, generator=g), torch.rand(kv, generator=g) + 0.5)
    conv_state, value_state = torch.randn(5, c, w, generator=g), torch.randn(5, vd, generator=g)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    slots, fresh = torch.tensor([3, 0, 4, 1]), torch.tensor([True, False, False, False])

    def run(fn):
        cs, vs = conv_state.clone(), value_state.clone()
        out = fn(qk, v_cur, v_del, angles.cos(), angles.sin(), *weights, cs, vs, cu, slots, fresh)
        return (*out, cs, vs)

    for name, ours, ref in zip(("q", "k", "v", "conv_state", "value_state"), run(cpu_ops.cca_epilogue),
                               run(cca_ref.cca_epilogue)):
        torch.testing.assert_close(ours, ref, atol=3e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@needs_kernels
def test_cca_kernel_without_cache_and_bad_slots():
    g = torch.Generator().manual_seed(3)
    hq, kv, d = 4, 2, 8
    c, vd = (hq + kv) * d, kv * d // 2
    qk, v_cur, v_del = torch.randn(6, c, generator=g), torch.randn(6, vd, generator=g), torch.randn(6, vd, generator=g)
    angles = torch.rand(6, d // 4, generator=g)
    weights = (torch.randn(c, 1, 2, generator=g), torch.randn(c, generator=g), torch.randn(c, d, 2, generator=g),
               torch.randn(c, generator=g), torch.ones(kv))
    cu = torch.tensor([0, 4, 6], dtype=torch.int32)
    args = (qk, v_cur, v_del, angles.cos(), angles.sin(), *weights)
    no_cache = (None, None, cu, torch.tensor([0, 1]), torch.tensor([True, True]))
    for ours, ref in zip(cpu_ops.cca_epilogue(*args, *no_cache), cca_ref.cca_epilogue(*args, *no_cache)):
        torch.testing.assert_close(ours, ref, atol=3e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="state_slots must lie in 0..1"):
        cpu_ops.cca_epilogue(*args, torch.zeros(2, c, 2), torch.zeros(2, vd), cu, torch.tensor([0, 2]),
                             torch.tensor([False, False]))


@needs_kernels
@pytest.mark.parametrize("t,e,h,i", [(64, 8, 256, 512), (5, 4, 32, 24), (1, 2, 16, 8), (40, 4, 64, 64)])
def test_moe_kernel_matches_the_twin(t, e, h, i):
    """Decode-sized steps (the kernel: tokens of every expert, the skip slot, empty experts, odd row
    counts) and a step too large for it (40 tokens over 4 experts: the twin)."""
    g = torch.Generator().manual_seed(t + e)
    hidden = torch.randn(t, h, generator=g)
    ids = torch.randint(0, e + 1, (t,), generator=g)
    ids[0] = e  # at least one token takes the skip slot
    gate = torch.rand(t, generator=g)
    gate_up, down = torch.randn(e, 2 * i, h, generator=g) / h ** 0.5, torch.randn(e, h, i, generator=g) / i ** 0.5
    ours = cpu_ops.moe_experts(hidden, ids, gate, gate_up, down)
    torch.testing.assert_close(ours, moe_ref.moe_experts(hidden, ids, gate, gate_up, down), atol=1e-5, rtol=1e-5)
    assert torch.all(ours[0] == 0)
    two = _with_threads(2, lambda: cpu_ops.moe_experts(hidden, ids, gate, gate_up, down))
    # each expert runs whole on one thread, so the kernel's result does not depend on the thread
    # count; the 40-token case runs the twin, whose BLAS may split sums by thread: to rounding
    torch.testing.assert_close(ours, two, atol=1e-6, rtol=1e-6)


@needs_kernels
def test_moe_kernel_rejects_expert_ids_out_of_range():
    hidden, gate = torch.randn(3, 16), torch.rand(3)
    gate_up, down = torch.randn(2, 16, 16), torch.randn(2, 16, 8)
    with pytest.raises(ValueError, match=r"expert_ids must lie in 0..2 \(2 = skip\)"):
        cpu_ops.moe_experts(hidden, torch.tensor([0, 3, 1]), gate, gate_up, down)


@needs_kernels
@pytest.mark.parametrize("t,h", [(1, 8), (7, 40), (300, 256)])
def test_norm_kernels_match_the_twins(t, h):
    g = torch.Generator().manual_seed(t)
    branch, residual = torch.randn(t, h, generator=g) * 3, torch.randn(t, h, generator=g)
    vectors = [torch.randn(h, generator=g) for _ in range(5)]
    torch.testing.assert_close(cpu_ops.rmsnorm(branch, vectors[4], 1e-5), rmsnorm_ref.rmsnorm(branch, vectors[4], 1e-5))
    for ours, ref in zip(cpu_ops.merge_rmsnorm(branch, residual, *vectors, 1e-5),
                         rmsnorm_ref.merge_rmsnorm(branch, residual, *vectors, 1e-5)):
        torch.testing.assert_close(ours, ref)
    # bf16 weights: the twin's dtype round trips matter, so the twin runs
    bf = vectors[4].bfloat16()
    assert torch.equal(cpu_ops.rmsnorm(branch, bf, 1e-5), rmsnorm_ref.rmsnorm(branch, bf, 1e-5))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_kv_matches_the_twin(dtype):
    g = torch.Generator().manual_seed(4)
    k, v = torch.randn(5, 2, 8, generator=g).to(dtype), torch.randn(5, 2, 8, generator=g).to(dtype)
    slots = torch.tensor([3, 17, -1, 0, 9])  # -1: not stored
    caches = [torch.zeros(3, 6, 2, 8, dtype=dtype) for _ in range(4)]
    cpu_ops.store_kv(k, v, caches[0], caches[1], slots)
    attention_ref.store_kv(k, v, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    assert caches[0].view(-1, 2, 8)[17].equal(k[1]) and caches[0].abs().sum() > 0
    with pytest.raises(ValueError, match="below 18"):
        cpu_ops.store_kv(k, v, caches[0], caches[1], torch.tensor([3, 18, -1, 0, 9]))
