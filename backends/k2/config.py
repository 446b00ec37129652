"""The architecture of a K2-family checkpoint, read from its `config.json`.

Every shape the model uses comes from here; nothing about K2 is hard-coded.
Pure Python (no torch), so `kimicode engine info` stays cheap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = ("kimi_k2", "deepseek_v3", "kimi_k25")


class CheckpointError(Exception):
    """A checkpoint folder this engine cannot load, with the reason in words."""


@dataclass(frozen=True, slots=True)
class QuantConfig:
    """How the checkpoint stores its linear weights on disk."""

    method: str  # "none" | "fp8" | "int4"
    fp8_block: tuple[int, int] = (128, 128)
    int4_group: int = 32


def fused_moe_fits(hidden: int, inter: int, fp8_block: tuple[int, int] | None = None) -> bool:
    """Whether the fused MoE kernels can run these experts: they step K in blocks of at least 32
    (an INT4 group), and FP8 tiles must stay inside a scale block. Otherwise a torch loop runs
    them, without CUDA graphs."""
    return hidden % 32 == 0 and inter % 32 == 0 and (fp8_block is None or fp8_block[1] % 32 == 0)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    first_k_dense_replace: int
    moe_layer_freq: int
    num_attention_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    rms_norm_eps: float
    rope_theta: float
    rope_factor: float  # 1.0: plain rope; > 1: YaRN
    rope_original_max_position: int
    rope_beta_fast: float
    rope_beta_slow: float
    rope_mscale: float
    rope_mscale_all_dim: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    bos_token_id: int | None
    eos_token_id: int | None
    quant: QuantConfig
    weight_prefix: str = ""  # "language_model." for the text part of multimodal checkpoints

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Values cached per token per layer: the compressed KV plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        scale = self.qk_head_dim**-0.5
        if self.rope_factor > 1 and self.rope_mscale_all_dim:
            m = 0.1 * self.rope_mscale_all_dim * math.log(self.rope_factor) + 1.0
            scale *= m * m
        return scale

    def is_moe_layer(self, layer: int) -> bool:
        return (
            self.n_routed_experts > 0
            and layer >= self.first_k_dense_replace
            and layer % self.moe_layer_freq == 0
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelConfig:
        file = Path(path) / "config.json"
        if not file.is_file():
            raise CheckpointError(f"{path}: no config.json (is this a Hugging Face checkpoint folder?)")
        try:
            raw = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{file}: unreadable ({exc})") from exc
        return cls.from_dict(raw, source=str(file))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"{source}: model_type {model_type!r} is not a K2-family model; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        prefix = ""
        text = raw
        if "text_config" in raw:  # Kimi K2.5: the text model is nested; its weights carry a prefix
            text, prefix = {**raw["text_config"], **_quant_only(raw)}, "language_model."
        get = _Reader(text, source)
        scoring = get.opt("scoring_func", "sigmoid")
        if scoring != "sigmoid":
            raise CheckpointError(f"{source}: scoring_func {scoring!r} is not supported (K2 routers use sigmoid)")
        topk_method = get.opt("topk_method", "noaux_tc")
        if topk_method != "noaux_tc":
            raise CheckpointError(f"{source}: topk_method {topk_method!r} is not supported (expected noaux_tc)")
        rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "yarn"):
            raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported (yarn or none)")
        yarn = rope_type == "yarn"
        n_routed = get.opt("n_routed_experts", 0) or 0
        config = cls(
            model_type=model_type,
            vocab_size=get.int("vocab_size"),
            hidden_size=get.int("hidden_size"),
            intermediate_size=get.int("intermediate_size"),
            moe_intermediate_size=get.int("moe_intermediate_size") if n_routed else 0,
            num_hidden_layers=get.int("num_hidden_layers"),
            first_k_dense_replace=get.opt("first_k_dense_replace", 0),
            moe_layer_freq=get.opt("moe_layer_freq", 1),
            num_attention_heads=get.int("num_attention_heads"),
            q_lora_rank=get.opt("q_lora_rank", None),
            kv_lora_rank=get.int("kv_lora_rank"),
            qk_nope_head_dim=get.int("qk_nope_head_dim"),
            qk_rope_head_dim=get.int("qk_rope_head_dim"),
            v_head_dim=get.int("v_head_dim"),
            n_routed_experts=n_routed,
            n_shared_experts=get.opt("n_shared_experts", 0) or 0,
            num_experts_per_tok=get.opt("num_experts_per_tok", 0) or 0,
            n_group=get.opt("n_group", 1) or 1,
            topk_group=get.opt("topk_group", 1) or 1,
            norm_topk_prob=bool(get.opt("norm_topk_prob", True)),
            routed_scaling_factor=float(get.opt("routed_scaling_factor", 1.0)),
            rms_norm_eps=float(get.opt("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", text.get("rope_theta", 10000.0))),
            rope_factor=float(rope.get("factor", 1.0)) if yarn else 1.0,
            rope_original_max_position=int(
                rope.get("original_max_position_embeddings", text.get("max_position_embeddings", 4096))
            ),
            rope_beta_fast=float(rope.get("beta_fast", 32)),
            rope_beta_slow=float(rope.get("beta_slow", 1)),
            rope_mscale=float(rope.get("mscale", 1)),
            rope_mscale_all_dim=float(rope.get("mscale_all_dim", 0)),
            max_position_embeddings=get.int("max_position_embeddings"),
            tie_word_embeddings=bool(get.opt("tie_word_embeddings", False)),
            bos_token_id=get.opt("bos_token_id", None),
            eos_token_id=_first(get.opt("eos_token_id", None)),
            quant=_quant_config(raw.get("quantization_config") or text.get("quantization_config"), source),
            weight_prefix=prefix,
        )
        config._validate(source)
        return config

    def _validate(self, source: str) -> None:
        problems = []
        if self.n_routed_experts:
            if self.n_routed_experts % self.n_group:
                problems.append(f"n_routed_experts {self.n_routed_experts} is not divisible by n_group {self.n_group}")
            if not 0 < self.topk_group <= self.n_group:
                problems.append(f"topk_group {self.topk_group} must be in 1..n_group ({self.n_group})")
            per_group = self.n_routed_experts // self.n_group
            if not 0 < self.num_experts_per_tok <= self.topk_group * per_group:
                problems.append(f"num_experts_per_tok {self.num_experts_per_tok} exceeds the experts of the kept groups")
            if self.n_group > 1 and per_group < 2:
                problems.append("group scoring needs at least 2 experts per group")
        if self.qk_rope_head_dim % 2:
            problems.append(f"qk_rope_head_dim {self.qk_rope_head_dim} must be even")
        if self.moe_layer_freq < 1:
            problems.append("moe_layer_freq must be ≥ 1")
        if problems:
            raise CheckpointError(f"{source}: " + "; ".join(problems))


def _quant_only(raw: dict[str, Any]) -> dict[str, Any]:
    return {"quantization_config": raw["quantization_config"]} if "quantization_config" in raw else {}


def _first(value: Any) -> int | None:
    return value[0] if isinstance(value, list) else value


def _quant_config(raw: dict[str, Any] | None, source: str) -> QuantConfig:
    if not raw:
        return QuantConfig("none")
    method = raw.get("quant_method")
    if method == "fp8":
        if raw.get("fmt", "e4m3") != "e4m3":
            raise CheckpointError(f"{source}: FP8 format {raw.get('fmt')!r} is not supported (e4m3 only)")
        block = tuple(raw.get("weight_block_size") or (128, 128))
        if len(block) != 2:
            raise CheckpointError(f"{source}: weight_block_size must have two entries, got {block}")
        return QuantConfig("fp8", fp8_block=(int(block[0]), int(block[1])))
    if method == "compressed-tensors":
        if raw.get("format") != "pack-quantized":
            raise CheckpointError(
                f"{source}: compressed-tensors format {raw.get('format')!r} is not supported (pack-quantized only)"
            )
        for name, group in (raw.get("config_groups") or {}).items():
            weights = group.get("weights") or {}
            bits, size = weights.get("num_bits"), weights.get("group_size")
            if bits != 4 or not weights.get("symmetric", False) or weights.get("type", "int") != "int":
                raise CheckpointError(
                    f"{source}: quantisation group {name!r} is {bits}-bit "
                    f"{'symmetric' if weights.get('symmetric') else 'asymmetric'} {weights.get('type')}; "
                    "only symmetric INT4 is supported"
                )
            if size != 32:
                raise CheckpointError(f"{source}: quantisation group {name!r} has group_size {size}; only 32 is supported")
        return QuantConfig("int4")
    raise CheckpointError(f"{source}: quant_method {method!r} is not supported (fp8 or compressed-tensors INT4)")


class _Reader:
    def __init__(self, raw: dict[str, Any], source: str):
        self.raw, self.source = raw, source

    def int(self, key: str) -> int:
        value = self.raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{self.source}: {key} must be a non-negative integer, got {value!r}")
        return value

    def opt(self, key: str, default: Any) -> Any:
        return self.raw.get(key, default)
