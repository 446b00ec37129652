"""Parameter counts and memory needs of a K2-family model, from its config alone.

Pure arithmetic (no torch, no weights read), so `kimicode engine info` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from kimicode.backends.k2.config import ModelConfig

# Bytes per parameter, scales included: FP8 has one fp32 scale per 128x128 block,
# INT4 one bf16 scale per 32 weights.
BYTES_PER_PARAM = {"bf16": 2.0, "fp8": 1.0 + 4 / (128 * 128), "int4": 0.5 + 2 / 32}


@dataclass(frozen=True, slots=True)
class ParameterCounts:
    embedding: int
    head: int
    attention: int  # all layers
    dense_mlp: int  # the first_k_dense_replace layers' MLPs
    shared_experts: int
    routed_experts: int
    router: int
    norms: int
    activated_experts: int  # routed expert parameters one token uses

    @property
    def total(self) -> int:
        return (self.embedding + self.head + self.attention + self.dense_mlp + self.shared_experts
                + self.routed_experts + self.router + self.norms)

    @property
    def non_expert(self) -> int:
        return self.total - self.routed_experts

    @property
    def activated(self) -> int:
        return self.non_expert + self.activated_experts


def count_parameters(config: ModelConfig) -> ParameterCounts:
    h, heads = config.hidden_size, config.num_attention_heads
    if config.q_lora_rank is None:
        q = h * heads * config.qk_head_dim
    else:
        q = h * config.q_lora_rank + config.q_lora_rank + config.q_lora_rank * heads * config.qk_head_dim
    kv = h * config.latent_dim + config.kv_lora_rank + config.kv_lora_rank * heads * (config.qk_nope_head_dim + config.v_head_dim)
    attention_per_layer = q + kv + heads * config.v_head_dim * h
    moe_layers = sum(config.is_moe_layer(i) for i in range(config.num_hidden_layers))
    dense_layers = config.num_hidden_layers - moe_layers
    expert = 3 * h * config.moe_intermediate_size
    return ParameterCounts(
        embedding=config.vocab_size * h,
        head=0 if config.tie_word_embeddings else config.vocab_size * h,
        attention=attention_per_layer * config.num_hidden_layers,
        dense_mlp=dense_layers * 3 * h * config.intermediate_size,
        shared_experts=moe_layers * config.n_shared_experts * expert,
        routed_experts=moe_layers * config.n_routed_experts * expert,
        router=moe_layers * (config.n_routed_experts * h + config.n_routed_experts),
        norms=config.num_hidden_layers * 2 * h + h,
        activated_experts=moe_layers * config.num_experts_per_tok * expert,
    )


def stored_formats(config: ModelConfig, quant: str) -> tuple[str, str]:
    """(non-expert linear format, routed expert format) after loading with `quant`."""
    disk_linear = "fp8" if config.quant.method == "fp8" else "bf16"
    disk_experts = {"fp8": "fp8", "int4": "int4"}.get(config.quant.method, "bf16")
    if quant == "none":
        return "bf16", "bf16"
    if quant == "int4":
        return disk_linear, "int4"
    return disk_linear, disk_experts


def weight_bytes(config: ModelConfig, quant: str) -> tuple[float, float]:
    """(bytes of everything but the routed experts, bytes of the routed experts)."""
    counts = count_parameters(config)
    linear_fmt, expert_fmt = stored_formats(config, quant)
    quantisable = counts.attention + counts.dense_mlp + counts.shared_experts
    router_fp32 = counts.router * 4  # routing stays in fp32
    rest = counts.embedding + counts.head + counts.norms
    non_expert = quantisable * BYTES_PER_PARAM[linear_fmt] + router_fp32 + rest * BYTES_PER_PARAM["bf16"]
    return non_expert, counts.routed_experts * BYTES_PER_PARAM[expert_fmt]


def kv_cache_bytes_per_token(config: ModelConfig, dtype_bytes: int = 2) -> int:
    return config.num_hidden_layers * config.latent_dim * dtype_bytes


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
