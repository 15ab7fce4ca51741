"""Zaya1Config: native config.json keys, validation, legacy mapping, import hygiene."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import transformers

from rsa.backends.zaya1 import Zaya1Config
from rsa.backends.zaya1.config import is_legacy_config

# ZAYA1-8B-legacy config.json (spec 1 and 4.2): 80 half-layers, Megatron key names
LEGACY_8B = {
    "activation_func": "swiglu", "add_bias_linear": False, "architectures": ["ZayaForCausalLM"],
    "attention_bias": False, "bos_token_id": 2, "cca": True, "eos_token_id": 106, "ffn_hidden_size": 4096,
    "gated_linear_unit": True, "hidden_size": 2048, "head_dim": 128, "kv_channels": 128, "lm_head_bias": False,
    "mamba_cache_dtype": "float32", "max_position_embeddings": 131072, "model_type": "zaya", "moe_router_topk": 1,
    "norm_epsilon": 1e-05, "normalization": "RMSNorm", "num_attention_heads": 8, "num_experts": 16,
    "num_hidden_layers": 80, "num_key_value_heads": 2, "num_query_groups": 2, "pad_token_id": 0,
    "partial_rotary_factor": 0.5, "residual_in_fp32": True, "rope_scaling": False, "rope_theta": 5000000,
    "scale_residual_merge": True, "sliding_window": None, "tie_word_embeddings": True, "vocab_size": 262272,
    "zaya_high_prec": True, "zaya_mlp_expansion": 256, "zaya_use_eda": True, "zaya_use_mod": True, "clamp_temp": False,
}


def test_from_pretrained_reads_a_transformers_config(tmp_path):
    hf = transformers.ZayaConfig(vocab_size=77, hidden_size=96, num_hidden_layers=3, num_attention_heads=6,
                                 num_key_value_heads=3, head_dim=24, num_experts=5, router_hidden_size=40,
                                 moe_intermediate_size=72, cca_time0=3)
    hf.save_pretrained(tmp_path)
    cfg = Zaya1Config.from_pretrained(tmp_path)
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "num_experts", "router_hidden_size", "moe_intermediate_size", "cca_time0", "cca_time1",
                 "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(cfg, name) == getattr(hf, name), name
    assert cfg.rope_theta == 5e6 and cfg.rotary_dim == 12 and cfg.conv_state_width == 3
    assert cfg.conv_channels == 9 * 24 and cfg.value_state_dim == 36


def test_unknown_keys_are_ignored_and_hub_rope_quirks_accepted():
    hub_rope = {"rope_type": "default", "hybrid": {"rope_theta": 100.0, "partial_rotary_factor": 0.5}}
    cfg = Zaya1Config.from_dict({"hidden_size": 64, "brand_new_key": 1, "transformers_version": "9",
                                 "rope_parameters": hub_rope})
    assert cfg.hidden_size == 64 and cfg.rope_theta == 100.0
    flat = Zaya1Config.from_dict({"rope_parameters": {"rope_type": "default", "rope_theta": 7.0}})
    assert flat.rope_theta == 7.0 and flat.rotary_dim == 128


@pytest.mark.parametrize("field, value", [
    ("num_experts_per_tok", 2), ("hidden_act", "gelu"), ("num_attention_heads", 6), ("head_dim", 0),
    ("vocab_size", "big"), ("rms_norm_eps", -1.0), ("attention_bias", True), ("lm_head_bias", True),
    ("layer_types", ["hybrid_sliding"] * 40), ("model_type", "llama"), ("cca_time1", 0),
    ("rope_parameters", {"hybrid": {"rope_type": "yarn", "rope_theta": 1e4}}),
    ("rope_parameters", {"hybrid": {"rope_theta": 1e4, "partial_rotary_factor": 0.001}}),
])
def test_invalid_values_raise_naming_field_and_value(field, value):
    overrides = {field: value, "num_key_value_heads": 4} if field == "num_attention_heads" else {field: value}
    with pytest.raises(ValueError, match=field) as err:
        Zaya1Config.from_dict(overrides)
    shown = repr(tuple(value) if isinstance(value, list) else value)
    assert f"{field}={shown[:30]}" in str(err.value)


def test_legacy_8b_config_maps_to_the_native_defaults():
    assert is_legacy_config(LEGACY_8B)
    cfg = Zaya1Config.from_dict(LEGACY_8B)
    assert cfg == Zaya1Config()  # the native ZAYA1-8B geometry
    assert cfg.num_hidden_layers == 40 and cfg.moe_intermediate_size == 2048 and cfg.router_hidden_size == 256
    per_half_layer = dict(LEGACY_8B, zaya_mlp_expansion=[0, 256] * 40)
    assert Zaya1Config.from_dict(per_half_layer).router_hidden_size == 256


@pytest.mark.parametrize("key, value", [("clamp_temp", True), ("zaya_use_mod", False), ("num_hidden_layers", 79),
                                        ("activation_func", "gelu"), ("swa_layers", [1, 3]),
                                        ("num_query_groups", 4)])
def test_legacy_config_rejects_unsupported_variants(key, value):
    with pytest.raises(ValueError, match=key):
        Zaya1Config.from_dict(dict(LEGACY_8B, **{key: value}))


def test_config_is_a_frozen_slots_dataclass():
    cfg = Zaya1Config()
    assert dataclasses.is_dataclass(cfg) and not hasattr(cfg, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden_size = 3  # type: ignore[misc]
    assert json.loads(json.dumps(dataclasses.asdict(cfg)))["num_experts"] == 16


def test_rsa_backends_does_not_import_zaya1_or_torch():
    code = "import sys, rsa.backends; assert 'rsa.backends.zaya1' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
