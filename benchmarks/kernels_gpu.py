"""Triton kernels vs their PyTorch twins at ZAYA1-8B shapes: parity, time, and roofline fractions.

    python benchmarks/kernels_gpu.py            # CUDA: real shapes, about 1-2 minutes on one H200
    python benchmarks/kernels_gpu.py --small    # tiny shapes; on CPU under TRITON_INTERPRET=1 (CI smoke)

Shapes (ZAYA1-8B): hidden 2048, 8 query / 2 kv heads of 128, CCA conv 2x2, 16 experts with I = 2048,
bf16 activations and weights, fp32 residual and CCA state, a paged bf16 K/V cache with 16-token
blocks in shuffled order. Each row first checks the kernel against its twin (max |diff| and a bf16
tolerance), then times both (CUDA events, median of repeats after warm-up) and relates the kernel's
time to two measured ceilings: the device copy bandwidth (a large device-to-device copy; the
"%BW" column = bytes the kernel must move / time / copy bandwidth) and the bf16 matmul rate (a large
cuBLAS GEMM; "%MM" = the kernel's FLOPs / time / that rate). Goals: decode attention at batch 64 x
4K context >= 50% BW; MoE at 4096 tokens >= 50% MM.
Needs only torch and triton: if the package is not installed, kernels/ is loaded from this checkout.
Timings under --small (the interpreter) are meaningless; that mode keeps the code path from rotting.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def _kernels(small: bool):
    """The kernels package (rsa.kernels, or kernels/ of this checkout); sets the interpreter first."""
    import torch

    if small and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        return importlib.import_module("rsa.kernels")
    except ImportError:
        spec = importlib.util.spec_from_file_location("rsa_kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["rsa_kernels"] = pkg
        spec.loader.exec_module(pkg)
        return pkg


@dataclass(frozen=True)
class Shapes:
    hidden: int
    hq: int
    kv: int
    d: int
    experts: int
    inter: int
    prefill_lens: tuple[int, ...]  # fresh sequences of one prefill step
    decode_batch: int
    decode_ctx: int
    moe_tokens: tuple[int, ...]
    block_size: int
    repeats: int


FULL = Shapes(2048, 8, 2, 128, 16, 2048, (1024, 1024, 1024, 1024), 64, 4096, (64, 4096), 16, 20)
SMALL = Shapes(64, 8, 2, 16, 4, 32, (1, 6, 9), 3, 20, (1, 17), 5, 1)


class Bench:
    def __init__(self, device: str, repeats: int) -> None:
        import torch

        self.torch, self.device, self.repeats = torch, device, repeats

    def time(self, fn: Callable[[], object]) -> float:
        """Median seconds per call."""
        torch = self.torch
        if self.device != "cuda":  # the interpreter: one call, for the code path only
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    def ceilings(self, small: bool) -> tuple[float, float]:
        """(copy bandwidth in bytes/s counting read + write, bf16 matmul FLOP/s) measured on this device."""
        torch = self.torch
        n = (1 << 18) if small else (1 << 29)  # bf16 elements: 1 GiB on the GPU
        src = torch.empty(n, dtype=torch.bfloat16, device=self.device).normal_()
        dst = torch.empty_like(src)
        copy = 2 * src.numel() * src.element_size() / self.time(lambda: dst.copy_(src))
        m = 256 if small else 8192
        dtype = torch.float32 if self.device != "cuda" else torch.bfloat16
        a = torch.randn(m, m, dtype=dtype, device=self.device)
        b = torch.randn(m, m, dtype=dtype, device=self.device)
        mm = 2 * m ** 3 / self.time(lambda: a @ b)
        return copy, mm


@dataclass
class Case:
    name: str
    run: Callable[[str], object]  # backend "torch" | "triton" -> outputs
    outputs: Callable[[object], list]  # what to compare
    bytes: float  # the least the op must move
    flops: float
    reset: Callable[[], None] = lambda: None  # restore state the op updates in place (parity runs only)


def build_cases(k, s: Shapes, device: str) -> list[Case]:
    import torch

    ref = {m: importlib.import_module(f"{k.__name__}.{m}_ref") for m in ("attention", "cca", "moe", "rmsnorm")}
    tri = {m: importlib.import_module(f"{k.__name__}.{m}_triton") for m in ("attention", "cca", "moe", "rmsnorm")}
    impl = {"torch": ref, "triton": tri}
    bf16, f32 = torch.bfloat16, torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, dtype=bf16, scale=0.1):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    h, hq, kv, d = s.hidden, s.hq, s.kv, s.d
    c, vd, r2 = (hq + kv) * d, kv * d // 2, d // 4
    cases = []

    # ---- RMSNorm and the fused merge (fp32 residual in, bf16 normed out) ------------------------
    t = sum(s.prefill_lens)
    res, branch, w = randn(t, h, dtype=f32, scale=1.0), randn(t, h), 1 + randn(h)
    vecs = [1 + randn(h) for _ in range(4)]
    cases.append(Case(f"rmsnorm T={t}", lambda b: impl[b]["rmsnorm"].rmsnorm(res, w, 1e-5), lambda o: [o],
                      t * h * (4 + 2), 0))
    cases.append(Case(f"merge_rmsnorm T={t}", lambda b: impl[b]["rmsnorm"].merge_rmsnorm(branch, res, *vecs, w, 1e-5),
                      lambda o: list(o), t * h * (2 + 4 + 4 + 2), 0))

    # ---- CCA epilogue: prefill of fresh sequences, and decode continuing from state ------------
    weights = (randn(c, 1, 2, scale=0.5), randn(c), randn(c, d, 2, scale=0.5 / math.sqrt(d)), randn(c),
               0.5 + randn(kv, scale=0.5).abs())

    def cca_case(lens, fresh, label):
        n, nseq = sum(lens), len(lens)
        qk, vc, vdl = randn(n, c), randn(n, vd), randn(n, vd)
        ang = torch.rand(n, r2, generator=g).mul(6).to(device)
        cos, sin = ang.cos(), ang.sin()
        conv0, val0 = randn(nseq, c, 2, dtype=f32), randn(nseq, vd, dtype=f32)
        conv, val = conv0.clone(), val0.clone()
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
        meta = (cu, torch.arange(nseq, device=device), torch.tensor(fresh, device=device))

        def run(b):
            return (*impl[b]["cca"].cca_epilogue(qk, vc, vdl, cos, sin, *weights, conv, val, *meta), conv, val)

        def reset():
            conv.copy_(conv0)
            val.copy_(val0)

        moved = n * (c + 2 * vd) * 2 + n * r2 * 8 + n * (hq + 2 * kv) * d * 2 + c * (2 + 2 * d + 2) * 2 \
            + 2 * nseq * (c * 2 + vd) * 4
        return Case(label, run, lambda o: list(o), moved, n * c * d * 2 * 2 * 2, reset)

    cases.append(cca_case(list(s.prefill_lens), [True] * len(s.prefill_lens), f"cca_epilogue prefill T={t}"))
    cases.append(cca_case([1] * s.decode_batch, [False] * s.decode_batch, f"cca_epilogue decode B={s.decode_batch}"))

    # ---- paged K/V cache, shuffled blocks ---------------------------------------------------------
    def paged(ctx_lens, new_lens):
        bs = s.block_size
        need = [-(-(a + b) // bs) for a, b in zip(ctx_lens, new_lens)]
        perm = torch.randperm(sum(need), generator=g).tolist()
        tables, used = [], 0
        for nb in need:
            tables.append(perm[used:used + nb] + [0] * (max(need) - nb))
            used += nb
        kc, vcache = randn(sum(need), bs, kv, d), randn(sum(need), bs, kv, d)
        n = sum(new_lens)
        q, kk, vv = randn(n, hq, d, scale=3.0), randn(n, kv, d), randn(n, kv, d)
        slots = torch.tensor([tables[i][p // bs] * bs + p % bs for i, (a, b) in enumerate(zip(ctx_lens, new_lens))
                              for p in range(a, a + b)], device=device)
        cu = torch.tensor([0, *torch.tensor(new_lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
        seq_lens = torch.tensor([a + b for a, b in zip(ctx_lens, new_lens)], dtype=torch.int32, device=device)
        meta = (cu, seq_lens, torch.tensor(tables, dtype=torch.int32, device=device), max(new_lens),
                int(seq_lens.max()), d ** -0.5)
        return q, kk, vv, kc, vcache, slots, meta

    q, kk, vv, kc, vcache, slots, meta = paged([0] * len(s.prefill_lens), list(s.prefill_lens))
    ref["attention"].store_kv(kk, vv, kc, vcache, slots)
    causal = sum(n * (n + 1) / 2 for n in s.prefill_lens)
    cases.append(Case(f"attention_prefill T={t}", lambda b: impl[b]["attention"].attention_prefill(q, kk, vv, kc, vcache, *meta),
                      lambda o: [o], t * (2 * hq + 2 * kv) * d * 2, 4 * causal * hq * d))
    dq, dk, dv, dkc, dvc, dslots, dmeta = paged([s.decode_ctx - 1] * s.decode_batch, [1] * s.decode_batch)

    skc, svc = dkc.clone(), dvc.clone()

    def store(b):
        impl[b]["attention"].store_kv(dk, dv, skc, svc, dslots)
        return skc, svc

    def unstore():
        skc.copy_(dkc)
        svc.copy_(dvc)

    cases.append(Case(f"store_kv B={s.decode_batch}", store, lambda o: [x[dslots // s.block_size] for x in o],
                      s.decode_batch * kv * d * 2 * 4, 0, unstore))
    nb = s.decode_batch
    cases.append(Case(f"attention_decode B={nb} ctx={s.decode_ctx}",
                      lambda b: impl[b]["attention"].attention_decode(dq, dk, dv, dkc, dvc, *dmeta), lambda o: [o],
                      nb * s.decode_ctx * kv * d * 2 * 2 + nb * hq * d * 4, 4 * nb * s.decode_ctx * hq * d))

    # ---- top-1 MoE experts (no skip tokens, random routing) ---------------------------------------
    gate_up, down = randn(s.experts, 2 * s.inter, h, scale=0.02), randn(s.experts, h, s.inter, scale=0.02)
    for n in s.moe_tokens:
        hid = randn(n, h, scale=1.0)
        ids = torch.randint(0, s.experts, (n,), generator=g).to(device)
        gate = torch.rand(n, generator=g).to(device)
        touched = min(n, s.experts)
        cases.append(Case(f"moe_experts T={n}", lambda b, hid=hid, ids=ids, gate=gate:
                          impl[b]["moe"].moe_experts(hid, ids, gate, gate_up, down), lambda o: [o],
                          touched * 3 * s.inter * h * 2 + n * h * 2 * 2, 6 * n * s.inter * h))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes; on CPU under TRITON_INTERPRET=1")
    args = parser.parse_args()
    k = _kernels(args.small)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.small:
        parser.error("no CUDA device: run with --small (interpreter smoke test)")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    shapes = SMALL if args.small else FULL
    bench = Bench(device, shapes.repeats)
    copy_bw, mm_rate = bench.ceilings(args.small)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (TRITON_INTERPRET=1)"
    print(f"device {name}: copy {copy_bw / 1e9:.1f} GB/s, bf16 matmul {mm_rate / 1e12:.1f} TFLOP/s")
    header = f"{'kernel':<34}{'max|diff|':>10}{'ok':>4}{'twin ms':>10}{'triton ms':>10}{'speedup':>8}" \
             f"{'GB/s':>8}{'%BW':>6}{'TFLOP/s':>9}{'%MM':>6}"
    print(header)
    print("-" * len(header))
    failures = 0
    with torch.inference_mode():
        for case in build_cases(k, shapes, device):
            case.reset()
            ours = [x.clone() for x in case.outputs(case.run("triton"))]
            case.reset()
            ref = case.outputs(case.run("torch"))
            diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(ours, ref))
            ok = all(torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2) for a, b in zip(ours, ref))
            failures += not ok
            t_twin, t_tri = bench.time(lambda: case.run("torch")), bench.time(lambda: case.run("triton"))
            bw, fl = case.bytes / t_tri, case.flops / t_tri
            print(f"{case.name:<34}{diff:>10.2e}{'y' if ok else 'N':>4}{t_twin * 1e3:>10.3f}{t_tri * 1e3:>10.3f}"
                  f"{t_twin / t_tri:>8.2f}{bw / 1e9:>8.0f}{100 * bw / copy_bw:>6.0f}"
                  f"{fl / 1e12:>9.1f}{100 * fl / mm_rate:>6.0f}", flush=True)
    print(f"{failures} parity failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
