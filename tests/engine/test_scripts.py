"""The GPU benchmark script runs end to end on CPU with a tiny config (`--small`), so it cannot rot."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]


def test_engine_gpu_script_small():
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_gpu.py"), "--small"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("decode tokens/s")[1].splitlines()
    assert [line.split()[0] for line in table[2:5]] == ["1", "4", "8"], out.stdout
