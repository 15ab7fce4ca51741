"""Shared pieces of the Triton kernels: the interpreter switch, the fp32-exact dot, tuned configs.

Tuned launch configs are data: `configs/<kernel>.json` maps a device name (as torch reports it, spaces
as underscores) to shape keys and their meta-parameters; `pick_config` returns the entry for the
nearest shape key at or below the requested one, else the kernel's computed default.
Not covered: autotuning (configs are chosen offline, see benchmarks/kernels_gpu.py).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl

# Triton 3.9's interpreter multiplies bf16 operands of tl.dot as their uint16 bit patterns, so under
# TRITON_INTERPRET=1 the kernels upcast dot operands to fp32 (the GPU path keeps native bf16 MMA).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
CONFIG_DIR = Path(__file__).parent / "configs"


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation; PRECISION "ieee" keeps fp32 operands exact (no tf32)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 operands: exact ieee products (the twins' numerics); 16-bit operands: the MMA default."""
    return "ieee" if dtype == torch.float32 else "tf32"


def pow2(n: int, floor: int = 1) -> int:
    return max(floor, triton.next_power_of_2(max(1, n)))


def device_key(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return torch.cuda.get_device_name(device).replace(" ", "_")


@functools.lru_cache(maxsize=None)
def _table(kernel: str) -> dict:
    path = CONFIG_DIR / f"{kernel}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pick_config(kernel: str, device: torch.device, shape_key: str, m: int, default: dict) -> dict:
    """The tuned entry for (device, shape_key) with the largest M bucket <= m, else `default`.

    configs/<kernel>.json: {device: {shape_key: {"<M bucket>": {meta-parameter: value}}}}.
    """
    buckets = _table(kernel).get(device_key(device), {}).get(shape_key)
    if not buckets:
        return default
    fits = [int(b) for b in buckets if int(b) <= m] or [min(int(b) for b in buckets)]
    return {**default, **buckets[str(max(fits))]}
