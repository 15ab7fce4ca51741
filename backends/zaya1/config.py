"""ZAYA1 model configuration: the HF `config.json` keys as a validated stdlib dataclass.

`Zaya1Config.from_pretrained(dir)` / `from_dict(d)` read the native (transformers >= 5.13, 40-layer)
schema and ignore unknown keys. A legacy Megatron-layout config (`ZAYA1-8B-legacy`: 80 half-layers,
`ffn_hidden_size`, `zaya_mlp_expansion`, ...) is recognised and mapped to native keys (spec 4.2).

Not covered: sliding-window layers (`hybrid_sliding`, the 74B only), `attention_bias`,
`lm_head_bias`, `clamp_temp` and RoPE types other than "default"; they raise ValueError.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

# keys only a legacy (Megatron-layout) config.json carries
LEGACY_KEYS = frozenset(
    {"ffn_hidden_size", "zaya_mlp_expansion", "num_query_groups", "kv_channels", "norm_epsilon",
     "moe_router_topk", "activation_func", "swa_layers"}
)
# legacy flags whose other value would change the network; (key, value ZAYA1 requires)
_LEGACY_FLAGS = (("zaya_use_mod", True), ("zaya_use_eda", True), ("scale_residual_merge", True),
                 ("clamp_temp", False), ("add_bias_linear", False), ("gated_linear_unit", True))


def _default_rope() -> dict[str, Any]:
    return {"hybrid": {"rope_type": "default", "rope_theta": 5_000_000.0, "partial_rotary_factor": 0.5}}


@dataclass(slots=True, frozen=True)
class Zaya1Config:
    vocab_size: int = 262272
    hidden_size: int = 2048
    num_hidden_layers: int = 40
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    rope_parameters: dict[str, Any] = field(default_factory=_default_rope)
    layer_types: tuple[str, ...] | None = None
    sliding_window: int | None = None
    moe_intermediate_size: int = 2048
    num_experts: int = 16
    num_experts_per_tok: int = 1
    router_hidden_size: int = 256
    cca_time0: int = 2
    cca_time1: int = 2
    attention_bias: bool = False
    lm_head_bias: bool = False
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 106
    pad_token_id: int | None = 0
    model_type: str = "zaya"

    def __post_init__(self) -> None:
        if self.layer_types is None:
            object.__setattr__(self, "layer_types", ("hybrid",) * self.num_hidden_layers)
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        rope = self.rope_parameters if self.rope_parameters is not None else _default_rope()
        if "hybrid" not in rope:  # a flat dict (older hub configs) describes the hybrid layers
            rope = {"hybrid": {k: v for k, v in rope.items() if k != "hybrid_sliding"}}
        object.__setattr__(self, "rope_parameters", rope)
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"Zaya1Config: invalid {name}={getattr(self, name, None)!r}: {why}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings",
                     "moe_intermediate_size", "num_experts", "router_hidden_size", "cca_time0", "cca_time1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be a positive integer")
        if self.model_type != "zaya":
            raise bad("model_type", "expected 'zaya'")
        if self.num_attention_heads % self.num_key_value_heads:
            raise bad("num_attention_heads", f"must be a multiple of num_key_value_heads={self.num_key_value_heads}")
        if (self.num_key_value_heads * self.head_dim) % 2:
            raise bad("head_dim", "num_key_value_heads * head_dim must be even (values are split current/delayed)")
        if self.num_experts_per_tok != 1:
            raise bad("num_experts_per_tok", "ZAYA1 routes top-1 only")
        if self.hidden_act != "silu":
            raise bad("hidden_act", "experts are SwiGLU ('silu')")
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise bad("rms_norm_eps", "must be a positive number")
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) != {"hybrid"}:
            raise bad("layer_types", f"need {self.num_hidden_layers} x 'hybrid' (no sliding-window layers)")
        for name in ("attention_bias", "lm_head_bias"):
            if getattr(self, name):
                raise bad(name, "biased projections are not supported (ZAYA1 checkpoints use False)")
        hybrid = self.rope_parameters["hybrid"]
        if hybrid.get("rope_type", "default") != "default":
            raise bad("rope_parameters", "only rope_type 'default' is supported")
        if not (isinstance(hybrid.get("rope_theta"), (int, float)) and hybrid["rope_theta"] > 0):
            raise bad("rope_parameters", "hybrid.rope_theta must be a positive number")
        factor = hybrid.get("partial_rotary_factor", 1.0)
        rotary = int(self.head_dim * factor)
        if not (0 < factor <= 1) or rotary < 2 or rotary % 2:
            raise bad("rope_parameters", f"partial_rotary_factor={factor} gives rotary dim {rotary}, need even >= 2")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def rope_theta(self) -> float:
        return float(self.rope_parameters["hybrid"]["rope_theta"])

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rope_parameters["hybrid"].get("partial_rotary_factor", 1.0))

    @property
    def conv_channels(self) -> int:  # packed [Q0; K0] width
        return (self.num_attention_heads + self.num_key_value_heads) * self.head_dim

    @property
    def conv_state_width(self) -> int:  # raw columns a sequence carries between steps
        return (self.cca_time0 - 1) + (self.cca_time1 - 1)

    @property
    def value_state_dim(self) -> int:  # width of the delayed-value projection
        return self.num_key_value_heads * self.head_dim // 2

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Zaya1Config:
        if not isinstance(d, dict):
            raise ValueError(f"Zaya1Config.from_dict expects a dict, got {type(d).__name__}")
        if is_legacy_config(d):
            d = legacy_to_native_config(d)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Zaya1Config:
        file = os.path.join(path, "config.json") if os.path.isdir(path) else os.fspath(path)
        with open(file, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))


def is_legacy_config(d: dict[str, Any]) -> bool:
    return any(key in d for key in LEGACY_KEYS)


def legacy_to_native_config(d: dict[str, Any]) -> dict[str, Any]:
    """Map a legacy (80 half-layer Megatron) config dict to native keys (spec 4.2)."""
    for key, required in _LEGACY_FLAGS:
        if key in d and d[key] != required:
            raise ValueError(f"Zaya1Config: legacy {key}={d[key]!r} is not supported (ZAYA1 uses {required!r})")
    if d.get("activation_func", "swiglu") != "swiglu":
        raise ValueError(f"Zaya1Config: legacy activation_func={d['activation_func']!r} is not supported")
    if d.get("swa_layers"):
        raise ValueError(f"Zaya1Config: legacy swa_layers={d['swa_layers']!r}: no sliding-window layers supported")
    out = {k: v for k, v in d.items() if k not in LEGACY_KEYS}
    layers = d.get("num_hidden_layers", 80)
    if not isinstance(layers, int) or layers < 2 or layers % 2:
        raise ValueError(f"Zaya1Config: legacy num_hidden_layers={layers!r} must be even (attention + MoE halves)")
    out["num_hidden_layers"] = layers // 2
    out.pop("layer_types", None)
    if "ffn_hidden_size" in d:  # fused gate + up
        out["moe_intermediate_size"] = d["ffn_hidden_size"] // 2
    if "zaya_mlp_expansion" in d:
        width = d["zaya_mlp_expansion"]
        if isinstance(width, list):  # some configs list it per half-layer, 0 on attention layers
            widths = {w for w in width if w}
            if len(widths) != 1:
                raise ValueError(f"Zaya1Config: legacy zaya_mlp_expansion={width!r} must hold one router width")
            width = widths.pop()
        out["router_hidden_size"] = width
    renames = {"norm_epsilon": "rms_norm_eps", "moe_router_topk": "num_experts_per_tok",
               "num_query_groups": "num_key_value_heads", "kv_channels": "head_dim"}
    for old, new in renames.items():
        if old in d:
            if new in d and d[new] != d[old]:
                raise ValueError(f"Zaya1Config: legacy {old}={d[old]!r} disagrees with {new}={d[new]!r}")
            out[new] = d[old]
    if "rope_theta" in d or "partial_rotary_factor" in d:
        out["rope_parameters"] = {"hybrid": {"rope_type": "default",
                                             "rope_theta": float(d.get("rope_theta", 5_000_000.0)),
                                             "partial_rotary_factor": d.get("partial_rotary_factor", 0.5)}}
    return out
