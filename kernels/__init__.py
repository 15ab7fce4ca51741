"""Triton kernels for the ZAYA1 engine (CCA and MoE), each beside its plain-PyTorch twin."""
