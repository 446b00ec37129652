"""Kernel launches per decoded token in one K2 layer, counted on the CPU (no GPU needed).

    TRITON_INTERPRET=1 python bench/decode_launches.py

Builds K2-structured layers (q_lora, INT4 experts, one shared expert; layer 0 dense) at small
widths with the other linears block-FP8 (K2-Instruct loaded with --quant int4) or bf16 (as
K2-Thinking ships them), runs one decode step of each with the kernels on, and prints the
launches by op. Widths are small so the interpreter is quick; the FP8 scale block is shrunk
to 32 so the split-K decode path is taken, as it is at K2's widths.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["KIMICODE_KERNELS"] = "on"

import torch  # noqa: E402

from kimicode.backends.k2.config import ModelConfig  # noqa: E402
from kimicode.backends.k2.kernels.bench import TINY, k2_config  # noqa: E402
from kimicode.backends.k2.kernels.launches import count_launches  # noqa: E402
from kimicode.backends.k2.model import Block, DecodeStep, Formats, rope_inv_freq  # noqa: E402

FORMATS = {"fp8": Formats(torch.bfloat16, linear="fp8", experts="int4", fp8_block=(32, 32)),
           "bf16": Formats(torch.bfloat16, linear="dense", experts="int4")}


def random_block(config: ModelConfig, layer: int, formats: Formats, seed: int = 0) -> Block:
    torch.manual_seed(seed)
    block = Block(config, layer, formats)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if param.dtype == torch.float8_e4m3fn:
                param.copy_(torch.randn(param.shape).clamp(-4, 4).to(param.dtype))
            elif param.dtype == torch.int32:
                param.random_(-(2**31), 2**31 - 1)
            elif name.endswith(("scale_inv", "weight_scale")):
                param.uniform_(0.005, 0.02)
            elif "norm" in name:
                param.uniform_(0.8, 1.2)
            elif param.dim() >= 2:
                param.normal_(0, param.shape[-1] ** -0.5)
            else:
                param.normal_(0, 0.1)
    return block


def decode_launches(block: Block, config: ModelConfig, context: int = 64):
    """Launches of one `Block.decode` at position context-1 (a warm-up call first: kv_b's cache)."""
    dtype = block.input_layernorm.weight.dtype
    cache_kv = torch.randn(1, context, config.kv_lora_rank, dtype=dtype)
    cache_pe = torch.randn(1, context, config.qk_rope_head_dim, dtype=dtype)
    x = torch.randn(1, 1, config.hidden_size, dtype=dtype)
    step = DecodeStep.at(config, rope_inv_freq(config), torch.tensor([context - 1]))
    block.decode(x, step, cache_kv, cache_pe)
    with torch.inference_mode(), count_launches() as launches:
        block.decode(x, step, cache_kv, cache_pe)
    return launches


def main() -> int:
    config = ModelConfig.from_dict(k2_config(TINY, layers=2))
    counts = {f"{kind} layer, {linear} linears": decode_launches(random_block(config, layer, formats), config)
              for linear, formats in FORMATS.items() for kind, layer in (("MoE", 1), ("dense", 0))}
    ops = sorted(set().union(*counts.values()), key=lambda op: (-sum(c[op] for c in counts.values()), op))
    print(f"| op | {' | '.join(counts)} |")
    print("|---|" + "---|" * len(counts))
    for op in ops:
        print(f"| {op} | {' | '.join(str(c[op]) for c in counts.values())} |")
    print(f"| **total** | {' | '.join(f'**{sum(c.values())}**' for c in counts.values())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
