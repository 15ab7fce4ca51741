"""The embedded ZAYA1 model and engine.

    from rsa.backends.zaya1 import LLM, SamplingParams
    llm = LLM("path/to/ZAYA1-8B", dtype=torch.bfloat16, device="cuda", max_num_seqs=256)
    outs = llm.generate(prompts, SamplingParams(temperature=0.6, max_tokens=1024))

    from rsa.backends.zaya1 import load_model
    model = load_model("path/to/ZAYA1-8B", dtype=torch.bfloat16, device="cuda")
    logits = model.logits(input_ids)            # (B, T) -> (B, T, V) fp32, no cache

Engine-style stepping: `model(input_ids, positions, ctx)` with a `ForwardContext` from
`ContiguousCache.context(...)` or the engine's `PagedCache` (same small protocol).
`AsyncLLM` puts the engine behind one owner thread for asyncio callers.
This package imports torch; `rsa.backends` itself never imports it.
"""

from pathlib import Path

from .async_engine import AsyncLLM
from .cache import ContiguousCache, ForwardContext, KVStateCache, PagedCache
from .config import Zaya1Config
from .engine import LLM, EngineConfig, EngineMetrics, RequestOutput
from .model import Zaya1ForCausalLM
from .sampling_params import SamplingParams
from .weights import load_model

NANO_PATH = Path(__file__).resolve().parent / "nano"  # ZAYA1-nano, the shipped default model

__all__ = ["NANO_PATH", "AsyncLLM", "ContiguousCache", "EngineConfig", "EngineMetrics", "ForwardContext", "KVStateCache", "LLM",
           "PagedCache", "RequestOutput", "SamplingParams", "Zaya1Config", "Zaya1ForCausalLM", "load_model"]
