"""Tiny random K2-family checkpoints for the engine tests, written the way Hugging Face
writes them (`save_pretrained`: per-expert tensor names, sharded with an index), plus
FP8 and INT4 versions of the same weights and a dense copy of what they dequantise to."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from kimicode.backends.k2.quant import dequantize_fp8_block, dequantize_int4, quantize_fp8_block, quantize_int4

YARN_STEP = {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 64,
             "beta_fast": 1, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 50000.0}
YARN_RAMP = {**YARN_STEP, "factor": 64.0, "beta_fast": 32}


def tiny_config(**overrides):
    """Small, but every option K2 uses is switched on: grouped routing, no q_lora, two dense layers, yarn."""
    from transformers import DeepseekV3Config

    fields = dict(
        vocab_size=512, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=4, first_k_dense_replace=2, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, max_position_embeddings=256, rope_parameters=dict(YARN_STEP),
        bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    )
    fields.update(overrides)
    return DeepseekV3Config(**fields)


def random_reference(config, seed: int = 0):
    """A float32 transformers DeepseekV3ForCausalLM with every weight random (biases and norms too),
    scaled so activations stay O(1) and routing decisions are not ties."""
    from transformers import DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif param.dim() >= 2:
                fan_in = param.shape[-1]
                param.copy_(torch.randn_like(param) / fan_in**0.5)
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(0.3 * torch.randn_like(buffer))
    return model


def save_reference(model, path: Path, shard_size: str = "40KB") -> Path:
    model.save_pretrained(path, max_shard_size=shard_size)
    return path


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    return tensors


def is_expert(name: str) -> bool:
    return ".mlp.experts." in name and name.endswith("_proj.weight")


def is_fp8_linear(name: str) -> bool:
    """The linears DeepSeek-V3/K2 store in FP8: everything but router, norms, embeddings and head."""
    return name.endswith("_proj.weight") or name.endswith("_proj_with_mqa.weight")


def write_checkpoint(tensors: dict[str, torch.Tensor], config: dict, path: Path, shards: int = 3) -> Path:
    """Write `tensors` as `shards` safetensors files with an index, as HF does."""
    path.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    weight_map = {}
    for shard in range(shards):
        part = names[shard::shards]
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, str(path / file))
        weight_map.update({n: file for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(config))
    return path


def quantised_copies(reference_dir: Path, out: Path, fmt: str) -> tuple[Path, Path]:
    """(checkpoint in `fmt`, dense checkpoint of the weights it dequantises to).

    fmt "int4": routed experts compressed-tensors INT4, the rest as stored;
    fmt "fp8": every linear block-FP8 with 32x32 blocks (small enough to cover several blocks here).
    """
    tensors = read_tensors(reference_dir)
    config = json.loads((reference_dir / "config.json").read_text())
    quantised, dense = {}, {}
    for name, tensor in tensors.items():
        stem = name[: -len(".weight")]
        if fmt == "int4" and is_expert(name):
            packed, scale = quantize_int4(tensor)
            quantised[f"{stem}.weight_packed"] = packed
            quantised[f"{stem}.weight_scale"] = scale
            quantised[f"{stem}.weight_shape"] = torch.tensor(list(tensor.shape), dtype=torch.int32)
            dense[name] = dequantize_int4(packed, scale, torch.float32)
        elif fmt == "fp8" and is_fp8_linear(name):
            weight, scale_inv = quantize_fp8_block(tensor, (32, 32))
            quantised[name], quantised[f"{stem}.weight_scale_inv"] = weight, scale_inv
            dense[name] = dequantize_fp8_block(weight, scale_inv, torch.float32, (32, 32))
        else:
            quantised[name] = dense[name] = tensor
    if fmt == "int4":
        quant = {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
            "weights": {"num_bits": 4, "type": "int", "symmetric": True, "group_size": 32, "strategy": "group"},
            "targets": ["Linear"]}}}
    else:
        quant = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [32, 32]}
    write_checkpoint(quantised, {**config, "quantization_config": quant}, out / fmt)
    write_checkpoint(dense, config, out / f"{fmt}-dense")
    return out / fmt, out / f"{fmt}-dense"


def write_tiny_k2(path: Path, max_position_embeddings: int = 32768, seed: int = 5) -> Path:
    """A complete tiny K2 folder: random fp32 weights plus a small tokenizer in K2's format."""
    from tests.backends.k2.vocab import write_tokenizer_dir

    path.mkdir(parents=True, exist_ok=True)
    base = write_tokenizer_dir(path)
    config = tiny_config(vocab_size=base + 256, bos_token_id=base, eos_token_id=base + 1,
                         max_position_embeddings=max_position_embeddings)
    random_reference(config, seed=seed).save_pretrained(path)
    return path
