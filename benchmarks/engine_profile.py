"""Where the embedded engine's CPU time goes: milliseconds per step in each kernel entry point of
`rsa.kernels.ops` and in the model's remaining linears, for the prefill-heavy steps and for pure
decode steps of the `engine_vs_hf.py` workload (64 requests, prompts 16-512 tokens, 128 greedy
tokens each, the same random ZAYA config).

    python benchmarks/engine_profile.py --threads 1

This is a profile, not a claim: it makes no comparison. Use it to see which kernel bounds a step
before optimising one; `engine_vs_hf.py` measures the outcome against transformers.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Callable

import torch
from engine_vs_hf import build

from rsa.backends.zaya1 import LLM, SamplingParams
from rsa.kernels import ops

KERNELS = ("cca_epilogue", "store_kv", "attention_prefill", "attention_decode", "moe_experts", "rmsnorm",
           "merge_rmsnorm", "lm_head")


def timed(name: str, fn: Callable, acc: collections.Counter) -> Callable:
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        acc[name] += time.perf_counter() - start
        return out
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--requests", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, vocab = args.requests, 4096
    g = torch.Generator().manual_seed(1)
    lengths = torch.linspace(16, 512, n).round().long()[torch.randperm(n, generator=g)].tolist()
    prompts = [torch.randint(3, vocab, (m,), generator=g).tolist() for m in lengths]
    acc: collections.Counter = collections.Counter()
    for name in KERNELS:  # the model calls ops.<name> at run time, so wrapping the module attribute counts it
        setattr(ops, name, timed(name, getattr(ops, name), acc))
    linear = torch.nn.Linear.forward
    torch.nn.Linear.forward = lambda self, x: timed("nn.Linear (projections, router)", linear, acc)(self, x)
    with tempfile.TemporaryDirectory() as path:
        build(path, vocab)
        llm = LLM(path, max_num_seqs=n)  # engine defaults, as in engine_vs_hf.py
        greedy = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
        for i, p in enumerate(prompts):
            llm.add_request(p, greedy, ("profile", i))
        phases: dict[str, list] = {"prefill (chunks of <= 2048 tokens)": [], "decode": []}
        while llm.has_unfinished():
            decoding = all(s.num_computed >= s.num_prompt_tokens for s in llm.scheduler.running) \
                and not llm.scheduler.waiting
            acc.clear()
            start = time.perf_counter()
            llm.step()
            phases["decode" if decoding else "prefill (chunks of <= 2048 tokens)"].append(
                (time.perf_counter() - start, dict(acc)))
    print(f"{n} requests, {args.threads} threads")
    for phase, steps in phases.items():
        if not steps:
            continue
        total = sum(t for t, _ in steps)
        print(f"\n{phase}: {len(steps)} steps, {1e3 * total / len(steps):.1f} ms/step, {total:.2f} s in all")
        parts: collections.Counter = collections.Counter()
        for _, part in steps:
            parts.update(part)
        for name, secs in parts.most_common():
            print(f"  {name:34s} {1e3 * secs / len(steps):8.2f} ms/step {100 * secs / total:5.1f}%")
        rest = total - sum(parts.values())
        print(f"  {'other (embedding, sampling, python)':34s} {1e3 * rest / len(steps):8.2f} ms/step {100 * rest / total:5.1f}%")


if __name__ == "__main__":
    main()
