"""Load ZAYA1 checkpoints into a `Zaya1ForCausalLM`, tensor by tensor.

Native checkpoints (transformers names, `model.safetensors` or sharded with
`model.safetensors.index.json`) load by plain name match. Legacy Megatron-layout checkpoints
(`ZAYA1-8B-legacy`: 80 half-layers, even = attention, odd = MoE, per-expert tensors) are renamed on
the fly with the spec's section 4.2 map, and experts are copied into their slice of the stacked
parameter. Loading is strict: every model tensor must be present exactly once with the right shape,
and no checkpoint tensor may be left over; otherwise one ValueError lists every problem.
The model is built on the meta device, materialised once with `to_empty`, and each checkpoint tensor
is copied (and cast) into its parameter, so no second copy of the weights ever exists.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict

import torch
from safetensors import safe_open

from .config import Zaya1Config, is_legacy_config
from .model import Zaya1ForCausalLM, rope_inv_freq

_LEGACY_ATTN = (  # even half-layer n -> native layer n // 2
    ("self_attn.qkv.linear_q.", "self_attn.qkv_proj.q_proj."),
    ("self_attn.qkv.linear_k.", "self_attn.qkv_proj.k_proj."),
    ("self_attn.qkv.val_proj1.", "self_attn.qkv_proj.v_proj_current."),
    ("self_attn.qkv.val_proj2.", "self_attn.qkv_proj.v_proj_delayed."),
    ("self_attn.qkv.conv_qk.0.", "self_attn.qkv_proj.conv_qk_depthwise."),
    ("self_attn.qkv.conv_qk.1.", "self_attn.qkv_proj.conv_qk_grouped."),
    ("self_attn.qkv.temp", "self_attn.qk_norm.temp"),
    ("self_attn.o_proj.", "self_attn.o_proj."),
    ("input_norm.", "input_layernorm."),
)
_LEGACY_MOE = (  # odd half-layer n -> native layer n // 2
    ("zaya_block.router.rmsnorm_eda.", "mlp.gate.router_mlp.norm."),
    ("zaya_block.router.router_mlp.0.", "mlp.gate.router_mlp.fc1."),
    ("zaya_block.router.router_mlp.2.", "mlp.gate.router_mlp.fc2."),
    ("zaya_block.router.router_mlp.4.", "mlp.gate.router_mlp.out_proj."),
    ("zaya_block.router.", "mlp.gate."),
    ("input_norm.", "post_attention_layernorm."),
    ("res_scale.", "post_attention_residual_scale."),
)
_LEGACY_EXPERT = re.compile(r"zaya_block\.experts\.local_experts\.(\d+)\.linear_fc([12])\.weight")
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


def legacy_to_native_name(name: str, num_layers: int) -> tuple[str, int | None] | None:
    """Native (name, expert index or None) for a legacy tensor name; None if it has no native place."""
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return name, None
    if name == "model.final_norm.weight":
        return "model.norm.weight", None
    if name.startswith("model.res_scale."):
        return f"model.layers.{num_layers - 1}.post_mlp_residual_scale.{name.removeprefix('model.res_scale.')}", None
    m = _LAYER.fullmatch(name)
    if m is None or int(m[1]) >= 2 * num_layers:
        return None
    n, rest = int(m[1]), m[2]
    layer = f"model.layers.{n // 2}."
    if n % 2 == 0 and rest.startswith("res_scale."):  # merges the previous MoE half-layer (or the embedding)
        part = rest.removeprefix("res_scale.")
        if n == 0:
            return (f"model.input_{part}", None) if part.startswith("hidden_states_") else None
        return f"model.layers.{n // 2 - 1}.post_mlp_residual_scale.{part}", None
    if n % 2 and (e := _LEGACY_EXPERT.fullmatch(rest)):
        return layer + ("mlp.experts.gate_up_proj" if e[2] == "1" else "mlp.experts.down_proj"), int(e[1])
    for old, new in _LEGACY_MOE if n % 2 else _LEGACY_ATTN:
        if rest.startswith(old):
            return layer + new + rest.removeprefix(old), None
    return None


def checkpoint_files(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """{safetensors file: tensor names} of a checkpoint directory (single file or sharded)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
        files: dict[str, list[str]] = defaultdict(list)
        for name, file in weight_map.items():
            files[os.path.join(path, file)].append(name)
        return dict(files)
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}")
    with safe_open(single, framework="pt") as f:
        return {single: list(f.keys())}


def empty_model(config: Zaya1Config, dtype: torch.dtype, device: torch.device | str) -> Zaya1ForCausalLM:
    """Allocate (uninitialised) parameters in `dtype` on `device`; fp32 buffers stay fp32."""
    with torch.device("meta"):
        model = Zaya1ForCausalLM(config)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    model.to_empty(device=device)
    model.model.rope_inv_freq = rope_inv_freq(config).to(device)
    return model


def load_weights(model: Zaya1ForCausalLM, path: str | os.PathLike[str], *, legacy: bool = False) -> None:
    """Copy every checkpoint tensor into its parameter/buffer; strict (see the module docstring)."""
    targets = model.state_dict(keep_vars=True)
    num_layers, num_experts = model.config.num_hidden_layers, model.config.num_experts
    plan: dict[str, list[tuple[str, str, int | None]]] = defaultdict(list)
    seen: dict[tuple[str, int | None], str] = {}  # also holds misshaped tensors (reported once, as such)
    unexpected, wrong_shape, duplicate = [], [], []
    for file, names in checkpoint_files(path).items():
        with safe_open(file, framework="pt") as f:
            for name in names:
                dest = legacy_to_native_name(name, num_layers) if legacy else (name, None)
                if dest is None or dest[0] not in targets:
                    unexpected.append(name)
                    continue
                target, index = dest
                want = targets[target].shape if index is None else targets[target].shape[1:]
                got = tuple(f.get_slice(name).get_shape())
                if index is not None and not 0 <= index < num_experts:
                    unexpected.append(name)
                elif dest in seen:
                    duplicate.append(f"{name} (also {seen[dest]})")
                else:
                    seen[dest] = name
                    if got != tuple(want):
                        wrong_shape.append(f"{name}: checkpoint {list(got)} vs model {list(want)}")
                    plan[file].append((name, target, index))
    stacked = {t for t, i in seen if i is not None}
    missing = [t for t in targets if (t, None) not in seen and t not in stacked]
    missing += [f"{t}[{i}]" for t in sorted(stacked) for i in range(num_experts) if (t, i) not in seen]
    problems = [(label, items) for label, items in (("missing", missing), ("unexpected", unexpected),
                                                    ("wrong shape", wrong_shape), ("duplicate", duplicate)) if items]
    if problems:
        lines = [f"  {label} ({len(items)}): " + ", ".join(sorted(items)) for label, items in problems]
        raise ValueError(f"checkpoint {os.fspath(path)} does not match the ZAYA1 model:\n" + "\n".join(lines))
    with torch.no_grad():
        for file, entries in plan.items():
            with safe_open(file, framework="pt") as f:
                for name, target, index in entries:
                    dst = targets[target] if index is None else targets[target][index]
                    dst.copy_(f.get_tensor(name))


def load_model(
    path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Zaya1ForCausalLM:
    """Build a ZAYA1 model from a native or legacy checkpoint directory, in `dtype` on `device`."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
        raw = json.load(fh)
    config = Zaya1Config.from_dict(raw)
    model = empty_model(config, dtype, device)
    load_weights(model, path, legacy=is_legacy_config(raw))
    return model.eval()
