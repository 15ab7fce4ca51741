"""Checkpoint loading: native single-file and sharded, legacy Megatron layout, strictness, full-size shapes."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from rsa.backends.zaya1 import Zaya1Config, Zaya1ForCausalLM, load_model

CFG = "L3-q8kv2-d32-e8-r32-theta1e4"


@pytest.fixture(scope="module")
def native(zh, tmp_path_factory):
    """(checkpoint dir, its tensors, its config dict, reference logits) of one tiny native checkpoint."""
    hf = zh.make_hf(seed=21, **zh.CONFIGS[CFG])
    path = zh.save(hf, tmp_path_factory.mktemp("native"))
    ids = torch.randint(3, zh.VOCAB, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids).logits
    with open(f"{path}/config.json") as fh:
        config = json.load(fh)
    return path, load_file(f"{path}/model.safetensors"), config, ids, ref


def write(path, tensors: dict, config: dict, shards: int = 1) -> str:
    """Write a checkpoint dir: config.json plus one file or `shards` files with an index."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, str(path / "model.safetensors"))
        return str(path)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({n: tensors[n].contiguous() for n in part}, str(path / file))
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(path)


def to_legacy(tensors: dict, layers: int, experts: int) -> dict:
    """Inverse of the spec 4.2 map: native (40-layer) names -> legacy Megatron (80 half-layer) names."""
    attn = (("qkv_proj.q_proj.", "qkv.linear_q."), ("qkv_proj.k_proj.", "qkv.linear_k."),
            ("qkv_proj.v_proj_current.", "qkv.val_proj1."), ("qkv_proj.v_proj_delayed.", "qkv.val_proj2."),
            ("qkv_proj.conv_qk_depthwise.", "qkv.conv_qk.0."), ("qkv_proj.conv_qk_grouped.", "qkv.conv_qk.1."),
            ("qk_norm.temp", "qkv.temp"), ("o_proj.", "o_proj."))
    router = (("router_mlp.norm.", "rmsnorm_eda."), ("router_mlp.fc1.", "router_mlp.0."),
              ("router_mlp.fc2.", "router_mlp.2."), ("router_mlp.out_proj.", "router_mlp.4."), ("", ""))
    out = {}
    for name, t in tensors.items():
        if name == "model.norm.weight":
            out["model.final_norm.weight"] = t
        elif name.startswith("model.input_hidden_states_"):
            out["model.layers.0.res_scale." + name.removeprefix("model.input_")] = t
        elif name == "model.embed_tokens.weight":
            out[name] = t
        else:
            k, rest = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name).groups()
            k = int(k)
            att, moe = f"model.layers.{2 * k}.", f"model.layers.{2 * k + 1}."
            head, _, part = rest.partition(".")
            if head == "post_mlp_residual_scale":
                out[(f"model.layers.{2 * k + 2}.res_scale." if k < layers - 1 else "model.res_scale.") + part] = t
            elif head == "post_attention_residual_scale":
                out[moe + "res_scale." + part] = t
            elif head == "input_layernorm":
                out[att + "input_norm." + part] = t
            elif head == "post_attention_layernorm":
                out[moe + "input_norm." + part] = t
            elif head == "self_attn":
                new, old = next((n, o) for n, o in attn if part.startswith(n))
                out[att + "self_attn." + old + part.removeprefix(new)] = t
            elif part.startswith("experts."):
                fc = "linear_fc1" if part.endswith("gate_up_proj") else "linear_fc2"
                for e in range(experts):
                    out[moe + f"zaya_block.experts.local_experts.{e}.{fc}.weight"] = t[e].clone()
            else:
                part = part.removeprefix("gate.")
                new, old = next((n, o) for n, o in router if part.startswith(n))
                out[moe + "zaya_block.router." + old + part.removeprefix(new)] = t
    return out


def legacy_config(native: dict) -> dict:
    rope = native["rope_parameters"]["hybrid"]
    dropped = ("num_hidden_layers", "moe_intermediate_size", "router_hidden_size", "rms_norm_eps",
               "num_experts_per_tok", "rope_parameters", "layer_types")
    out = {k: v for k, v in native.items() if k not in dropped}
    out.update(num_hidden_layers=2 * native["num_hidden_layers"], ffn_hidden_size=2 * native["moe_intermediate_size"],
               zaya_mlp_expansion=native["router_hidden_size"], norm_epsilon=native["rms_norm_eps"],
               moe_router_topk=1, num_query_groups=native["num_key_value_heads"], kv_channels=native["head_dim"],
               rope_theta=rope["rope_theta"], partial_rotary_factor=rope["partial_rotary_factor"],
               activation_func="swiglu", zaya_use_mod=True, zaya_use_eda=True, scale_residual_merge=True,
               residual_in_fp32=True, zaya_high_prec=True, clamp_temp=False, mamba_cache_dtype="float32")
    return out


def test_native_single_file_loads(native, zh):
    path, _, _, ids, ref = native
    zh.report(load_model(path).logits(ids), ref, zh.TOL[torch.float32])


def test_sharded_native_checkpoint_loads(native, zh, tmp_path):
    path, tensors, config, ids, ref = native
    sharded = write(tmp_path / "sharded", tensors, config, shards=3)
    zh.report(load_model(sharded).logits(ids), ref, zh.TOL[torch.float32])


def test_transformers_sharded_save_loads(native, zh, tmp_path):
    path, _, _, ids, ref = native
    hf = zh.make_hf(seed=21, **zh.CONFIGS[CFG])
    sharded = zh.save(hf, tmp_path / "hf_sharded", max_shard_size="40KB")
    assert (tmp_path / "hf_sharded" / "model.safetensors.index.json").exists()
    zh.report(load_model(sharded).logits(ids), ref, zh.TOL[torch.float32])


def test_legacy_layout_loads_to_same_logits(native, zh, tmp_path):
    path, tensors, config, ids, ref = native
    layers, experts = config["num_hidden_layers"], config["num_experts"]
    legacy = to_legacy(tensors, layers, experts)
    assert len(legacy) == len(tensors) + 2 * layers * (experts - 1)  # per-expert tensors
    assert f"model.layers.{2 * layers - 1}.zaya_block.router.router_mlp.4.weight" in legacy
    legacy_path = write(tmp_path / "legacy", legacy, legacy_config(config), shards=2)
    assert Zaya1Config.from_pretrained(legacy_path) == Zaya1Config.from_dict(config)
    ours = load_model(legacy_path).logits(ids)
    torch.testing.assert_close(ours, load_model(path).logits(ids), atol=0, rtol=0)
    zh.report(ours, ref, zh.TOL[torch.float32])


def test_missing_extra_and_misshaped_tensors_are_all_listed(native, tmp_path):
    path, tensors, config, _, _ = native
    broken = dict(tensors)
    del broken["model.norm.weight"], broken["model.layers.1.mlp.gate.router_states_scale"]
    broken["model.layers.0.self_attn.extra.weight"] = torch.zeros(3)
    broken["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()  # tied model: no lm_head
    broken["model.layers.2.self_attn.qk_norm.temp"] = torch.zeros(5)
    with pytest.raises(ValueError) as err:
        load_model(write(tmp_path / "broken", broken, config))
    msg = str(err.value)
    for piece in ("missing (2)", "model.norm.weight", "model.layers.1.mlp.gate.router_states_scale",
                  "unexpected (2)", "model.layers.0.self_attn.extra.weight", "lm_head.weight",
                  "wrong shape (1)", "model.layers.2.self_attn.qk_norm.temp: checkpoint [5] vs model [2]"):
        assert piece in msg, msg


def test_legacy_missing_expert_and_stray_tensor_are_listed(native, tmp_path):
    path, tensors, config, _, _ = native
    legacy = to_legacy(tensors, config["num_hidden_layers"], config["num_experts"])
    del legacy["model.layers.3.zaya_block.experts.local_experts.5.linear_fc2.weight"]
    legacy["model.layers.0.res_scale.residual_scale"] = torch.ones(config["hidden_size"])  # layer 0 has none
    with pytest.raises(ValueError) as err:
        load_model(write(tmp_path / "legacy_broken", legacy, legacy_config(config)))
    msg = str(err.value)
    assert "model.layers.1.mlp.experts.down_proj[5]" in msg and "model.layers.0.res_scale.residual_scale" in msg, msg


def test_load_casts_to_dtype_and_keeps_fp32_buffers(native):
    path = native[0]
    model = load_model(path, dtype=torch.bfloat16)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.bfloat16}
    assert all(layer.mlp.gate.balancing_biases.dtype == torch.float32 for layer in model.model.layers)
    assert model.model.rope_inv_freq.dtype == torch.float32 and not model.model.rope_inv_freq.is_meta


def test_full_zaya1_8b_on_meta_has_the_spec_parameter_count():
    with torch.device("meta"):
        model = Zaya1ForCausalLM(Zaya1Config())
    assert abs(model.num_parameters() - 8.84e9) < 0.01e9, model.num_parameters()  # spec 1: ~8.84B with embeddings
    assert abs(model.num_parameters(active_only=True) - 0.754e9) < 0.005e9  # ~0.75B active per token
    assert len(model.state_dict()) == 1283  # spec 4.1: 32 tensors per layer (31 for layer 0) + 4 globals


def test_untied_lm_head_loads(zh, tmp_path):
    hf = zh.make_hf(seed=5, tie_word_embeddings=False, **zh.CONFIGS["L2-q4kv2-d16-e4-r16"])
    model = load_model(zh.save(hf, tmp_path / "untied"))
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(3, zh.VOCAB, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
    zh.report(model.logits(ids), ref, zh.TOL[torch.float32])
