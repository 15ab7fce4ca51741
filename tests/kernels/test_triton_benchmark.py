"""benchmarks/kernels_gpu.py --small runs the GPU benchmark's code path (cases, parity, timing, table)
at tiny shapes, under TRITON_INTERPRET=1 on CPU, in a subprocess, so the script cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "kernels_gpu.py"


def test_kernels_gpu_small_runs_and_reports_parity():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.split(" ")[0] in
            ("rmsnorm", "merge_rmsnorm", "cca_epilogue", "attention_prefill", "store_kv", "attention_decode",
             "moe_experts")]
    assert len(rows) == 9, proc.stdout
    assert "0 parity failure(s)" in proc.stdout, proc.stdout
