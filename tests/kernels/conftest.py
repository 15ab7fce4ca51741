"""Without CUDA the Triton kernel tests run under Triton's CPU interpreter.

TRITON_INTERPRET is read when a kernel module decorates its kernels, so it is set here, before any
test module of this folder imports them. Only triton reads it: the other tests keep normal speed.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
