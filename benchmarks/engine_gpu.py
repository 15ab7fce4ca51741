"""Claim: on one H200 the engine's decode throughput approaches the weight-bandwidth ceiling at batch 1
and scales with batch, well above transformers' `generate`.

Builds the full ZAYA1-8B config with random bf16 weights (no download, ~17.7 GB): transformers' model
is initialised on the GPU with a fixed seed (initializer_range 0.02), and ours is built on the meta
device and materialised by assigning the same tensors, so the weights exist once. For batch 1, 32 and
256 it measures decode tokens/s = B * (N - 1) / (time for N new tokens - time for 1), i.e. without the
prefill, for both, and prints them beside the ceiling: min(HBM bandwidth / bytes of weights read per
step, peak bf16 FLOP/s / FLOPs per step), where a step reads the attention/router/norm weights, the
LM head and the experts the batch's tokens route to (expected distinct experts under uniform routing).
    python benchmarks/engine_gpu.py            # one H200, < 5 minutes
    python benchmarks/engine_gpu.py --small    # the same code path on CPU with a tiny config
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers

from rsa.backends.zaya1 import LLM, SamplingParams, Zaya1Config
from rsa.backends.zaya1.model import rope_inv_freq
from rsa.backends.zaya1.weights import empty_model

HBM_BYTES_PER_S = 4.8e12  # H200
PEAK_BF16_FLOPS = 989e12  # H200 dense
FULL = dict(vocab_size=262272, hidden_size=2048, num_hidden_layers=40, num_attention_heads=8, num_key_value_heads=2,
            head_dim=128, moe_intermediate_size=2048, num_experts=16, router_hidden_size=256,
            max_position_embeddings=131072)
SMALL = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, moe_intermediate_size=64, num_experts=4, router_hidden_size=16, max_position_embeddings=1024)


def build(shape: dict, dtype: torch.dtype, device: str):  # noqa: ANN201
    """(transformers model, our model) sharing one set of random weights."""
    cfg = transformers.ZayaConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0, **shape)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            hf = transformers.ZayaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    for layer in hf.model.layers:  # fp32 routing buffers, unit key temperature (non-degenerate attention)
        layer.mlp.gate.balancing_biases.data = layer.mlp.gate.balancing_biases.data.float()
        layer.self_attn.qk_norm.temp.data.fill_(1.0)
    config = Zaya1Config.from_dict(cfg.to_dict())
    ours = empty_model(config, dtype, "meta")
    ours.model.rope_inv_freq = rope_inv_freq(config).to(device)
    state = {k: v for k, v in hf.state_dict().items() if k in ours.state_dict()}
    missing = set(ours.state_dict()) - set(state) - {"model.rope_inv_freq"}
    assert not missing, f"transformers model lacks {sorted(missing)[:5]}"
    ours.load_state_dict(state, strict=False, assign=True)
    return hf, ours.eval()


def ceiling(model, batch: int, dtype_bytes: int) -> float:  # noqa: ANN001
    c = model.config
    active = model.num_parameters(active_only=True)  # non-embedding weights one token uses
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n) // c.num_experts
    distinct = c.num_experts * (1 - (1 - 1 / c.num_experts) ** batch)  # expected experts hit per layer
    head = c.vocab_size * c.hidden_size
    read = (active + expert * (distinct - 1) + head) * dtype_bytes
    flops = 2 * (active + head) * batch
    return batch / max(read / HBM_BYTES_PER_S, flops / PEAK_BF16_FLOPS)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def decode_rate(run, batch: int, new: int, device: str) -> float:  # noqa: ANN001
    """tokens/s of decode: B * (N - 1) / (t(N) - t(1))."""
    run(1)
    times = []
    for n in (1, new):
        sync(device)
        t = time.perf_counter()
        run(n)
        sync(device)
        times.append(time.perf_counter() - t)
    return batch * (new - 1) / max(times[1] - times[0], 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny config on CPU (smoke test of this script)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per request")
    args = ap.parse_args()
    small = args.small or not torch.cuda.is_available()
    device, dtype = ("cpu", torch.float32) if small else ("cuda", torch.bfloat16)
    batches, new, hf_new = ((1, 4, 8), 6, 4) if small else ((1, 32, 256), 64, 16)
    prompt_len = 8 if small else args.prompt
    t0 = time.perf_counter()
    hf, ours = build(SMALL if small else FULL, dtype, device)
    print(f"built {'tiny' if small else 'ZAYA1-8B'} random {dtype} on {device} in {time.perf_counter() - t0:.1f} s: "
          f"{ours.num_parameters() / 1e6:.1f}M params, {ours.num_parameters(active_only=True) / 1e6:.1f}M active "
          "(non-embedding)")
    budget = (32 << 20) if small else (16 << 30)
    llm = LLM(ours, device=device, max_num_seqs=max(batches), max_num_batched_tokens=max(2048, prompt_len),
              memory_budget=budget)
    print("cache:", llm.cache_info())
    g = torch.Generator().manual_seed(0)
    rows = []
    for b in batches:
        prompts = [torch.randint(3, ours.config.vocab_size, (prompt_len,), generator=g).tolist() for _ in range(b)]

        def engine_run(n: int, prompts=prompts) -> None:  # noqa: ANN001
            llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))

        ids = torch.tensor(prompts, device=device)

        def hf_run(n: int, ids=ids) -> None:  # noqa: ANN001
            with torch.inference_mode():
                hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                            do_sample=False, eos_token_id=None, pad_token_id=0)

        ours_rate = decode_rate(engine_run, b, new, device)
        hf_rate = decode_rate(hf_run, b, hf_new, device)
        rows.append((b, ours_rate, hf_rate, ceiling(ours, b, dtype.itemsize)))
        print(f"batch {b} done at {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\ndecode tokens/s, prompt {prompt_len} tokens ({'tiny CPU smoke run' if small else 'H200'})")
    print(f"{'batch':>6} {'engine':>10} {'transformers':>13} {'ratio':>7} {'ceiling':>10} {'engine/ceiling':>15}")
    for b, ours_rate, hf_rate, ceil in rows:
        print(f"{b:>6} {ours_rate:>10.1f} {hf_rate:>13.1f} {ours_rate / hf_rate:>6.2f}x {ceil:>10.0f} "
              f"{ours_rate / ceil:>14.1%}")
    print(f"ceiling: min(HBM {HBM_BYTES_PER_S / 1e12:.1f} TB/s / weight bytes read per step, "
          f"{PEAK_BF16_FLOPS / 1e12:.0f} TFLOP/s / step FLOPs); total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
