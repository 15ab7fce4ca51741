"""The embedded ZAYA1 model and engine.

    from rsa.backends.zaya1 import load_model
    model = load_model("path/to/ZAYA1-8B", dtype=torch.bfloat16, device="cuda")
    logits = model.logits(input_ids)            # (B, T) -> (B, T, V) fp32, no cache

Engine-style stepping: `model(input_ids, positions, ctx)` with a `ForwardContext` from
`ContiguousCache.context(...)` (or a paged cache implementing the same small protocol).
This package imports torch; `rsa.backends` itself never imports it.
"""

from .cache import ContiguousCache, ForwardContext, KVStateCache
from .config import Zaya1Config
from .model import Zaya1ForCausalLM
from .weights import load_model

__all__ = ["ContiguousCache", "ForwardContext", "KVStateCache", "Zaya1Config", "Zaya1ForCausalLM", "load_model"]
