"""Claim: on CPU the embedded engine has >= 3x the aggregate greedy throughput of transformers'
`generate` on a mixed-length batch, and is no slower for a single request's decode.

A random ZAYA config big enough to be compute-bound on CPU (hidden 256, 4 layers, 8 experts, vocab
4096, fp32), 64 requests with prompt lengths spread over 16-512 tokens, 128 new greedy tokens each.
transformers runs left-padded batches of `--hf-batch` prompts (sorted by length, to limit padding),
by default all requests in one batch, as the engine gets them (its fastest setting: at 1 thread batch
64 ran 313 tok/s against 281 at 32 and <= 293 at 16). The engine runs with its default settings
(steps of up to 2048 tokens; all 64 sequences admitted). Single-request decode latency is (time for N tokens - time for
1 token) / (N - 1), so prefill is excluded. The engine runs twice, on the default kernel backend
("cpu": the C++ kernels of `rsa.kernels.cpu_ops`) and on the plain-PyTorch twins ("torch"), so the kernels' own
share of the gain is printed too. Other jobs share the CPU: each contender runs --repeat times,
interleaved, and its fastest run counts; even so only the ratios are meaningful.

    python benchmarks/engine_vs_hf.py            # full run (minutes)
    python benchmarks/engine_vs_hf.py --quick    # 16 requests, 16-128 prompt tokens, 32 new tokens
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import transformers

from rsa.backends.zaya1 import LLM, SamplingParams
from rsa.kernels import ops


def build(path: str, vocab: int) -> transformers.ZayaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.ZayaConfig(vocab_size=vocab, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                                  num_key_value_heads=2, head_dim=32, num_experts=8, router_hidden_size=64,
                                  moe_intermediate_size=512, max_position_embeddings=2048, bos_token_id=1,
                                  eos_token_id=2, pad_token_id=0)
    hf = transformers.ZayaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in hf.model.layers:  # non-degenerate attention
            layer.self_attn.qk_norm.temp.fill_(1.0)
    hf.save_pretrained(path)
    return hf


@torch.inference_mode()
def hf_generate(hf, prompts: list[list[int]], new: int, batch: int) -> int:
    produced = 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch):
        rows = [prompts[i] for i in order[start:start + batch]]
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(rows):
            ids[r, width - len(p):], mask[r, width - len(p):] = torch.tensor(p), 1
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
        produced += (out.shape[1] - width) * len(rows)
    return produced


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 requests, 16-128 prompt tokens, 32 new tokens")
    ap.add_argument("--hf-batch", type=int, default=None,
                    help="transformers batch size (left padding); default: all requests, as the engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each contender; the fastest counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, lo, hi, new = (16, 16, 128, 32) if args.quick else (64, 16, 512, 128)
    hf_batch = args.hf_batch or n
    vocab = 4096
    g = torch.Generator().manual_seed(1)
    lengths = torch.linspace(lo, hi, n).round().long()[torch.randperm(n, generator=g)].tolist()
    prompts = [torch.randint(3, vocab, (m,), generator=g).tolist() for m in lengths]
    with tempfile.TemporaryDirectory() as path:
        hf = build(path, vocab)
        llm = LLM(path, max_num_seqs=n)  # the engine's defaults otherwise (2048-token steps)
        greedy = SamplingParams(temperature=0, max_tokens=new, ignore_eos=True)
        llm.generate([prompts[0][:8]], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))  # warm up
        backend = ops.get_backend()
        t_ours = t_twin = t_hf = float("inf")
        for _ in range(args.repeat):  # interleaved; the fastest of each is the least disturbed by other jobs
            outs, t = timed(lambda: llm.generate(prompts, greedy))
            t_ours = min(t_ours, t)
            with ops.use_backend("torch"):
                twin_outs, t = timed(lambda: llm.generate(prompts, greedy))
            t_twin = min(t_twin, t)
            hf_tok, t = timed(lambda: hf_generate(hf, prompts, new, hf_batch))
            t_hf = min(t_hf, t)
        ours_tok = sum(len(o.token_ids) for o in outs)
        same = [o.token_ids for o in outs] == [o.token_ids for o in twin_outs]
        one = prompts[0][:64]
        steps = 32 if args.quick else 64
        lat = {}
        for name, fn in (("engine", lambda k: llm.generate([one], SamplingParams(temperature=0, max_tokens=k,
                                                                                    ignore_eos=True))),
                         ("transformers", lambda k: hf_generate(hf, [one], k, 1))):
            fn(2)
            _, t1 = timed(lambda: fn(1))
            _, tn = timed(lambda: fn(steps))
            lat[name] = (tn - t1) / (steps - 1) * 1e3
    print(f"{n} requests, prompts {lo}-{hi} tokens, {new} new greedy tokens each, {args.threads} threads, "
          f"fastest of {args.repeat} interleaved runs")
    print(f"engine        {ours_tok:6d} tokens in {t_ours:7.2f} s = {ours_tok / t_ours:8.1f} tok/s "
          f"(kernels {backend!r}, preemptions {llm.metrics().num_preemptions})")
    print(f"engine        {ours_tok:6d} tokens in {t_twin:7.2f} s = {ours_tok / t_twin:8.1f} tok/s "
          f"(kernels 'torch'; same greedy tokens: {same})")
    print(f"transformers  {hf_tok:6d} tokens in {t_hf:7.2f} s = {hf_tok / t_hf:8.1f} tok/s (batch {hf_batch})")
    print(f"throughput ratio engine / transformers: {(ours_tok / t_ours) / (hf_tok / t_hf):.2f}x "
          f"({backend!r} kernels), {(ours_tok / t_twin) / (hf_tok / t_hf):.2f}x ('torch' kernels)")
    print(f"batch-1 decode latency: engine {lat['engine']:.2f} ms/token, transformers {lat['transformers']:.2f} "
          f"ms/token (ratio {lat['transformers'] / lat['engine']:.2f}x)")


if __name__ == "__main__":
    main()
