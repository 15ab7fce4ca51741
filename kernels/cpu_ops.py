"""C++ CPU kernels `rsa.kernels.ops` selects with set_backend("cpu") (the default without CUDA).

Only what the PyTorch twins cannot do well on a CPU lives here:
- paged decode attention, whose twin gathers every sequence's blocks into padded copies and runs
  three batched ops over them (`cpp/paged_attention.cpp` reads the blocks in place, one pass per
  sequence and kv head; 6-10x faster than the twin on the benchmark's shapes);
- paged prefill attention, whose twin gathers each sequence's blocks and runs torch's SDPA once per
  sequence (`cpp/paged_prefill.cpp`: each sequence's K/V unpacked once, then tiled Q K^T, softmax and
  P V over blocks of query rows on all threads; 1.1-5x faster than the twin, most on short prompts);
- the CCA epilogue, whose twin is ~30 small tensor ops with MB-sized temporaries
  (`cpp/cca_epilogue.cpp`: one pass per token, fp32 only);
- the MoE experts when each expert sees only a few tokens (decode steps), where a BLAS GEMM
  re-packs the whole expert weight for a handful of rows (`cpp/moe_experts.cpp`, fp32, experts
  spread over the threads; larger steps go to the twin, where BLAS wins);
- RMSNorm and the residual merge + RMSNorm (`cpp/rmsnorm.cpp`, fp32): one pass per row instead
  of ten whole-tensor ops;
- store_kv (row copies into the cache; the twin masks and gathers).
Every other op falls back to its twin.

The sources are compiled on first use with the system C++ compiler (`$CXX`, else `c++`; no
torch headers, the files in parallel, 5-20 s on a 2-core box) into `$RSA_KERNEL_CACHE` (default
`~/.cache/markovian-rsa/kernels`), keyed by the sources, the flags and this machine's CPU, and
loaded with ctypes. No compiler, or a
failed build: `load()` returns None, says why once in the log, and "cpu" is unavailable (the
twins run). Shapes the kernel does not take (head dim not a multiple of 8, more than 16 query
heads per kv head, fp16 caches) fall back to the twin per call.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from . import attention_ref, cca_ref, moe_ref, rmsnorm_ref

log = logging.getLogger(__name__)

CPP = Path(__file__).resolve().parent / "cpp"
SOURCES = tuple(CPP / name for name in ("paged_attention.cpp", "paged_prefill.cpp", "cca_epilogue.cpp",
                                        "moe_experts.cpp", "rmsnorm.cpp"))
HEADERS = (CPP / "vec8.h",)
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c++17")
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_ARGTYPES = [_PTR] * 6 + [_I64] * 6 + [ctypes.c_float, ctypes.c_int]


def _cpu_id() -> str:
    """What -march=native depends on: the architecture and the CPU's feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {flags}"


def _build(compiler: str, cache: Path) -> Path:
    text = b"".join(src.read_bytes() for src in SOURCES + HEADERS)
    key = hashlib.sha256(text + " ".join((compiler, *FLAGS, _cpu_id())).encode()).hexdigest()[:16]
    lib = cache / f"rsa-cpu-kernels-{key}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    log.info("building the CPU kernels (once per machine and version) into %s", lib)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # build aside, then publish atomically
        objects = [Path(tmp) / f"{src.stem}.o" for src in SOURCES]
        jobs = [subprocess.Popen([compiler, *FLAGS, "-c", str(src), "-o", str(obj)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for src, obj in zip(SOURCES, objects)]  # in parallel
        errors = [job.communicate()[1] for job in jobs]  # drains the pipes, then waits
        failed = [f"{src.name}: {err.strip()[-2000:]}"
                  for src, job, err in zip(SOURCES, jobs, errors) if job.returncode]
        out = Path(tmp) / lib.name
        if not failed:
            link = subprocess.run([compiler, "-shared", "-fopenmp", *map(str, objects), "-o", str(out)],
                                  capture_output=True, text=True)
            if link.returncode != 0:
                failed.append(f"linking: {link.stderr.strip()[-2000:]}")
        if failed:
            raise RuntimeError(f"{compiler} failed on the CPU kernels:\n" + "\n".join(failed))
        os.replace(out, lib)
    return lib


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel library, built on first use; None when it cannot be built here."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        log.info("no C++ compiler found ($CXX, c++, g++): CPU kernels unavailable, using the PyTorch twins")
        return None
    cache = Path(os.environ.get("RSA_KERNEL_CACHE") or Path.home() / ".cache" / "markovian-rsa" / "kernels")
    try:
        lib = ctypes.CDLL(str(_build(compiler, cache)))
    except (OSError, RuntimeError) as exc:
        log.warning("CPU kernels unavailable, using the PyTorch twins: %s", exc)
        return None
    for name in ("rsa_paged_decode_f32", "rsa_paged_decode_bf16"):
        getattr(lib, name).argtypes = _ARGTYPES
        getattr(lib, name).restype = None
    for name in ("rsa_paged_prefill_f32", "rsa_paged_prefill_bf16"):
        getattr(lib, name).argtypes = [_PTR] * 7 + [_I64] * 6 + [ctypes.c_float, ctypes.c_int]
        getattr(lib, name).restype = None
    lib.rsa_cca_epilogue_f32.argtypes = [ctypes.POINTER(_CcaArgs), ctypes.c_int]
    lib.rsa_cca_epilogue_f32.restype = None
    lib.rsa_moe_experts_f32.argtypes = [_PTR] * 6 + [_I64] * 4 + [ctypes.c_int]
    lib.rsa_moe_experts_f32.restype = None
    lib.rsa_store_kv.argtypes = [_PTR] * 5 + [_I64] * 2
    lib.rsa_store_kv.restype = None
    lib.rsa_rmsnorm_f32.argtypes = [_PTR] * 3 + [_I64] * 2 + [ctypes.c_float, ctypes.c_int]
    lib.rsa_rmsnorm_f32.restype = None
    lib.rsa_merge_rmsnorm_f32.argtypes = [_PTR] * 9 + [_I64] * 2 + [ctypes.c_float, ctypes.c_int]
    lib.rsa_merge_rmsnorm_f32.restype = None
    return lib


def _fp32_cpu(*tensors: torch.Tensor) -> bool:
    return all(x.dtype == torch.float32 and x.device.type == "cpu" for x in tensors)


_MAX_G, _MAX_D = 16, 256  # kMaxG, 8 * kMaxD8 in the source


def _checked_tables(seq_lens: torch.Tensor, block_tables: torch.Tensor, nb: int, bs: int,
                    min_lens: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 copies of seq_lens and block_tables, checked: the kernels trust their indices, so a bad one
    is an error here, not a crash there. Each seq_lens[b] must lie in min_lens[b] .. max_blocks * bs."""
    lens = seq_lens.to(torch.int32).contiguous()
    tables = block_tables.to(torch.int32).contiguous()
    if lens.numel() and (bool((lens < min_lens).any()) or int(lens.max()) > tables.shape[1] * bs):
        raise ValueError(f"seq_lens must lie in {min_lens if isinstance(min_lens, int) else 'query count'}.."
                         f"{tables.shape[1] * bs}, got {lens.tolist()}")
    used = tables[:, :-(-int(lens.max()) // bs)] if lens.numel() else tables[:, :0]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= nb):
        raise ValueError(f"block_tables reference blocks outside 0..{nb - 1}")
    return lens, tables


def _decode_rows(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq_lens: torch.Tensor,
                 block_tables: torch.Tensor, scale: float) -> torch.Tensor:
    """attention_ref._decode_rows in C++: q (B, Hq, D); caches (NB, BS, KV, D) -> (B, Hq, D) fp32."""
    b, hq, d = q.shape
    nb, bs, kv, _ = k_cache.shape
    lib = load()
    kernel = {torch.float32: "rsa_paged_decode_f32", torch.bfloat16: "rsa_paged_decode_bf16"}.get(k_cache.dtype)
    if (lib is None or kernel is None or q.device.type != "cpu" or d % 8 or d > _MAX_D or hq % kv
            or hq // kv > _MAX_G or v_cache.dtype != k_cache.dtype or b == 0):
        return attention_ref._decode_rows(q, k_cache, v_cache, seq_lens, block_tables, scale)
    lens, tables = _checked_tables(seq_lens, block_tables, nb, bs, 1)
    qf = q.to(torch.float32).contiguous()
    kc, vc = k_cache.contiguous(), v_cache.contiguous()
    out = torch.empty(b, hq, d, dtype=torch.float32)
    getattr(lib, kernel)(qf.data_ptr(), kc.data_ptr(), vc.data_ptr(), lens.data_ptr(), tables.data_ptr(),
                         out.data_ptr(), b, hq, kv, d, bs, tables.shape[1], scale, torch.get_num_threads())
    return out


def store_kv(k, v, k_cache, v_cache, slot_mapping):
    """attention_ref.store_kv in C++ when keys, values and cache share a dtype on the CPU; the twin otherwise."""
    lib = load()
    if (lib is None or k.dtype != k_cache.dtype or v.dtype != v_cache.dtype or k.device.type != "cpu"
            or not (k_cache.is_contiguous() and v_cache.is_contiguous()) or k.shape[1:] != k_cache.shape[2:]
            or v.shape != k.shape or k_cache.shape != v_cache.shape or k.shape[0] == 0):
        return attention_ref.store_kv(k, v, k_cache, v_cache, slot_mapping)
    slots = slot_mapping.to(torch.int64).contiguous()
    rows = k_cache.shape[0] * k_cache.shape[1]
    if slots.numel() != k.shape[0] or int(slots.max()) >= rows:
        raise ValueError(f"slot_mapping must hold {k.shape[0]} cache rows below {rows}, got {slots.tolist()}")
    kc, vc = k.contiguous(), v.contiguous()
    lib.rsa_store_kv(kc.data_ptr(), vc.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), slots.data_ptr(),
                     k.shape[0], kc[0].numel() * kc.element_size())


def attention_decode(q, k, v, k_cache, v_cache, cu_seqlens, seq_lens, block_tables, max_query_len, max_seq_len,
                     scale):
    """attention_ref.attention_decode with the C++ kernel (same arguments and result)."""
    if k_cache is None:
        return attention_ref.attention_decode(q, k, v, k_cache, v_cache, cu_seqlens, seq_lens, block_tables,
                                              max_query_len, max_seq_len, scale)
    return _decode_rows(q, k_cache, v_cache, seq_lens, block_tables, scale).to(q.dtype)


def attention_prefill(q, k, v, k_cache, v_cache, cu_seqlens, seq_lens, block_tables, max_query_len, max_seq_len,
                      scale):
    """attention_ref.attention_prefill in C++ (same arguments and result) over a paged cache; the twin,
    with the C++ decode kernel for its one-query entries, otherwise."""
    lib = load()
    t, hq, d = q.shape
    kernel = None if k_cache is None else {torch.float32: "rsa_paged_prefill_f32",
                                           torch.bfloat16: "rsa_paged_prefill_bf16"}.get(k_cache.dtype)
    if (lib is None or kernel is None or q.device.type != "cpu" or d % 8 or d > _MAX_D
            or hq % k_cache.shape[2] or v_cache.dtype != k_cache.dtype or t == 0):
        return attention_ref.prefill_with(_decode_rows, q, k, v, k_cache, v_cache, cu_seqlens, seq_lens,
                                          block_tables, scale)
    nb, bs, kv, _ = k_cache.shape
    bounds = cu_seqlens.to(torch.int32).contiguous()
    counts = bounds.diff()  # (B,) queries per sequence
    if int(bounds[0]) != 0 or int(bounds[-1]) != t or bool((counts < 0).any()):
        raise ValueError(f"cu_seqlens must rise from 0 to {t} (the query count), got {bounds.tolist()}")
    lens, tables = _checked_tables(seq_lens, block_tables, nb, bs, counts)
    qf = q.to(torch.float32).contiguous()
    out = torch.empty(t, hq, d, dtype=torch.float32)
    getattr(lib, kernel)(qf.data_ptr(), k_cache.contiguous().data_ptr(), v_cache.contiguous().data_ptr(),
                         bounds.data_ptr(), lens.data_ptr(), tables.data_ptr(), out.data_ptr(), lens.numel(), hq, kv,
                         d, bs, tables.shape[1], scale, torch.get_num_threads())
    return out.to(q.dtype)


class _CcaArgs(ctypes.Structure):
    """`Args` of cpp/cca_epilogue.cpp, field for field."""

    _fields_ = ([(n, _PTR) for n in ("qk", "v_cur", "v_del", "cos", "sin", "dw_weight", "dw_bias", "g_weight",
                                      "g_bias", "temp", "conv_state", "value_state", "cu_seqlens", "state_slots",
                                      "fresh", "q_out", "k_out", "v_out")]
                + [(n, _I64) for n in ("T", "B", "Hq", "KV", "D", "t0", "t1", "R2")] + [("eps", ctypes.c_float)])


def cca_epilogue(qk, v_cur, v_del, cos, sin, dw_weight, dw_bias, g_weight, g_bias, temp, conv_state, value_state,
                 cu_seqlens, state_slots, fresh):
    """cca_ref.cca_epilogue in C++ (same arguments and results) for fp32 on the CPU; the twin otherwise."""
    lib = load()
    tensors = [qk, v_cur, v_del, cos, sin, dw_weight, dw_bias, g_weight, g_bias, temp]
    states = [x for x in (conv_state, value_state) if x is not None]
    if lib is None or not _fp32_cpu(*tensors, *states) or any(not x.is_contiguous() for x in states):
        return cca_ref.cca_epilogue(qk, v_cur, v_del, cos, sin, dw_weight, dw_bias, g_weight, g_bias, temp,
                                    conv_state, value_state, cu_seqlens, state_slots, fresh)
    t, c = qk.shape
    d, t1, t0, kv = g_weight.shape[1], g_weight.shape[2], dw_weight.shape[-1], temp.numel()
    hq, b = c // d - kv, cu_seqlens.numel() - 1
    w = t0 + t1 - 2
    cu = cu_seqlens.to(torch.int32).contiguous()
    slots = state_slots.to(torch.int64).contiguous()
    fresh_u8 = fresh.to(torch.uint8).contiguous()
    if b and (int(cu[0]) != 0 or int(cu[-1]) != t or bool((cu.diff() < 0).any())):
        raise ValueError(f"cu_seqlens must rise from 0 to {t} tokens, got {cu.tolist()}")
    if states and b and (int(slots.min()) < 0 or int(slots.max()) >= states[0].shape[0]):
        raise ValueError(f"state_slots must lie in 0..{states[0].shape[0] - 1}, got {slots.tolist()}")
    if conv_state is not None and conv_state.shape[1:] != (c, w):
        raise ValueError(f"conv_state must be (slots, {c}, {w}), got {tuple(conv_state.shape)}")
    inputs = [x.contiguous() for x in tensors]
    q, k, v = torch.empty(t, hq, d), torch.empty(t, kv, d), torch.empty(t, kv, d)
    ptr = lambda x: None if x is None else x.data_ptr()  # noqa: E731
    args = _CcaArgs(*map(ptr, inputs), ptr(conv_state), ptr(value_state), cu.data_ptr(), slots.data_ptr(),
                    fresh_u8.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                    t, b, hq, kv, d, t0, t1, cos.shape[-1], torch.finfo(qk.dtype).eps)
    lib.rsa_cca_epilogue_f32(ctypes.byref(args), torch.get_num_threads())
    return q, k, v


# the C++ experts run steps of at most this many tokens per expert on average; BLAS is faster above
MOE_TOKENS_PER_EXPERT = 8


def moe_experts(hidden, expert_ids, gate, gate_up_proj, down_proj):
    """moe_ref.moe_experts in C++ (same arguments and result) for small fp32 CPU steps; the twin otherwise."""
    lib = load()
    t, h = hidden.shape
    e, two_i, _ = gate_up_proj.shape
    tensors = (hidden, gate, gate_up_proj, down_proj)
    if lib is None or t > MOE_TOKENS_PER_EXPERT * e or h % 8 or two_i % 16 or t == 0 or not _fp32_cpu(*tensors):
        return moe_ref.moe_experts(hidden, expert_ids, gate, gate_up_proj, down_proj)
    ids = expert_ids.to(torch.int64).contiguous()
    if int(ids.min()) < 0 or int(ids.max()) > e:
        raise ValueError(f"expert_ids must lie in 0..{e} ({e} = skip), got {ids.tolist()}")
    x, g, wgu, wd = (x.contiguous() for x in tensors)
    out = torch.empty_like(x)
    lib.rsa_moe_experts_f32(x.data_ptr(), ids.data_ptr(), g.data_ptr(), wgu.data_ptr(), wd.data_ptr(),
                            out.data_ptr(), t, h, two_i // 2, e, torch.get_num_threads())
    return out


def rmsnorm(x, weight, eps):
    """rmsnorm_ref.rmsnorm in C++ for fp32 on the CPU; the twin otherwise."""
    lib = load()
    if lib is None or x.dim() != 2 or not _fp32_cpu(x, weight):
        return rmsnorm_ref.rmsnorm(x, weight, eps)
    x, w = x.contiguous(), weight.contiguous()
    y = torch.empty_like(x)
    lib.rsa_rmsnorm_f32(x.data_ptr(), w.data_ptr(), y.data_ptr(), x.shape[0], x.shape[1], eps,
                        torch.get_num_threads())
    return y


def merge_rmsnorm(branch, residual, hidden_states_scale, hidden_states_bias, residual_scale, residual_bias,
                  weight, eps):
    """rmsnorm_ref.merge_rmsnorm in C++ for fp32 on the CPU; the twin otherwise."""
    lib = load()
    vectors = (hidden_states_scale, hidden_states_bias, residual_scale, residual_bias, weight)
    if lib is None or branch.dim() != 2 or not _fp32_cpu(branch, residual, *vectors):
        return rmsnorm_ref.merge_rmsnorm(branch, residual, *vectors, eps)
    b, r = branch.contiguous(), residual.contiguous()
    vs = [v.contiguous() for v in vectors]
    merged, normed = torch.empty_like(b), torch.empty_like(b)
    lib.rsa_merge_rmsnorm_f32(b.data_ptr(), r.data_ptr(), *(v.data_ptr() for v in vs), merged.data_ptr(),
                              normed.data_ptr(), b.shape[0], b.shape[1], eps, torch.get_num_threads())
    return merged, normed


__all__ = ["attention_decode", "attention_prefill", "cca_epilogue", "load", "merge_rmsnorm", "moe_experts",
           "rmsnorm", "store_kv"]
