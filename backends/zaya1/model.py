"""ZAYA1 (Zyphra, `model_type: zaya`) for the embedded engine: 40 x (CCA attention + top-1 MoE).

Driven by an engine, not by `generate`: `model(input_ids (T,), positions (T,), ctx)` runs a flat
batch of tokens from several sequences (prefill chunks and decode tokens, mixed) and returns the
final normed hidden states (T, H); `compute_logits` turns the rows the sampler needs into fp32 logits.
`ctx` (cache.ForwardContext) says how tokens split into sequences and where their K/V and CCA state
live. Parameters are named after the native checkpoint keys, so loading is a plain name match.

Numerics: residual stream in fp32, sublayers in the model dtype, fp32 logits with the tied embedding.
Where the spec and transformers differ we follow transformers (the oracle): norms round their fp32
input to the model dtype first; a token routed to the skip slot gets MoE output 0 (legacy code
passed g * h through). The residual merges and routing softmax run in fp32 (as vLLM does).
Kernel ops go through `rsa.kernels.ops`. Not covered: sliding-window layers, biased projections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsa.kernels import ops

from .cache import ForwardContext
from .config import Zaya1Config


def rope_inv_freq(config: Zaya1Config) -> torch.Tensor:
    """(R/2,) fp32 inverse frequencies of the partial NeoX RoPE, computed as transformers does."""
    dim = config.rotary_dim
    return 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


class RMSNorm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))


class ConvWeights(nn.Module):
    """Parameters of an nn.Conv1d (weight (C_out, C_in / groups, kernel), bias (C_out,)); run by ops."""

    def __init__(self, channels: int, in_per_group: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, in_per_group, kernel))
        self.bias = nn.Parameter(torch.empty(channels))


class ResidualScale(nn.Module):
    """r' = (y + hidden_states_bias) * hidden_states_scale + (r + residual_bias) * residual_scale."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.hidden_states_scale = nn.Parameter(torch.empty(size))
        self.hidden_states_bias = nn.Parameter(torch.empty(size))
        self.residual_scale = nn.Parameter(torch.empty(size))
        self.residual_bias = nn.Parameter(torch.empty(size))

    def vectors(self) -> tuple[torch.Tensor, ...]:
        return self.hidden_states_scale, self.hidden_states_bias, self.residual_scale, self.residual_bias


class CCAProjection(nn.Module):
    """q/k projections into the compressed latent, their two causal convs, and the split value."""

    def __init__(self, c: Zaya1Config) -> None:
        super().__init__()
        d, hq, kv = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        self.q_proj = nn.Linear(c.hidden_size, hq * d, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, kv * d, bias=False)
        self.v_proj_current = nn.Linear(c.hidden_size, c.value_state_dim, bias=False)
        self.v_proj_delayed = nn.Linear(c.hidden_size, c.value_state_dim, bias=False)
        self.conv_qk_depthwise = ConvWeights(c.conv_channels, 1, c.cca_time0)
        self.conv_qk_grouped = ConvWeights(c.conv_channels, d, c.cca_time1)


class QKNorm(nn.Module):
    def __init__(self, c: Zaya1Config) -> None:
        super().__init__()
        self.temp = nn.Parameter(torch.empty(c.num_key_value_heads))  # key temperature, used raw


class Attention(nn.Module):
    """CCA: compressed q/k (conv + mix + L2 norm + RoPE), delayed value, causal GQA, output projection."""

    def __init__(self, c: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.scale = c.head_dim ** -0.5
        self.qkv_proj = CCAProjection(c)
        self.qk_norm = QKNorm(c)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        # T tokens, H hidden, Hq query heads, KV kv heads, D head dim
        p, cache, layer = self.qkv_proj, ctx.cache, self.layer_idx
        qk = torch.cat([p.q_proj(h), p.k_proj(h)], dim=-1)  # (T, (Hq + KV) * D)
        q, k, v = ops.cca_epilogue(  # (T, Hq, D), (T, KV, D), (T, KV, D)
            qk, p.v_proj_current(h), p.v_proj_delayed(h), cos, sin,
            p.conv_qk_depthwise.weight, p.conv_qk_depthwise.bias, p.conv_qk_grouped.weight, p.conv_qk_grouped.bias,
            self.qk_norm.temp,
            cache.conv_state(layer) if cache is not None else None,
            cache.value_state(layer) if cache is not None else None,
            ctx.cu_seqlens, ctx.state_slots, ctx.fresh,
        )
        k_cache = v_cache = None
        if cache is not None:
            k_cache, v_cache = cache.kv(layer)
            ops.store_kv(k, v, k_cache, v_cache, ctx.slot_mapping)
        attend = ops.attention_decode if ctx.is_decode else ops.attention_prefill
        o = attend(q, k, v, k_cache, v_cache, ctx.cu_seqlens, ctx.seq_lens, ctx.block_tables,
                   ctx.max_query_len, ctx.max_seq_len, self.scale)  # (T, Hq, D)
        return self.o_proj(o.flatten(1))  # (T, H)


class RouterMLP(nn.Module):
    def __init__(self, width: int, classes: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.norm = RMSNorm(width)
        self.fc1 = nn.Linear(width, width, bias=True)
        self.fc2 = nn.Linear(width, width, bias=True)
        self.out_proj = nn.Linear(width, classes, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = ops.rmsnorm(u, self.norm.weight, self.eps)
        x = F.gelu(self.fc1(x))  # exact (erf) GELU
        x = F.gelu(self.fc2(x))
        return self.out_proj(x)  # (T, E + 1)


class Router(nn.Module):
    """ZAYA1 MLP router with the depth state (EDA) and selection-only balancing biases."""

    def __init__(self, c: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.num_experts = c.num_experts
        self.down_proj = nn.Linear(c.hidden_size, c.router_hidden_size, bias=True)
        if layer_idx > 0:
            self.router_states_scale = nn.Parameter(torch.empty(c.router_hidden_size))
        else:  # layer 0 has no previous router state
            self.register_parameter("router_states_scale", None)
        self.router_mlp = RouterMLP(c.router_hidden_size, c.num_experts + 1, c.rms_norm_eps)
        self.register_buffer("balancing_biases", torch.zeros(c.num_experts + 1, dtype=torch.float32))

    def forward(self, h: torch.Tensor, rho: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        # T tokens, E experts (+ 1 skip slot), R router width
        u = self.down_proj(h)  # (T, R)
        if self.router_states_scale is not None and rho is not None:
            u = u + rho * self.router_states_scale
        probs = torch.softmax(self.router_mlp(u).float(), dim=-1)  # (T, E + 1)
        ids = torch.argmax(probs + self.balancing_biases, dim=-1)  # (T,) index E = skip
        gate = probs.gather(1, ids[:, None])[:, 0]  # (T,) unbiased probability, not renormalised
        return ids, gate, u  # u (before the router norm) is the next layer's depth state


class Experts(nn.Module):
    def __init__(self, c: Zaya1Config) -> None:
        super().__init__()
        e, i, h = c.num_experts, c.moe_intermediate_size, c.hidden_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))  # rows [0, I) gate, [I, 2I) up
        self.down_proj = nn.Parameter(torch.empty(e, h, i))


class MoE(nn.Module):
    def __init__(self, c: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.gate = Router(c, layer_idx)
        self.experts = Experts(c)

    def forward(self, h: torch.Tensor, rho: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # T tokens, H hidden, E experts, R router width, I expert FFN; top-1
        ids, gate, rho = self.gate(h, rho)  # (T,), (T,), (T, R)
        return ops.moe_experts(h, ids, gate, self.experts.gate_up_proj, self.experts.down_proj), rho


class DecoderLayer(nn.Module):
    def __init__(self, c: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.eps = c.rms_norm_eps
        self.self_attn = Attention(c, layer_idx)
        self.mlp = MoE(c, layer_idx)
        self.input_layernorm = RMSNorm(c.hidden_size)
        self.post_attention_layernorm = RMSNorm(c.hidden_size)
        self.post_attention_residual_scale = ResidualScale(c.hidden_size)
        self.post_mlp_residual_scale = ResidualScale(c.hidden_size)

    def forward(self, h, r, rho, next_norm: RMSNorm, cos, sin, ctx: ForwardContext):  # noqa: ANN001
        """h (T, H) this layer's normed input; r (T, H) fp32 residual; rho (T, R) router state or None.
        The post-MLP merge is fused with the *next* norm (next layer's input_layernorm or the final norm).
        """
        a = self.self_attn(h, cos, sin, ctx)
        r, h = ops.merge_rmsnorm(a, r, *self.post_attention_residual_scale.vectors(),
                                 self.post_attention_layernorm.weight, self.eps)
        m, rho = self.mlp(h, rho)
        r, h = ops.merge_rmsnorm(m, r, *self.post_mlp_residual_scale.vectors(), next_norm.weight, self.eps)
        return h, r, rho


class Zaya1Model(nn.Module):
    def __init__(self, c: Zaya1Config) -> None:
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.input_hidden_states_scale = nn.Parameter(torch.empty(c.hidden_size))
        self.input_hidden_states_bias = nn.Parameter(torch.empty(c.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(c, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size)
        self.register_buffer("rope_inv_freq", rope_inv_freq(c), persistent=False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        e = self.embed_tokens(input_ids)  # (T, H), no sqrt(H) scale
        r = (e.float() + self.input_hidden_states_bias.float()) * self.input_hidden_states_scale.float()
        h = ops.rmsnorm(r, self.layers[0].input_layernorm.weight, self.config.rms_norm_eps)
        freqs = positions.float()[:, None] * self.rope_inv_freq  # (T, R/2)
        cos, sin = freqs.cos(), freqs.sin()
        rho = None
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1].input_layernorm if i + 1 < len(self.layers) else self.norm
            h, r, rho = layer(h, r, rho, nxt, cos, sin, ctx)
        return h  # (T, H) final-normed


class Zaya1ForCausalLM(nn.Module):
    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.config = config
        self.model = Zaya1Model(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids, positions (T,) flat tokens of ctx's sequences -> final hidden states (T, H)."""
        return self.model(input_ids, positions, ctx)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (N, H) -> fp32 logits (N, V)."""
        head = self.lm_head if not self.config.tie_word_embeddings else self.model.embed_tokens
        return ops.lm_head(hidden, head.weight)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full-sequence forward, no cache: input_ids (B, T) equal-length sequences -> (B, T, V) fp32."""
        b, t = input_ids.shape
        ctx = ForwardContext.build([t] * b, [0] * b, list(range(b)), device=input_ids.device)
        positions = torch.arange(t, device=input_ids.device).repeat(b)  # (B*T,)
        return self.compute_logits(self(input_ids.reshape(-1), positions, ctx)).view(b, t, -1)

    def num_parameters(self, active_only: bool = False) -> int:
        """All parameters (tied embedding once); active_only: non-embedding parameters one token uses
        (attention, router, norms and one of the E experts per layer)."""
        total = sum(p.numel() for p in self.parameters())
        if not active_only:
            return total
        embed = sum(p.numel() for n, p in self.named_parameters() if "embed_tokens" in n or "lm_head" in n)
        experts = sum(p.numel() for n, p in self.named_parameters() if ".experts." in n)
        return total - embed - experts + experts // self.config.num_experts
